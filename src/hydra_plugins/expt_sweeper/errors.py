"""Errors of multiruns as Hydra prints them: the paragraph alone, no traceback.

Hydra prints any exception that leaves a sweeper (or a job's ``return_value``) with its stack
trace, except a :class:`hydra.errors.CompactHydraException`, which it prints as its message and
exits 1 (``HYDRA_FULL_ERROR=1`` still shows the traceback). The two classes here are that and
the expt error they stand for, so code that catches ``SearchConfigError`` or ``ConfigError``
keeps working.
"""

from __future__ import annotations

from hydra.errors import CompactHydraException

from expt.errors import ConfigError
from expt.search import SearchConfigError

PREFIX = "Error in the config: "


class SweepConfigError(SearchConfigError, CompactHydraException):
    """A sweeper setting or search space that cannot run, found before the first trial."""


class SweepFailedError(CompactHydraException):
    """A sweep none of whose trials gave a score: says how they ended and why the first failed."""


class TrialConfigError(ConfigError, CompactHydraException):
    """A job of a multirun whose config cannot run: it trains nothing, the other jobs go on."""


def compact(error: SearchConfigError) -> SweepConfigError:
    """``error`` as Hydra prints it: ``Error in the config: <paragraph>``."""
    text = str(error)
    return SweepConfigError(text if text.startswith(PREFIX) else PREFIX + text)
