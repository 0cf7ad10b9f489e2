"""Coarse-to-fine random search, as the recipe (section 5) describes it.

A search is a sequence of **stages** (by default: the learning rate, its decay and the
regularization strength first; then the model's width and dropout), each searching its own
parameters with the best values of earlier stages held fixed. A stage runs in rounds. Each round samples trials at random from the current space
(log-uniformly for log-scaled parameters), the trials run, and the space for the next round
is derived from the round's best trials (:mod:`expt.search.narrowing`: narrowing, edge moves,
hard limits); after a stage's last round its best values are held for the stages after it.

A **pinpoint** stage runs before round one (unless switched off): it overfits a small subset at
a few log-spaced learning rates and starts round one from the rates that learned.

Trials are ranked by :mod:`expt.search.ranking` (ties within ``tie_samples`` validation samples
broken by ``tie_break``); :mod:`expt.search.report` words the leaders and the table.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from expt.search.narrowing import EdgeMove, next_param
from expt.search.ranking import chosen_and_tied, ranked, score
from expt.search.records import TrialRecord, TrialSpec
from expt.search.report import leader_rows, separation_sentence, trial_table
from expt.search.settings import Settings
from expt.search.space import (
    Condition,
    NumericParam,
    Param,
    SearchConfigError,
    Space,
    Value,
    bad_setting,
    compact_number,
    describe_space,
    merge_overrides,
    sample_space,
)
from expt.overrides import override_key
from expt.status import COMPLETED

log = logging.getLogger("expt.search")  # the search speaks under one name, as it did as one module

PINPOINT_ROUND = 0


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
                 fixed_overrides: Sequence[str] = (), dropped: Iterable[str] = (),
                 conditions: Mapping[str, Condition] = ()) -> None:
        self.settings = settings
        self.conditions = dict(conditions)  # parameter -> the options of a searched choice that have it
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
                    raise bad_setting(f"hydra.sweeper.stages.{i}.params", name,
                                      f"a parameter of hydra.sweeper.params, which are: {', '.join(self.space)}")
                claimed.add(name)
        rest = [name for name in self.space if name not in claimed]
        out = [rest if stage.params is None else [n for n in self.space if n in stage.params]
               for stage in stages]
        if rest and all(stage.params is not None for stage in stages):
            log.info("%s: named by no stage, searched in stage %s", ", ".join(rest), stages[0].name)
            out[0] = [n for n in self.space if n in out[0] or n in rest]
        return out

    def _validate(self) -> None:
        if not self.space:
            raise SearchConfigError(
                "hydra.sweeper.params defines no parameter to search: give at least one, "
                "e.g. optimizer.lr: tag(log, interval(1e-6, 1e-1))")
        for n, rnd in enumerate(self.settings.rounds, start=1):
            for item in rnd.overrides:
                if override_key(item) in self.space:
                    raise bad_setting(f"{self.settings.round_key(n)}.overrides", item,
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
                raise bad_setting("hydra.sweeper.pinpoint.param", pin.param,
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
            values, held_here = (values, held) if n == PINPOINT_ROUND else self._applicable(values, held)
            sampled = [f"{name}={self.space[name].format(v)}" for name, v in values.items()]
            specs.append(TrialSpec(n, index, first + index, values,
                                   merge_overrides(self.fixed, held_here, round_overrides, sampled)))
        return specs

    def _applicable(self, values: dict[str, Value], held: list[str]) -> tuple[dict[str, Value], list[str]]:
        """A trial's sampled values and held overrides less the parameters the options it runs with lack (a
        ``Condition``): the trial runs, and is recorded, without them."""
        if not self.conditions:
            return values, held
        chosen = {**self.held, **values}
        keep = {name: value for name, value in values.items()
                if name not in self.conditions or self.conditions[name].holds(chosen)}
        held_here = [o for o in held if override_key(o) not in self.conditions
                     or self.conditions[override_key(o)].holds(chosen)]
        return keep, held_here

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
            log.warning("stage %s: no trial completed%s", name, "; later stages keep the config's values"
                        if stage + 1 < len(self.settings.stages) else "")
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
        values = [s for _, s in scored]
        why = ""
        if use_metric and not values and any(r.status == COMPLETED for r in records):
            why = f" (no completed trial's metrics.json has {pin.metric}, hydra.sweeper.pinpoint.metric)"
        if pin.threshold is not None:
            sign = 1.0 if use_metric or self.settings.direction == "maximize" else -1.0
            cut = sign * pin.threshold
        elif len(values) < 2 or min(values) == max(values):
            # halfway from the worst to the best needs two scores that differ: a lone survivor, or rates that all
            # scored alike (all at chance), say nothing about which rate learns
            cut = math.inf
            if len(values) == 1:
                why = f" ({len(values)} of {len(records)} rates gave a score: nothing to compare it with)"
            elif values:
                why = f" (the {len(values)} rates that gave a score all scored {values[0]:.4g})"
        else:
            cut = (min(values) + max(values)) / 2
        learned = [r for r, s in scored if s >= cut]
        rates = sorted(float(r.values[pin.param]) for r in learned)
        param = self.space[pin.param]
        assert isinstance(param, NumericParam)
        self.pinpoint_result = {"learned": rates, "range": None}
        if not rates:
            log.warning("pinpoint: no learning rate learned%s; round 1 keeps %s=%s", why, pin.param, param)
            return
        half_step = (math.log(pin.high) - math.log(pin.low)) / (pin.num - 1) / 2
        new = param.with_range(rates[0] * math.exp(-half_step), rates[-1] * math.exp(half_step))
        self.space[pin.param] = new
        self.widest[pin.param] = new.width_t
        self.pinpoint_result["range"] = [new.low, new.high]
        log.info("pinpoint: %s learned at %s; round 1 searches %s", pin.param,
                 ", ".join(compact_number(r, True) for r in rates), new)

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
            moves_done = self.moves_per_param.get(name, 0)
            self.space[name], move = next_param(n, self.space[name], top, records, self.settings,
                                                self.widest.get(name, 0.0), moves_done, moves)
            if move is not None:
                self.moves.append(move)
                self.moves_per_param[name] = moves_done + 1

    # ---- reporting -------------------------------------------------------------------------

    def all_records(self) -> list[TrialRecord]:
        """The rounds' records: the trials a choice is made from (the pinpoint stage's are not)."""
        return [r for n in sorted(self.records) if n != PINPOINT_ROUND for r in self.records[n]]

    def every_record(self) -> list[TrialRecord]:
        """Every trial's record so far, the pinpoint stage's included."""
        return [r for n in sorted(self.records) for r in self.records[n]]

    def best(self) -> Optional[TrialRecord]:
        """The chosen trial: the best validation score of the rounds, ties broken by ``tie_break`` (:func:`chosen_and_tied`)."""
        top = chosen_and_tied(self.all_records(), self.settings.direction, self.settings.tie_samples)
        return top[0] if top else None

    def leaders(self, n: int = 3) -> list[dict[str, Any]]:
        """The top ``n`` trials and how many validation samples each is behind the best."""
        return leader_rows(self._ranked(self.all_records())[:n], self.settings.direction)

    def separation(self) -> Optional[str]:
        """A sentence on how many validation samples separate the top two trials."""
        return separation_sentence(self.leaders(2), self.best(), self.settings)

    def summary(self) -> dict[str, Any]:
        """What ``search_summary.yaml`` holds."""
        best = self.best()
        statuses: dict[str, int] = {}
        for record in self.all_records():
            statuses[record.status] = statuses.get(record.status, 0) + 1
        planned = [n for n in self.round_numbers() if n != PINPOINT_ROUND]  # a stage with nothing to search has none
        done = len([n for n in self.records if n != PINPOINT_ROUND])
        out: dict[str, Any] = {
            # a summary written after each round: a sweep stopped (or still running) says how far it got
            "finished": done == len(planned),
            "rounds_done": done,
            "rounds_planned": len(planned),
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
        return trial_table(self._ranked(self.all_records())[:n], self.space, self.settings.tie_break)


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
