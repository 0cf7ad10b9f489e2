"""The ranking rule of a search: a trial's score, the tie between two scores, and the order of trials.

Trials are **ranked** by their score; scores within ``tie_samples`` validation samples of each
other count as tied and are ordered by ``tie_break`` (the validation loss), because a few
hundred validation samples move accuracy in visible steps. Pruned trials rank below every
completed one, failed and diverged ones last. The search, its summary and the sweep's pictures
(the star and the ringed ties) all rank by these functions.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

from expt.search.records import TrialRecord
from expt.status import COMPLETED, PRUNED


def score(record: TrialRecord, direction: str, use_metric: bool = False) -> Optional[float]:
    """Higher is better; None for a trial that did not complete (or returned no number)."""
    value = record.metric if use_metric else record.objective
    if record.status != COMPLETED or value is None or not math.isfinite(value):
        return None
    return value if direction == "maximize" else -value


def _partial(record: TrialRecord, direction: str) -> Optional[float]:
    """A pruned trial's last score, oriented like :func:`score`."""
    if record.status != PRUNED or record.objective is None or not math.isfinite(record.objective):
        return None
    return record.objective if direction == "maximize" else -record.objective


def tie_tolerance(record: TrialRecord, tie_samples: int) -> float:
    """How far below ``record``'s score another one still ties with it: ``tie_samples`` samples of its validation split."""
    if tie_samples <= 0 or not record.val_samples:
        return 0.0
    return tie_samples / record.val_samples


def beats(a: float, b: float, tolerance: float) -> bool:
    """Whether score ``a`` is better than ``b`` by more than ``tolerance`` (and more than rounding)."""
    return a - b > tolerance + 1e-9 * max(abs(a), abs(b))


def ranked(records: Iterable[TrialRecord], direction: str, use_metric: bool = False,
           tie_samples: int = 0) -> list[TrialRecord]:
    """Best first: completed trials, then pruned ones, then the rest in job order.

    Within a tier, the trials tied with the best remaining score (within :func:`tie_tolerance`) come first, the
    lowest ``tie_value`` first (then the higher score, then the earlier job); the ranking repeats that on what
    remains. The first trials are therefore those :func:`chosen_and_tied` names, and a trial never ranks below one
    whose score is lower than its own by more than a tie.
    """
    records = list(records)
    completed = [(r, score(r, direction, use_metric)) for r in records]
    tiers = [[(r, s) for r, s in completed if s is not None],
             [(r, p) for r, p in ((r, _partial(r, direction)) for r in records) if p is not None]]
    placed = {id(r) for tier in tiers for r, _ in tier}
    out: list[TrialRecord] = []
    for tier in tiers:
        remaining = sorted(tier, key=lambda item: (-item[1], item[0].job))
        while remaining:
            tied = _tied_with_top(remaining, tie_samples)
            out += [r for r, _ in tied]
            taken = {id(r) for r, _ in tied}
            remaining = [item for item in remaining if id(item[0]) not in taken]
    out += sorted((r for r in records if id(r) not in placed), key=lambda r: r.job)
    return out


def chosen_and_tied(records: Iterable[TrialRecord], direction: str, tie_samples: int = 0) -> list[TrialRecord]:
    """The trial the search chooses (the first of :func:`ranked`), then the other completed trials tied with the best
    score, in the order the tie rule puts them; empty when no trial completed with a score.

    The sweep's summary and its pictures (the star and the ringed ties) both come from this one rule.
    """
    scored = [(r, s) for r, s in ((r, score(r, direction)) for r in records) if s is not None]
    if not scored:
        return []
    return [r for r, _ in _tied_with_top(sorted(scored, key=lambda item: (-item[1], item[0].job)), tie_samples)]


def _tied_with_top(remaining: list[tuple[TrialRecord, float]], tie_samples: int) -> list[tuple[TrialRecord, float]]:
    """Of ``remaining`` (scored, best first), those tied with the top score, the leader first: the lowest
    ``tie_value``, then the higher score, then the earlier job."""
    top_record, top = remaining[0]
    tolerance = tie_tolerance(top_record, tie_samples)
    tied = [item for item in remaining if not beats(top, item[1], tolerance)]
    return sorted(tied, key=lambda item: (
        math.inf if item[0].tie_value is None else item[0].tie_value, -item[1], item[0].job))

