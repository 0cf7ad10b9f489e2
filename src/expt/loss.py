"""The losses, defined once: the trainer, the evaluation, the sanity checks and the dashboards call them.

Softmax cross-entropy of a batch's logits against its integer labels. Logits in half precision
(what autocast gives on CUDA) are taken to float32 first, so the loss is never computed in 16 bits.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

HALF = (torch.float16, torch.bfloat16)


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0, reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of ``logits`` (N, C) against ``labels`` (N,); ``label_smoothing`` as in the trainer's key."""
    if logits.dtype in HALF:
        logits = logits.float()
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction=reduction)


def training_loss(data_loss: float, penalty: Optional[float]) -> float:
    """The loss a run minimises and records as its training loss (at init, and the threshold of divergence): the
    data loss, plus the regularization penalty where the run has one."""
    return data_loss + (penalty or 0.0)
