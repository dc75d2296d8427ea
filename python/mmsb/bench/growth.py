"""How cost grows: the growth curves of `mmsb bench` (full mode), each with its anchors.

Every curve measures mmsb and its floors in the same run on the same data, and every measured
point is checked before it is kept: a fast wrong answer raises the bench's VerificationError (a
RuntimeError) naming the curve, so the bench exits non-zero. Timing follows the bench's rules
(_measure.timed: one warm-up, collector paused, best of the repeats).

  apply_vs_pageset       64-byte deltas into 16 MiB .. 4 GiB of 4 KiB pages (cache -> DRAM)
  apply_vs_delta_size    8 B .. 4 KiB deltas into a fixed page set, deltas/s ...
  apply_gbps_vs_delta_size   ... and the same runs as payload GB/s
  replay_vs_log_length   mmsb.open / mmsb.replay / open after a checkpoint of 10k .. 10M deltas
  replay_per_delta_vs_log_length   the same runs per delta
  wave_vs_graph_size     eager wave over 100 .. 100k derived min_plus pages vs a NumPy recompute
  graph_build_vs_graph_size   bus.depend per derived page (eager and deferred) vs NumPy's plan
  memory_vs_pages        bus.memory() of 1k .. 1M pages of 960 B vs the raw bytes and a dict model
  memory_per_page_vs_pages   the same per page

run_growth(quick, workdir, progress) measures; plot_growth(curves, out_dir) draws one PNG each.
"""

from __future__ import annotations

import ctypes
import gc
import glob
import hashlib
import itertools
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from typing import Any, Callable, Sequence

import numpy as np

import mmsb
from mmsb.errors import InvalidArgumentError

from . import workloads as wl
from ._measure import timed, verify, verify_equal
from .delta import memmove_payload, scatter_slots

PAGE = wl.PAGE_SIZE
BATCH = 65_536       # rows per DeltaBatch, as in validator 5
MEM_PAGE = 960       # validator 7's "average page <= 1 KB"
WAVE_ELEMS = 256     # float32 per wave page (1 KiB)
MiB = 1 << 20

PROFILES: dict[str, dict[str, Any]] = {
    "full": dict(pageset_mib=(16, 64, 256, 1024, 4096), pageset_deltas=4 << 20,
                 sizes=(8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096), size_pageset_mib=256,
                 size_payload_mib=64, log_lengths=(10_000, 100_000, 1_000_000, 10_000_000),
                 log_pages=4096, derived=(100, 1_000, 10_000, 100_000),
                 mem_pages=(1_000, 10_000, 100_000, 1_000_000), repeats=3),
    "quick": dict(pageset_mib=(1, 4), pageset_deltas=1 << 15, sizes=(8, 256, 4096), size_pageset_mib=4,
                  size_payload_mib=1, log_lengths=(1_000, 10_000), log_pages=256, derived=(10, 100),
                  mem_pages=(100, 1_000), repeats=3),
}

CURVE_KEYS = ("name", "title", "x_label", "x_unit", "y_label", "y_unit", "x", "series", "notes")


def _check(ok: bool, curve: str, what: str) -> None:
    """VerificationError (a RuntimeError: the bench exits non-zero) naming the curve."""
    verify(ok, f"{curve}: {what}")


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"growth: {msg}", file=sys.stderr, flush=True)


def _free() -> None:
    """Collect, then hand freed heap back to the OS (glibc), so a large point does not leave the
    next one paging against memory the allocator kept."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _best(fn: Callable[[], Any], repeats: int, check: Callable[[Any], None] | None = None) -> float:
    """Best seconds of `repeats` timed calls after one warm-up (the bench's timing rules)."""
    return min(timed(fn, repeats, check=check))


def _curve(name: str, title: str, x_label: str, x_unit: str, y_label: str, y_unit: str,
           x: Sequence[float], series: dict[str, list], notes: str) -> dict:
    return dict(name=name, title=title, x_label=x_label, x_unit=x_unit, y_label=y_label, y_unit=y_unit,
                x=list(x), series=series, notes=notes)


def _span(x: Sequence, series: dict[str, list], num: str, den: str, unit: str) -> str:
    """'num / den: a x at x0 .. b x at xN' from the measured series, for the notes."""
    r = [a / b for a, b in zip(series[num], series[den])]
    return f"Measured {num} / {den}: {r[0]:.2f}x at {x[0]} {unit} .. {r[-1]:.2f}x at {x[-1]} {unit}"


# ---- apply: page-set size and delta size ----------------------------------------------------------

def _check_pages(curve: str, label: str, pages: list, want: np.ndarray, epochs: np.ndarray) -> None:
    """Page bytes against the NumPy state (one row per page), in chunks so a 4 GiB page set is
    never copied whole, and epochs against the expected counts."""
    step = 16_384
    for a in range(0, len(pages), step):
        verify_equal(wl.page_bytes(pages[a:a + step]), want[a:a + step],
                     f"{curve}: {label}: bytes differ from the NumPy state (page index counted from {a})")
    got = wl.page_epochs(pages)
    bad = np.flatnonzero(got != epochs)
    _check(not len(bad), curve, f"{label}: page index {bad[:1]} has epoch {got[bad[:1]]}, expected {epochs[bad[:1]]}")


def _apply_point(curve: str, pageset: int, size: int, n: int, repeats: int, rng: np.random.Generator,
                 threads: int) -> dict[str, float]:
    """Deltas/s of each series for `n` deltas of `size` bytes at uniform size-aligned offsets over
    `pageset` bytes of 4 KiB pages; every series applies the same stream warm-up + repeats times."""
    pages_n, spp = pageset // PAGE, PAGE // size
    where = f"{pageset // MiB} MiB, {size} B deltas"
    slot = rng.integers(0, pages_n * spp, size=n, dtype=np.int64)
    payload = np.frombuffer(rng.bytes(n * size), dtype=np.uint8).reshape(n, size)
    stream = wl.DeltaRows(slot // spp, (slot % spp) * size, payload)
    chunks = [wl.DeltaRows(stream.page[a:a + BATCH], stream.offset[a:a + BATCH], payload[a:a + BATCH])
              for a in range(0, n, BATCH)]
    runs, out = 1 + repeats, {}

    state = np.zeros((pages_n, PAGE), dtype=np.uint8)
    epochs = np.zeros(pages_n, dtype=np.int64)

    # NumPy's fastest form (the bench's delta.scatter_slots): one row index per delta into a
    # (slots, size) view, the indices computed before the timing as mmsb's columns are.
    slot_chunks = [slot[a:a + BATCH] for a in range(0, n, BATCH)]

    def numpy_run() -> None:
        for s, b in zip(slot_chunks, chunks):
            scatter_slots(state, s, b.payload)
        # epochs are the other half of a commit's effect; one bincount per run is NumPy's best
        np.add(epochs, np.bincount(stream.page, minlength=pages_n), out=epochs)

    out["NumPy slot scatter (floor)"] = n / _best(numpy_run, repeats)
    # The oracle takes the last writer of each slot from the reversed stream (np.unique returns
    # first occurrences), so it does not share the scatter's reliance on assignment order.
    uniq, first_rev = np.unique(slot[::-1], return_index=True)
    _check(np.array_equal(state.reshape(-1, size)[uniq], payload[n - 1 - first_rev]), curve,
           f"{where}: the NumPy state does not hold the last writer of each slot")
    del uniq, first_rev, slot, slot_chunks
    want_epochs = np.bincount(stream.page, minlength=pages_n) * runs
    _check(np.array_equal(epochs, want_epochs), curve, f"{where}: NumPy epoch counts are wrong")

    for t in sorted({1, threads}):
        label = f"mmsb apply_batch, {t} thread{'s' if t > 1 else ''}"
        bus = mmsb.Bus(threads=t, history=False)  # no log: the apply cost alone
        pages = wl.create_pages(bus, pages_n, PAGE)
        first = pages[0].id
        cols = [((b.page + first).astype(np.uint64), b.offset.astype(np.uint64),
                 np.full(len(b), size, dtype=np.uint64), b.payload) for b in chunks]

        def mmsb_run(bus: mmsb.Bus = bus, cols: list = cols) -> None:
            for c in cols:
                bus.apply_batch(mmsb.DeltaBatch(*c))

        out[label] = n / _best(mmsb_run, repeats)
        _check_pages(curve, f"{label}, {where}", pages, state, want_epochs)
        bus.close()
        del bus, pages, cols, mmsb_run
        _free()
    del state
    _free()

    dst = np.empty(n * size, dtype=np.uint8)
    out["memmove of the payload (bandwidth floor)"] = n / _best(lambda: memmove_payload(dst, payload), repeats)
    _check(np.array_equal(dst, payload.reshape(-1)), curve, f"{where}: memmove did not copy the payload")
    return out


def _apply_curves(cfg: dict, progress: bool) -> list[dict]:
    threads = os.cpu_count() or 1
    rng = np.random.default_rng(wl.SEED)
    n = cfg["pageset_deltas"]
    xs, by_set = list(cfg["pageset_mib"]), []
    for mib in xs:
        t0 = time.perf_counter()
        by_set.append(_apply_point("apply_vs_pageset", mib * MiB, 64, n, cfg["repeats"], rng, threads))
        _say(progress, f"apply_vs_pageset {mib} MiB: {time.perf_counter() - t0:.1f} s")
    series = {k: [p[k] for p in by_set] for k in by_set[0]}
    one, floor = "mmsb apply_batch, 1 thread", "NumPy slot scatter (floor)"
    pageset = _curve(
        "apply_vs_pageset", f"Apply throughput vs page-set size ({n:,} deltas of 64 B)", "page set", "MiB",
        "throughput", "deltas/s", xs, series,
        f"Anchors: the NumPy floor scatters the same rows into one uint8 array of the page set's size "
        f"(one row index per delta into a (slots, 64) view, epochs counted with one bincount per run); "
        f"the bandwidth floor memmoves the payload once, contiguously, so it does not depend on the "
        f"page set. Offsets are uniform over the page set, so as it outgrows the caches every delta "
        f"costs a cache and TLB miss for all series alike; mmsb also pays, per delta, a page-table "
        f"lookup, bounds check and epoch bump, and per batch the partitioning by page. In-memory bus, "
        f"history=False (no log), batches of {BATCH:,} rows. {_span(xs, series, one, floor, 'MiB')}.")

    mib = cfg["size_pageset_mib"]
    budget = cfg["size_payload_mib"] * MiB
    sizes, by_size = list(cfg["sizes"]), []
    for size in sizes:
        t0 = time.perf_counter()
        by_size.append(_apply_point("apply_vs_delta_size", mib * MiB, size, budget // size, cfg["repeats"], rng,
                                    threads))
        _say(progress, f"apply_vs_delta_size {size} B: {time.perf_counter() - t0:.1f} s")
    rates = {k: [p[k] for p in by_size] for k in by_size[0]}
    gbps = {k: [r * s / 1e9 for r, s in zip(v, sizes)] for k, v in rates.items()}
    why = (f"Fixed page set of {mib} MiB; each point applies {cfg['size_payload_mib']} MiB of payload "
           f"(so {budget // sizes[0]:,} deltas of {sizes[0]} B .. {budget // sizes[-1]:,} of {sizes[-1]} B), "
           f"at size-aligned uniform offsets. Small deltas are bound by the per-delta cost (mmsb's "
           f"lookup, validation and epoch bump; NumPy's index arithmetic), large ones by memory "
           f"bandwidth, where the series approach the memmove floor.")
    return [pageset,
            _curve("apply_vs_delta_size", f"Apply throughput vs delta size ({mib} MiB page set)", "delta size",
                   "B", "throughput", "deltas/s", sizes, rates,
                   f"{why} {_span(sizes, rates, one, floor, 'B')}."),
            _curve("apply_gbps_vs_delta_size", f"Apply bandwidth vs delta size ({mib} MiB page set)", "delta size",
                   "B", "payload bandwidth", "GB/s", sizes, gbps,
                   f"The runs of apply_vs_delta_size as payload bytes per second (1 GB = 1e9 B). {why}")]


# ---- replay and recovery ------------------------------------------------------------------------

def _digest(bus: mmsb.Bus) -> str:
    """Hash of every page's id, epoch and bytes, and the bus lsn."""
    pages = bus.pages()
    h = hashlib.blake2b(digest_size=16)
    h.update(np.array([bus.lsn] + [v for p in pages for v in (p.id, p.epoch)], dtype=np.uint64).tobytes())
    for p in pages:
        h.update(p.view().tobytes())
    return h.hexdigest()


def _read_files(files: list[str], buf: bytearray) -> int:
    """The I/O floor: every byte of `files` read into one preallocated buffer."""
    mv, pos = memoryview(buf), 0
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while (got := fh.readinto(mv[pos:])):
                pos += got
    return pos


def _write_log(path: str, length: int, pages_n: int, rng: np.random.Generator) -> tuple[str, int]:
    """A bus directory holding `pages_n` pages and `length` 64-byte deltas; (digest, lsn)."""
    bus = mmsb.Bus(path, durability="flush")
    first = wl.create_pages(bus, pages_n, PAGE)[0].id
    for a in range(0, length, BATCH):
        rows = min(BATCH, length - a)
        bus.apply_batch(mmsb.DeltaBatch(
            rng.integers(first, first + pages_n, size=rows, dtype=np.uint64),
            rng.integers(0, PAGE // 64, size=rows, dtype=np.uint64) * np.uint64(64),
            np.full(rows, 64, dtype=np.uint64), rng.bytes(rows * 64)))
    want, lsn = _digest(bus), bus.lsn
    bus.close()
    return want, lsn


def _replay_point(root: str, length: int, pages_n: int, repeats: int, rng: np.random.Generator) -> dict:
    curve = "replay_vs_log_length"
    path = os.path.join(tempfile.mkdtemp(dir=root), "bus")
    try:
        want, lsn = _write_log(path, length, pages_n, rng)

        def same(label: str) -> Callable[[mmsb.Bus], None]:
            def check(bus: mmsb.Bus) -> None:
                try:
                    _check(_digest(bus) == want, curve, f"{length:,} deltas: {label} does not hold the written state")
                finally:
                    bus.close()
            return check

        def read_floor(pattern: str) -> float:
            files = sorted(glob.glob(os.path.join(path, pattern)))
            size = sum(map(os.path.getsize, files))
            buf = bytearray(size)
            return _best(lambda: _read_files(files, buf), repeats,
                         lambda got: _check(got == size > 0, curve, f"read {got} of {size} bytes of {pattern}"))

        out = {"mmsb.open (replays the log)": _best(lambda: mmsb.open(path), repeats, same("mmsb.open")),
               "mmsb.replay": _best(lambda: mmsb.replay(path), repeats, same("mmsb.replay")),
               "read the log files (I/O floor)": read_floor("*.log")}
        bus = mmsb.open(path)
        bus.checkpoint()
        bus.close()

        def from_checkpoint(bus: mmsb.Bus) -> None:
            rec = bus.recovery
            if rec["checkpoint_lsn"] != lsn or rec["records_replayed"]:
                bus.close()
                _check(False, curve, f"open after checkpoint started at lsn {rec['checkpoint_lsn']} and replayed "
                       f"{rec['records_replayed']} records; expected the checkpoint at lsn {lsn}")
            same("mmsb.open after checkpoint")(bus)

        out["mmsb.open after checkpoint"] = _best(lambda: mmsb.open(path), repeats, from_checkpoint)
        out["read the checkpoint file (I/O floor)"] = read_floor("*.ckpt")
        return out
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _replay_curves(cfg: dict, workdir: str, progress: bool) -> list[dict]:
    rng = np.random.default_rng(wl.SEED + 1)
    xs, points = list(cfg["log_lengths"]), []
    for length in xs:
        t0 = time.perf_counter()
        points.append(_replay_point(workdir, length, cfg["log_pages"], cfg["repeats"], rng))
        _say(progress, f"replay_vs_log_length {length:,}: {time.perf_counter() - t0:.1f} s")
    secs = {k: [p[k] for p in points] for k in points[0]}
    per = {k: [s / n * 1e9 for s, n in zip(v, xs)] for k, v in secs.items()}
    notes = (f"A bus directory (durability 'flush': each batch of {BATCH:,} rows handed to the OS) of "
             f"{cfg['log_pages']:,} pages of 4 KiB takes the deltas (64 B, uniform); the files are read "
             f"warm from the OS page cache by every series alike. Each reopened bus must hash equal "
             f"(ids, epochs, bytes, lsn) to the bus that wrote the log. Anchors: reading the log files' "
             f"bytes into a preallocated buffer (what replay cannot avoid), and reading the checkpoint "
             f"file. Replay departs from the I/O floor by decoding, checksumming (CRC32C) and applying "
             f"every record; at short logs the fixed cost (page table, locks, file scan) dominates, so "
             f"the per-delta cost falls as the log grows. After a checkpoint, open cost follows the "
             f"page set, not the log length. "
             f"{_span(xs, secs, 'mmsb.open (replays the log)', 'read the log files (I/O floor)', 'deltas')}.")
    return [_curve("replay_vs_log_length", "Recovery time vs log length", "log length", "deltas", "time", "s",
                   xs, secs, notes),
            _curve("replay_per_delta_vs_log_length", "Recovery cost per logged delta", "log length", "deltas",
                   "time per delta", "ns", xs, per, notes)]


# ---- propagation wave ---------------------------------------------------------------------------

def _wave_graph(derived: int, sources: int, rng: np.random.Generator) -> list[tuple[list[int], np.ndarray]]:
    """(parents, weights) per derived page: 2-4 distinct parents, each a source with probability
    3/4, else an earlier derived page (index sources + j), so the graph has depth."""
    ks = rng.integers(2, 5, size=derived).tolist()
    earlier = np.arange(derived)[:, None]  # derived pages row i may use: 0 .. i-1
    u = rng.random((derived, 8))
    cands = np.where((rng.random((derived, 8)) < 0.25) & (earlier > 0), sources + (u * earlier).astype(np.int64),
                     (u * sources).astype(np.int64)).tolist()
    weights = rng.integers(0, 8, size=(derived, 4)).astype(np.float32)
    out = []
    for i in range(derived):
        chosen = list(dict.fromkeys(cands[i]))[:ks[i]]
        spare = iter(range(sources))
        while len(chosen) < ks[i]:  # rare: the 8 candidates held fewer distinct pages than needed
            s = next(spare)
            if s not in chosen:
                chosen.append(s)
        out.append((chosen, weights[i, :ks[i]]))
    return out


def _numpy_plan(graph: list, sources: int) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """(plan, depth): the derived rows grouped by (topological level, parent count), each group
    one gather and min-reduction, every parent final before its child is computed."""
    level = [0] * (sources + len(graph))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (parents, _) in enumerate(graph):
        level[sources + i] = 1 + max(level[p] for p in parents)
        groups.setdefault((level[sources + i], len(parents)), []).append(i)
    plan = []
    for key in sorted(groups):
        rows = groups[key]
        plan.append((np.asarray(rows) + sources, np.array([graph[i][0] for i in rows]),
                     np.stack([graph[i][1] for i in rows])[:, :, None]))
    return plan, max(level)


def numpy_wave(values: np.ndarray, plan: list) -> None:
    """min_plus recompute of every derived row in topological order: child = min_i(w_i + parent_i)."""
    for rows, parents, weights in plan:
        values[rows] = (values[parents] + weights).min(axis=1)


MMSB_WAVE = "mmsb eager wave (apply + recompute)"
NUMPY_WAVE = "NumPy recompute in topological order"
BUILD_EAGER = "mmsb bus.depend, eager (computes each child)"
BUILD_DEFERRED = "mmsb bus.depend, deferred (marks it stale)"
BUILD_NUMPY = "NumPy plan (levels and groups)"


def _wave_bus(graph: list, sources: int, mode: str) -> tuple[mmsb.Bus, list, float]:
    """(bus, pages, seconds of the depend calls): sources then derived pages, wired in `mode`."""
    bus = mmsb.Bus(history=False)
    bus.propagation = mode
    pages = [bus.create_page(shape=(WAVE_ELEMS,), dtype="float32") for _ in range(sources + len(graph))]
    semiring = mmsb.ops.reduce("min_plus")
    t0 = time.perf_counter()
    for i, (parents, weights) in enumerate(graph):
        bus.depend(pages[sources + i], on=[pages[p] for p in parents], fn=semiring, weights=weights.tolist())
    return bus, pages, time.perf_counter() - t0


def _wave_point(derived: int, repeats: int, rng: np.random.Generator) -> dict:
    curve = "wave_vs_graph_size"
    sources = max(16, derived // 10)
    graph = _wave_graph(derived, sources, rng)
    # Small integers keep every min_plus sum exact in float32, so the bytes must match exactly.
    inputs = [rng.integers(0, 1_000_000, size=(sources, WAVE_ELEMS)).astype(np.float32) for _ in range(1 + repeats)]

    # Building the graph is timed once (a one-off, and the slowest build takes many seconds).
    bus, _, t_deferred = _wave_bus(graph, sources, "deferred")
    bus.close()
    bus, pages, t_eager = _wave_bus(graph, sources, "eager")
    ids = np.array([p.id for p in pages[:sources]], dtype=np.uint64)
    zeros, lens = np.zeros(sources, dtype=np.uint64), np.full(sources, WAVE_ELEMS * 4, dtype=np.uint64)
    bus.reset_stats()
    run = itertools.count()  # each timed call writes the next input: a repeat must change the sources
    t_mmsb = _best(lambda: bus.apply_batch(mmsb.DeltaBatch(ids, zeros, lens, inputs[next(run)])), repeats)
    stats = bus.stats()

    values = np.zeros((sources + derived, WAVE_ELEMS), dtype=np.float32)
    t0 = time.perf_counter()
    plan, depth = _numpy_plan(graph, sources)
    t_plan = time.perf_counter() - t0
    run = itertools.count()

    def numpy_run() -> None:
        values[:sources] = inputs[next(run)]
        numpy_wave(values, plan)

    t_numpy = _best(numpy_run, repeats)
    got = np.stack([p.view() for p in pages])
    bad = np.flatnonzero((got != values).any(axis=1))
    _check(not len(bad), curve, f"{derived:,} derived pages: page index {bad[0] if len(bad) else 0} differs "
           f"from the NumPy recompute")
    _check(stats["waves"] == 1 + repeats, curve, f"{stats['waves']} waves for {1 + repeats} source deltas")
    bus.close()
    per_page = 1e6 / derived
    return {MMSB_WAVE: t_mmsb * per_page, NUMPY_WAVE: t_numpy * per_page, BUILD_EAGER: t_eager * per_page,
            BUILD_DEFERRED: t_deferred * per_page, BUILD_NUMPY: t_plan * per_page,
            "recomputes": stats["recomputes"] / (1 + repeats), "depth": depth}


def _wave_curves(cfg: dict, progress: bool) -> list[dict]:
    rng = np.random.default_rng(wl.SEED + 2)
    xs, points = list(cfg["derived"]), []
    for derived in xs:
        t0 = time.perf_counter()
        points.append(_wave_point(derived, cfg["repeats"], rng))
        _free()
        _say(progress, f"wave_vs_graph_size {derived:,}: {time.perf_counter() - t0:.1f} s")
    wave = {k: [p[k] for p in points] for k in (MMSB_WAVE, NUMPY_WAVE)}
    build = {k: [p[k] for p in points] for k in (BUILD_EAGER, BUILD_DEFERRED, BUILD_NUMPY)}
    recomputes = ", ".join(f"{p['recomputes']:,.0f}" for p in points)
    depths = ", ".join(str(p["depth"]) for p in points)
    graph = (f"Each derived page (256 float32) is mmsb.ops.reduce('min_plus') of 2-4 weighted parents: a "
             f"source with probability 3/4, else an earlier derived page (so the graph has depth: "
             f"{depths}); sources = max(16, derived/10).")
    return [
        _curve("wave_vs_graph_size", "Propagation wave time vs graph size", "derived pages", "pages",
               "time per derived page", "µs", xs, wave,
               f"{graph} One DeltaBatch rewrites every source in eager mode, so the timed call is the apply "
               f"plus the whole wave (recomputes per wave: {recomputes}). Anchor: NumPy writes the same "
               f"sources and recomputes every derived row, vectorised per (topological level, parent "
               f"count) group. mmsb pays per derived page a fixed wave cost (topological scheduling, memo "
               f"signature, diff of the output into a delta, epoch bump) that a batched NumPy gather does "
               f"not; NumPy pays per group (Python dispatch, gather copies), which weighs most on small "
               f"graphs. Derived bytes must equal the NumPy values exactly. "
               f"{_span(xs, wave, MMSB_WAVE, NUMPY_WAVE, 'pages')} (time ratio: < 1 is mmsb faster)."),
        _curve("graph_build_vs_graph_size", "Graph build time vs graph size", "derived pages", "pages",
               "time per derived page", "µs", xs, build,
               f"{graph} The same graph wired with one bus.depend per derived page, once in eager mode "
               f"(each depend computes the child at once), once in deferred mode (it only marks the child "
               f"stale); anchor: grouping the same graph into NumPy's (level, parent count) plan. Each "
               f"build is timed once. A per-page cost that rises with the graph size is work that grows "
               f"with the whole graph on every depend. "
               f"{_span(xs, build, BUILD_EAGER, BUILD_DEFERRED, 'pages')}."),
    ]


# ---- memory ---------------------------------------------------------------------------------------

def _memory_point(n: int, pool: np.ndarray, rows: list) -> dict:
    curve = "memory_vs_pages"
    _free()
    bus = mmsb.Bus(history=False)
    first = wl.create_pages(bus, n, MEM_PAGE)[0].id
    chunk = len(pool)
    # Every page written once, so its data is resident, as in validator 7.
    for a in range(0, n, chunk):
        k = min(chunk, n - a)
        bus.apply_batch(mmsb.DeltaBatch(np.arange(first + a, first + a + k, dtype=np.uint64),
                                        np.zeros(k, dtype=np.uint64), np.full(k, MEM_PAGE, dtype=np.uint64),
                                        pool[:k]))
    mem = bus.memory()
    sample = np.random.default_rng(n).integers(0, n, size=min(n, 64))
    for i in sample.tolist():
        _check(np.array_equal(bus.page(first + i).view(), pool[i % chunk]), curve, f"page index {i} lost its bytes")
    _check(mem["pages"] == n and mem["data_bytes"] >= n * MEM_PAGE, curve,
           f"memory() reports {mem['pages']} pages and {mem['data_bytes']} data bytes for {n} pages of {MEM_PAGE} B")
    bus.close()
    del bus
    _free()

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    model = {i: bytearray(rows[i % chunk]) for i in range(n)}
    model_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    _check(len(model) == n and model[n - 1] == rows[(n - 1) % chunk], curve, "the dict model is incomplete")
    del model
    return {"total": mem["total_bytes"], "metadata": mem["metadata_bytes"], "model": model_bytes}


def _memory_curves(cfg: dict, progress: bool) -> list[dict]:
    rng = np.random.default_rng(wl.SEED + 3)
    xs = list(cfg["mem_pages"])
    pool = rng.integers(0, 256, size=(min(BATCH, max(xs)), MEM_PAGE), dtype=np.uint8)
    rows = [memoryview(r) for r in pool]  # made before tracemalloc starts, so not charged to the model
    points = []
    for n in xs:
        t0 = time.perf_counter()
        points.append(_memory_point(n, pool, rows))
        _say(progress, f"memory_vs_pages {n:,}: {time.perf_counter() - t0:.1f} s")
    total = [p["total"] for p in points]
    model = [p["model"] for p in points]
    floor = [n * MEM_PAGE for n in xs]
    notes = (f"mmsb.Bus(history=False) with N raw pages of {MEM_PAGE} B, each written once; bus.memory() "
             f"counts data, arena slack (size classes are 64-byte aligned: {MEM_PAGE} B fits exactly), "
             f"per-page metadata, graph, index and caches. Anchors: the raw data floor (N x {MEM_PAGE} B) "
             f"and a dict {{int: bytearray}} holding the same bytes, measured with tracemalloc (object "
             f"headers, allocator rounding, the hash table). mmsb departs from the floor by its fixed "
             f"metadata per page and the arena's whole-slab granularity at small N. "
             f"{_span(xs, {'mmsb': total, 'floor': floor}, 'mmsb', 'floor', 'pages')}.")
    return [_curve("memory_vs_pages", f"Memory vs page count ({MEM_PAGE} B pages)", "pages", "pages", "memory", "bytes",
                   xs, {"mmsb memory().total_bytes": total, "raw data floor": floor,
                        "dict of bytearray (tracemalloc)": model}, notes),
            _curve("memory_per_page_vs_pages", f"Memory per page vs page count ({MEM_PAGE} B pages)", "pages", "pages",
                   "memory per page", "bytes", xs,
                   {"mmsb total / page": [t / n for t, n in zip(total, xs)],
                    "mmsb metadata / page": [p["metadata"] / n for p, n in zip(points, xs)],
                    "raw data floor / page": [float(MEM_PAGE)] * len(xs),
                    "dict of bytearray / page": [m / n for m, n in zip(model, xs)]}, notes)]


# ---- public entry points --------------------------------------------------------------------------

def run_growth(quick: bool, workdir: str, progress: bool) -> list[dict]:
    """Measure every growth curve (the issue's sizes; `quick`: 2-3 tiny points each, seconds in
    all). Bus directories for the replay curve are made under `workdir` and removed. Returns one
    dict per curve: name, title, x_label, x_unit, y_label, y_unit, x, series {label: values},
    notes. Raises InvalidArgumentError for bad arguments and VerificationError (a RuntimeError)
    naming the curve when any measured result is wrong."""
    if not isinstance(quick, bool) or not isinstance(progress, bool):
        raise InvalidArgumentError(f"quick and progress must be bools; got {quick!r}, {progress!r}")
    if not isinstance(workdir, (str, os.PathLike)):
        raise InvalidArgumentError(f"workdir must be a path; got {workdir!r}")
    os.makedirs(workdir, exist_ok=True)
    cfg = PROFILES["quick" if quick else "full"]
    curves = _apply_curves(cfg, progress)
    _free()
    curves += _replay_curves(cfg, os.fspath(workdir), progress)
    curves += _wave_curves(cfg, progress)
    curves += _memory_curves(cfg, progress)
    return curves


def _validate_curve(c: Any) -> None:
    if not isinstance(c, dict) or any(k not in c for k in CURVE_KEYS):
        raise InvalidArgumentError(f"a growth curve is a dict with keys {', '.join(CURVE_KEYS)}; got {c!r:.200}")
    if not isinstance(c["series"], dict) or not c["x"]:
        raise InvalidArgumentError(f"curve {c['name']!r}: needs x values and a dict of series")
    for label, ys in c["series"].items():
        if len(ys) != len(c["x"]):
            raise InvalidArgumentError(f"curve {c['name']!r}: series {label!r} has {len(ys)} values for "
                                       f"{len(c['x'])} x values")


def plot_growth(curves: list[dict], out_dir: str) -> list[str]:
    """One PNG per curve in `out_dir` (growth_<name>.png): log x axis, log y where the values
    span more than a factor of 20, labelled axes with units, a legend (mmsb series solid, anchors
    dashed; None values left out); returns the paths. Raises InvalidArgumentError for a
    malformed curve before drawing anything."""
    for c in curves:
        _validate_curve(c)
    # A bare Figure draws with Agg and leaves pyplot's global backend (a notebook's) alone.
    from matplotlib.figure import Figure

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for c in curves:
        fig = Figure(figsize=(7, 4.5), dpi=100)
        ax = fig.subplots()
        ys_all = [y for ys in c["series"].values() for y in ys if y is not None and y > 0]
        for label, ys in c["series"].items():
            pts = [(x, y) for x, y in zip(c["x"], ys) if y is not None]
            # mmsb solid, anchors (floors, NumPy, models) dashed: the gap is what the plot shows
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label,
                    linestyle="-" if label.startswith("mmsb") else "--")
        ax.set_xscale("log")
        if ys_all and max(ys_all) / min(ys_all) > 20:
            ax.set_yscale("log")
        ax.set_xlabel(f"{c['x_label']} ({c['x_unit']})")
        ax.set_ylabel(f"{c['y_label']} ({c['y_unit']})")
        ax.set_title(c["title"], fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, f"growth_{c['name']}.png")
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


__all__ = ["PROFILES", "numpy_wave", "plot_growth", "run_growth"]
