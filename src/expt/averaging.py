"""A running average of the weights during training (the recipe's "Polyak / EMA" step).

:func:`ema` keeps the average in PyTorch's ``torch.optim.swa_utils.AveragedModel`` (its module and
``n_averaged`` are what ``last.pt`` saves and ``expt.load`` reads) and :func:`update` moves it after
every step with an exponential moving average whose decay warms up, as timm's and airbench's do:
the t-th update after the first uses ``min(decay, (1 + t) / (10 + t))``, so a run of a few hundred
steps is not dominated by the weights it started from (with a fixed 0.999 the average after 300
steps would still hold 74% of the initial weights). The first update copies the weights. Batch-norm
statistics are averaged with the weights (floating buffers; integer ones follow the model), so the
averaged model needs no extra pass over the data. :func:`blend` is the one formula: a lone run
applies it to its model's tensors, a population to its stacked tensors.
"""

from __future__ import annotations

from itertools import chain
from typing import Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

WARMUP = 10  # the decay's warm-up constant: (1 + t) / (WARMUP + t)


class WarmedUpEMA:
    """The decay of the average and how many averaging updates it has made (counted in Python: reading
    AveragedModel's device counter would sync a GPU every step)."""

    def __init__(self, decay: float, updates: int = 0):
        self.decay = decay
        self.updates = updates  # updates made, the first (a copy) included

    def current_decay(self) -> float:
        """The decay of the next update after the first: ``min(decay, (1 + t) / (WARMUP + t))``, t = updates - 1."""
        t = max(0, self.updates - 1)
        return min(self.decay, (1 + t) / (WARMUP + t))


@torch.no_grad()
def blend(averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], schedule: WarmedUpEMA) -> None:
    """One update of the average: a copy the first time, then averaged <- d * averaged + (1 - d) * current;
    integer tensors (batch norm's num_batches_tracked) follow the model."""
    weight = None if schedule.updates == 0 else 1.0 - schedule.current_decay()
    by_dtype: dict[torch.dtype, tuple[list, list]] = {}
    for a, c in zip(averaged, current, strict=True):
        pair = by_dtype.setdefault(a.dtype, ([], []))
        pair[0].append(a)
        pair[1].append(c.detach())
    for dtype, (a, c) in by_dtype.items():
        if weight is None or not dtype.is_floating_point:
            torch._foreach_copy_(a, c)
        else:
            torch._foreach_lerp_(a, c, weight)
    schedule.updates += 1


def ema(model: nn.Module, decay: float) -> AveragedModel:
    """An averaged copy of ``model``; call :func:`update` with it after every optimizer step."""
    averaged = AveragedModel(model, use_buffers=True)
    averaged.warmup = WarmedUpEMA(decay)
    return averaged


def update(averaged: AveragedModel, model: nn.Module) -> None:
    """Move the average of :func:`ema` towards ``model``'s weights and buffers after a step."""
    blend(list(chain(averaged.module.parameters(), averaged.module.buffers())),
          list(chain(model.parameters(), model.buffers())), averaged.warmup)
    averaged.n_averaged.add_(1)  # on the device, without a read back


def restore(averaged: AveragedModel, state: dict) -> None:
    """Load a state saved from :func:`ema`'s model and resume its decay's warm-up where it stopped."""
    averaged.load_state_dict(state)
    averaged.warmup.updates = int(averaged.n_averaged)
