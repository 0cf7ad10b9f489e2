"""Every trial's record: made from what its task returned, appended to ``search.jsonl`` as it finishes.

A trial's result takes one path: its task function's return value (expt returns an
:class:`expt.status.RunResult`, the objective carrying the run's metrics) becomes its record
(:func:`trial_record`), in the trial's own job as it finishes (:class:`RecordingTask`, which
appends it to ``search.jsonl`` and returns it as the job's ``JobReturn.return_value``; a population's
member goes through it too, see :meth:`RecordingTask.around`) or, for a job that failed outside it,
in the sweeper from the ``JobReturn``.
"""

import copy
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import TaskFunction
from omegaconf import DictConfig

from expt.search import RECORDS_FILE, TrialRecord, TrialSpec, append_record, as_objective, returned_metrics
from expt.status import COMPLETED, DIVERGED, FAILED
from expt.values import is_integer

from .errors import describe


class RecordingTask:
    """The task function as the launcher sees it: runs the trial, appends its record and returns it.

    Records are written by the job itself, the moment it finishes, so a sweep that is stopped
    mid-round keeps every finished trial. A trial that raises is recorded as failed and its job
    completes with that record: the sweep goes on. Instances are pickled to parallel and remote
    workers (joblib, submitit) with the trial table of the batch being launched.
    """

    def __init__(self, task_function: TaskFunction, records_path: Path) -> None:
        self.task_function = task_function
        self.records_path = records_path
        self.trials: Dict[int, Dict[str, Any]] = {}
        self.timed = True  # the record's seconds are the task's; else the run's own (metrics' seconds)

    def around(self, task: TaskFunction) -> "RecordingTask":
        """This recording around ``task`` instead of the trial's task function: for a launcher that trained the
        job already and hands its result back through ``task`` (the population launcher's members), so the
        record is appended as that job ends; its seconds are the run's own."""
        twin = copy.copy(self)
        twin.task_function, twin.timed = task, False
        return twin

    def __call__(self, cfg: DictConfig) -> Any:
        hydra_cfg = HydraConfig.get()
        trial = self.trials.get(int(hydra_cfg.job.num))
        if trial is None:
            return self.task_function(cfg)
        run_dir = relative(Path(hydra_cfg.runtime.output_dir), self.records_path.parent)
        start = time.time()

        def seconds() -> Optional[float]:
            return time.time() - start if self.timed else None

        try:
            value = self.task_function(cfg)
        except Exception as error:
            record = trial_record(trial, None, seconds(), run_dir, error)
        else:
            record = trial_record(trial, value, seconds(), run_dir)
        append_record(self.records_path, record)
        return record


def trial_record(trial: Mapping[str, Any], value: Any, seconds: Optional[float], run_dir: Optional[str],
                 error: Optional[BaseException] = None) -> TrialRecord:
    """A finished trial's line of ``search.jsonl``, from what its task returned (``value``) or the error it raised.

    The one place a trial's result becomes its record: the objective, the status (the run's own, else
    completed, or diverged without a finite objective), and from the run's metrics the tie-breaker, the
    pinpoint metric, the validation split's size, the test accuracy and the epochs trained. ``seconds``
    None: the run's own ``seconds`` (a job that did not time the trial itself).
    """
    metrics = returned_metrics(value) if error is None else {}
    objective = as_objective(metrics.get("objective"))
    status = metrics["status"] if isinstance(metrics.get("status"), str) else COMPLETED
    if error is not None:
        status = FAILED
    elif status == COMPLETED and objective is None:
        status = DIVERGED
    if seconds is None:
        seconds = metrics["seconds"] if as_objective(metrics.get("seconds")) is not None else 0.0

    def lookup(key: Optional[str]) -> Optional[float]:
        return as_objective(_lookup(metrics, key)) if key else None

    def integer(key: str) -> Optional[int]:
        return metrics[key] if is_integer(metrics.get(key)) else None

    return TrialRecord(round=trial["round"], job=trial["job"], overrides=list(trial["overrides"]),
                       values=dict(trial["values"]), objective=objective, status=status, seconds=round(seconds, 3),
                       run_dir=run_dir, metric=lookup(trial.get("metric")),
                       error=None if error is None else describe(error), tie_value=lookup(trial.get("tie_break")),
                       val_samples=integer("val_samples"), test_acc=as_objective(metrics.get("test_acc")),
                       epochs=integer("epochs_completed"))


def trial_fields(spec: TrialSpec, metric: Optional[str] = None, tie_break: Optional[str] = None) -> Dict[str, Any]:
    """A trial as :attr:`RecordingTask.trials` holds it (``metric``, ``tie_break``: keys of the run's metrics to record)."""
    return {"round": spec.round, "job": spec.job, "overrides": list(spec.overrides),
            "values": dict(spec.values), "metric": metric, "tie_break": tie_break}


def _lookup(data: Any, dotted: str) -> Any:
    """``history.-1.train_acc``: keys of mappings and (possibly negative) indices of lists."""
    for part in dotted.split("."):
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` where it lies below it, else as it is."""
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
