"""Semirings (⊕, ⊗, 0, 1) as objects: ``mmsb.Semiring.min_plus`` and friends.

The same operations run in the C++ reduction kernel; ``check_laws`` samples the semiring laws
through that kernel's scalar operations.
"""

from __future__ import annotations

from typing import Any, ClassVar, Tuple

import numpy as np

from . import _core
from ._args import U64_MAX, int_arg
from .errors import InvalidArgumentError


class Semiring:
    """One semiring: ``name``, NumPy ``add`` (⊕) and ``mul`` (⊗) ufuncs, and ``zero``/``one``
    for a dtype. Compare by name.

    The ufuncs match the engine's kernel on floats and bools. On integers the engine treats the
    type's max/min as the tropical infinities and saturates ⊗ = + there (inf + x = inf), where
    ``np.add`` wraps around; ``check_laws`` tests the engine's own operations."""

    NAMES: ClassVar[Tuple[str, ...]] = ("sum_product", "min_plus", "max_plus", "max_min", "boolean")
    sum_product: ClassVar["Semiring"]
    min_plus: ClassVar["Semiring"]
    max_plus: ClassVar["Semiring"]
    max_min: ClassVar["Semiring"]
    boolean: ClassVar["Semiring"]

    _OPS = {
        "sum_product": (np.add, np.multiply),
        "min_plus": (np.minimum, np.add),
        "max_plus": (np.maximum, np.add),
        "max_min": (np.maximum, np.minimum),
        "boolean": (np.logical_or, np.logical_and),
    }

    def __init__(self, name: str) -> None:
        if name not in self.NAMES:
            raise InvalidArgumentError(f"unknown semiring {name!r}; expected one of {', '.join(self.NAMES)}")
        self.name = name
        self.add, self.mul = self._OPS[name]

    def zero(self, dtype: Any) -> Any:
        """The ⊕ identity in ``dtype`` (infinities are the integer limits for integer types)."""
        return self._bound("zero", dtype, {"sum_product": 0, "min_plus": "max", "max_plus": "min",
                                           "max_min": "min", "boolean": 0}[self.name])

    def one(self, dtype: Any) -> Any:
        """The ⊗ identity in ``dtype``."""
        return self._bound("one", dtype, {"sum_product": 1, "min_plus": 0, "max_plus": 0, "max_min": "max",
                                          "boolean": 1}[self.name])

    def _bound(self, what: str, dtype: Any, v: Any) -> Any:
        dt = _dtype(dtype)
        # An identity is a number; the tropical ones are the ends of an order, which complex
        # numbers lack.
        if dt.kind not in "biufc" or (v in ("max", "min") and dt.kind == "c"):
            raise InvalidArgumentError(f"{self!r} has no {what} in dtype {dt.name}; "
                                       f"use a bool, integer or floating dtype")
        if v in ("max", "min"):
            if dt.kind == "f":
                return dt.type(np.inf if v == "max" else -np.inf)
            if dt.kind == "b":
                return np.bool_(v == "max")
            info = np.iinfo(dt)
            return dt.type(info.max if v == "max" else info.min)
        return dt.type(v)

    def supports(self, dtype: Any) -> bool:
        """Whether ``mmsb.ops.reduce(self)`` accepts pages of ``dtype``."""
        return bool(_core._semiring_supports(self.name, _dtype(dtype).name))

    def check_laws(self, dtype: Any, samples: int = 1000, seed: int = 0) -> Tuple[int, list]:
        """Samples associativity, commutativity, identities, annihilation and distributivity on
        the engine's own scalar operations. Returns (checks, violations)."""
        samples, seed = int_arg("samples", samples, high=U64_MAX), int_arg("seed", seed, high=U64_MAX)
        checks, violations = _core._semiring_laws(self.name, _dtype(dtype).name, samples, seed)
        return int(checks), list(violations)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Semiring) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"mmsb.Semiring.{self.name}"


def _dtype(dtype: Any) -> np.dtype:
    try:
        return np.dtype(dtype)
    except (TypeError, ValueError) as e:  # NumPy's own errors name no argument
        raise InvalidArgumentError(f"dtype {dtype!r} is no NumPy dtype: {e}") from None


for _name in Semiring.NAMES:
    setattr(Semiring, _name, Semiring(_name))

__all__ = ["Semiring"]
