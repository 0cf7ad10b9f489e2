"""Errors of multiruns as Hydra prints them (the paragraph alone, no traceback), and the text of trials' errors.

Hydra prints any exception that leaves a sweeper (or a job's ``return_value``) with its stack
trace, except a :class:`hydra.errors.CompactHydraException`, which it prints as its message and
exits 1 (``HYDRA_FULL_ERROR=1`` still shows the traceback). The classes here are that and
the expt error they stand for, so code that catches ``SearchConfigError`` keeps working; a job's own
(``TrialConfigError``, ``TrialStorageError``) come from :mod:`expt.job_errors`. A trial's error is kept in its
record as :func:`describe` words it, and a sweep none of whose trials gave a score ends with the paragraph of
:func:`no_score`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

from hydra.errors import CompactHydraException

from expt.job_errors import PREFIX, TrialConfigError, TrialStorageError
from expt.search import SearchConfigError, TrialRecord
from expt.status import FAILED

__all__ = ["PREFIX", "SweepConfigError", "SweepFailedError", "TrialConfigError", "TrialStorageError", "compact",
           "describe", "no_score"]


class SweepConfigError(SearchConfigError, CompactHydraException):
    """A sweeper setting or search space that cannot run, found before the first trial."""


class SweepFailedError(CompactHydraException):
    """A sweep none of whose trials gave a score: says how they ended and why the first failed."""


def compact(error: SearchConfigError) -> SweepConfigError:
    """``error`` as Hydra prints it: ``Error in the config: <paragraph>``."""
    text = str(error)
    return SweepConfigError(text if text.startswith(PREFIX) else PREFIX + text)


def describe(error: BaseException) -> str:
    """A trial's error as its record keeps it: ``Error in the config: ...`` or ``<type>: <message>`` (the expt
    error a compact one stands for: ``StorageError``, not ``TrialStorageError``)."""
    text = str(error)
    if text.startswith(PREFIX):
        return text
    kind = next(c for c in type(error).__mro__ if not issubclass(c, CompactHydraException))
    return f"{kind.__name__}: {text}"


def no_score(records: Sequence[TrialRecord], records_path: Path) -> str:
    """The paragraph that ends a sweep none of whose trials gave a score: how they ended, and the first error
    (``records_path``: the sweep's ``search.jsonl``)."""
    counts: Dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    ended = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    first = min((r for r in records if r.error), key=lambda r: r.job, default=None)
    if first is not None:
        why = (f"the first failure, job {first.job} (round {first.round}): {first.error}"
               + ("" if first.error.endswith(".") else "."))
        if counts.get(FAILED, 0) == len(records):
            why += (" A value every trial shares (pinned on the command line, in the config or in the"
                    " round's overrides) fails them all: fix it and run the sweep again.")
    else:
        why = ("no trial recorded an error; diverged trials stopped when their training loss became NaN or"
               " exceeded trainer.divergence_factor times its initial value: search lower learning rates.")
    return (f"Every trial of the sweep ended without a score ({len(records)} trial(s): {ended}), so nothing was "
            f"chosen; {why} Each trial's record is in {records_path}.")
