"""Trials: the spec of a trial to run, the record of a finished one, and ``search.jsonl``.

Records are appended one line at a time under a lock (:mod:`expt.jsonl`), so parallel trials can
write them as they finish, and read back by trial key, which is what lets a stopped sweep resume.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from expt.jsonl import append_line, read_lines
from expt.search.space import Value
from expt.status import RECORDS_FILE, RunResult

log = logging.getLogger("expt.search")  # the search speaks under one name, as it did as one module


@dataclass(frozen=True)
class TrialSpec:
    """A trial to run: its round, index in the round, Hydra job number and full overrides."""

    round: int
    index: int
    job: int
    values: dict[str, Value]
    overrides: tuple[str, ...]

    @property
    def key(self) -> tuple[int, int]:
        """What identifies the trial across re-runs of the same sweep (for resuming): its round and job number.
        Two trials of a round may have the same overrides (a space with fewer points than the round has trials)."""
        return (self.round, self.job)


@dataclass
class TrialRecord:
    """A finished trial, one line of ``search.jsonl``."""

    round: int
    job: int
    overrides: list[str]
    values: dict[str, Value]
    objective: Optional[float]
    status: str
    seconds: float
    run_dir: Optional[str] = None
    metric: Optional[float] = None
    error: Optional[str] = None
    tie_value: Optional[float] = None  # the tie-breaker read from metrics.json (lower is better)
    val_samples: Optional[int] = None  # how many validation samples the objective was measured on
    test_acc: Optional[float] = None
    epochs: Optional[int] = None  # epochs the trial trained (fewer than asked when it was pruned)

    @property
    def key(self) -> tuple[int, int]:
        return (self.round, self.job)

    def to_dict(self) -> dict[str, Any]:
        """The line of ``search.jsonl``: every field that has a value (``objective`` always)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k == "objective"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialRecord":
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})


def as_objective(value: Any) -> Optional[float]:
    """The task's return value as a finite float, or None (NaN, inf, None, not a number)."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def returned_metrics(value: Any) -> dict[str, Any]:
    """What a trial's task function returned, as the metrics its record is made from.

    An :class:`expt.status.RunResult` (what ``python -m expt`` returns) gives its run's metrics, a mapping its
    keys (``objective``, ``status``, and whatever the tie-breaker or the pinpoint metric names), anything
    else is the objective alone.
    """
    if isinstance(value, RunResult):
        return dict(value.metrics)
    if isinstance(value, Mapping):
        return dict(value)
    return {"objective": value}


def read_records(path: Path) -> dict[tuple[int, int], TrialRecord]:
    """Records already in a ``search.jsonl``, by trial key (the last line for a key wins).

    A truncated last line (a sweep killed while writing) is ignored.
    """
    records: dict[tuple[int, int], TrialRecord] = {}
    for number, data in read_lines(path):
        try:
            record = TrialRecord.from_dict(data)
        except (ValueError, TypeError) as error:
            log.warning("%s:%d is not a trial record, ignored (%s)", path, number, error)
            continue
        records[record.key] = record
    return records


def append_record(path: Path, record: TrialRecord) -> None:
    """Append the record as one line of ``search.jsonl`` (:func:`expt.jsonl.append_line`: safe in parallel)."""
    append_line(path, record.to_dict())
