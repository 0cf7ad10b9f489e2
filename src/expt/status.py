"""How a run ended, and the file that says so: shared by the trainer, the sweeper and the evaluation.

``metrics.json`` in a run directory is the contract between a run and whatever reads it
afterwards (the sweeper's records, ``python -m expt.evaluate``, a user's notebook). It is
written once, atomically, when the run ends; its ``status`` is one of the names below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from expt.files import replacing
from expt.values import is_number

COMPLETED = "completed"  # every epoch ran
DIVERGED = "diverged"  # stopped on a NaN/Inf loss or one above trainer.divergence_factor x the initial loss
INTERRUPTED = "interrupted"  # Ctrl-C; checkpoints/last.pt resumes it
FAILED = "failed"  # an error stopped it (recorded by the sweeper; a run that raises writes no metrics.json)
PRUNED = "pruned"  # a sweep stopped it early, behind the other trials of its round (expt.pruning)
STATUSES = (COMPLETED, DIVERGED, INTERRUPTED, FAILED, PRUNED)

METRICS_FILE = "metrics.json"
LABEL_FILE = "run_label.txt"  # the run's name in TensorBoard, for python -m expt.board (expt.dashboard writes it)
EVENTS_GLOB = "events.out.tfevents.*"  # a run's TensorBoard event files
MULTIRUN_FILE = "multirun.yaml"  # a sweep's config, in its directory (Hydra's launchers and expt's sweeper write it)
# what ``python -m expt.evaluate DIR`` writes into DIR (a run's or a sweep's directory): its result, and its
# TensorBoard record
EVALUATION_FILE, EVALUATION_DIR = "evaluation.json", "evaluation"
# what ``mode=sanity`` writes into its run directory: the report, and the folder of its overfit check's run (a
# run of a tiny set with regularization off: a check, never a member of an ensemble)
SANITY_FILE, SANITY_DIR = "sanity.json", "sanity"
RECORDS_FILE = "search.jsonl"  # in a coarse-to-fine sweep's directory: a line per finished trial (expt.search)
# Keys every metrics.json holds (``history`` has one row per epoch: epoch, train_loss, train_acc,
# val_loss, val_acc, lr, seconds). ``objective`` is what a sweep optimises: the best validation
# accuracy of a completed (or pruned) run, 0.0 for any other; ``best_val_loss`` is the validation
# loss of that epoch (the sweeper's tie-breaker); ``train_samples`` and ``val_samples`` are the sizes of the
# training and validation splits.
METRICS_KEYS = (
    "status", "best_val_acc", "best_val_loss", "train_samples", "val_samples", "best_epoch", "best_averaged",
    "final_val_acc", "final_val_loss", "test_acc", "test_loss", "epochs_completed", "initial_loss",
    "final_train_loss", "seconds", "compile_warmup_seconds", "objective", "history",
)


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """``run_dir/metrics.json`` (:func:`write_json`)."""
    write_json(Path(run_dir) / METRICS_FILE, metrics)


def write_json(path: Path, value: Any) -> None:
    """A run's JSON record (``metrics.json``, ``sanity.json``, ``evaluation.json``), written to a temporary file and
    renamed (:func:`expt.files.replacing`): a reader never sees half a file. It is strict JSON: a number that is not
    finite (a NaN loss, the seconds of a run stopped before it started) is written as null, which every JSON reader
    takes (``jq``, JavaScript)."""
    with replacing(path) as handle:
        handle.write(json.dumps(_finite(value), indent=2, allow_nan=False).encode("utf-8"))


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite, at any depth, as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_metrics(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's metrics, or None where it has none (not finished, or not an expt run)."""
    try:
        data = json.loads((Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RunResult(float):
    """What a run's task function returns to Hydra: the objective, a float as every sweeper reads it
    (Optuna's ``float(value)``, Nevergrad's arithmetic), carrying the run's whole metrics dict (``metrics``: what
    ``metrics.json`` holds), which the coarse-to-fine sweeper records (status, tie-breaker, test accuracy, ...).

    It reaches the sweeper as Hydra's ``JobReturn.return_value`` through any launcher (it pickles with its
    metrics); ``metrics.json`` stays the run's record on disk. A missing or non-numeric objective is NaN.
    """

    metrics: dict[str, Any]

    def __new__(cls, metrics: dict[str, Any]) -> "RunResult":
        objective = metrics.get("objective")
        number = float(objective) if is_number(objective) else math.nan
        result = super().__new__(cls, number)
        result.metrics = dict(metrics)
        return result

    def __reduce__(self) -> tuple:
        return (type(self), (self.metrics,))

    def __repr__(self) -> str:
        return f"RunResult({float(self)!r}, status={self.metrics.get('status')!r})"

    def __str__(self) -> str:  # printed as the number it is
        return repr(float(self))
