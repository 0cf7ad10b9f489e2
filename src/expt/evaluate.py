"""Evaluating a model: one batched forward pass and one data loss for the trainer, the checks and the dashboard.

:func:`logits` runs a model over a tensor of inputs in batches, in eval mode; :func:`evaluate`
turns them into the mean cross-entropy and the accuracy the trainer logs every epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EVAL_BATCH = 2048


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch: int = EVAL_BATCH) -> torch.Tensor:
    """The model's outputs on ``x`` in eval mode, in batches, leaving the model's mode as it was.

    Eval mode is what the trainer measures its logged initial loss in (no dropout; batch norm
    with its running statistics), and it changes no buffer and draws no random number, so
    measuring before a run does not change the run.
    """
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else x.new_zeros(0, 0)
    finally:
        model.train(was_training)


def data_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy of ``model`` on (x, y) in eval mode, computed in float64: the data term alone, no penalty."""
    return F.cross_entropy(logits(model, x).double(), y).item()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) in eval mode, in batches."""
    out = logits(model, x)
    n = max(1, len(x))
    if not len(x):
        return 0.0, 0.0
    loss = F.cross_entropy(out, y, reduction="sum").double()
    correct = (out.argmax(dim=1) == y).sum()
    return loss.item() / n, correct.item() / n
