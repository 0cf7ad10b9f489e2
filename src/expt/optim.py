"""Optimizers and learning-rate schedules: PyTorch's own, plus the two PyTorch lacks, and the rate at each step.

``conf/optimizer/*.yaml`` and ``conf/schedule/*.yaml`` name ``torch.optim`` classes with
``_partial_: true``; the trainer supplies the parameters, and :class:`LearningRate` the optimizer
its schedule runs on. :class:`LearningRate` is the one place a run's learning rate is computed:
``rate(step)`` for the step about to be taken, used by the epoch loop (one model or a population),
the config's dry run and resume alike. A schedule steps once per epoch (``ReduceLROnPlateau`` with
the validation loss) unless its option says ``per_step: true``: then it steps once per batch
(``onecycle``; ``warmup_cosine`` where asked), its epoch-valued settings taken in batches.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LinearLR, ReduceLROnPlateau, SequentialLR

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
    about 1 / pct_start steps; this one runs any length."""
    if not 0 <= pct_start < 1:
        raise ConfigError(f"schedule.pct_start={pct_start} is not allowed: a fraction of the run in [0, 1).")
    if not (div_factor >= 1 and final_div_factor >= 1):
        raise ConfigError(f"schedule.div_factor={div_factor}, schedule.final_div_factor={final_div_factor} are not "
                          "allowed: factors >= 1 (the rate starts at lr / div_factor and ends "
                          "at lr / (div_factor * final_div_factor)).")
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    peak = round(pct_start * total_steps)
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


class LearningRate:
    """A run's learning rate at every step, from its ``schedule`` option (``factory``, the schedule's class
    with its settings: :func:`expt.config.learning_rate` makes it from a config) and ``optimizer.lr``.

    The schedule's own class (a ``torch.optim.lr_scheduler`` or a user's) runs on a stand-in
    optimizer holding one scalar, so the rates are PyTorch's numbers, bit for bit, and no real
    optimizer is stepped for them: :meth:`rate` (step -> lr) is computed here once, for lone runs,
    populations, the config's dry run and resume. An epoch schedule's rate changes at epoch
    boundaries; a ``per_step`` one at every step, with ``total_steps`` and ``steps_per_epoch``
    given to its class where its signature takes them. ``ReduceLROnPlateau`` depends on the
    validation losses: :meth:`observe` hands it each epoch's (the other schedules ignore them).
    """

    def __init__(self, factory: Callable, lr: float, steps_per_epoch: int, epochs: int, per_step: bool = False):
        self.per_step = per_step
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self._param = torch.zeros(1, requires_grad=True)
        self._optimizer = torch.optim.SGD([self._param], lr=float(lr))
        extra = {}
        if self.per_step:
            accepted = _parameters(factory)
            if "total_steps" in accepted:
                extra["total_steps"] = max(1, int(epochs)) * self.steps_per_epoch
            if "steps_per_epoch" in accepted:
                extra["steps_per_epoch"] = self.steps_per_epoch
        self._scheduler = factory(self._optimizer, **extra)
        self.plateau = isinstance(self._scheduler, ReduceLROnPlateau)
        self._rates = [self._current()]  # the rate after k steps of the schedule

    def _current(self) -> float:
        return float(self._optimizer.param_groups[0]["lr"])

    def _advance(self, val_loss: float | None = None) -> None:
        with warnings.catch_warnings():  # the stand-in optimizer takes no step between the schedule's steps
            warnings.simplefilter("ignore", UserWarning)
            if self.plateau:
                self._scheduler.step(val_loss)
            else:
                self._scheduler.step()
        self._rates.append(self._current())

    def rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0 for the run's first step)."""
        k = step if self.per_step else step // self.steps_per_epoch
        if self.plateau:  # its rate changes only when it observes an epoch's validation loss
            return self._rates[min(k, len(self._rates) - 1)]
        while len(self._rates) <= k:
            self._advance()
        return self._rates[k]

    def epoch_rate(self, epoch: int) -> float:
        """The rate of the first step of ``epoch`` (1-based): what an epoch's row logs."""
        return self.rate((epoch - 1) * self.steps_per_epoch)

    def observe(self, val_loss: float) -> None:
        """An epoch ended with this validation loss: ReduceLROnPlateau steps on it."""
        if self.plateau:
            self._advance(val_loss)


def _parameters(factory: Callable) -> set[str]:
    fn = factory.func if hasattr(factory, "func") else factory
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def set_rate(optimizer: Optimizer, lr: float) -> None:
    """Every parameter group of a torch optimizer at ``lr``; a tensor rate (a captured step's) is filled in place."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
