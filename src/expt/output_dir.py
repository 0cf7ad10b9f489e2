"""The Hydra callback that stops, with one paragraph, before Hydra fails to create the run directory."""

from __future__ import annotations

from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def output_dir_problem(path: str, create: bool = False) -> Optional[str]:
    """Why Hydra could not create or write the run directory ``path``, or None when it can.

    ``create=True`` also makes the directory (as Hydra is about to), which catches what the checks
    cannot see, such as a read-only file system.
    """
    import os
    from pathlib import Path

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


class OutputDirCheck(Callback):
    """Stop before Hydra creates the run (or sweep) directory when it cannot: one paragraph, exit 1.

    Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Hydra would otherwise fail in
    its own ``mkdir`` with a traceback. With ``HYDRA_FULL_ERROR=1`` it leaves Hydra's error alone.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir", "outputs/<date>/<time>", create=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir", "multirun/<date>/<time>", create=False)

    @staticmethod
    def _check(config: DictConfig, key: str, default: str, create: bool) -> None:
        import os
        import sys

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
