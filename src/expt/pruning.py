"""Early stopping inside a sweep round: each trial reports its score per epoch and stops when clearly behind.

The trials of a round append ``{"round", "job", "epoch", "score"}`` lines to one file in the sweep
directory (``progress.jsonl``, written with :func:`expt.jsonl.append_line`, so parallel processes
can share it). After each epoch a trial reports its best validation accuracy so far and applies
the **median rule**: from ``warmup_epochs`` on, once at least ``min_trials`` other trials of its
round have reported that epoch, it stops when its score is below their median.

The median rule needs no coordination: a trial compares itself with whatever the others have
reported, so it works the same whether the launcher runs trials one after another or many at
once, and a stopped trial never holds back the rest. (Successive halving decides at fixed rungs
over a full cohort, which a launcher that runs each trial start to finish cannot provide.)

The sweeper switches it on for a trial through environment variables, which :mod:`expt.sweep_env`
reads at the trial's edge into a :class:`ProgressReport` handed to ``Trainer.fit``; outside a sweep
there is none and nothing is reported.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from expt.jsonl import append_line, keep_lines, read_lines
from expt.values import is_number

PROGRESS_FILE = "progress.jsonl"


@dataclass(frozen=True)
class MedianRule:
    """Stop a trial whose score is below the median of at least ``min_trials`` others at the same epoch."""

    min_trials: int = 3
    warmup_epochs: int = 1

    def should_stop(self, epoch: int, score: float, others: list[float]) -> bool:
        if epoch < self.warmup_epochs or len(others) < self.min_trials:
            return False
        return score < statistics.median(others)

    def encode(self) -> str:
        return f"{self.min_trials}:{self.warmup_epochs}"

    @classmethod
    def decode(cls, text: str) -> "MedianRule":
        min_trials, warmup = (int(part) for part in text.split(":"))
        return cls(min_trials, warmup)


class ProgressReport:
    """One trial's side of the progress file: report a score, learn whether to stop."""

    def __init__(self, path: Path, round_number: int, job: int, rule: MedianRule) -> None:
        self.path = Path(path)
        self.round = round_number
        self.job = job
        self.rule = rule

    def scores_at(self, epoch: int) -> dict[int, float]:
        """The other trials' latest score at ``epoch`` in this round, by job (a re-run's line wins)."""
        scores: dict[int, float] = {}
        for _, line in read_lines(self.path):
            if (line.get("round") == self.round and line.get("epoch") == epoch
                    and line.get("job") != self.job and is_number(line.get("score"))):
                scores[int(line["job"])] = float(line["score"])
        return scores

    def report(self, epoch: int, score: float) -> bool:
        """Record this epoch's score; True when the trial should stop here."""
        append_line(self.path, {"round": self.round, "job": self.job, "epoch": epoch, "score": score})
        return self.rule.should_stop(epoch, score, list(self.scores_at(epoch).values()))


def forget_progress(path: Path, round_number: int, jobs: list[int]) -> None:
    """Remove the scores that ``jobs`` of a round reported before the sweep stopped: run again, they report anew,
    and the trials around them must not compare themselves with an attempt that never finished."""
    gone = set(jobs)
    keep_lines(path, lambda line: not (line.get("round") == round_number and line.get("job") in gone))
