"""The parameter space: hard limits, numeric and choice parameters, and override strings.

A parameter knows its range, how to sample it (uniformly, log-uniformly, on a grid) and how to
narrow it without leaving its :class:`Limits`; a space is an ordered mapping of names to parameters.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Optional, Union

from expt.errors import written
from expt.overrides import override_key
from expt.values import is_integer

Value = Union[float, int, str]

SIGNIFICANT_DIGITS = 4


class SearchConfigError(ValueError):
    """A sweeper setting is invalid; the message names the key, the value and what is allowed.

    ``allowed`` holds the last part alone, so that an adapter can name the value as the user wrote
    it (``optimizer.lr=interval(1e-1,1e-3)`` on the command line) and keep what is allowed.
    """

    def __init__(self, message: str, allowed: Optional[str] = None) -> None:
        super().__init__(message)
        self.allowed = allowed


def bad_setting(key: str, value: Any, allowed: str) -> SearchConfigError:
    return SearchConfigError(f"{key}={written(value)} is not allowed: {allowed}", allowed)


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
            raise bad_setting(key, text, allowed)
        try:
            low, high = float(match.group(2)), float(match.group(3))
        except ValueError:
            raise bad_setting(key, text, allowed) from None
        if math.isnan(low) or math.isnan(high) or not low < high:
            raise bad_setting(key, text, "the lower bound must be below the upper bound")
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
        return (f"{'(' if self.low_open else '['}{compact_number(self.low)}, "
                f"{compact_number(self.high)}{')' if self.high_open else ']'}")


POSITIVE = Limits(0.0, math.inf, True, True)
NON_NEGATIVE = Limits(0.0, math.inf, False, True)
AT_LEAST_ONE = Limits(1.0, math.inf, False, True)


def compact_number(x: float, sci: bool = False) -> str:
    """Compact number for messages: 0.35, 512, and (``sci``, for log scales) 8.7e-2, 1e-6; a whole number is written
    whole on either scale (a log-scaled width of 16 to 128, not 1.6e1 to 1.3e2)."""
    if not math.isfinite(x) or x == 0:
        return str(x).replace(".0", "")
    if isinstance(x, int) or (x == int(x) and abs(x) < 1e6):
        return str(int(x))
    if not sci and 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def round_significant(x: float, digits: int = SIGNIFICANT_DIGITS) -> float:
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
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise bad_setting(key, f"[{self.low}, {self.high}]", "a range with finite ends")
        if self.low > self.high:
            low, high = compact_number(self.low), compact_number(self.high)
            raise bad_setting(key, f"[{self.low}, {self.high}]",
                              f"a range whose low end is not above its high end (here {low} > {high}: swap them, "
                              f"interval({high}, {low}))")
        if self.log and self.low <= 0:
            example = (f", e.g. tag(log, interval({compact_number(self.high / 1e4, True)}, "
                       f"{compact_number(self.high, True)})) spans four decades" if self.high > 0 else "")
            raise bad_setting(key, f"[{self.low}, {self.high}]",
                              f"a log range needs both ends > 0 (here the low end is {compact_number(self.low)}): "
                              f"start it at the smallest value worth trying{example}")
        if self.step is not None and self.step <= 0:
            raise bad_setting(key, self.step, "the step must be positive")
        if self.integer and self.step is None:
            object.__setattr__(self, "step", 1.0)
        if self.step is not None and self.anchor is None:
            object.__setattr__(self, "anchor", self.low)
        for bound in (self.low, self.high):
            if not (self.limits.contains(bound) or bound in (self.limits.low, self.limits.high)):
                raise bad_setting(key, f"[{compact_number(self.low)}, {compact_number(self.high)}]",
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
            rounded = round_significant(x)
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
            low, high = round_significant(low), round_significant(high)
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
        return f"[{compact_number(self.low, self.log)}, {compact_number(self.high, self.log)}]"


def _plain(x: float, integer: bool) -> Union[int, float]:
    return int(x) if integer else float(x)


@dataclass(frozen=True)
class ChoiceParam:
    """A categorical parameter; choices are kept as override strings (``relu``, ``64``, ...)."""

    name: str
    choices: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise bad_setting(f"hydra.sweeper.params.{self.name}", "choice()", "at least one option")

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


@dataclass(frozen=True)
class Condition:
    """A parameter that only some options of a searched choice have (``model.num_filters`` under
    ``model=choice(convnet,mlp)``): a trial sets it only where the option it runs with, drawn or held (else
    ``default``, the config's own), is one of ``options``."""

    choice: str
    options: frozenset[str]
    default: str

    def holds(self, chosen: Mapping[str, Value]) -> bool:
        return str(chosen.get(self.choice, self.default)) in self.options


def integer_sweep(value: Any) -> bool:
    """Whether a Hydra ``interval()`` or ``range()`` sweep samples integers: tagged ``int`` (``tag(int, ...)``,
    or ``int(...)`` as the Optuna sweeper spells it), or with integer bounds (and step). The sweeper and the
    dashboard's HParams columns read a sweep's kind with this one rule."""
    if "int" in set(getattr(value, "tags", None) or ()):
        return True
    bounds = [getattr(value, name, None) for name in ("start", "end", "stop", "step")]
    given = [b for b in bounds if b is not None]
    return bool(given) and all(is_integer(b) for b in given)


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


def merge_overrides(*groups: Iterable[str]) -> tuple[str, ...]:
    """Concatenate override lists; for a key given twice, the later group's value wins."""
    merged: dict[str, str] = {}
    for group in groups:
        for item in group:
            key = override_key(item)
            merged.pop(key, None)
            merged[key] = item
    return tuple(merged.values())
