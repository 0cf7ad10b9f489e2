"""A model's predictions on a tensor of inputs: batched logits, the loss and accuracy, test-time views.

:func:`logits` runs a model over a tensor of (preprocessed) inputs in batches, in eval mode;
:func:`loss_and_accuracy` turns them into the mean cross-entropy and the accuracy the trainer logs
every epoch, and :func:`data_loss` into the loss alone, as the sanity checks measure it.
:func:`probabilities` averages the softmax over the test-time views :data:`TTA_VIEWS` names, and
:func:`nll_and_accuracy` scores such (averaged) probabilities. The trainer, the sanity checks and
the tools that use finished runs (:mod:`expt.evaluate`) share these; this module knows nothing of
runs, checkpoints or configs.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from expt.errors import ConfigError
from expt.loss import classification_loss

# Samples per forward pass when measuring. On an accelerator one large batch keeps it busy. On a CPU a convolutional
# net's activations for 2048 images spill out of the caches: batches of 64 measure the same numbers in 0.29-0.55 of
# the time on 2 cores (bench/measuring.py), where an MLP, which prefers large batches, loses a few milliseconds.
EVAL_BATCH = 2048
CPU_EVAL_BATCH = 64


def eval_batch(device: torch.device | str) -> int:
    """How many samples :func:`logits` runs at once on ``device``."""
    return CPU_EVAL_BATCH if torch.device(device).type == "cpu" else EVAL_BATCH


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """The model's outputs on ``x`` in eval mode, in batches (by default :func:`eval_batch` of ``x``'s device),
    leaving the model's mode as it was.

    Eval mode is what the trainer measures its logged initial loss in (no dropout; batch norm
    with its running statistics), and it changes no buffer and draws no random number, so
    measuring before a run does not change the run.
    """
    batch = batch or eval_batch(x.device)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else x.new_zeros(0, 0)
    finally:
        model.train(was_training)


def data_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy of ``model`` on (x, y) in eval mode, computed in float64: the data term alone, no penalty."""
    return classification_loss(logits(model, x).double(), y).item()


def loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) in eval mode, in batches."""
    if not len(x):
        return 0.0, 0.0
    out = logits(model, x)
    loss = classification_loss(out, y, reduction="sum").double()
    correct = (out.argmax(dim=1) == y).sum()
    total, right = torch.stack([loss, correct.double()]).tolist()  # one read-back
    return total / len(x), right / len(x)


def stacked_loss_and_accuracy(out: torch.Tensor, y: torch.Tensor) -> list[tuple[float, float]]:
    """:func:`loss_and_accuracy` of M models at once, from their logits ``out`` (M, n, C) on labels ``y``, (n,)
    shared or (M, n) each their own; one read-back for all."""
    m, n = out.shape[:2]
    if not n:
        return [(0.0, 0.0)] * m
    labels = y.expand(m, n) if y.dim() == 1 else y
    losses = classification_loss(out.flatten(0, 1), labels.flatten(), reduction="none").view(m, n).sum(1)
    correct = (out.argmax(dim=2) == labels).sum(1)
    rows = torch.stack([losses.double(), correct.double()], dim=1).tolist()
    return [(total / n, right / n) for total, right in rows]


# ----------------------------------------------------------------------------- test-time views
def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The images moved by (dy, dx) pixels, the uncovered border repeated from the edge."""
    h, w = x.shape[2:]
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return padded[:, :, p - dy:p - dy + h, p - dx:p - dx + w]


TTA_VIEWS: dict[str, list[Callable[[torch.Tensor], torch.Tensor]]] = {
    "none": [lambda x: x],
    # the image and its four one-pixel shifts: for digits and MNIST, whose class survives a small move
    "shift": [lambda x: x] + [lambda x, d=d: _shift(x, *d) for d in ((1, 0), (-1, 0), (0, 1), (0, -1))],
    # the image and its mirror: for photographs (CIFAR-10), never for digits or text
    "flip": [lambda x: x, lambda x: x.flip(3)],
}
TTA_VIEWS["shift+flip"] = TTA_VIEWS["shift"] + [lambda x, v=v: v(x.flip(3)) for v in TTA_VIEWS["shift"]]


def probabilities(model: nn.Module, x: torch.Tensor, tta: str = "none",
                  advance: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Softmax of the model's logits on preprocessed ``x``, averaged over the views of ``tta``; ``advance(len(x))``
    after each view, where given (a progress count)."""
    if tta not in TTA_VIEWS:
        raise ConfigError(f"tta={tta!r} is not allowed: one of {', '.join(TTA_VIEWS)}.")
    total = 0
    for view in TTA_VIEWS[tta]:
        total = total + torch.softmax(logits(model, view(x)).double(), dim=1)
        if advance is not None:
            advance(len(x))
    return total / len(TTA_VIEWS[tta])


def nll_and_accuracy(probs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean negative log-likelihood and accuracy of averaged probabilities (an ensemble's loss and accuracy)."""
    picked = probs.gather(1, y[:, None]).clamp_min(1e-300)
    return float(-picked.log().mean()), float((probs.argmax(1) == y).double().mean())
