"""Coarse-to-fine random search, as the recipe (section 5) describes it.

A search is a sequence of **stages** (by default: the learning rate, its decay and the
regularization strength first; then the model's width and dropout), each searching its own
parameters with the best values of earlier stages held fixed. A stage runs in rounds. Each round samples trials at random from the current space
(log-uniformly for log-scaled parameters), the trials run, and the space for the next round
is derived from the round's best trials:

* **narrowing** - a numeric range shrinks to the span of the round's ``top_k`` trials plus a
  margin (in log space for log parameters); a choice keeps only the options seen among them;
* **edge moves** - when the round's best value sits in the outer part of its range and the
  trials there are clearly better than those inside (by more than a tie), the range is wrong
  rather than too wide, so it keeps its width and moves past that edge; the round before a
  stage's last one never moves a range, so the last round refines;
* **hard limits** - no range ever leaves the limits of its parameter (a probability stays in
  [0, 1), a log-scaled value stays positive, ...).

A **pinpoint** stage runs before round one (unless switched off): it overfits a small subset at
a few log-spaced learning rates and starts round one from the rates that learned.

Trials are **ranked** by their score; scores within ``tie_samples`` validation samples of each
other count as tied and are ordered by ``tie_break`` (the validation loss), because a few
hundred validation samples move accuracy in visible steps. Pruned trials rank below every
completed one, failed and diverged ones last.
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
from expt.status import COMPLETED, PRUNED

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

    Within a tier the leader is, among the trials tied with the best remaining score (within
    :func:`tie_tolerance`), the one with the lowest ``tie_value`` (then the higher score, then
    the earlier job); the ranking repeats that on what remains.
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
            leader = _tied_with_top(remaining, tie_samples)[0]
            out.append(leader[0])
            remaining.remove(leader)
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


@dataclass
class _RoundLog:
    """What a round ran with, for the summary: its stage, settings and the space it sampled from."""

    round: int
    stage: str
    trials: int
    top_k: int
    overrides: tuple[str, ...]
    space: dict[str, dict[str, Any]]


class CoarseToFineSearch:
    """The state of one staged coarse-to-fine search: current space, held values, history, edge moves.

    Use it round by round: for ``n`` in ``round_numbers()`` (0 for the pinpoint stage when
    enabled, then the rounds of every stage, numbered 1..N across stages), ``specs =
    propose(n)``, run them, ``conclude(n, records)``. Trials of a round depend only on the seed,
    the round and the records of earlier rounds, so a sweep re-run with the same seed and
    results proposes the same trials (which makes resuming work).

    ``dropped`` names parameters the caller removed from the space (keys the task's config does
    not have): stages may name them without error.
    """

    def __init__(self, space: Mapping[str, Param], settings: Settings,
                 fixed_overrides: Sequence[str] = (), dropped: Iterable[str] = ()) -> None:
        self.settings = settings
        self.fixed = tuple(fixed_overrides)
        self.space: Space = dict(space)
        self.moves: list[EdgeMove] = []
        self.moves_per_param: dict[str, int] = {}
        self.widest: dict[str, float] = {
            name: p.width_t for name, p in self.space.items() if isinstance(p, NumericParam)}
        self.history: list[_RoundLog] = []
        self.records: dict[int, list[TrialRecord]] = {}
        self.pinpoint_result: dict[str, Any] = {}
        self.held: dict[str, Value] = {}  # best values of finished stages, fixed for later ones
        self.held_from: dict[str, int] = {}  # stage name -> the job its values were taken from
        self.dropped = set(dropped)
        self.stage_params = self._resolve_stages(self.dropped)
        self._validate()

    def _resolve_stages(self, dropped: set[str]) -> list[list[str]]:
        """Each stage's parameters, in the space's order; unnamed ones go to the ``params: null`` stage (or the first)."""
        stages = self.settings.stages
        claimed: set[str] = set()
        for i, stage in enumerate(stages):
            for name in stage.params or ():
                if name not in self.space and name not in dropped:
                    raise _bad(f"hydra.sweeper.stages[{i}].params", name,
                               f"a parameter of hydra.sweeper.params, which are: {', '.join(self.space)}")
                claimed.add(name)
        rest = [name for name in self.space if name not in claimed]
        out = [rest if stage.params is None else [n for n in self.space if n in stage.params]
               for stage in stages]
        if rest and all(stage.params is not None for stage in stages):
            log.info("%s: named by no stage, searched in stage %s", ", ".join(rest), stages[0].name)
            out[0] = [n for n in self.space if n in out[0] or n in rest]
        return out

    def _round_key(self, n: int) -> str:
        """The config key of round ``n``, for error messages."""
        stage = self.settings.stage_of(n)
        first = sum(len(s.rounds) for s in self.settings.stages[:stage]) + 1
        if len(self.settings.stages) == 1 and self.settings.stages[0].name == "search":
            return f"hydra.sweeper.rounds[{n - first}]"
        return f"hydra.sweeper.stages[{stage}].rounds[{n - first}]"

    def _validate(self) -> None:
        if not self.space:
            raise SearchConfigError(
                "hydra.sweeper.params defines no parameter to search: give at least one, "
                "e.g. optimizer.lr: tag(log, interval(1e-6, 1e-1))")
        for n, rnd in enumerate(self.settings.rounds, start=1):
            for item in rnd.overrides:
                if override_key(item) in self.space:
                    raise _bad(f"{self._round_key(n)}.overrides", item,
                               f"{override_key(item)} is a searched parameter; "
                               "a round may only set other keys")
        fixed_keys = {override_key(item) for item in self.fixed}
        for key in sorted(fixed_keys & {override_key(item) for rnd in self.settings.rounds
                                        for item in rnd.overrides}):
            log.info("%s is also set by the rounds' overrides, which take precedence", key)
        pin = self.settings.pinpoint
        if pin.enabled and pin.param not in self.space and pin.param in fixed_keys | self.dropped:
            log.info("pinpoint: %s is not searched (fixed, or not in this config): no pinpoint stage",
                     pin.param)
            self.settings = replace(self.settings, pinpoint=replace(pin, enabled=False))
        elif pin.enabled:
            param = self.space.get(pin.param)
            if not isinstance(param, NumericParam) or not param.log:
                raise _bad("hydra.sweeper.pinpoint.param", pin.param,
                           "a log-scaled parameter of hydra.sweeper.params, "
                           f"which are: {', '.join(self.space)}")

    def round_numbers(self) -> list[int]:
        """0 for the pinpoint stage when enabled, then every round of the stages that have parameters."""
        first = [PINPOINT_ROUND] if self.settings.pinpoint.enabled else []
        return first + [n for n in range(1, len(self.settings.rounds) + 1)
                        if self.stage_params[self.settings.stage_of(n)]]

    def stage_name(self, n: int) -> str:
        return "pinpoint" if n == PINPOINT_ROUND else self.settings.stages[self.settings.stage_of(n)].name

    def is_final(self, n: int) -> bool:
        """Whether round ``n`` is the search's last."""
        numbers = self.round_numbers()
        return bool(numbers) and n == numbers[-1]

    def first_job(self, n: int) -> int:
        """Job numbers run on across rounds, as with Hydra's other sweepers."""
        job = 0
        for earlier in self.round_numbers():
            if earlier == n:
                return job
            job += self._round_size(earlier)
        raise ValueError(f"no round {n}")

    def _round_size(self, n: int) -> int:
        if n == PINPOINT_ROUND:
            return self.settings.pinpoint.num
        return self.settings.rounds[n - 1].trials

    def propose(self, n: int) -> list[TrialSpec]:
        """The trials of round ``n``, from the current space, with earlier stages' best values held."""
        first = self.first_job(n)
        if n == PINPOINT_ROUND:
            pin = self.settings.pinpoint
            points: list[dict[str, Value]] = [{pin.param: rate} for rate in pin.rates()]
            round_overrides = pin.overrides
            held: list[str] = []
            self.history.append(_RoundLog(n, "pinpoint", pin.num, 0, pin.overrides,
                                          {pin.param: {"type": "float", "low": pin.low,
                                                       "high": pin.high, "log": True,
                                                       "points": pin.num}}))
        else:
            rnd = self.settings.rounds[n - 1]
            space = {name: self.space[name] for name in self.stage_params[self.settings.stage_of(n)]}
            rng = random.Random(f"expt.search:{self.settings.seed}:{n}")
            points = sample_space(space, rnd.trials, rng)
            round_overrides = rnd.overrides
            held = [f"{name}={self.space[name].format(v)}" for name, v in self.held.items()]
            self.history.append(_RoundLog(n, self.stage_name(n), rnd.trials, rnd.top_k, rnd.overrides,
                                          describe_space(space)))
        specs = []
        for index, values in enumerate(points):
            sampled = [f"{name}={self.space[name].format(v)}" for name, v in values.items()]
            specs.append(TrialSpec(n, index, first + index, values,
                                   merge_overrides(self.fixed, held, round_overrides, sampled)))
        return specs

    def conclude(self, n: int, records: Sequence[TrialRecord]) -> None:
        """Take a round's results: narrow its stage's space, or, after a stage's last round, hold its best."""
        self.records[n] = list(records)
        if n == PINPOINT_ROUND:
            self._conclude_pinpoint(records)
            return
        settings = self.settings
        if settings.last_of_stage(n):
            self._hold(settings.stage_of(n))
        else:
            # the round before a stage's last may only narrow: the last round refines, it does not explore
            moves = not settings.last_of_stage(n + 1)
            self._narrow(n, records, settings.rounds[n - 1].top_k, moves)

    def _hold(self, stage: int) -> None:
        """Fix the stage's parameters at its best trial for the stages after it."""
        numbers = [n for n in self.records if n != PINPOINT_ROUND and self.settings.stage_of(n) == stage]
        best = self._ranked([r for n in numbers for r in self.records[n]])
        name = self.settings.stages[stage].name
        if not best or score(best[0], self.settings.direction) is None:
            log.warning("stage %s: no trial completed; later stages keep the config's values", name)
            return
        for param in self.stage_params[stage]:
            if param in best[0].values:
                self.held[param] = best[0].values[param]
        self.held_from[name] = best[0].job
        if stage + 1 < len(self.settings.stages):
            log.info("stage %s: holding %s (job %d) for the next stages", name,
                     " ".join(f"{k}={self.space[k].format(v)}" for k, v in self.held.items()
                              if k in self.stage_params[stage]), best[0].job)

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
        self.widest[pin.param] = new.width_t
        self.pinpoint_result["range"] = [new.low, new.high]
        log.info("pinpoint: %s learned at %s; round 1 searches %s", pin.param,
                 ", ".join(_fmt(r, True) for r in rates), new)

    def _ranked(self, records: Iterable[TrialRecord]) -> list[TrialRecord]:
        return ranked(records, self.settings.direction, tie_samples=self.settings.tie_samples)

    def _narrow(self, n: int, records: Sequence[TrialRecord], top_k: int, moves: bool) -> None:
        best = self._ranked(records)
        top = [r for r in best[:top_k] if score(r, self.settings.direction) is not None]
        if not top:
            log.warning("round %d: no trial finished with a usable objective; the next round "
                        "keeps the same ranges", n)
            return
        for name in self.stage_params[self.settings.stage_of(n)]:
            param = self.space[name]
            if isinstance(param, ChoiceParam):
                seen = {str(r.values[name]) for r in top if name in r.values}
                kept = tuple(c for c in param.choices if c in seen) or param.choices
                self.space[name] = replace(param, choices=kept)
                continue
            values = [float(r.values[name]) for r in top if name in r.values]
            if values:
                self.space[name] = self._next_range(n, param, values, top[0], records, moves)

    def _edge_is_better(self, param: NumericParam, side: str, best: TrialRecord,
                        records: Sequence[TrialRecord]) -> bool:
        """Whether the best trial beats every trial away from that edge by more than a tie.

        Without that, the parameter has no measurable effect there and moving the range would
        spend the next round on a guess.
        """
        lo, hi = param.to_t(param.low), param.to_t(param.high)
        width = hi - lo

        def at_edge(value: float) -> bool:
            position = (param.to_t(value) - lo) / width
            return position >= 1 - self.settings.edge if side == "upper" else position <= self.settings.edge

        inside = [s for r in records if param.name in r.values and not at_edge(float(r.values[param.name]))
                  for s in [score(r, self.settings.direction)] if s is not None]
        best_score = score(best, self.settings.direction)
        if not inside or best_score is None:
            return True
        return beats(best_score, max(inside), tie_tolerance(best, self.settings.tie_samples))

    def _next_range(self, n: int, param: NumericParam, top: Sequence[float], best_record: TrialRecord,
                    records: Sequence[TrialRecord], moves: bool) -> NumericParam:
        """Narrow to the top trials' span plus a margin, or move the range past an edge.

        The margin may reach past the current bounds (never past the limits), so top trials
        crowding an edge let the range drift that way even before an edge move; not when the
        next round is the stage's last.
        """
        lo, hi = param.to_t(param.low), param.to_t(param.high)
        width = hi - lo
        if width <= 0:
            return param
        best = float(best_record.values[param.name])
        position = (param.to_t(best) - lo) / width
        side = ("upper" if position >= 1 - self.settings.edge else
                "lower" if position <= self.settings.edge else None)
        moves_done = self.moves_per_param.get(param.name, 0)
        where = f"best {param.name}={_fmt(best, param.log)} is at the {side} edge of {param}"
        if side is not None and not moves:
            log.info("%s, but the next round is its stage's last, which refines: narrowing", where)
        elif side is not None and not self._edge_is_better(param, side, best_record, records):
            log.info("%s, but trials away from that edge score within a tie of it (no measurable "
                     "effect): narrowing", where)
        elif side is not None and moves_done < self.settings.max_edge_moves:
            moved = self._move(param, best, side)
            if moved is not None:
                move = EdgeMove(n, param.name, side, best, (param.low, param.high),
                                (moved.low, moved.high), param.log)
                self.moves.append(move)
                self.moves_per_param[param.name] = moves_done + 1
                log.info("%s", move.message())
                return moved
            log.info("%s, which is its limit %s: narrowing", where, param.limits)
        elif side is not None:
            log.info("%s, but it has already moved %d times (max_edge_moves): narrowing", where, moves_done)
        t_values = [param.to_t(v) for v in top]
        margin = self.settings.margin * width
        new_lo, new_hi = min(t_values) - margin, max(t_values) + margin
        excess = (new_hi - new_lo) - width
        if excess > 0:
            new_lo, new_hi = new_lo + excess / 2, new_hi - excess / 2
        if not moves:  # the stage's last round refines inside the range it has
            new_lo, new_hi = max(new_lo, lo), min(new_hi, hi)
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
        return [r for n in sorted(self.records) if n != PINPOINT_ROUND for r in self.records[n]]

    def best(self) -> Optional[TrialRecord]:
        """The chosen trial: the best validation score of the rounds, ties broken by ``tie_break`` (:func:`chosen_and_tied`)."""
        top = chosen_and_tied(self.all_records(), self.settings.direction, self.settings.tie_samples)
        return top[0] if top else None

    def leaders(self, n: int = 3) -> list[dict[str, Any]]:
        """The top ``n`` trials and how many validation samples each is behind the best."""
        top = [r for r in self._ranked(self.all_records())[:n] if score(r, self.settings.direction) is not None]
        out = []
        for r in top:
            row: dict[str, Any] = {"job": r.job, "round": r.round, "objective": r.objective,
                                   "tie_value": r.tie_value, "test_acc": r.test_acc}
            if top[0].val_samples and r.objective is not None and top[0].objective is not None:
                row["samples_behind"] = round(abs(top[0].objective - r.objective) * top[0].val_samples)
            out.append(row)
        return out

    def separation(self) -> Optional[str]:
        """A sentence on how many validation samples separate the top two trials."""
        top = self.leaders(2)
        if len(top) < 2 or "samples_behind" not in top[1]:
            return None
        samples, total = top[1]["samples_behind"], self.best().val_samples  # type: ignore[union-attr]
        name = self.settings.tie_break or "the tie-breaker"
        if samples <= self.settings.tie_samples:
            return (f"the top two trials are {samples} of {total} validation samples apart, a tie: "
                    f"{name} decided ({_fmt(top[0]['tie_value'] or math.nan)} against "
                    f"{_fmt(top[1]['tie_value'] or math.nan)})")
        return f"the top two trials are {samples} of {total} validation samples apart"

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
                **({self.settings.tie_break: best.tie_value} if self.settings.tie_break else {}),
                "test_acc": best.test_acc, "val_samples": best.val_samples,
                "values": dict(best.values), "overrides": list(best.overrides),
                "run_dir": best.run_dir},
            "leaders": self.leaders(),
            "separation": self.separation(),
            "trials": statuses,
            "stages": [{"name": stage.name, "params": list(self.stage_params[i]),
                        "rounds": [n for n in self.round_numbers() if n and self.settings.stage_of(n) == i],
                        "held_from_job": self.held_from.get(stage.name)}
                       for i, stage in enumerate(self.settings.stages)],
            "rounds": [{"round": h.round, "stage": h.stage, "trials": h.trials,
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
        rows = self._ranked(self.all_records())[:n]
        names = list(self.space)
        tie = self.settings.tie_break or "tie"
        header = ["rank", "round", "job", "objective", tie, "test_acc", "status"] + names
        lines = [[str(i), str(r.round), str(r.job),
                  "-" if r.objective is None else f"{r.objective:.4g}",
                  "-" if r.tie_value is None else f"{r.tie_value:.4g}",
                  "-" if r.test_acc is None else f"{r.test_acc:.4g}", r.status]
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
