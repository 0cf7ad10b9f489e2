"""The sweeper's settings, validated: the rounds, the pinpoint stage and the search options.

Every error names the key, the value and what is allowed (:class:`SearchConfigError`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from expt.search.space import _bad, _round_sig


@dataclass(frozen=True)
class Round:
    """One round: how many trials, the overrides that set its cost, how many trials lead on."""

    trials: int
    top_k: int = 3
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pinpoint:
    """The optional stage that finds a learning-rate range by overfitting a small subset.

    A rate "learned" when its score (the objective, or ``metric`` read from the trial's
    metrics.json) reaches ``threshold``; without a threshold, when it scores at least halfway
    from the worst to the best completed rate. Round 1 then spans the learned rates plus half
    a grid step on each side.
    """

    enabled: bool = False
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
        return [_round_sig(10 ** (lo + (hi - lo) * i / (self.num - 1))) for i in range(self.num)]


@dataclass(frozen=True)
class Settings:
    """Validated sweeper settings (everything but the search space)."""

    rounds: tuple[Round, ...]
    seed: int = 0
    direction: str = "maximize"
    margin: float = 0.1
    edge: float = 0.1
    max_edge_moves: int = 3
    pinpoint: Pinpoint = Pinpoint()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], prefix: str = "hydra.sweeper") -> "Settings":
        """Build from plain config values, naming ``prefix.key`` in every error."""
        rounds_raw = data.get("rounds")
        if not isinstance(rounds_raw, Sequence) or isinstance(rounds_raw, str) or not rounds_raw:
            raise _bad(f"{prefix}.rounds", rounds_raw,
                       "a non-empty list of rounds, each {trials, top_k, overrides}")
        rounds = tuple(_round(r, f"{prefix}.rounds[{i}]") for i, r in enumerate(rounds_raw))
        direction = str(data.get("direction", "maximize"))
        direction = direction.rsplit(".", 1)[-1]  # accept an enum's str()
        if direction not in ("maximize", "minimize"):
            raise _bad(f"{prefix}.direction", direction, "maximize or minimize")
        margin = _number(data.get("margin", 0.1), f"{prefix}.margin", 0.0, None, "a number >= 0")
        edge = _number(data.get("edge", 0.1), f"{prefix}.edge", 0.0, 0.5,
                       "a fraction of the range's width in [0, 0.5)", high_open=True)
        moves = _integer(data.get("max_edge_moves", 3), f"{prefix}.max_edge_moves", 0)
        seed = _integer(data.get("seed", 0), f"{prefix}.seed", None)
        pinpoint = _pinpoint(data.get("pinpoint") or {}, f"{prefix}.pinpoint")
        return cls(rounds, seed, direction, margin, edge, moves, pinpoint)


def _integer(value: Any, key: str, minimum: Optional[int]) -> int:
    allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, value, allowed)
    if minimum is not None and value < minimum:
        raise _bad(key, value, allowed)
    return value


def _number(value: Any, key: str, low: Optional[float], high: Optional[float], allowed: str,
            high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _bad(key, value, allowed)
    if (low is not None and value < low) or (
            high is not None and (value >= high if high_open else value > high)):
        raise _bad(key, value, allowed)
    return float(value)


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _bad(key, value, "a list of overrides such as [trainer.epochs=1]")
    for item in value:
        if not isinstance(item, str) or ("=" not in item and not item.startswith("~")):
            raise _bad(key, item, "each override has the form key=value")
    return tuple(value)


def _round(data: Any, key: str) -> Round:
    if not isinstance(data, Mapping):
        raise _bad(key, data, "a mapping {trials, top_k, overrides}")
    unknown = set(data) - {"trials", "top_k", "overrides"}
    if unknown:
        raise _bad(f"{key}.{sorted(unknown)[0]}", data[sorted(unknown)[0]],
                   "a round has only the keys trials, top_k, overrides")
    trials = _integer(data.get("trials"), f"{key}.trials", 1)
    top_k = _integer(data.get("top_k", 3), f"{key}.top_k", 1)
    return Round(trials, top_k, _string_list(data.get("overrides"), f"{key}.overrides"))


def _pinpoint(data: Mapping[str, Any], key: str) -> Pinpoint:
    default = Pinpoint()
    enabled = data.get("enabled", False)
    if not isinstance(enabled, bool):
        raise _bad(f"{key}.enabled", enabled, "true or false")
    param = data.get("param", default.param)
    if not isinstance(param, str) or not param:
        raise _bad(f"{key}.param", param, "the name of a searched parameter")
    low = _number(data.get("low", default.low), f"{key}.low", 0.0, None, "a positive number")
    high = _number(data.get("high", default.high), f"{key}.high", 0.0, None, "a positive number")
    if not 0 < low < high:
        raise _bad(f"{key}.low", low, f"a positive number below {key}.high={high}")
    num = _integer(data.get("num", default.num), f"{key}.num", 2)
    metric = data.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise _bad(f"{key}.metric", metric, "null (use the objective) or a key of metrics.json")
    threshold = data.get("threshold")
    if threshold is not None:
        threshold = _number(threshold, f"{key}.threshold", None, None, "null or a number")
    overrides = data.get("overrides", default.overrides)
    return Pinpoint(enabled, param, low, high, num, _string_list(overrides, f"{key}.overrides"),
                    metric, threshold)
