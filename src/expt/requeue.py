"""A job that its cluster requeues continues from the checkpoint it left in its own run directory.

A cluster job that is preempted or reaches its time limit is started again by its launcher
(submitit requeues it) with the same overrides and therefore the same run directory. When
``EXPT_RESUME_OWN_CHECKPOINT=1`` is in the job's environment (the ``slurm_gpu`` launcher preset
sets it through ``hydra.job.env_set``) and ``trainer.resume`` is not set, a run whose directory
holds ``checkpoints/last.pt`` resumes from it, as ``trainer.resume=<run dir>`` would; a run whose
directory holds none starts from scratch.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence

from omegaconf import DictConfig

from expt import checkpoint
from expt.overrides import shell_override
from expt.status import INTERRUPTED, RECORDS_FILE, read_metrics

ENV = "EXPT_RESUME_OWN_CHECKPOINT"
ON = ("1", "true", "yes")
log = logging.getLogger(__name__)


def continue_sweep(sweep_dir: str | Path) -> str:
    """What a multirun stopped by Ctrl-C or SIGTERM prints: the same command, in the same sweep directory, with
    ``EXPT_RESUME_OWN_CHECKPOINT=1``, continues every job from its own checkpoint."""
    where = shell_override("hydra.sweep.dir", str(sweep_dir))
    return (f"To continue the sweep: run the same command again with {where} and {ENV}=1 in the environment (each "
            "job continues from the checkpoint in its directory; a coarse_to_fine sweep skips the trials it recorded).")


_told: set[str] = set()  # the sweeps this process has said how to continue (a job's stop reaches the sweeper too)


def tell_how_to_continue(sweep_dir: str | Path, run_dirs: Sequence[str | Path], shown: Optional[str] = None) -> None:
    """Print :func:`continue_sweep` on stderr where a multirun stopped in ``sweep_dir`` while ``run_dirs`` trained
    leaves work to continue (:func:`sweep_to_continue`), once a process: the job that was stopped, the launcher
    and the sweeper each say it where the stop reaches them. ``shown``: the directory as the command wrote it."""
    import sys

    key = str(Path(sweep_dir).resolve())
    if key not in _told and sweep_to_continue(sweep_dir, run_dirs):
        _told.add(key)
        print(continue_sweep(shown if shown is not None else sweep_dir), file=sys.stderr)


def sweep_to_continue(sweep_dir: str | Path, run_dirs: Sequence[str | Path]) -> bool:
    """Whether a multirun stopped in ``sweep_dir`` while ``run_dirs`` trained leaves work to continue: one of those
    runs to resume (:func:`stopped_run_here`), or trials a coarse-to-fine sweep recorded (``search.jsonl``), which
    the same command skips. A sweep's trials are often shorter than the checkpoint interval, so a stop usually
    finds no checkpoint of the trial it interrupts."""
    records = Path(sweep_dir) / RECORDS_FILE
    return any(stopped_run_here(d) for d in run_dirs) or (records.is_file() and records.stat().st_size > 0)


def stopped_run_here(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run that a stop (Ctrl-C, SIGTERM, a full disk) left to continue: its ``last.pt``,
    and no ``metrics.json`` saying that it ended otherwise (an earlier run, which a new run stopped before it began
    leaves whole, is no run to resume)."""
    if not (Path(run_dir) / checkpoint.DIR / checkpoint.LAST).is_file():
        return False
    metrics = read_metrics(Path(run_dir))
    return metrics is None or metrics.get("status") == INTERRUPTED


def own_checkpoint(run_dir: str | Path, env: Mapping[str, str]) -> Optional[Path]:
    """``<run_dir>/checkpoints/last.pt`` when ``env`` asks for it (``EXPT_RESUME_OWN_CHECKPOINT``) and it exists."""
    if env.get(ENV, "").strip().lower() not in ON:
        return None
    path = Path(run_dir) / checkpoint.DIR / checkpoint.LAST
    return path if path.is_file() else None


def resume_own_checkpoint(cfg: DictConfig, run_dir: str | Path, env: Mapping[str, str]) -> DictConfig:
    """``cfg``, or a copy of it that resumes from the run directory's own last.pt (see the module)."""
    if cfg.trainer.get("resume"):
        return cfg
    path = own_checkpoint(run_dir, env)
    if path is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.trainer.resume = str(path)
    log.info("%s: resuming from %s, left by an earlier attempt of this job", ENV, path)
    return cfg
