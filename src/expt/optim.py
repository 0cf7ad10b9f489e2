"""Optimizers and learning-rate schedules: PyTorch's own, plus the two PyTorch lacks.

``conf/optimizer/*.yaml`` and ``conf/schedule/*.yaml`` name ``torch.optim`` classes with
``_partial_: true``; the trainer supplies the parameters and the optimizer. Schedules
are stepped once per epoch; ``ReduceLROnPlateau`` receives the validation loss.
"""

from __future__ import annotations

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


def warmup_cosine(
    optimizer: Optimizer, warmup_epochs: int = 2, start_factor: float = 0.1, total_epochs: int = 10, eta_min: float = 0.0
) -> SequentialLR | CosineAnnealingLR:
    """Linear warm-up from ``start_factor * lr_0`` to ``lr_0`` over ``warmup_epochs``, then cosine to ``eta_min``."""
    if not 0 < start_factor <= 1:
        raise ConfigError(f"schedule.start_factor={start_factor} is not allowed: a factor in (0, 1].")
    if warmup_epochs < 0:
        raise ConfigError(f"schedule.warmup_epochs={warmup_epochs} is not allowed: an integer >= 0.")
    cosine_epochs = max(1, total_epochs - warmup_epochs)
    cosine = CosineAnnealingLR(optimizer, T_max=cosine_epochs, eta_min=eta_min)
    if warmup_epochs == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])



def step_schedule(scheduler, val_loss: float) -> None:
    """One epoch's step: ReduceLROnPlateau watches the validation loss, the other schedules count epochs."""
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()
