"""A job of a multirun that stops for bad input or a full disk, as Hydra prints it: the paragraph alone.

Hydra prints any exception that leaves a job with its stack trace, except a
:class:`hydra.errors.CompactHydraException`, which it prints as its message (``HYDRA_FULL_ERROR=1`` still shows
the traceback). The classes here are that and the expt error they stand for, so that code which catches
``ConfigError`` or ``StorageError`` keeps working. ``python -m expt`` raises them for a job of any launcher; the
population launcher for a member it cannot train; the coarse-to-fine sweeper records them as a trial's error.
"""

from __future__ import annotations

from hydra.errors import CompactHydraException

from expt.errors import CONFIG_PREFIX as PREFIX, ConfigError, StorageError


class TrialConfigError(ConfigError, CompactHydraException):
    """A job of a multirun whose config cannot run: it trains nothing, the other jobs go on."""


class TrialStorageError(StorageError, CompactHydraException):
    """A job of a multirun that could not write a file it must keep (a full disk): it stops, the other jobs go on."""


class SanityChecksFailed(CompactHydraException):
    """A job of a multirun of ``mode=sanity`` whose checks did not all pass: it fails alone, the other jobs go on (a
    lone run exits 1 instead)."""


def as_trial_error(exc: BaseException) -> BaseException:
    """What a multirun job raises for ``exc``: bad input (a ConfigError) or a full disk (a StorageError) as its paragraph
    alone, the other errors as they are."""
    if isinstance(exc, CompactHydraException):
        return exc
    if isinstance(exc, ConfigError):
        return TrialConfigError(f"{PREFIX}{exc}")
    if isinstance(exc, StorageError):
        return TrialStorageError(str(exc))
    return exc
