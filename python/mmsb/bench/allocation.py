"""Category `allocation`: creating pages, against NumPy arrays of the same size.

  raw     bus.create_page(4096) per call vs np.zeros(4096, uint8) per call
  typed   bus.create_page(shape=(1024,), dtype="float32") vs np.zeros(1024, float32)

Each timed run builds a fresh bus (or list) of N pages and frees it outside the timed region. A
page is a versioned, logged object (id, epoch, a creation record in the in-memory log), so the
ratio says what that bookkeeping costs over a bare allocation. Checked: every created page is
zero-filled, of the asked size, and the bus holds exactly N pages.
"""

from __future__ import annotations

import numpy as np

import mmsb

from . import workloads as wl
from ._measure import BenchContext, rate, timed, verify

UNIT = "pages/s"


def _check_bus(n: int, size: int):
    """A check for timed(): the run's bus holds n zeroed pages of `size` bytes."""
    def check(bus: mmsb.Bus) -> None:
        try:
            pages = bus.pages()
            verify(len(pages) == n, f"create_page: the bus holds {len(pages)} pages, expected {n}")
            verify(all(p.size == size for p in pages), f"create_page: a page is not {size} bytes")
            verify(not wl.page_bytes(pages).any(), "create_page: pages are not zero-filled")
        finally:
            bus.close()
    return check


def _check_arrays(n: int, size: int):
    def check(arrays: list) -> None:
        verify(len(arrays) == n and all(a.nbytes == size and not a.any() for a in arrays),
               f"np.zeros: expected {n} zeroed arrays of {size} bytes")
    return check


def run(ctx: BenchContext) -> None:
    """Fills ctx.section with the page-creation figures."""
    n, repeats = ctx.size(16_384, 4096), ctx.size(5, 3)
    ctx.section.details.update(pages_per_run=n, timed_runs=repeats)

    def mmsb_raw() -> mmsb.Bus:
        bus = mmsb.Bus()
        for _ in range(n):
            bus.create_page(wl.PAGE_SIZE)
        return bus

    def mmsb_typed() -> mmsb.Bus:
        bus = mmsb.Bus()
        for _ in range(n):
            bus.create_page(shape=(1024,), dtype="float32")
        return bus

    def numpy_raw() -> list:
        return [np.zeros(wl.PAGE_SIZE, dtype=np.uint8) for _ in range(n)]

    def numpy_typed() -> list:
        return [np.zeros(1024, dtype=np.float32) for _ in range(n)]

    variants = [
        ("mmsb create_page(4096)", mmsb_raw, _check_bus(n, wl.PAGE_SIZE), "numpy np.zeros(4096, uint8)"),
        ("numpy np.zeros(4096, uint8)", numpy_raw, _check_arrays(n, wl.PAGE_SIZE), None),
        ("mmsb create_page(shape=(1024,), float32)", mmsb_typed, _check_bus(n, 4096), "numpy np.zeros(1024, float32)"),
        ("numpy np.zeros(1024, float32)", numpy_typed, _check_arrays(n, 4096), None),
    ]
    for name, fn, check, anchor in variants:
        ctx.progress(name)
        ctx.section.add(rate(name, UNIT, n, timed(fn, repeats, check=check), ratio_to=anchor,
                             reference=anchor is None))
