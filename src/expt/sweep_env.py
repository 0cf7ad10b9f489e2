"""What a sweep tells each of its trials about itself: the environment variables, written and read here only.

The coarse-to-fine sweeper sets them per trial through ``hydra.job.env_set`` (:meth:`SweepTrial.variables`),
so they reach the trial's own process under any launcher. The trial's edge reads them once
(:meth:`SweepTrial.read`: ``expt.run.train`` from its process's environment, the population launcher
from each job's ``env_set``) and hands plain values on: the trainer gets the early-stopping report
(:meth:`SweepTrial.progress_report`), the dashboard the round and label (``sweep_context``). Nothing
else reads these variables. expt's config declares them empty (so the sweeper sets them without ``+``, and the
launchers' job lines leave them out): outside a sweep they are empty or unset, and :meth:`SweepTrial.read` gives
``SweepTrial()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from expt.pruning import MedianRule, ProgressReport

ROUND = "EXPT_SWEEP_ROUND"  # the trial's round (0: the pinpoint stage)
JOB = "EXPT_SWEEP_JOB"  # its Hydra job number
FINAL = "EXPT_SWEEP_FINAL"  # 1 for the trials of the sweep's last round, 0 for the others
LABEL = "EXPT_SWEEP_LABEL"  # its short name (trial_name), e.g. "r2-j013 lr=0.003114 l2=0.0001235"
PROGRESS = "EXPT_SWEEP_PROGRESS"  # the round's progress file, set only where trials may be pruned
PRUNE = "EXPT_SWEEP_PRUNE"  # the pruning rule, "<min_trials>:<warmup_epochs>"


def trial_name(round: Optional[int], job: Optional[int], values: Sequence[str] = ()) -> str:
    """A sweep trial's name: its round and job number (zero-padded, so that names sort in job order), then the
    values it was given (``r2-j013 lr=0.003114 l2=0.0001235``). The sweeper names its trials so, and the dashboard
    names other sweeps' trials so."""
    head = "-".join(([f"r{round}"] if round is not None else []) + ([f"j{job:03d}"] if job is not None else []))
    return " ".join([head or "trial", *values])


@dataclass(frozen=True)
class SweepTrial:
    """Where a trial stands in a coarse-to-fine sweep; every field None outside one."""

    round: Optional[int] = None
    job: Optional[int] = None
    final: Optional[bool] = None  # whether its round is the sweep's last
    label: Optional[str] = None
    progress: Optional[Path] = None  # the round's progress file: set where the trial may be pruned
    rule: Optional[MedianRule] = None  # the pruning rule, with ``progress``

    @classmethod
    def read(cls, env: Optional[Mapping[str, object]] = None) -> "SweepTrial":
        """The trial's place from ``env`` (default ``os.environ``; a job's ``hydra.job.env_set`` works too)."""
        env = os.environ if env is None else env

        def text(name: str) -> str:
            value = env.get(name)
            return "" if value is None else str(value).strip()

        def number(name: str) -> Optional[int]:
            value = text(name)
            return int(value) if value.lstrip("-").isdigit() else None

        progress = text(PROGRESS)
        return cls(round=number(ROUND), job=number(JOB), final=(text(FINAL) == "1") if text(FINAL) else None,
                   label=text(LABEL) or None, progress=Path(progress) if progress else None,
                   rule=(MedianRule.decode(text(PRUNE)) if text(PRUNE) else MedianRule()) if progress else None)

    def variables(self) -> dict[str, str]:
        """The environment variables that tell a trial this (what :meth:`read` reads back)."""
        values = {ROUND: self.round, JOB: self.job, FINAL: None if self.final is None else int(self.final),
                  LABEL: self.label, PROGRESS: self.progress, PRUNE: self.rule.encode() if self.rule else None}
        return {name: str(value) for name, value in values.items() if value is not None}

    def progress_report(self) -> Optional[ProgressReport]:
        """The trial's side of its round's early stopping, or None where the sweep did not ask for it."""
        if self.progress is None or self.round is None or self.job is None:
            return None
        return ProgressReport(self.progress, self.round, self.job, self.rule or MedianRule())
