"""The Hydra callback that readies the run directory before Hydra writes there: it stops, with one paragraph, where
Hydra would fail to create it, or where another process trains in it; and it keeps the record (``.hydra/``) of a
run the directory holds, which a command refused for its config puts back (:func:`restore_earlier_record`)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from expt.status import METRICS_FILE, MULTIRUN_FILE, RECORDS_FILE

RECORD_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")  # what Hydra writes in a run's .hydra/ before its task
RUN_FILES = (METRICS_FILE, "checkpoints/last.pt", "checkpoints/best.pt")  # what says a run was there
# a lone run's directory -> its .hydra/ files and its run files' modification times, before Hydra wrote there
_earlier: dict[str, tuple[dict[Path, bytes], dict[str, Optional[int]]]] = {}


def _run_files(run_dir: Path) -> dict[str, Optional[int]]:
    times: dict[str, Optional[int]] = {}
    for name in RUN_FILES:
        try:
            times[name] = (run_dir / name).stat().st_mtime_ns
        except OSError:
            times[name] = None
    return times


def keep_earlier_record(run_dir: Path, subdir: Optional[str]) -> None:
    """Before Hydra writes ``run_dir``'s ``.hydra/`` (``subdir``): keep the record it holds of an earlier run."""
    if subdir is None:
        return
    files = {}
    for name in RECORD_FILES:
        with contextlib.suppress(OSError):
            files[run_dir / subdir / name] = (run_dir / subdir / name).read_bytes()
    if files:
        _earlier[os.path.realpath(run_dir)] = (files, _run_files(run_dir))


def restore_earlier_record(run_dir: Path | str) -> bool:
    """After a command into ``run_dir`` stopped for its config (a bad value, a resume refused): put back the
    ``.hydra/`` files Hydra had replaced, where the earlier run's files are as they were (the command trained
    nothing there), so the directory's record still says what its run trained. True when put back."""
    from expt.files import replacing

    kept = _earlier.pop(os.path.realpath(run_dir), None)
    if kept is None or _run_files(Path(run_dir)) != kept[1]:
        return False
    for path, data in kept[0].items():
        with contextlib.suppress(OSError), replacing(path) as f:
            f.write(data)
    return True


def output_dir_problem(path: str, create: bool = False) -> Optional[str]:
    """Why Hydra could not create or write the run directory ``path``, or None when it can.

    ``create=True`` also makes the directory (as Hydra is about to), which catches what the checks
    cannot see, such as a read-only file system. An empty path (``hydra.run.dir=$OUT`` with ``$OUT`` unset) would
    be the directory the command runs from, where a run started anew removes the files an earlier run left: it is
    refused (``.`` says so on purpose).
    """
    if not path.strip():
        return ("is empty (an unset shell variable?): the run would write into the directory the command runs from, "
                "replacing the run files there")
    target = Path(os.path.abspath(path))
    existing = target
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            if existing == target:
                return "is an existing file, not a directory"
            return f"cannot be created: {existing} is a file, not a directory"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "is not writable" if existing == target else f"cannot be created: {existing} is not writable"
    if create:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot be created ({exc.strerror or exc})"
    return None


def _another_sweepers(sweep_dir: Path) -> bool:
    """Whether ``sweep_dir`` holds a multirun of a sweeper other than the coarse-to-fine one (its ``multirun.yaml``
    says which) with a finished job (a ``metrics.json``)."""
    import yaml

    try:
        written = yaml.safe_load((sweep_dir / MULTIRUN_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    return not (isinstance(written, dict) and _searches(OmegaConf.create(written))) \
        and any(sweep_dir.glob(f"*/{METRICS_FILE}"))


def _searches(config: Any) -> bool:
    """Whether ``config``'s sweeper is the coarse-to-fine one."""
    return "expt_sweeper" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")


class OutputDirCheck(Callback):
    """Stop before Hydra creates the run (or sweep) directory when it cannot: one paragraph, exit 1.

    Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Hydra would otherwise fail in
    its own ``mkdir`` with a traceback. With ``HYDRA_FULL_ERROR=1`` it leaves Hydra's error alone.

    A lone run's directory is also locked here (:func:`expt.files.only_writer`), until the run ends: Hydra writes
    ``.hydra/`` and the job's log there before the task starts, so a second ``python -m expt`` into a directory
    where a run still trains is refused before it rewrites the first run's ``.hydra/config.yaml``.
    """

    def __init__(self) -> None:
        self._lock = contextlib.ExitStack()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir", "outputs/<date>/<time>", create=True)
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        self._hold(run_dir)
        subdir = OmegaConf.select(config, "hydra.output_subdir")
        keep_earlier_record(run_dir, None if subdir is None else str(subdir))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._lock.close()

    def _hold(self, run_dir: Path) -> None:
        from expt.errors import StorageError
        from expt.files import only_writer

        with contextlib.suppress(OSError):  # made by _check already, unless HYDRA_FULL_ERROR=1 left it to Hydra
            run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.enter_context(only_writer(run_dir, StorageError))
        except StorageError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"Error: {exc}\nSet HYDRA_FULL_ERROR=1 for a complete stack trace.", file=sys.stderr)
            raise SystemExit(1) from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir", "multirun/<date>/<time>", create=False)
        self._keep_search(config)

    @staticmethod
    def _keep_search(config: DictConfig) -> None:
        """Stop a multirun of another sweeper in a directory that holds a coarse-to-fine search: its jobs 0, 1, ...
        would replace the search's trials, and its ``search.jsonl`` would describe runs that are gone. And stop a
        coarse-to-fine search in a directory that holds another sweeper's multirun (its ``multirun.yaml`` names that
        sweeper, and no search is recorded): the search's trials 0, 1, ... would replace its finished jobs."""
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
        if sweep_dir is None:
            return
        sweep_dir = Path(str(sweep_dir))
        searching = _searches(config)
        if not searching and (sweep_dir / RECORDS_FILE).is_file():
            message = (f"hydra.sweep.dir={str(sweep_dir)!r} holds a coarse_to_fine search ({RECORDS_FILE}); this "
                       "multirun's jobs would replace its trials. Give this multirun another hydra.sweep.dir, or add "
                       "hydra/sweeper=coarse_to_fine to continue that search.")
        elif searching and not (sweep_dir / RECORDS_FILE).is_file() and _another_sweepers(sweep_dir):
            message = (f"hydra.sweep.dir={str(sweep_dir)!r} holds the jobs of a multirun of another sweeper "
                       f"({MULTIRUN_FILE}); this search's trials would replace them. Give this search another "
                       "hydra.sweep.dir.")
        else:
            return
        # also under HYDRA_FULL_ERROR=1: Hydra turns a callback's exception into a warning and goes on
        print(f"Error in the config: {message}", file=sys.stderr)
        raise SystemExit(1)

    @staticmethod
    def _check(config: DictConfig, key: str, default: str, create: bool) -> None:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return
        path = OmegaConf.select(config, key)
        problem = output_dir_problem(str(path), create) if path is not None else None
        if problem is not None:
            print(
                f"Error in the config: {key}={str(path)!r} {problem}; point {key} at a directory that can be "
                f"created and written to, or leave it out (the default is {default}).\n"
                "Set HYDRA_FULL_ERROR=1 for a complete stack trace.",
                file=sys.stderr,
            )
            raise SystemExit(1)
