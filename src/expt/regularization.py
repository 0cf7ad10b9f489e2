"""Penalties added to the loss and constraints applied after each step.

Penalties and constraints act on the weights of conv and linear layers only: never on
biases or batch-norm parameters. L2 is ``lambda * sum(w^2)`` (no 1/2 factor, as in the
EECS 498 assignments); L1 is ``lambda * sum(|w|)``; both together are the elastic net.
"""

from __future__ import annotations

import torch
from torch import nn

from expt.init import WEIGHT_LAYERS


def penalized_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight tensors of every conv/linear layer: what penalties and max-norm apply to."""
    return [m.weight for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


def penalty(weights: list[torch.Tensor], l1: float | torch.Tensor, l2: float | torch.Tensor) -> torch.Tensor | float:
    """l1 * sum|w| + l2 * sum w^2 over ``weights``. A strength given as a number leaves its term out where it is 0;
    strengths given as tensors (a population's, one a member under vmap) always count both terms."""
    total: torch.Tensor | float = 0.0
    if isinstance(l2, torch.Tensor) or l2 > 0:
        total = total + l2 * sum(w.square().sum() for w in weights)
    if isinstance(l1, torch.Tensor) or l1 > 0:
        total = total + l1 * sum(w.abs().sum() for w in weights)
    return total


def clip_unit_norms_(weight: torch.Tensor, max_norm: float, batch_dims: int = 0) -> None:
    """Rescale in place each unit's incoming weight vector (a row, or a whole filter) to norm <= ``max_norm``.
    ``batch_dims``: leading dimensions before the units' (1 for a population's stacked members)."""
    flat = weight.flatten(0, batch_dims)  # every (member, unit) is a unit of its own
    weight.copy_(torch.renorm(flat, p=2, dim=0, maxnorm=max_norm).view_as(weight))


class Regularizer:
    """The penalty term of the loss and the max-norm constraint, from the regularization group."""

    def __init__(self, model: nn.Module, l1: float = 0.0, l2: float = 0.0, max_norm: float | None = None):
        self.weights = penalized_weights(model)
        self.l1, self.l2, self.max_norm = float(l1), float(l2), max_norm

    @property
    def active(self) -> bool:
        return self.l1 > 0 or self.l2 > 0

    def penalty(self) -> torch.Tensor | float:
        """l1 * sum|w| + l2 * sum w^2 over the weights; 0.0 when both strengths are 0."""
        return penalty(self.weights, self.l1, self.l2)

    def constrain(self) -> None:
        """Rescale each unit's incoming weight vector (a row, or a whole filter) to norm <= max_norm."""
        if self.max_norm is None:  # called after every step: nothing to enter when there is no constraint
            return
        with torch.no_grad():
            for w in self.weights:
                clip_unit_norms_(w, self.max_norm)
