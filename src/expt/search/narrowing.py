"""How a round's best trials shape the next round's space of one parameter.

* **narrowing** - a numeric range shrinks to the span of the round's ``top_k`` trials plus a
  margin (in log space for log parameters); a choice keeps only the options seen among them;
* **edge moves** - when the round's best value sits in the outer part of its range and the
  trials there are clearly better than those inside (by more than a tie), the range is wrong
  rather than too wide, so it keeps its width and moves past that edge (:class:`EdgeMove`);
  the round before a stage's last one never moves a range, so the last round refines;
* **hard limits** - no range ever leaves the limits of its parameter (a probability stays in
  [0, 1), a log-scaled value stays positive, ...).

:func:`next_param` is the whole rule for one parameter; the search applies it to each parameter
of the round's stage and keeps the moves it returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Optional, Sequence

from expt.search.ranking import beats, score, tie_tolerance
from expt.search.records import TrialRecord
from expt.search.settings import Settings
from expt.search.space import ChoiceParam, NumericParam, Param, compact_number

log = logging.getLogger("expt.search")  # the search speaks under one name, as it did as one module


@dataclass(frozen=True)
class EdgeMove:
    """A range moved past an edge because the round's best value sat on it."""

    after_round: int
    param: str
    side: str
    best: float
    old: tuple[float, float]
    new: tuple[float, float]
    log: bool = False

    def message(self) -> str:
        def f(x: float) -> str:
            return compact_number(x, self.log)

        direction = "up" if self.side == "upper" else "down"
        return (f"best {self.param}={f(self.best)} is at the {self.side} edge of "
                f"[{f(self.old[0])}, {f(self.old[1])}]: moving the range {direction} "
                f"to [{f(self.new[0])}, {f(self.new[1])}]")


def next_param(n: int, param: Param, top: Sequence[TrialRecord], records: Sequence[TrialRecord],
               settings: Settings, widest: float, moves_done: int,
               moves: bool) -> tuple[Param, Optional[EdgeMove]]:
    """``param`` for the round after round ``n``, and the edge move that made it (None when it narrowed).

    ``top``: the round's best trials, best first, each with a score; ``records``: all of the round's
    trials; ``widest``: the parameter's widest width so far (in its transformed scale); ``moves_done``:
    how many times its range has moved; ``moves``: whether the next round may move a range at all.
    """
    if isinstance(param, ChoiceParam):
        seen = {str(r.values[param.name]) for r in top if param.name in r.values}
        kept = tuple(c for c in param.choices if c in seen) or param.choices
        return replace(param, choices=kept), None
    assert isinstance(param, NumericParam)
    having = [r for r in top if param.name in r.values]  # a trial whose option lacks it ran without it
    if not having:
        return param, None
    values = [float(r.values[param.name]) for r in having]
    return _next_range(n, param, values, having[0], records, settings, widest, moves_done, moves)


def _edge_is_better(param: NumericParam, side: str, best: TrialRecord, records: Sequence[TrialRecord],
                    settings: Settings) -> bool:
    """Whether the best trial beats every trial away from that edge by more than a tie.

    Without that, the parameter has no measurable effect there and moving the range would
    spend the next round on a guess.
    """
    lo, hi = param.to_t(param.low), param.to_t(param.high)
    width = hi - lo

    def at_edge(value: float) -> bool:
        position = (param.to_t(value) - lo) / width
        return position >= 1 - settings.edge if side == "upper" else position <= settings.edge

    inside = [s for r in records if param.name in r.values and not at_edge(float(r.values[param.name]))
              for s in [score(r, settings.direction)] if s is not None]
    best_score = score(best, settings.direction)
    if not inside or best_score is None:
        return True
    return beats(best_score, max(inside), tie_tolerance(best, settings.tie_samples))


def _next_range(n: int, param: NumericParam, top: Sequence[float], best_record: TrialRecord,
                records: Sequence[TrialRecord], settings: Settings, widest: float, moves_done: int,
                moves: bool) -> tuple[NumericParam, Optional[EdgeMove]]:
    """Narrow to the top trials' span plus a margin, or move the range past an edge.

    The margin may reach past the current bounds (never past the limits), so top trials
    crowding an edge let the range drift that way even before an edge move; not when the
    next round is the stage's last.
    """
    lo, hi = param.to_t(param.low), param.to_t(param.high)
    width = hi - lo
    if width <= 0:
        return param, None
    best = float(best_record.values[param.name])
    position = (param.to_t(best) - lo) / width
    side = ("upper" if position >= 1 - settings.edge else
            "lower" if position <= settings.edge else None)
    where = f"best {param.name}={compact_number(best, param.log)} is at the {side} edge of {param}"
    if side is not None and not moves:
        log.info("%s, but the next round is its stage's last, which refines: narrowing", where)
    elif side is not None and not _edge_is_better(param, side, best_record, records, settings):
        log.info("%s, but trials away from that edge score within a tie of it (no measurable "
                 "effect): narrowing", where)
    elif side is not None and moves_done < settings.max_edge_moves:
        moved = _move(param, best, side, widest)
        if moved is not None:
            move = EdgeMove(n, param.name, side, best, (param.low, param.high),
                            (moved.low, moved.high), param.log)
            log.info("%s", move.message())
            return moved, move
        log.info("%s, which is its limit %s: narrowing", where, param.limits)
    elif side is not None:
        log.info("%s, but it has already moved %d times (max_edge_moves): narrowing", where, moves_done)
    t_values = [param.to_t(v) for v in top]
    margin = settings.margin * width
    new_lo, new_hi = min(t_values) - margin, max(t_values) + margin
    excess = (new_hi - new_lo) - width
    if excess > 0:
        new_lo, new_hi = new_lo + excess / 2, new_hi - excess / 2
    if not moves:  # the stage's last round refines inside the range it has
        new_lo, new_hi = max(new_lo, lo), min(new_hi, hi)
    return param.with_range(param.from_t(new_lo), param.from_t(new_hi)), None


def _move(param: NumericParam, best: float, side: str, widest: float) -> Optional[NumericParam]:
    """Move the range so that three quarters of it lie past the edge.

    A best value on the edge means the narrowing so far assumed an optimum inside, so the
    moved range takes back the parameter's widest width (its initial one): a far optimum
    is reached in few moves, and on a flat dimension a spurious move costs nothing.
    Returns None when the limits leave no room past that edge.
    """
    lo, hi = param.to_t(param.low), param.to_t(param.high)
    width = max(hi - lo, widest)
    b = param.to_t(best)
    new_lo, new_hi = (b - width / 4, b + 3 * width / 4) if side == "upper" else (
        b - 3 * width / 4, b + width / 4)
    limit_lo, limit_hi = param.to_t(param.limits.low), param.to_t(param.limits.high)
    if new_hi > limit_hi:
        new_lo, new_hi = limit_hi - width, limit_hi
    if new_lo < limit_lo:
        new_lo, new_hi = limit_lo, limit_lo + width
    moved = param.with_range(param.from_t(new_lo), param.from_t(new_hi))
    if (side == "upper" and moved.high <= param.high) or (
            side == "lower" and moved.low >= param.low):
        return None
    return moved
