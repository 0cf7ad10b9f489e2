"""The recipe's reading of the two learning curves, as one word per run: overfitting, underfitting or healthy.

:func:`diagnose` reads a run's per-epoch history (training and validation accuracy and data loss,
measured the same way each epoch) and applies the rule the README states:

- **overfitting**: the final train/val accuracy gap is above :data:`OVERFIT_GAP` (5 points), or it is
  above :data:`RISING_VAL_GAP` (2 points) while over the last epochs the validation loss rose and the
  training loss fell;
- **underfitting**: otherwise, when the final training accuracy is below :data:`UNDERFIT_TRAIN_ACC`
  (95%), or below :data:`FITTED` (99%) and still rising by more than :data:`STILL_LEARNING` (1 point)
  an epoch over the last epochs:
  the model has not fitted the training data yet (more capacity, less regularization, a better
  learning rate or more epochs);
- **healthy**: neither.

A run that diverged is ``diverged``; one without a finished epoch is ``not trained``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from expt.status import COMPLETED, DIVERGED

OVERFIT_GAP = 0.05
RISING_VAL_GAP = 0.02
UNDERFIT_TRAIN_ACC = 0.95
STILL_LEARNING = 0.01  # training accuracy gained per epoch, over the last epochs
FITTED = 0.99  # a training accuracy this high has nothing left to fit
TREND_EPOCHS = 3  # the last epochs a trend is read over (fewer when the run is shorter)
DIAGNOSES = ("healthy", "overfitting", "underfitting", "diverged", "not trained")


@dataclass
class Diagnosis:
    verdict: str  # one of DIAGNOSES
    train_acc: Optional[float] = None
    val_acc: Optional[float] = None
    gap: Optional[float] = None  # train_acc - val_acc, a fraction
    epochs: int = 0  # epochs the trends are read over (0: a single epoch, no trend)
    train_acc_trend: Optional[float] = None  # change per epoch, fractions
    val_acc_trend: Optional[float] = None
    val_loss_trend: Optional[float] = None
    train_loss_trend: Optional[float] = None

    def line(self) -> str:
        """``overfitting: train 100.0%, val 97.2% (gap 2.8 points); last 3 epochs, per epoch: ...``."""
        if self.train_acc is None or self.val_acc is None:
            return self.verdict
        text = (f"{self.verdict}: train {100 * self.train_acc:.1f}%, val {100 * self.val_acc:.1f}% "
                f"(gap {100 * self.gap:.1f} points)")
        if self.epochs:
            parts = [f"train acc {100 * self.train_acc_trend:+.1f}", f"val acc {100 * self.val_acc_trend:+.1f} points"]
            if self.val_loss_trend is not None:
                parts.append(f"val loss {self.val_loss_trend:+.3f}")
            if self.train_loss_trend is not None:
                parts.append(f"train loss {self.train_loss_trend:+.3f}")
            span = "over the last epoch" if self.epochs == 1 else f"last {self.epochs} epochs, per epoch"
            text += f"; {span}: " + ", ".join(parts)
        else:
            text += "; one epoch: no trend yet"
        return text


def _trend(rows: list[dict[str, Any]], key: str) -> Optional[float]:
    values = [row.get(key) for row in rows]
    if len(values) < 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return (values[-1] - values[0]) / (len(values) - 1)


def diagnose(history: list[dict[str, Any]], status: str = COMPLETED) -> Diagnosis:
    """The verdict of the module's rule on ``history`` (metrics.json's rows; epoch 0 rows are ignored)."""
    if status == DIVERGED:
        return Diagnosis("diverged")
    rows = [r for r in history if r.get("epoch", 1) > 0 and "train_acc" in r and "val_acc" in r]
    if not rows:
        return Diagnosis("not trained")
    last = rows[-1]
    train_acc, val_acc = float(last["train_acc"]), float(last["val_acc"])
    gap = train_acc - val_acc
    recent = rows[-(TREND_EPOCHS + 1):]  # TREND_EPOCHS differences
    d = Diagnosis("healthy", train_acc, val_acc, gap, len(recent) - 1 if len(recent) > 1 else 0,
                  _trend(recent, "train_acc"), _trend(recent, "val_acc"), _trend(recent, "val_loss"),
                  _trend(recent, "train_data_loss"))
    val_rising = d.val_loss_trend is not None and d.val_loss_trend > 0
    train_falling = d.train_loss_trend is not None and d.train_loss_trend < 0
    if gap > OVERFIT_GAP or (gap > RISING_VAL_GAP and val_rising and train_falling):
        d.verdict = "overfitting"
    elif train_acc < UNDERFIT_TRAIN_ACC or (
        train_acc < FITTED and d.train_acc_trend is not None and d.train_acc_trend > STILL_LEARNING
    ):
        d.verdict = "underfitting"
    return d
