"""Everything a run writes for TensorBoard: ``tensorboard --logdir <run or sweep dir>`` shows it.

Scalar tags: ``loss/train`` (per step), ``loss/val``, ``accuracy/train``, ``accuracy/val``
and ``lr`` (per epoch; step = epoch number). Accuracies are fractions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from torch.utils.tensorboard import SummaryWriter


class Dashboard:
    def __init__(self, run_dir: Path):
        self.writer = SummaryWriter(log_dir=str(run_dir))

    def train_losses(self, first_step: int, losses: Iterable[float]) -> None:
        for offset, value in enumerate(losses):
            self.writer.add_scalar("loss/train", value, first_step + offset)

    def epoch(self, epoch: int, row: dict[str, float]) -> None:
        for tag, key in (("loss/val", "val_loss"), ("accuracy/train", "train_acc"),
                         ("accuracy/val", "val_acc"), ("lr", "lr")):
            if key in row:
                self.writer.add_scalar(tag, row[key], epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
