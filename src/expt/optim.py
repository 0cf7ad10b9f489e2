"""Optimizers and learning-rate schedules: PyTorch's own, plus those PyTorch lacks.

``conf/optimizer/*.yaml`` and ``conf/schedule/*.yaml`` name ``torch.optim`` classes with
``_partial_: true``; the trainer supplies the parameters, and :class:`expt.schedule.LearningRate`
the optimizer a schedule runs on (it computes the rate of every step from the schedule's class).
"""

from __future__ import annotations

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LinearLR, SequentialLR

from expt.errors import ConfigError
from expt.regularization import penalized_weights


def param_groups(model: nn.Module) -> list[dict]:
    """Weights in one group, biases and norm parameters in another without weight decay.

    Used only when the optimizer has a ``weight_decay``: one group is cheaper per step.
    """
    weight_ids = {id(w) for w in penalized_weights(model)}
    weights = [p for p in model.parameters() if id(p) in weight_ids]
    others = [p for p in model.parameters() if id(p) not in weight_ids]
    groups = [{"params": weights}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    return groups


class InverseTimeLR(LambdaLR):
    """1/t decay: lr_t = lr_0 / (1 + k t), t counted in scheduler steps (epochs)."""

    def __init__(self, optimizer: Optimizer, k: float = 0.5, last_epoch: int = -1):
        if k < 0:
            raise ConfigError(f"schedule.k={k} is not allowed: a decay rate >= 0.")
        self.k = k
        super().__init__(optimizer, lambda t: 1.0 / (1.0 + k * t), last_epoch=last_epoch)


def one_cycle(
    optimizer: Optimizer, total_steps: int = 100, pct_start: float = 0.25, div_factor: float = 10.0,
    final_div_factor: float = 100.0,
) -> LambdaLR:
    """One triangular cycle over the run, stepped every batch: linear from ``lr_0 / div_factor`` up to ``lr_0`` at
    step ``round(pct_start * total_steps)``, then linear down to ``lr_0 / (div_factor * final_div_factor)`` at the
    last step (``total_steps`` comes from the run). torch's OneCycleLR does the same, but cannot run fewer than
    about 1 / pct_start steps; this one runs any length, and a run of two steps or more takes its first step
    below the peak whenever ``pct_start`` is above 0 (a run of exactly two steps then ends at the peak: too short
    to fall)."""
    if not 0 <= pct_start < 1:
        raise ConfigError(f"schedule.pct_start={pct_start} is not allowed: a fraction of the run in [0, 1).")
    if not (div_factor >= 1 and final_div_factor >= 1):
        raise ConfigError(f"schedule.div_factor={div_factor}, schedule.final_div_factor={final_div_factor} are not "
                          "allowed: factors >= 1 (the rate starts at lr / div_factor and ends "
                          "at lr / (div_factor * final_div_factor)).")
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    peak = round(pct_start * total_steps)
    if pct_start > 0 and total_steps > 1:  # a run too short for its share of steps still warms up for one
        peak = max(peak, 1)  # (a fresh network's first step at the full rate can diverge a 2-step run)
    fall = max(1, total_steps - 1 - peak)

    def factor(t: int) -> float:
        if t < peak:
            return start + (1.0 - start) * t / peak
        return 1.0 + (end - 1.0) * min(1.0, (t - peak) / fall)

    return LambdaLR(optimizer, factor)


def warmup_cosine(
    optimizer: Optimizer, warmup_epochs: float = 2, start_factor: float = 0.1, total_epochs: int = 10,
    eta_min: float = 0.0, steps_per_epoch: int = 1,
) -> SequentialLR | CosineAnnealingLR:
    """Linear warm-up from ``start_factor * lr_0`` to ``lr_0`` over ``warmup_epochs``, then cosine to ``eta_min``.

    Stepped once per epoch, or once per batch with ``per_step: true`` (``steps_per_epoch`` then
    comes from the run: the warm-up and the cosine are counted in batches, ``warmup_epochs`` may be
    a fraction).
    """
    if not 0 < start_factor <= 1:
        raise ConfigError(f"schedule.start_factor={start_factor} is not allowed: a factor in (0, 1].")
    if warmup_epochs < 0:
        raise ConfigError(f"schedule.warmup_epochs={warmup_epochs} is not allowed: a number >= 0.")
    warmup = round(warmup_epochs * steps_per_epoch)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_epochs * steps_per_epoch - warmup), eta_min=eta_min)
    if warmup == 0:
        return cosine
    warm = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [warm, cosine], milestones=[warmup])
