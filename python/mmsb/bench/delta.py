"""Category `delta`: applying 64-byte deltas (the throughput workload of DESIGN §5 row 5).

  mmsb        DeltaBatch apply into 16,384 x 4 KiB pages of an in-memory bus, for each thread
              count of the sweep, with history on (the default: the log kept in memory) and off
              (mmsb.Bus(history=False): the like-for-like comparison with a NumPy array)
  NumPy       the same deltas as vectorised scatters into one (16384, 4096) uint8 array, in
              several forms, each given its index column built before the timed region (as
              mmsb's columns are); the fastest is the anchor of the mmsb figures
  floors      libc memmove (through ctypes) of the same payload bytes, contiguously: the memory
              bandwidth bound, no page lookup; and, when the C++ benchmarks are built,
              bench_apply's BM_FloorMemcpyEpoch (find the page, memcpy 64 bytes, count the
              epoch, nothing else: the apply floor)
  loops       a Python loop of single-delta p.write against a loop of NumPy slice assignments

Every variant's bytes must equal the order-independent oracle (workloads.expected_state) and its
per-page epochs the number of deltas applied, or the run fails (VerificationError).
"""

from __future__ import annotations

import ctypes

import numpy as np

import mmsb

from . import _cpp
from . import workloads as wl
from ._measure import BenchContext, Figure, rate, timed, verify, verify_equal

LANES = np.arange(wl.DELTA_BYTES, dtype=np.int64)  # byte positions inside one delta
UNIT = "deltas/s"
MEMMOVE = "memmove floor (ctypes, contiguous payload)"
CPP_FLOOR = "C++ floor BM_FloorMemcpyEpoch"


# ---- NumPy scatters ------------------------------------------------------------------------------
# Each form takes its index column, computed from the batch before the timed region (as mmsb's
# DeltaBatch columns are: page ids, offsets and lengths built once, untimed), and the payload rows.
# What a form must still build from that column at every call (the 64 byte positions per delta of
# the flat and 2-D forms) is its own cost and stays inside the timing.

def delta_start(b: wl.DeltaRows) -> np.ndarray:
    """Flat byte index of each delta's first byte in the (PAGES * PAGE_SIZE) array."""
    return b.page * wl.PAGE_SIZE + b.offset


def page_and_offset(b: wl.DeltaRows) -> tuple[np.ndarray, np.ndarray]:
    """Page row and byte offset of each delta, as columns for 2-D fancy indexing."""
    return b.page[:, None], b.offset[:, None]


def delta_slot(b: wl.DeltaRows) -> np.ndarray:
    """Row of each delta in the (PAGES * SLOTS_PER_PAGE, 64) view of the array."""
    return b.slot


def scatter_flat(state: np.ndarray, start: np.ndarray, payload: np.ndarray) -> None:
    """The general form: one flat byte index per payload byte (works for any offset)."""
    state.reshape(-1)[start[:, None] + LANES] = payload


def scatter_put(state: np.ndarray, start: np.ndarray, payload: np.ndarray) -> None:
    np.put(state.reshape(-1), start[:, None] + LANES, payload)


def scatter_2d(state: np.ndarray, page_offset: tuple[np.ndarray, np.ndarray], payload: np.ndarray) -> None:
    """Row and column fancy indices on the 2-D page array (broadcast, not materialised)."""
    page, offset = page_offset
    state[page, offset + LANES] = payload


def scatter_slots(state: np.ndarray, slot: np.ndarray, payload: np.ndarray) -> None:
    """One index per delta into a (slots, width) view of `state`, width the payload rows' (64
    here): needs width-aligned offsets (which this workload has), so it is NumPy's best case
    rather than a general method."""
    state.reshape(-1, payload.shape[1])[slot] = payload


# name -> (the index column built untimed from a batch, the timed scatter taking it)
NUMPY_SCATTERS = {
    "numpy flat[idx] = payload": (delta_start, scatter_flat),
    "numpy np.put(flat, idx, payload)": (delta_start, scatter_put),
    "numpy 2-D fancy index": (page_and_offset, scatter_2d),
    "numpy slot rows (64-aligned only)": (delta_slot, scatter_slots),
}


def memmove_payload(dst: np.ndarray, payload: np.ndarray) -> None:
    """libc memmove of payload's bytes to the start of dst: the bandwidth bound of any apply."""
    ctypes.memmove(dst.ctypes.data, payload.ctypes.data, payload.nbytes)


def thread_label(threads: int, history: bool) -> str:
    return (f"mmsb apply_batch, {threads} thread{'s' if threads > 1 else ''}"
            + ("" if history else ", history=False"))


# ---- the parts -----------------------------------------------------------------------------------

def _mmsb(batches, expected, counts, threads: int, history: bool, repeats: int):
    bus = mmsb.Bus(threads=threads, history=history)
    pages = wl.create_pages(bus)
    columns = [b.mmsb_columns(pages[0].id) for b in batches]

    def apply_all() -> None:
        for c in columns:
            bus.apply_batch(mmsb.DeltaBatch(*c))

    seconds = timed(apply_all, repeats)
    runs = 1 + repeats
    verify_equal(wl.page_bytes(pages), expected,
                 f"mmsb, threads={threads}, history={history}: page bytes differ from the expected state")
    verify(np.array_equal(wl.page_epochs(pages), counts * runs),
           f"mmsb, threads={threads}, history={history}: page epochs are not {runs} x the deltas per page")
    return seconds, bus, pages


def _numpy(ctx: BenchContext, batches, expected, counts, repeats: int) -> np.ndarray:
    """Each NumPy form also counts epochs, the other half of a commit's effect."""
    state, runs, ops = None, 1 + repeats, sum(map(len, batches))
    for name, (index, scatter) in NUMPY_SCATTERS.items():
        ctx.progress(name)
        state = np.zeros((wl.PAGES, wl.PAGE_SIZE), dtype=np.uint8)
        epochs = np.zeros(wl.PAGES, dtype=np.int64)
        columns = [(index(b), b.payload, b.page) for b in batches]

        def apply_all(scatter=scatter, state=state, epochs=epochs, columns=columns) -> None:
            for idx, payload, page in columns:
                scatter(state, idx, payload)
                epochs += np.bincount(page, minlength=wl.PAGES)

        seconds = timed(apply_all, repeats)
        verify_equal(state, expected, f"{name}: bytes differ from the expected state")
        verify(np.array_equal(epochs, counts * runs), f"{name}: epoch counts are wrong")
        ctx.section.add(rate(name, UNIT, ops, seconds, ratio_to=(CPP_FLOOR, MEMMOVE), reference=True))
    return state


def _floors(ctx: BenchContext, batches, repeats: int) -> None:
    ctx.progress("memmove floor")
    largest = max(b.payload.nbytes for b in batches)
    dst = np.zeros(largest, dtype=np.uint8)

    def copy_all() -> None:
        for b in batches:
            memmove_payload(dst, b.payload)

    seconds = timed(copy_all, repeats)
    last = batches[-1].payload.reshape(-1)
    verify(np.array_equal(dst[:last.size], last), "memmove floor: the copied bytes differ from the payload")
    ctx.section.add(rate(MEMMOVE, UNIT, sum(map(len, batches)), seconds, reference=True))

    rows = ctx.size(1 << 20, 1 << 16)
    ctx.progress(f"{CPP_FLOOR} (rows={rows})")
    try:
        runs, path, context = _cpp.run_gbench("bench_apply", f"^BM_FloorMemcpyEpoch/rows:{rows}/",
                                              ctx.size(0.5, 0.05), ctx.size(3, 1))
    except _cpp.BinaryUnavailable as e:
        ctx.section.skip(CPP_FLOOR, str(e))
        return
    _cpp.note_version(ctx.versions, context)
    ctx.section.add(Figure(CPP_FLOOR, UNIT, [float(r["items_per_second"]) for r in runs], reference=True,
                           note=f"C++ generator, same layout; {rows:,} rows per iteration"))
    ctx.section.details["cpp_floor"] = {"rows": rows, **_cpp.describe(path)}


def _loops(ctx: BenchContext, b: wl.DeltaRows, pages, state: np.ndarray, repeats: int) -> None:
    """Starts from an mmsb bus and a NumPy array holding the same bytes; both loops replay the
    same rows in the same order, so they must still agree afterwards."""
    ctx.progress("Python loops of single deltas")
    k = min(ctx.size(200_000, 20_000), len(b))
    rows = list(b.payload[:k])              # one uint8 row view per delta, for both sides
    rows_bytes = [r.tobytes() for r in rows]
    offsets = b.offset[:k].tolist()
    targets = [pages[i] for i in b.page[:k].tolist()]
    views = list(state)                     # one writable 1-D view per page
    view_targets = [views[i] for i in b.page[:k].tolist()]
    n = wl.DELTA_BYTES

    def mmsb_loop() -> None:
        for p, off, row in zip(targets, offsets, rows):
            p.write(off, row)

    def mmsb_loop_bytes() -> None:
        for p, off, data in zip(targets, offsets, rows_bytes):
            p.write(off, data)

    def numpy_loop() -> None:
        for v, off, row in zip(view_targets, offsets, rows):
            v[off:off + n] = row

    numpy_name = "loop: numpy view[off:off+64] = row"
    for name, fn in (("loop: mmsb p.write(off, ndarray row)", mmsb_loop),
                     ("loop: mmsb p.write(off, bytes)", mmsb_loop_bytes), (numpy_name, numpy_loop)):
        ctx.section.add(rate(name, "writes/s", k, timed(fn, repeats), reference=fn is numpy_loop,
                             ratio_to=None if fn is numpy_loop else numpy_name))
    verify_equal(wl.page_bytes(pages), state, "loops: mmsb pages differ from the NumPy array")


def run(ctx: BenchContext) -> None:
    """Fills ctx.section with the delta figures and the throughput-vs-threads series."""
    rows, nbatches, repeats = ctx.size(4 << 20, 100_000), 2, 3
    ctx.section.details.update(rows_per_batch=rows, batches=nbatches, timed_runs=repeats, pages=wl.PAGES,
                               page_size=wl.PAGE_SIZE, delta_bytes=wl.DELTA_BYTES, seed=wl.SEED)
    batches = wl.make_batches(rows, nbatches)
    expected = wl.expected_state(batches)
    counts = wl.epoch_counts(batches)
    ops = rows * nbatches

    # The NumPy figures come first so the mmsb ones can name the fastest as their anchor.
    state = _numpy(ctx, batches, expected, counts, repeats)
    numpy_best = max((f for f in ctx.section.figures if f.name in NUMPY_SCATTERS), key=lambda f: f.value)
    _floors(ctx, batches, repeats)
    series: dict = {"threads": list(ctx.threads)}
    bus = pages = None
    for history in (True, False):
        curve = series.setdefault("history on" if history else "history off", [])
        for threads in ctx.threads:
            ctx.progress(thread_label(threads, history))
            bus = pages = None  # the previous bus is freed before the next one is built
            seconds, bus, pages = _mmsb(batches, expected, counts, threads, history, repeats)
            fig = ctx.section.add(rate(thread_label(threads, history), UNIT, ops, seconds,
                                       ratio_to=numpy_best.name, also=((CPP_FLOOR, MEMMOVE),)))
            curve.append(fig.value)
    series["anchors"] = {f.name: f.value for f in ctx.section.figures
                         if f.name in (numpy_best.name, MEMMOVE, CPP_FLOOR)}
    ctx.section.series["throughput_vs_threads"] = series
    ctx.section.details["fastest_numpy"] = numpy_best.name
    # `pages` (the last bus, history off) and `state` (the last NumPy form) both hold `expected`.
    _loops(ctx, batches[0], pages, state, repeats)
    bus.close()
    # Report order: mmsb first, then what it is measured against.
    groups = ("mmsb apply", "numpy", "memmove", "C++", "loop")
    ctx.section.figures.sort(key=lambda f: next(i for i, g in enumerate(groups) if f.name.startswith(g)))
