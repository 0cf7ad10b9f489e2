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

This module knows nothing about Hydra: trials are described by override strings and their
results come back as :class:`TrialRecord` objects, so every step can be unit-tested with a
synthetic objective. The Hydra sweeper in ``hydra_plugins.expt_sweeper`` is a thin adapter.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from expt import faults
from expt.status import COMPLETED, DIVERGED, FAILED

log = logging.getLogger(__name__)

Value = Union[float, int, str]

PINPOINT_ROUND = 0
SIGNIFICANT_DIGITS = 4


class SearchConfigError(ValueError):
    """A sweeper setting is invalid; the message names the key, the value and what is allowed."""


def _bad(key: str, value: Any, allowed: str) -> SearchConfigError:
    return SearchConfigError(f"{key}={value!r} is not allowed: {allowed}")


# --------------------------------------------------------------------------------------------
# Hard limits


_LIMITS_RE = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])\s*$")


@dataclass(frozen=True)
class Limits:
    """The values a parameter may ever take, an interval such as ``[0, 1)`` or ``(0, inf)``."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = True
    high_open: bool = True

    @classmethod
    def parse(cls, text: str, key: str = "limits") -> "Limits":
        """Read interval notation: ``[`` / ``]`` include a bound, ``(`` / ``)`` exclude it."""
        match = _LIMITS_RE.match(str(text))
        allowed = "an interval such as '[0, 1)', '(0, inf)' or '[1, inf)'"
        if match is None:
            raise _bad(key, text, allowed)
        try:
            low, high = float(match.group(2)), float(match.group(3))
        except ValueError:
            raise _bad(key, text, allowed) from None
        if math.isnan(low) or math.isnan(high) or not low < high:
            raise _bad(key, text, "the lower bound must be below the upper bound")
        return cls(low, high, match.group(1) == "(" or low == -math.inf,
                   match.group(4) == ")" or high == math.inf)

    def contains(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def clip(self, x: float) -> float:
        """The nearest value inside the limits (one float step inside an open bound)."""
        if not x > self.low or (x == self.low and self.low_open):
            x = math.nextafter(self.low, math.inf) if self.low_open else self.low
        if not x < self.high or (x == self.high and self.high_open):
            x = math.nextafter(self.high, -math.inf) if self.high_open else self.high
        return x

    def intersect(self, other: "Limits") -> "Limits":
        # on a tie the open bound is the tighter one
        low, low_open = max((self.low, self.low_open), (other.low, other.low_open))
        high, high_closed = min((self.high, not self.high_open), (other.high, not other.high_open))
        return Limits(low, high, low_open, not high_closed)

    def __str__(self) -> str:
        return (f"{'(' if self.low_open else '['}{_fmt(self.low)}, "
                f"{_fmt(self.high)}{')' if self.high_open else ']'}")


POSITIVE = Limits(0.0, math.inf, True, True)
NON_NEGATIVE = Limits(0.0, math.inf, False, True)
AT_LEAST_ONE = Limits(1.0, math.inf, False, True)


def _fmt(x: float, sci: bool = False) -> str:
    """Compact number for messages: 0.35, 512, and (``sci``, for log scales) 8.7e-2, 1e-6."""
    if not math.isfinite(x) or x == 0:
        return str(x).replace(".0", "")
    if not sci and (isinstance(x, int) or (x == int(x) and abs(x) < 1e6)):
        return str(int(x))
    if not sci and 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _round_sig(x: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    return float(f"{x:.{digits}g}")


# --------------------------------------------------------------------------------------------
# Parameters and spaces


@dataclass(frozen=True)
class NumericParam:
    """A float or integer parameter sampled from ``[low, high]``, uniformly or log-uniformly.

    ``step`` puts samples on the grid ``anchor + k * step`` (integers have step 1); the anchor
    is the initial lower bound, so narrowed ranges stay on the grid the user asked for.
    """

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False
    step: Optional[float] = None
    anchor: Optional[float] = None
    limits: Limits = Limits()

    def __post_init__(self) -> None:
        key = f"hydra.sweeper.params.{self.name}"
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise _bad(key, f"[{self.low}, {self.high}]", "a finite range with low <= high")
        if self.log and self.low <= 0:
            raise _bad(key, f"[{self.low}, {self.high}]", "a log range must be positive")
        if self.step is not None and self.step <= 0:
            raise _bad(key, self.step, "the step must be positive")
        if self.integer and self.step is None:
            object.__setattr__(self, "step", 1.0)
        if self.step is not None and self.anchor is None:
            object.__setattr__(self, "anchor", self.low)
        for bound in (self.low, self.high):
            if not (self.limits.contains(bound) or bound in (self.limits.low, self.limits.high)):
                raise _bad(key, f"[{_fmt(self.low)}, {_fmt(self.high)}]",
                           f"the range must lie within its limits {self.limits}")

    def to_t(self, x: float) -> float:
        """Into the space where sampling is uniform and widths are measured."""
        if not self.log:
            return x
        return math.log(x) if x > 0 else -math.inf

    def from_t(self, t: float) -> float:
        return math.exp(t) if self.log else t

    @property
    def width_t(self) -> float:
        return self.to_t(self.high) - self.to_t(self.low)

    def _snap(self, x: float, how: str = "nearest") -> float:
        """The grid point nearest to ``x``, or the one at or below / above it."""
        assert self.step is not None and self.anchor is not None
        rounding = {"nearest": round, "down": math.floor, "up": math.ceil}[how]
        tolerance = {"nearest": 0.0, "down": 1e-9, "up": -1e-9}[how]
        value = self.anchor + rounding((x - self.anchor) / self.step + tolerance) * self.step
        return float(int(round(value))) if self.integer else float(f"{value:.12g}")

    def _grid_bounds(self) -> tuple[float, float]:
        low, high = self._snap(self.low, "up"), self._snap(self.high, "down")
        return (low, high) if low <= high else (self._snap(self.low), self._snap(self.low))

    def sample(self, rng: random.Random) -> Value:
        if self.step is None:
            x = self.from_t(rng.uniform(self.to_t(self.low), self.to_t(self.high)))
            rounded = _round_sig(x)
            x = rounded if self.low <= rounded <= self.high and self.limits.contains(rounded) else x
            return self.limits.clip(min(max(x, self.low), self.high))
        low, high = self._grid_bounds()
        half = self.step / 2
        lo_t = self.to_t(low - half) if not self.log or low - half > 0 else self.to_t(low)
        x = self._snap(self.from_t(rng.uniform(lo_t, self.to_t(high + half))))
        x = min(max(x, low), high)
        return int(x) if self.integer else x

    def format(self, value: Value) -> str:
        """The value as the right-hand side of an override."""
        return str(int(value)) if self.integer else repr(float(value))

    def with_range(self, low: float, high: float) -> "NumericParam":
        """The same parameter over ``[low, high]``, kept on its grid and inside its limits.

        Bounds are clipped to the closed limits (samples never reach an open one).
        """
        if self.step is None:
            low, high = _round_sig(low), _round_sig(high)
        low = min(max(low, self.limits.low), self.limits.high)
        high = min(max(high, self.limits.low), self.limits.high)
        if self.log and low <= 0:
            low = min(math.nextafter(0.0, 1.0), high)
        if self.step is not None:
            low, high = self._snap(low, "down"), self._snap(high, "up")
            while not self.limits.contains(low) and low < high:
                low += self.step
            while not self.limits.contains(high) and high > low:
                high -= self.step
        return replace(self, low=min(low, high), high=max(low, high))

    def describe(self) -> dict[str, Any]:
        kind = "int" if self.integer else "float"
        out: dict[str, Any] = {"type": kind, "low": _plain(self.low, self.integer),
                               "high": _plain(self.high, self.integer), "log": self.log}
        if self.step is not None and not self.integer:
            out["step"] = self.step
        return out

    def __str__(self) -> str:
        return f"[{_fmt(self.low, self.log)}, {_fmt(self.high, self.log)}]"


def _plain(x: float, integer: bool) -> Union[int, float]:
    return int(x) if integer else float(x)


@dataclass(frozen=True)
class ChoiceParam:
    """A categorical parameter; choices are kept as override strings (``relu``, ``64``, ...)."""

    name: str
    choices: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise _bad(f"hydra.sweeper.params.{self.name}", "choice()", "at least one option")

    def sample(self, rng: random.Random) -> Value:
        return self.choices[rng.randrange(len(self.choices))]

    def format(self, value: Value) -> str:
        return str(value)

    def describe(self) -> dict[str, Any]:
        return {"type": "choice", "choices": list(self.choices)}

    def __str__(self) -> str:
        return "{" + ", ".join(self.choices) + "}"


Param = Union[NumericParam, ChoiceParam]
Space = dict[str, Param]


def default_limits(log: bool, integer: bool, low: float) -> Limits:
    """Limits a parameter gets unless the user declares its own.

    Log-scaled values must stay positive; an integer that starts at 1 or more (a width, a
    count) stays >= 1; a float that starts non-negative (a rate, a strength) stays >= 0.
    """
    if log:
        return POSITIVE
    if integer and low >= 1:
        return AT_LEAST_ONE
    if low >= 0:
        return NON_NEGATIVE
    return Limits()


def sample_space(space: Mapping[str, Param], n: int, rng: random.Random) -> list[dict[str, Value]]:
    """``n`` independent points; parameters are drawn in the space's order."""
    return [{name: param.sample(rng) for name, param in space.items()} for _ in range(n)]


def describe_space(space: Mapping[str, Param]) -> dict[str, dict[str, Any]]:
    return {name: param.describe() for name, param in space.items()}


def override_key(override: str) -> str:
    """``+trainer.epochs=3`` -> ``trainer.epochs``; used to let later overrides win."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*groups: Iterable[str]) -> tuple[str, ...]:
    """Concatenate override lists; for a key given twice, the later group's value wins."""
    merged: dict[str, str] = {}
    for group in groups:
        for item in group:
            key = override_key(item)
            merged.pop(key, None)
            merged[key] = item
    return tuple(merged.values())


# --------------------------------------------------------------------------------------------
# Settings


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


# --------------------------------------------------------------------------------------------
# Trials and their records


@dataclass(frozen=True)
class TrialSpec:
    """A trial to run: its round, index in the round, Hydra job number and full overrides."""

    round: int
    index: int
    job: int
    values: dict[str, Value]
    overrides: tuple[str, ...]

    @property
    def key(self) -> tuple[int, tuple[str, ...]]:
        """What identifies the trial across re-runs of the same sweep (for resuming)."""
        return (self.round, self.overrides)


@dataclass
class TrialRecord:
    """A finished trial, one line of ``search.jsonl``."""

    round: int
    job: int
    overrides: list[str]
    values: dict[str, Value]
    objective: Optional[float]
    status: str
    seconds: float
    run_dir: Optional[str] = None
    metric: Optional[float] = None
    error: Optional[str] = None

    @property
    def key(self) -> tuple[int, tuple[str, ...]]:
        return (self.round, tuple(self.overrides))

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None or k == "objective"}
        return json.dumps(data, sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialRecord":
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})


def as_objective(value: Any) -> Optional[float]:
    """The task's return value as a finite float, or None (NaN, inf, None, not a number)."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_records(path: Path) -> dict[tuple[int, tuple[str, ...]], TrialRecord]:
    """Records already in a ``search.jsonl``, by trial key (the last line for a key wins).

    A truncated last line (a sweep killed while writing) is ignored.
    """
    records: dict[tuple[int, tuple[str, ...]], TrialRecord] = {}
    if not path.exists():
        return records
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = TrialRecord.from_dict(json.loads(line))
        except (ValueError, TypeError) as error:
            log.warning("%s:%d is not a trial record, ignored (%s)", path, number, error)
            continue
        records[record.key] = record
    return records


def append_record(path: Path, record: TrialRecord) -> None:
    """Append one line in a single write under an exclusive lock, so parallel trials do not interleave.

    A line cut short by a kill is left where it is (:func:`read_records` skips it) and the new
    record starts on a line of its own.
    """
    line = (record.to_json() + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        faults.write(handle, line, path.name)
        handle.flush()
    faults.crash_point(f"{path.name}:appended")


# --------------------------------------------------------------------------------------------
# The search


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


__all__ = [
    "AT_LEAST_ONE", "COMPLETED", "DIVERGED", "FAILED", "NON_NEGATIVE", "PINPOINT_ROUND", "POSITIVE",
    "ChoiceParam", "CoarseToFineSearch",
    "EdgeMove", "Limits", "NumericParam", "Param", "Pinpoint", "Round", "SearchConfigError",
    "Settings", "Space", "TrialRecord", "TrialSpec", "append_record", "as_objective",
    "consecutive_runs", "default_limits", "describe_space", "merge_overrides", "override_key",
    "ranked", "read_records", "sample_space", "score",
]
