"""Trials: the spec of a trial to run, the record of a finished one, and ``search.jsonl``.

Records are appended one line at a time under a lock, so parallel trials can write them as they
finish, and read back by trial key, which is what lets a stopped sweep resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from expt import faults
from expt.search.space import Value

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
    def key(self) -> tuple[int, tuple[str, ...]]:
        """What identifies the trial across re-runs of the same sweep (for resuming)."""
        return (self.round, self.overrides)


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

    @property
    def key(self) -> tuple[int, tuple[str, ...]]:
        return (self.round, tuple(self.overrides))

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None or k == "objective"}
        return json.dumps(data, sort_keys=False, allow_nan=False)

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


def read_records(path: Path) -> dict[tuple[int, tuple[str, ...]], TrialRecord]:
    """Records already in a ``search.jsonl``, by trial key (the last line for a key wins).

    A truncated last line (a sweep killed while writing) is ignored.
    """
    records: dict[tuple[int, tuple[str, ...]], TrialRecord] = {}
    if not path.exists():
        return records
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = TrialRecord.from_dict(json.loads(line))
        except (ValueError, TypeError) as error:
            log.warning("%s:%d is not a trial record, ignored (%s)", path, number, error)
            continue
        records[record.key] = record
    return records


def append_record(path: Path, record: TrialRecord) -> None:
    """Append one line in a single write under an exclusive lock, so parallel trials do not interleave.

    A line cut short by a kill is left where it is (:func:`read_records` skips it) and the new
    record starts on a line of its own.
    """
    line = (record.to_json() + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        faults.write(handle, line, path.name)
        handle.flush()
    faults.crash_point(f"{path.name}:appended")
