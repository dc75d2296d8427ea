"""Checks of the integer arguments the Python layer takes (counts, seeds, epochs, page ids)
before they reach NumPy or the binding layer, whose own errors are builtin TypeErrors naming
internal functions."""

from __future__ import annotations

import operator
from typing import Any, Optional

import numpy as np

from .errors import InvalidArgumentError

U64_MAX = 2**64 - 1


def as_int(value: Any) -> Optional[int]:
    """`value` as an int when it is an integer: an int or a NumPy integer (anything with
    __index__), else None. A bool is a flag, not a count or an id. An array has __index__ too,
    and only a 0-d integer one converts, hence the try."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def int_arg(name: str, value: Any, low: int = 0, high: Optional[int] = None) -> int:
    """`value` as an int in [low, high] (no upper bound when high is None), else
    InvalidArgumentError naming `name` and the value."""
    i = as_int(value)
    if i is None or i < low or (high is not None and i > high):
        if high is None:
            want = "a non-negative int" if low == 0 else f"an int >= {low}"
        else:
            want = f"an int from {low} to {'2**64 - 1' if high == U64_MAX else high}"
        raise InvalidArgumentError(f"{name} must be {want}; got {value!r}")
    return i
