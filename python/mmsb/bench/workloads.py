"""Workloads shared by `mmsb bench`, the pytest-benchmark suites (benchmarks/) and validator 5.

One generator, one oracle: every front end measures and verifies exactly the same deltas, and a
change of layout or seed here changes all of them.

The batch workload is the throughput target of DESIGN.md §5: 64-byte deltas into 16,384 pages of
4 KiB. Offsets are multiples of 64, so every delta overwrites one whole 64-byte slot of a page.
That keeps the expected state computable without relying on NumPy's (unspecified) order of
repeated fancy-index assignments, and it lets NumPy use its fastest form (a row scatter into a
(slots, 64) view), so the comparison is against the best NumPy can do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import mmsb

PAGES = 16_384
PAGE_SIZE = 4096
DELTA_BYTES = 64
SLOTS_PER_PAGE = PAGE_SIZE // DELTA_BYTES
SEED = 20_240_611


@dataclass(frozen=True)
class DeltaRows:
    """One batch of single-run deltas, as NumPy columns (row order = commit order)."""

    page: np.ndarray     # int64 page index in [0, PAGES); page id = first_id + page
    offset: np.ndarray   # int64 byte offset, a multiple of DELTA_BYTES
    payload: np.ndarray  # uint8 (rows, DELTA_BYTES), C-contiguous

    def __len__(self) -> int:
        return len(self.page)

    @property
    def slot(self) -> np.ndarray:
        """Index of the 64-byte slot each row overwrites in a (PAGES * SLOTS_PER_PAGE, 64) view."""
        return self.page * SLOTS_PER_PAGE + self.offset // DELTA_BYTES

    def head(self, rows: int) -> DeltaRows:
        """The first `rows` deltas, as views (no copy)."""
        return DeltaRows(self.page[:rows], self.offset[:rows], self.payload[:rows])

    def mmsb_columns(self, first_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(page_ids, offsets, lengths, payload) for mmsb.DeltaBatch. uint64 columns are taken
        without a copy by the binding, so building them here keeps conversions out of timings."""
        rows = len(self)
        return (
            (self.page + first_id).astype(np.uint64),
            self.offset.astype(np.uint64),
            np.full(rows, DELTA_BYTES, dtype=np.uint64),
            self.payload,
        )


def random_rows(rows: int, rng: np.random.Generator, pages: int = PAGES) -> DeltaRows:
    """`rows` deltas to uniformly random pages and slots, with random payload bytes."""
    return DeltaRows(
        page=rng.integers(0, pages, size=rows, dtype=np.int64),
        offset=rng.integers(0, SLOTS_PER_PAGE, size=rows, dtype=np.int64) * DELTA_BYTES,
        payload=rng.integers(0, 256, size=(rows, DELTA_BYTES), dtype=np.uint8),
    )


def make_batches(rows: int, batches: int = 1, seed: int = SEED, pages: int = PAGES) -> list[DeltaRows]:
    """`batches` independent batches of `rows` deltas each, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return [random_rows(rows, rng, pages) for _ in range(batches)]


def expected_state(batches: list[DeltaRows], pages: int = PAGES) -> np.ndarray:
    """Page bytes, shape (pages, PAGE_SIZE), after applying `batches` in order to zeroed pages.

    Order-independent by construction: the last writer of each slot is found with
    np.maximum.at over global row numbers (unbuffered and commutative), so this oracle does not
    share the ordering assumptions of the scatters it checks."""
    state = np.zeros((pages, PAGE_SIZE), dtype=np.uint8)
    slots = state.reshape(-1, DELTA_BYTES)
    last = np.full(len(slots), -1, dtype=np.int64)
    base = 0
    for b in batches:
        np.maximum.at(last, b.slot, np.arange(base, base + len(b), dtype=np.int64))
        base += len(b)
    base = 0
    for b in batches:
        mine = (last >= base) & (last < base + len(b))
        slots[mine] = b.payload[last[mine] - base]
        base += len(b)
    return state


def epoch_counts(batches: list[DeltaRows], pages: int = PAGES) -> np.ndarray:
    """Deltas per page in `batches`: each one bumps its page's epoch by exactly one."""
    return sum(np.bincount(b.page, minlength=pages) for b in batches)


def create_pages(bus: mmsb.Bus, pages: int = PAGES, size: int = PAGE_SIZE) -> list[mmsb.Page]:
    """`pages` raw pages; their ids must be consecutive so rows can address them as first_id + i."""
    out = [bus.create_page(size) for _ in range(pages)]
    if out[-1].id - out[0].id != pages - 1:
        raise RuntimeError(f"page ids are not consecutive: {out[0].id}..{out[-1].id}")
    return out


def page_bytes(pages: list[mmsb.Page]) -> np.ndarray:
    """Copy of the pages' bytes, shape (len(pages), size), for comparison with NumPy state."""
    return np.stack([p.view() for p in pages])


def page_epochs(pages: list[mmsb.Page]) -> np.ndarray:
    return np.fromiter((p.epoch for p in pages), dtype=np.int64, count=len(pages))


def sparse_change(nbytes: int, changes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(old, new) uint8 buffers of `nbytes` that differ in `changes` scattered 4-byte runs, the
    shape of a typical edit (a few float32 elements) for Delta.diff."""
    old = rng.integers(0, 256, size=nbytes, dtype=np.uint8)
    new = old.copy()
    starts = rng.choice(nbytes // 4, size=changes, replace=False) * 4
    for s in starts:
        new[s:s + 4] ^= 0xFF  # every byte flips, so each run is exactly 4 changed bytes
    return old, new
