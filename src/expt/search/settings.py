"""The sweeper's settings, validated: the stages and their rounds, pinpoint, ties, pruning.

Every error names the key, the value and what is allowed (:class:`SearchConfigError`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from expt.search.space import bad_setting, round_significant
from expt.values import is_integer, is_number


@dataclass(frozen=True)
class Round:
    """One round: how many trials, the overrides that set its cost, how many trials lead on."""

    trials: int
    top_k: int = 3
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """A step of the search: the parameters it searches, coarse to fine over its rounds.

    ``params`` names parameters of the space; None takes every parameter no other stage names.
    Parameters of later stages keep the config's values; those of earlier stages are held at
    the best trial of their stage.
    """

    name: str
    params: Optional[tuple[str, ...]]
    rounds: tuple[Round, ...]
    key: Optional[str] = dataclasses.field(default=None, compare=False)  # its rounds' config key, for messages


@dataclass(frozen=True)
class Pruning:
    """Early stopping inside a round, by the median rule.

    After each epoch a trial reports its best validation score so far; from ``warmup_epochs``
    on, it stops when at least ``min_trials`` other trials of its round reported that epoch and
    its score is below their median. Rounds of one epoch are never pruned.
    """

    enabled: bool = True
    min_trials: int = 3
    warmup_epochs: int = 1


@dataclass(frozen=True)
class Pinpoint:
    """The optional stage that finds a learning-rate range by overfitting a small subset.

    A rate "learned" when its score (the objective, or ``metric`` read from the trial's
    metrics.json) reaches ``threshold``; without a threshold, when it scores at least halfway
    from the worst to the best completed rate (so none did where fewer than two completed, or all
    scored alike). Round 1 then spans the learned rates plus half a grid step on each side; where
    none learned, round 1 keeps its own range.
    """

    enabled: bool = True
    param: str = "optimizer.lr"
    low: float = 1e-6
    high: float = 1.0
    num: int = 7
    overrides: tuple[str, ...] = ("data.subset=100", "regularization=none", "trainer.epochs=10")
    metric: Optional[str] = None
    threshold: Optional[float] = None

    def rates(self) -> list[float]:
        """``num`` log-spaced rates from ``low`` to ``high``, both included."""
        lo, hi = math.log10(self.low), math.log10(self.high)
        return [round_significant(10 ** (lo + (hi - lo) * i / (self.num - 1))) for i in range(self.num)]


@dataclass(frozen=True)
class Settings:
    """Validated sweeper settings (everything but the search space)."""

    stages: tuple[Stage, ...]
    seed: int = 0
    direction: str = "maximize"
    margin: float = 0.1
    edge: float = 0.1
    max_edge_moves: int = 3
    pinpoint: Pinpoint = Pinpoint(enabled=False)
    tie_break: Optional[str] = None
    tie_samples: int = 0
    pruning: Pruning = Pruning(enabled=False)

    @property
    def rounds(self) -> tuple[Round, ...]:
        """Every round of every stage, in order: round ``n`` of the search is ``rounds[n - 1]``."""
        return tuple(rnd for stage in self.stages for rnd in stage.rounds)

    def stage_of(self, round_number: int) -> int:
        """The index of the stage round ``round_number`` (1-based, across stages) belongs to."""
        end = 0
        for index, stage in enumerate(self.stages):
            end += len(stage.rounds)
            if round_number <= end:
                return index
        raise ValueError(f"no round {round_number}")

    def round_key(self, round_number: int) -> str:
        """The config key of round ``round_number`` (1-based, across stages) as an override spells it, for messages:
        ``hydra.sweeper.stages.1.rounds.0``, or ``hydra.sweeper.rounds.0`` where the config gave ``rounds``."""
        index = self.stage_of(round_number)
        before = sum(len(s.rounds) for s in self.stages[:index])
        return f"{self.stages[index].key or f'hydra.sweeper.stages.{index}.rounds'}.{round_number - 1 - before}"

    def last_of_stage(self, round_number: int) -> bool:
        index = self.stage_of(round_number)
        return round_number == sum(len(s.rounds) for s in self.stages[: index + 1])

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], prefix: str = "hydra.sweeper") -> "Settings":
        """Build from plain config values, naming ``prefix.key`` in every error.

        ``rounds`` (when given) is one stage over every parameter; otherwise ``stages`` lists them.
        """
        if data.get("rounds") is not None:
            stages: tuple[Stage, ...] = (
                Stage("search", None, _rounds(data.get("rounds"), f"{prefix}.rounds"), f"{prefix}.rounds"),)
        else:
            stages = _stages(data.get("stages"), f"{prefix}.stages")
        direction = str(data.get("direction", cls.direction))
        direction = direction.rsplit(".", 1)[-1]  # accept an enum's str()
        if direction not in ("maximize", "minimize"):
            raise bad_setting(f"{prefix}.direction", direction, "maximize or minimize")
        margin = _number(data.get("margin", cls.margin), f"{prefix}.margin", 0.0, None, "a number >= 0")
        edge = _number(data.get("edge", cls.edge), f"{prefix}.edge", 0.0, 0.5,
                       "a fraction of the range's width in [0, 0.5)", high_open=True)
        moves = _integer(data.get("max_edge_moves", cls.max_edge_moves), f"{prefix}.max_edge_moves", 0)
        seed = _integer(data.get("seed", cls.seed), f"{prefix}.seed", None)
        pinpoint = _pinpoint(data.get("pinpoint") or {"enabled": False}, f"{prefix}.pinpoint")
        tie_break = data.get("tie_break", cls.tie_break)
        if tie_break is not None and (not isinstance(tie_break, str) or not tie_break):
            raise bad_setting(f"{prefix}.tie_break", tie_break,
                              "null or a key of the trials' metrics.json, lower is better (best_val_loss)")
        tie_samples = _integer(data.get("tie_samples", cls.tie_samples), f"{prefix}.tie_samples", 0)
        pruning = _pruning(data.get("pruning") or {"enabled": False}, f"{prefix}.pruning")
        return cls(stages, seed, direction, margin, edge, moves, pinpoint, tie_break, tie_samples,
                   pruning)


def _integer(value: Any, key: str, minimum: Optional[int]) -> int:
    allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if not is_integer(value):
        raise bad_setting(key, value, allowed)
    if minimum is not None and value < minimum:
        raise bad_setting(key, value, allowed)
    return value


def _number(value: Any, key: str, low: Optional[float], high: Optional[float], allowed: str,
            high_open: bool = False) -> float:
    if not is_number(value) or math.isnan(value):
        raise bad_setting(key, value, allowed)
    if (low is not None and value < low) or (
            high is not None and (value >= high if high_open else value > high)):
        raise bad_setting(key, value, allowed)
    return float(value)


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise bad_setting(key, value, "a list of overrides such as [trainer.epochs=1]")
    for item in value:
        if not isinstance(item, str) or ("=" not in item and not item.startswith("~")):
            raise bad_setting(key, item, "each override has the form key=value")
    return tuple(value)


def _rounds(data: Any, key: str) -> tuple[Round, ...]:
    if not isinstance(data, Sequence) or isinstance(data, str) or not data:
        raise bad_setting(key, data, "a non-empty list of rounds, each {trials, top_k, overrides}")
    return tuple(_round(r, f"{key}.{i}") for i, r in enumerate(data))


def _stages(data: Any, key: str) -> tuple[Stage, ...]:
    if not isinstance(data, Sequence) or isinstance(data, str) or not data:
        raise bad_setting(key, data, "a non-empty list of stages, each {name, params, rounds} "
                          "(or hydra.sweeper.rounds for a single stage)")
    stages = []
    claimed: dict[str, str] = {}
    for i, item in enumerate(data):
        where = f"{key}.{i}"
        if not isinstance(item, Mapping):
            raise bad_setting(where, item, "a mapping {name, params, rounds}")
        unknown = set(item) - {"name", "params", "rounds"}
        if unknown:
            first = sorted(unknown)[0]
            raise bad_setting(f"{where}.{first}", item[first], "a stage has only the keys name, params, rounds")
        name = item.get("name") or f"stage{i + 1}"
        if not isinstance(name, str):
            raise bad_setting(f"{where}.name", name, "a short name such as lr_decay_reg")
        params = item.get("params")
        if params is not None:
            if isinstance(params, str) or not isinstance(params, Sequence) or not all(
                    isinstance(p, str) and p for p in params):
                raise bad_setting(f"{where}.params", params,
                                  "null (every parameter no other stage names) or a list of "
                                  "parameter names of hydra.sweeper.params")
            for param in params:
                if param in claimed:
                    raise bad_setting(f"{where}.params", param,
                                      f"a parameter searched by one stage only; stage {claimed[param]} has it")
                claimed[param] = name
            params = tuple(params)
        stages.append(Stage(name, params, _rounds(item.get("rounds"), f"{where}.rounds"), f"{where}.rounds"))
    if sum(stage.params is None for stage in stages) > 1:
        raise bad_setting(key, [s.name for s in stages if s.params is None],
                          "at most one stage with params: null (it takes the remaining parameters)")
    return tuple(stages)


def _pruning(data: Mapping[str, Any], key: str) -> Pruning:
    unknown = set(data) - {"enabled", "min_trials", "warmup_epochs"}
    if unknown:
        first = sorted(unknown)[0]
        raise bad_setting(f"{key}.{first}", data[first], "pruning has the keys enabled, min_trials, warmup_epochs")
    enabled = data.get("enabled", Pruning.enabled)
    if not isinstance(enabled, bool):
        raise bad_setting(f"{key}.enabled", enabled, "true or false")
    return Pruning(enabled, _integer(data.get("min_trials", Pruning.min_trials), f"{key}.min_trials", 1),
                   _integer(data.get("warmup_epochs", Pruning.warmup_epochs), f"{key}.warmup_epochs", 1))


def _round(data: Any, key: str) -> Round:
    if not isinstance(data, Mapping):
        raise bad_setting(key, data, "a mapping {trials, top_k, overrides}")
    unknown = set(data) - {"trials", "top_k", "overrides"}
    if unknown:
        raise bad_setting(f"{key}.{sorted(unknown)[0]}", data[sorted(unknown)[0]],
                          "a round has only the keys trials, top_k, overrides")
    trials = _integer(data.get("trials"), f"{key}.trials", 1)
    if data.get("top_k") is None:
        top_k = min(Round.top_k, trials)
    else:
        top_k = _integer(data["top_k"], f"{key}.top_k", 1)
        if top_k > trials:
            raise bad_setting(f"{key}.top_k", top_k,
                              f"at most the round's {trials} trials (the best trials that set the next ranges)")
    return Round(trials, top_k, _string_list(data.get("overrides"), f"{key}.overrides"))


def _pinpoint(data: Mapping[str, Any], key: str) -> Pinpoint:
    default = Pinpoint()
    unknown = set(data) - {f.name for f in dataclasses.fields(Pinpoint)}
    if unknown:
        first = sorted(unknown)[0]
        raise bad_setting(f"{key}.{first}", data[first], "pinpoint has the keys "
                          + ", ".join(f.name for f in dataclasses.fields(Pinpoint)))
    enabled = data.get("enabled", default.enabled)
    if not isinstance(enabled, bool):
        raise bad_setting(f"{key}.enabled", enabled, "true or false")
    param = data.get("param", default.param)
    if not isinstance(param, str) or not param:
        raise bad_setting(f"{key}.param", param, "the name of a searched parameter")
    low = _number(data.get("low", default.low), f"{key}.low", 0.0, None, "a positive number")
    high = _number(data.get("high", default.high), f"{key}.high", 0.0, None, "a positive number")
    if not 0 < low < high:
        raise bad_setting(f"{key}.low", low, f"a positive number below {key}.high={high}")
    num = _integer(data.get("num", default.num), f"{key}.num", 2)
    metric = data.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise bad_setting(f"{key}.metric", metric, "null (use the objective) or a key of metrics.json")
    threshold = data.get("threshold")
    if threshold is not None:
        threshold = _number(threshold, f"{key}.threshold", None, None, "null or a number")
    overrides = data.get("overrides", default.overrides)
    return Pinpoint(enabled, param, low, high, num, _string_list(overrides, f"{key}.overrides"),
                    metric, threshold)
