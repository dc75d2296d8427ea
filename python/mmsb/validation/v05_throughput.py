"""Validator 5, throughput: how many 64-byte deltas per second a durable bus commits from
columnar batches, with one thread and with every core (DESIGN §5 row 5).

Workload (full; quick in brackets): 16,384 raw pages of 4 KiB in a bus directory with the log
on (mmsb.Bus(path), durability "flush", the default: every batch is framed, checksummed and
handed to the OS before it is applied). A fixed-seed stream of 4,194,304 [262,144] single-run
deltas of 64 bytes, each to a random page and a random 64-byte-aligned slot with random payload,
in mmsb.DeltaBatch batches of 65,536 rows. One bus runs with threads=1, another with
threads=os.cpu_count(); each applies the stream warm-up + 3 [2] times, the two buses taking
turns. A timed run covers building the DeltaBatch objects from ready NumPy columns and
bus.apply_batch, with Python's collector paused.

Checks, which raise when they fail (a fast wrong answer is no throughput): afterwards every
page's bytes equal a NumPy oracle (the last writer of each slot, found from the stream without
replaying it in order), every page's epoch equals (runs) × (its rows in the stream), and the
bus directory holds at least the payload bytes of every run (the log was written).

Metrics: single_thread_deltas_per_s and all_threads_deltas_per_s, each the best timed run
(the medians are noted).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from pathlib import Path

import numpy as np

import mmsb

from ..bench import workloads as wl
from ._framework import Context, validator

PAGES = wl.PAGES
PAGE_SIZE = wl.PAGE_SIZE
DELTA = wl.DELTA_BYTES
BATCH = 65_536


def _stream(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(page index, slot, payload rows) of the whole stream, in commit order: the generator of
    `mmsb bench` (mmsb.bench.workloads), so both measure the same kind of stream."""
    d = wl.random_rows(rows, rng, PAGES)
    return d.page, d.offset // DELTA, d.payload


def _oracle(page: np.ndarray, slot: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expected bytes (PAGES, PAGE_SIZE), rows per page): each 64-byte slot holds the payload of
    the last row that wrote it, found without replaying the stream in order
    (workloads.expected_state)."""
    rows = [wl.DeltaRows(page, slot * DELTA, payload)]
    return wl.expected_state(rows, PAGES), wl.epoch_counts(rows, PAGES)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class _Durable:
    """One bus directory of PAGES pages applying the stream with `threads` threads."""

    def __init__(self, path: Path, threads: int, columns: list) -> None:
        self.path, self.threads, self.runs = path, threads, 0
        self.rows = sum(len(c[0]) for c in columns)
        self.bus = mmsb.Bus(path, threads=threads)
        self.bus_threads = self.bus.threads  # what the bus says it uses
        self.pages = [self.bus.create_page(PAGE_SIZE) for _ in range(PAGES)]
        first = self.pages[0].id
        if self.pages[-1].id - first != PAGES - 1:
            raise RuntimeError(f"page ids are not consecutive: {first}..{self.pages[-1].id}")
        self.columns = [((p + first).astype(np.uint64), o, n, d) for p, o, n, d in columns]

    def apply_stream(self) -> float:
        """Seconds to build and apply every batch once, with the collector paused."""
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            for c in self.columns:
                self.bus.apply_batch(mmsb.DeltaBatch(*c))
            elapsed = time.perf_counter() - t0
        finally:
            gc.enable()
        self.runs += 1
        return elapsed

    def check_and_close(self, expected: np.ndarray, counts: np.ndarray) -> float:
        """Raises unless bytes, epochs and the log are right; returns log bytes per delta."""
        t, runs = self.threads, self.runs
        try:
            got = np.stack([p.view() for p in self.pages])
            if not np.array_equal(got, expected):
                bad = np.argwhere(got != expected)[0]
                raise RuntimeError(f"threads={t}: page bytes differ from the NumPy oracle (first at page index "
                                   f"{bad[0]}, byte {bad[1]}: {got[bad[0], bad[1]]} != {expected[bad[0], bad[1]]})")
            epochs = np.fromiter((p.epoch for p in self.pages), dtype=np.int64, count=PAGES)
            if not np.array_equal(epochs, counts * runs):
                i = int(np.argmax(epochs != counts * runs))
                raise RuntimeError(f"threads={t}: page index {i} is at epoch {epochs[i]}, expected "
                                   f"{runs} runs x {counts[i]} deltas")
        finally:
            self.bus.close()
        logged = _dir_bytes(self.path)
        if logged < runs * self.rows * DELTA:
            raise RuntimeError(f"threads={t}: the bus directory holds {logged} bytes, less than the "
                               f"{runs * self.rows * DELTA} payload bytes committed: the log was not written")
        return logged / (runs * self.rows)


@validator(5, "throughput", ("single_thread_deltas_per_s", "all_threads_deltas_per_s"))
def run(ctx: Context) -> dict:
    rows = ctx.size(1 << 22, 1 << 18)
    repeats = ctx.size(3, 2)
    rng = np.random.default_rng(ctx.seed)
    page, slot, payload = _stream(rows, rng)
    expected, counts = _oracle(page, slot, payload)
    lengths = np.full(BATCH, DELTA, dtype=np.uint64)
    columns = [(page[a:a + BATCH], (slot[a:a + BATCH] * DELTA).astype(np.uint64), lengths[:len(page[a:a + BATCH])],
                payload[a:a + BATCH]) for a in range(0, rows, BATCH)]
    ctx.note("rows_per_run", rows)
    ctx.note("batch_rows", BATCH)
    ctx.note("timed_runs", repeats)
    ctx.note("cpu_count", os.cpu_count())
    labels = {"single_thread": 1, "all_threads": os.cpu_count() or 1}
    buses = {label: _Durable(ctx.tmpdir / label, threads, columns) for label, threads in labels.items()}
    seconds: dict = {label: [] for label in labels}
    try:
        # Interleaved, alternating which goes first, so that neither inherits the other's
        # write-back of dirty log pages more often. The first round is the warm-up.
        for i in ctx.progress(range(1 + repeats), total=1 + repeats, desc="throughput"):
            for label in (list(labels) if i % 2 == 0 else list(labels)[::-1]):
                elapsed = buses[label].apply_stream()
                if i:
                    seconds[label].append(elapsed)
        per_delta = {label: b.check_and_close(expected, counts) for label, b in buses.items()}
    finally:
        for b in buses.values():
            b.bus.close()  # a no-op when already closed
    for label, threads in labels.items():
        ctx.note(f"{label}_bus_threads", buses[label].bus_threads)
        ctx.note(f"{label}_log_bytes_per_delta", per_delta[label])
        ctx.note(f"{label}_median_deltas_per_s", rows / statistics.median(seconds[label]))
    return {"single_thread_deltas_per_s": rows / min(seconds["single_thread"]),
            "all_threads_deltas_per_s": rows / min(seconds["all_threads"])}
