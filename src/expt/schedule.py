"""The learning rate of every step: one function of the step, from the run's schedule, and how an optimizer takes it.

:class:`LearningRate` is the one place a run's learning rate is computed: ``rate(step)`` for the
step about to be taken, used by the epoch loop (one model or a population), the config's dry run and
resume alike. A schedule steps once per epoch (``ReduceLROnPlateau`` with the validation loss) unless
its option says ``per_step: true``: then it steps once per batch (``onecycle``; ``warmup_cosine``
where asked), its epoch-valued settings taken in batches. :func:`set_rate` hands a rate to a torch
optimizer, filling a captured step's rate tensor in place.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Callable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau


class LearningRate:
    """A run's learning rate at every step, from its ``schedule`` option (``factory``, the schedule's class
    with its settings: :func:`expt.dry_run.learning_rate` makes it from a config) and ``optimizer.lr``.

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
        accepted = _parameters(factory)
        if "total_steps" in accepted:  # the run's length in the schedule's steps: batches, or epochs
            extra["total_steps"] = max(1, int(epochs)) * (self.steps_per_epoch if self.per_step else 1)
        if self.per_step and "steps_per_epoch" in accepted:
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
