"""A running average of the weights during training (the recipe's "Polyak / EMA" step), with PyTorch's AveragedModel.

:func:`ema` wraps the model in ``torch.optim.swa_utils.AveragedModel`` with an exponential moving
average whose decay warms up, as timm's and airbench's do: the t-th update uses
``min(decay, (1 + t) / (10 + t))``, so a run of a few hundred steps is not dominated by the
weights it started from (with a fixed 0.999 the average after 300 steps would still hold 74%
of the initial weights). Batch-norm statistics are averaged with the weights
(``use_buffers=True``), so the averaged model needs no extra pass over the data.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

WARMUP = 10  # the decay's warm-up constant: (1 + t) / (WARMUP + t)


class WarmedUpEMA:
    """``multi_avg_fn`` for AveragedModel: averaged <- d * averaged + (1 - d) * current, d warming up to ``decay``."""

    def __init__(self, decay: float, updates: int = 0):
        self.decay = decay
        self.updates = updates  # counted here, in Python: reading AveragedModel's counter would sync a GPU

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (WARMUP + self.updates))

    @torch.no_grad()
    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _num_averaged: torch.Tensor) -> None:
        weight = 1.0 - self.current_decay()
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers (batch norm's num_batches_tracked) follow the model
            for a, c in zip(averaged, current):
                a.copy_(c)
        self.updates += 1


def ema(model: nn.Module, decay: float) -> AveragedModel:
    """An averaged copy of ``model``; call ``.update_parameters(model)`` after every optimizer step."""
    return AveragedModel(model, multi_avg_fn=WarmedUpEMA(decay), use_buffers=True)


def restore(averaged: AveragedModel, state: dict) -> None:
    """Load a state saved from :func:`ema`'s model and resume its decay's warm-up where it stopped."""
    averaged.load_state_dict(state)
    averaged.multi_avg_fn.updates = max(0, int(averaged.n_averaged) - 1)
