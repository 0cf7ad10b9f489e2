"""A run as an application: build, the Trainer, metrics.json, Ctrl-C and errors.

:func:`train` is what ``python -m expt`` and ``expt.train`` call: it builds the experiment,
trains it with :class:`expt.trainer.Trainer` (whose loss at init the sanity guard judges first, and which writes
``metrics.json`` and the HParams record), and keeps what a failure or Ctrl-C leaves. It is a
trial's edge: what a sweep tells the trial through the environment (:mod:`expt.sweep_env`) is read
here, once, and handed to the trainer (early stopping) and the dashboard (round, label) as values.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from expt.build import build
from expt.config import on_schema
from expt.dashboard import Dashboard, sweep_context
from expt.errors import ConfigError, StorageError
from expt.files import only_writer
from expt.output_dir import output_dir_problem
from expt.requeue import resume_own_checkpoint
from expt.sweep_env import SweepTrial
from expt.trainer import Trainer

log = logging.getLogger(__name__)


def default_run_dir() -> Path:
    """Hydra's output directory inside a Hydra job; otherwise a new directory ``outputs/<date>/<time>``, created here,
    with ``-1``, ``-2``, ... added where a run of the same second has it (runs started in a loop would replace
    each other)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    base = Path("outputs") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        path = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()  # taken by this process alone, even where several start in one second
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{base} and 10,000 numbered directories beside it exist already; give run_dir")


def in_sweep() -> bool:
    """Whether this run is a job of a Hydra multirun (its trials print nothing extra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def train(cfg: DictConfig, run_dir: str | Path | None = None, sweep: SweepTrial | None = None) -> dict[str, Any]:
    """Train and evaluate the run ``cfg`` describes; write checkpoints, events and metrics.json to ``run_dir``.

    Returns the metrics dict (also saved as ``metrics.json``). ``metrics["objective"]`` is
    the best validation accuracy, or 0.0 (the worst) when the run diverged. ``sweep``: where the run
    stands in a sweep; by default what the sweep's environment variables say (empty outside a sweep: none).
    """
    cfg = on_schema(cfg)  # a config loaded from a run's .hydra/config.yaml, or a dict, as compose types it
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    sweep = sweep if sweep is not None else SweepTrial.read()
    problem = output_dir_problem(str(run_dir), create=True)  # as the command line checks hydra.run.dir
    if problem is not None:
        raise ConfigError(f"run_dir={str(run_dir)!r} {problem}: give expt.train a directory it can create and write to.")
    with only_writer(run_dir, StorageError, "hydra.sweep.dir" if in_sweep() else "hydra.run.dir"):
        return _train(cfg, run_dir, sweep)


def _train(cfg: DictConfig, run_dir: Path, sweep: SweepTrial) -> dict[str, Any]:
    cfg = resume_own_checkpoint(cfg, run_dir, os.environ)  # a requeued cluster job (expt.requeue)
    exp = build(cfg)
    log.info("%s", exp.summary())
    dashboard = Dashboard(run_dir, cfg, sweep_context(sweep))
    trainer = Trainer.single(exp, run_dir, dashboard, progress=sys.stderr.isatty() and not in_sweep(),
                             report=sweep.progress_report())
    try:
        return trainer.fit()[0]  # which keeps what a stop leaves (Ctrl-C, a full disk, an error)
    finally:
        dashboard.close()
