"""Recompute functions for ``bus.depend(child, on=[...], fn=...)``.

``copy`` makes the child an exact copy of its one parent; ``reduce(semiring)`` sets
``child = ⊕_i (w_i ⊗ parent_i)`` elementwise with the weights given to ``depend``. Both run as C++
kernels inside the wave. Any other callable ``fn(out, *parents)`` runs as Python with the GIL on
the committing thread: ``out`` is a writable copy of the child's content, parents are read-only
views; fill ``out`` in place (or return an array, which is assigned into it). The result is
diffed, so an unchanged output commits nothing and stops the wave on that branch.
"""

from __future__ import annotations

from typing import NamedTuple, Union

from .semiring import Semiring


class Op(NamedTuple):
    """A built-in recompute: ``kind`` is "copy" or "reduce"."""

    kind: str
    semiring: str = ""

    def __repr__(self) -> str:
        return "mmsb.ops.copy" if self.kind == "copy" else f"mmsb.ops.reduce({self.semiring!r})"


copy = Op("copy")


def reduce(semiring: Union[str, Semiring]) -> Op:  # noqa: A001  (the documented name)
    """Elementwise semiring reduction over the child's data parents (int32/int64/float32/float64/
    bool pages laid out like the child). ``semiring``: a name or a ``mmsb.Semiring``."""
    if not isinstance(semiring, Semiring):
        semiring = Semiring(str(semiring))
    return Op("reduce", semiring.name)


__all__ = ["Op", "copy", "reduce"]
