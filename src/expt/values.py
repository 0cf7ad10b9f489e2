"""What kind of number a setting or a record holds. Python's ``True`` is an ``int`` equal to 1, so every test of a
number leaves bools out: ``trainer.epochs=true`` is no count and ``"objective": true`` no score. NumPy's numbers
count as the numbers they are (a layer size of ``np.int64(64)``)."""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_integer(value: Any) -> bool:
    """An integer (Python's or NumPy's) that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (an int or a float, Python's or NumPy's) that is not a bool; NaN and the infinities included."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)
