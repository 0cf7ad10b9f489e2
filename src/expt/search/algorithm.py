"""Coarse-to-fine random search, as the recipe (section 5) describes it.

A search runs in rounds. Each round samples trials at random from the current space
(log-uniformly for log-scaled parameters), the trials run, and the space for the next round
is derived from the round's best trials:

* **narrowing** - a numeric range shrinks to the span of the round's ``top_k`` trials plus a
  margin (in log space for log parameters); a choice keeps only the options seen among them;
* **edge moves** - when the round's best value sits in the outer part of its range, the
  range is wrong rather than too wide, so it keeps its width and moves past that edge;
* **hard limits** - no range ever leaves the limits of its parameter (a probability stays in
  [0, 1), a log-scaled value stays positive, ...).

An optional **pinpoint** stage runs before round one: it overfits a small subset at a few
log-spaced learning rates and starts round one from the rates that learned.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from expt.search.records import TrialRecord, TrialSpec
from expt.search.settings import Settings
from expt.search.space import (
    ChoiceParam,
    NumericParam,
    Param,
    SearchConfigError,
    Space,
    Value,
    _bad,
    _fmt,
    describe_space,
    merge_overrides,
    override_key,
    sample_space,
)
from expt.status import COMPLETED

log = logging.getLogger("expt.search")  # the search speaks under one name, as it did as one module

PINPOINT_ROUND = 0


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
            return _fmt(x, self.log)

        direction = "up" if self.side == "upper" else "down"
        return (f"best {self.param}={f(self.best)} is at the {self.side} edge of "
                f"[{f(self.old[0])}, {f(self.old[1])}]: moving the range {direction} "
                f"to [{f(self.new[0])}, {f(self.new[1])}]")


def score(record: TrialRecord, direction: str, use_metric: bool = False) -> Optional[float]:
    """Higher is better; None for a trial that failed, diverged or returned no number."""
    value = record.metric if use_metric else record.objective
    if record.status != COMPLETED or value is None or not math.isfinite(value):
        return None
    return value if direction == "maximize" else -value


def ranked(records: Iterable[TrialRecord], direction: str, use_metric: bool = False) -> list[TrialRecord]:
    """Best first; trials without a score last, in job order."""
    def order(record: TrialRecord) -> tuple[int, float, int]:
        s = score(record, direction, use_metric)
        return (0, -s, record.job) if s is not None else (1, 0.0, record.job)

    return sorted(records, key=order)


@dataclass
class _StageLog:
    """What a stage ran with, for the summary: its settings and the space it sampled from."""

    round: int
    trials: int
    top_k: int
    overrides: tuple[str, ...]
    space: dict[str, dict[str, Any]]


class CoarseToFineSearch:
    """The state of one coarse-to-fine search: current space, history, edge moves.

    Use it stage by stage: ``specs = propose(stage)``, run them, ``conclude(stage, records)``.
    Stages are ``stages()``: 0 for the pinpoint stage when enabled, then rounds 1..N. Trials of
    a stage depend only on the seed, the stage and the records of earlier stages, so a sweep
    re-run with the same seed and results proposes the same trials (which makes resuming work).
    """

    def __init__(self, space: Mapping[str, Param], settings: Settings,
                 fixed_overrides: Sequence[str] = ()) -> None:
        self.settings = settings
        self.fixed = tuple(fixed_overrides)
        self.space: Space = dict(space)
        self.moves: list[EdgeMove] = []
        self.moves_per_param: dict[str, int] = {}
        self.widest: dict[str, float] = {
            name: p.width_t for name, p in self.space.items() if isinstance(p, NumericParam)}
        self.history: list[_StageLog] = []
        self.records: dict[int, list[TrialRecord]] = {}
        self.pinpoint_result: dict[str, Any] = {}
        self._validate()

    def _validate(self) -> None:
        if not self.space:
            raise SearchConfigError(
                "hydra.sweeper.params defines no parameter to search: give at least one, "
                "e.g. optimizer.lr: tag(log, interval(1e-6, 1e-1))")
        for i, rnd in enumerate(self.settings.rounds):
            for item in rnd.overrides:
                if override_key(item) in self.space:
                    raise _bad(f"hydra.sweeper.rounds[{i}].overrides", item,
                               f"{override_key(item)} is a searched parameter; "
                               "a round may only set other keys")
        fixed_keys = {override_key(item) for item in self.fixed}
        for key in sorted(fixed_keys & {override_key(item) for rnd in self.settings.rounds
                                        for item in rnd.overrides}):
            log.info("%s is also set by the rounds' overrides, which take precedence", key)
        pin = self.settings.pinpoint
        if pin.enabled:
            param = self.space.get(pin.param)
            if not isinstance(param, NumericParam) or not param.log:
                raise _bad("hydra.sweeper.pinpoint.param", pin.param,
                           "a log-scaled parameter of hydra.sweeper.params, "
                           f"which are: {', '.join(self.space)}")

    def stages(self) -> list[int]:
        first = [PINPOINT_ROUND] if self.settings.pinpoint.enabled else []
        return first + list(range(1, len(self.settings.rounds) + 1))

    def first_job(self, stage: int) -> int:
        """Job numbers run on across stages, as with Hydra's other sweepers."""
        job = 0
        for earlier in self.stages():
            if earlier == stage:
                return job
            job += self._stage_size(earlier)
        raise ValueError(f"no stage {stage}")

    def _stage_size(self, stage: int) -> int:
        if stage == PINPOINT_ROUND:
            return self.settings.pinpoint.num
        return self.settings.rounds[stage - 1].trials

    def propose(self, stage: int) -> list[TrialSpec]:
        """The trials of a stage, from the current space."""
        first = self.first_job(stage)
        if stage == PINPOINT_ROUND:
            pin = self.settings.pinpoint
            points: list[dict[str, Value]] = [{pin.param: rate} for rate in pin.rates()]
            stage_overrides = pin.overrides
            self.history.append(_StageLog(stage, pin.num, 0, pin.overrides,
                                          {pin.param: {"type": "float", "low": pin.low,
                                                       "high": pin.high, "log": True,
                                                       "points": pin.num}}))
        else:
            rnd = self.settings.rounds[stage - 1]
            rng = random.Random(f"expt.search:{self.settings.seed}:{stage}")
            points = sample_space(self.space, rnd.trials, rng)
            stage_overrides = rnd.overrides
            self.history.append(_StageLog(stage, rnd.trials, rnd.top_k, rnd.overrides,
                                          describe_space(self.space)))
        specs = []
        for index, values in enumerate(points):
            sampled = [f"{name}={self.space[name].format(v)}" for name, v in values.items()]
            specs.append(TrialSpec(stage, index, first + index, values,
                                   merge_overrides(self.fixed, stage_overrides, sampled)))
        return specs

    def conclude(self, stage: int, records: Sequence[TrialRecord]) -> None:
        """Take a stage's results and derive the space for the next one."""
        self.records[stage] = list(records)
        if stage == PINPOINT_ROUND:
            self._conclude_pinpoint(records)
        elif stage < len(self.settings.rounds):
            self._narrow(stage, records, self.settings.rounds[stage - 1].top_k)

    def _conclude_pinpoint(self, records: Sequence[TrialRecord]) -> None:
        pin = self.settings.pinpoint
        use_metric = pin.metric is not None
        scored = [(r, score(r, "maximize" if use_metric else self.settings.direction, use_metric))
                  for r in records]
        scored = [(r, s) for r, s in scored if s is not None]
        if pin.threshold is not None:
            sign = 1.0 if use_metric or self.settings.direction == "maximize" else -1.0
            cut = sign * pin.threshold
        else:
            values = [s for _, s in scored]
            cut = (min(values) + max(values)) / 2 if values else math.inf
        learned = [r for r, s in scored if s >= cut]
        rates = sorted(float(r.values[pin.param]) for r in learned)
        param = self.space[pin.param]
        assert isinstance(param, NumericParam)
        self.pinpoint_result = {"learned": rates, "range": None}
        if not rates:
            log.warning("pinpoint: no learning rate learned; round 1 keeps %s=%s", pin.param, param)
            return
        half_step = (math.log(pin.high) - math.log(pin.low)) / (pin.num - 1) / 2
        new = param.with_range(rates[0] * math.exp(-half_step), rates[-1] * math.exp(half_step))
        self.space[pin.param] = new
        self.pinpoint_result["range"] = [new.low, new.high]
        log.info("pinpoint: %s learned at %s; round 1 searches %s", pin.param,
                 ", ".join(_fmt(r, True) for r in rates), new)

    def _narrow(self, stage: int, records: Sequence[TrialRecord], top_k: int) -> None:
        best = ranked(records, self.settings.direction)
        top = [r for r in best[:top_k] if score(r, self.settings.direction) is not None]
        if not top:
            log.warning("round %d: no trial finished with a usable objective; the next round "
                        "keeps the same ranges", stage)
            return
        for name, param in list(self.space.items()):
            if isinstance(param, ChoiceParam):
                seen = {str(r.values[name]) for r in top if name in r.values}
                kept = tuple(c for c in param.choices if c in seen) or param.choices
                self.space[name] = replace(param, choices=kept)
                continue
            values = [float(r.values[name]) for r in top if name in r.values]
            if values:
                self.space[name] = self._next_range(stage, param, values, values[0])

    def _next_range(self, stage: int, param: NumericParam, top: Sequence[float],
                    best: float) -> NumericParam:
        """Narrow to the top trials' span plus a margin, or move the range past an edge.

        The margin may reach past the current bounds (never past the limits), so top trials
        crowding an edge let the range drift that way even before an edge move.
        """
        lo, hi = param.to_t(param.low), param.to_t(param.high)
        width = hi - lo
        if width <= 0:
            return param
        position = (param.to_t(best) - lo) / width
        side = ("upper" if position >= 1 - self.settings.edge else
                "lower" if position <= self.settings.edge else None)
        moves_done = self.moves_per_param.get(param.name, 0)
        if side is not None and moves_done < self.settings.max_edge_moves:
            moved = self._move(param, best, side)
            if moved is not None:
                move = EdgeMove(stage, param.name, side, best, (param.low, param.high),
                                (moved.low, moved.high), param.log)
                self.moves.append(move)
                self.moves_per_param[param.name] = moves_done + 1
                log.info("%s", move.message())
                return moved
            log.info("best %s=%s is at the %s edge of %s, which is its limit %s: narrowing",
                     param.name, _fmt(best, param.log), side, param, param.limits)
        elif side is not None:
            log.info("best %s=%s is at the %s edge of %s, but it has already moved %d times "
                     "(max_edge_moves): narrowing", param.name, _fmt(best, param.log), side, param,
                     moves_done)
        t_values = [param.to_t(v) for v in top]
        margin = self.settings.margin * width
        new_lo, new_hi = min(t_values) - margin, max(t_values) + margin
        excess = (new_hi - new_lo) - width
        if excess > 0:
            new_lo, new_hi = new_lo + excess / 2, new_hi - excess / 2
        return param.with_range(param.from_t(new_lo), param.from_t(new_hi))

    def _move(self, param: NumericParam, best: float, side: str) -> Optional[NumericParam]:
        """Move the range so that three quarters of it lie past the edge.

        A best value on the edge means the narrowing so far assumed an optimum inside, so the
        moved range takes back the parameter's widest width (its initial one): a far optimum
        is reached in few moves, and on a flat dimension a spurious move costs nothing.
        Returns None when the limits leave no room past that edge.
        """
        lo, hi = param.to_t(param.low), param.to_t(param.high)
        width = max(hi - lo, self.widest.get(param.name, 0.0))
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

    # ---- reporting -------------------------------------------------------------------------

    def all_records(self) -> list[TrialRecord]:
        return [r for stage in sorted(self.records) if stage != PINPOINT_ROUND
                for r in self.records[stage]]

    def best(self) -> Optional[TrialRecord]:
        """The best scored trial of the rounds (pinpoint trials use other settings)."""
        top = ranked(self.all_records(), self.settings.direction)
        return top[0] if top and score(top[0], self.settings.direction) is not None else None

    def summary(self) -> dict[str, Any]:
        """What ``search_summary.yaml`` holds."""
        best = self.best()
        statuses: dict[str, int] = {}
        for record in self.all_records():
            statuses[record.status] = statuses.get(record.status, 0) + 1
        out: dict[str, Any] = {
            "direction": self.settings.direction,
            "seed": self.settings.seed,
            "best": None if best is None else {
                "round": best.round, "job": best.job, "objective": best.objective,
                "values": dict(best.values), "overrides": list(best.overrides),
                "run_dir": best.run_dir},
            "trials": statuses,
            "rounds": [{"round": h.round, "trials": h.trials,
                        **({"top_k": h.top_k} if h.round != PINPOINT_ROUND else {}),
                        "overrides": list(h.overrides), "space": h.space} for h in self.history],
            "edge_moves": [{"after_round": m.after_round, "param": m.param, "side": m.side,
                            "best": m.best, "from": list(m.old), "to": list(m.new)}
                           for m in self.moves],
        }
        if self.settings.pinpoint.enabled:
            out["pinpoint"] = self.pinpoint_result
        return out

    def table(self, n: int = 10) -> str:
        """The top ``n`` trials of the rounds as a text table."""
        rows = ranked(self.all_records(), self.settings.direction)[:n]
        names = list(self.space)
        header = ["rank", "round", "job", "objective", "status"] + names
        lines = [[str(i), str(r.round), str(r.job),
                  "-" if r.objective is None else f"{r.objective:.4g}", r.status]
                 + [_cell(r.values.get(name), self.space[name]) for name in names]
                 for i, r in enumerate(rows, start=1)]
        widths = [max(len(row[c]) for row in [header] + lines) for c in range(len(header))]
        return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths))
                         for row in [header] + lines)


def _cell(value: Any, param: Param) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _fmt(value, isinstance(param, NumericParam) and param.log)
    return str(value)


def consecutive_runs(specs: Sequence[TrialSpec], max_size: Optional[int]) -> Iterator[list[TrialSpec]]:
    """Split trials into batches of consecutive job numbers, at most ``max_size`` each.

    A launcher numbers a batch's jobs from its first job on, so a resumed sweep, which skips
    finished trials, launches each gap-free run separately and every trial keeps its number.
    """
    batch: list[TrialSpec] = []
    for spec in specs:
        full = max_size is not None and max_size > 0 and len(batch) >= max_size
        if batch and (full or spec.job != batch[-1].job + 1):
            yield batch
            batch = []
        batch.append(spec)
    if batch:
        yield batch
