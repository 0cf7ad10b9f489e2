"""What kind of number a setting or a record holds. Python's ``True`` is an ``int`` equal to 1, so every test of a
number leaves bools out: ``trainer.epochs=true`` is no count and ``"objective": true`` no score."""

from __future__ import annotations

import math
from typing import Any


def is_integer(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a float that is not a bool (NaN and the infinities included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)
