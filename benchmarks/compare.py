"""Side-by-side comparison: mmsb against plain NumPy, in one process, same seed and data.

  (a) mmsb DeltaBatch apply of 64-byte deltas into 16,384 x 4 KiB pages, on 1 thread and on all
  (b) the same deltas as vectorised NumPy scatters into one (16384, 4096) uint8 array, in several
      forms; the fastest is the NumPy figure the ratios use
  (c) a Python loop of single-delta p.write against a loop of NumPy slice assignments
  (d) create_page per call against np.zeros per call
  (e) durable logging: one stream of 64-byte deltas committed in batches of 1, 64 and 4096 rows,
      one transaction per batch, into an mmsb bus directory (durability flush and fsync), SQLite in
      WAL mode (synchronous=NORMAL and FULL) and LMDB (sync=False and True); records/s, commits/s
  (f) recovery: mmsb.open of the logged stream (replay), checkpoint of the 16,384 pages, and
      mmsb.open from that checkpoint

Every timed variant does the work the verification checks: after its runs, its bytes must equal an
order-independent oracle (workloads.expected_state) and its per-page epochs the number of deltas
applied, or the script exits non-zero. Epochs are compared as counts, since each run adds to them.
Every durable store is closed and reopened after its run: an mmsb bus must hold the oracle's bytes
and epochs for the rows it committed, SQLite and LMDB exactly that many rows, ending with the last.

    python benchmarks/compare.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import lmdb
import numpy as np

import mmsb
import workloads as wl

# Full: batches of 4M rows, several per run, so payload (256 MiB a batch) and the page state both
# live far outside the caches, as in the throughput target. Quick: the smoke run of `make test`.
# durable_*: the stream of (e) and (f); a durable run stops after the first commit that ends past
# durable_cap_s (fsync'ed batches of 1 would take minutes to reach the end of the stream).
PROFILES = {
    "full": dict(rows=4 << 20, batches=2, repeats=5, loop_rows=200_000, create_pages=16_384,
                 durable_rows=1_000_000, durable_cap_s=2.0, durable_repeats=3, recovery_repeats=3),
    "quick": dict(rows=100_000, batches=2, repeats=3, loop_rows=20_000, create_pages=4096,
                  durable_rows=100_000, durable_cap_s=0.15, durable_repeats=1, recovery_repeats=1),
}

LANES = np.arange(wl.DELTA_BYTES, dtype=np.int64)  # byte positions inside one delta


class VerificationError(RuntimeError):
    pass


def verify(ok: bool, what: str) -> None:
    if not ok:
        raise VerificationError(what)


def verify_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Rows are pages: a mismatch names the first differing page (index from 0) and byte. Rows
    of whole 8-byte words are compared as words first (several times faster on 64 MiB)."""
    words = (got.shape == want.shape and got.dtype == want.dtype == np.uint8
             and got.shape[-1] % 8 == 0 and got.flags.c_contiguous and want.flags.c_contiguous)
    if words and np.array_equal(got.view(np.uint64), want.view(np.uint64)):
        return
    if not np.array_equal(got, want):
        page, byte = (int(i[0]) for i in np.nonzero(got != want))
        raise VerificationError(f"{what} (first at page index {page}, byte {byte}: "
                                f"got {got[page, byte]}, expected {want[page, byte]})")


@dataclass
class Result:
    section: str
    variant: str
    ops: int                   # operations (deltas, writes, pages) per timed run
    seconds: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict:
        return {
            "section": self.section, "variant": self.variant, "ops": self.ops, "seconds": self.seconds,
            "best_ops_per_s": self.ops / self.best, "median_ops_per_s": self.ops / self.median,
            "best_ns_per_op": self.best / self.ops * 1e9, "median_ns_per_op": self.median / self.ops * 1e9,
        }


def measure(section: str, variant: str, ops: int, fn: Callable[[], object], repeats: int,
            warmup: int = 1, check: Callable[[object], None] | None = None) -> Result:
    """Runs fn warmup + repeats times; times only the repeats. The warm-up takes first-touch page
    faults and lazy initialisation out of every variant's figures alike. The collector is paused
    so a collection triggered by one variant's garbage is not charged to another. `check`, if
    given, is called untimed on each run's result."""
    result = Result(section, variant, ops)
    for i in range(warmup + repeats):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - t0
        finally:
            gc.enable()
        if check is not None:
            check(out)
        del out  # whatever fn built (a bus, arrays) is freed outside the timed region
        if i >= warmup:
            result.seconds.append(elapsed)
    return result


# ---- (a) mmsb batch apply ----------------------------------------------------------------------

def bench_mmsb_batches(batches, expected, counts, threads: int, cfg, history: bool = True) -> tuple[Result, mmsb.Bus, list]:
    # history=True (the default) keeps the log in memory (time travel, diff); history=False is
    # the same bus without it, the like-for-like comparison with a NumPy array.
    bus = mmsb.Bus(threads=threads, history=history)
    pages = wl.create_pages(bus)
    columns = [b.mmsb_columns(pages[0].id) for b in batches]

    def apply_all():
        for c in columns:
            bus.apply_batch(mmsb.DeltaBatch(*c))

    res = measure("batch", f"mmsb apply_batch, {threads} thread{'s' if threads > 1 else ''}"
                  + ("" if history else ", history=False"),
                  sum(map(len, batches)), apply_all, cfg["repeats"])
    runs = 1 + cfg["repeats"]
    verify_equal(wl.page_bytes(pages), expected,
                 f"mmsb, threads={threads}: page bytes differ from the expected state")
    verify(np.array_equal(wl.page_epochs(pages), counts * runs),
           f"mmsb, threads={threads}: page epochs are not {runs} x the deltas per page")
    return res, bus, pages


# ---- (b) NumPy scatters ------------------------------------------------------------------------
# Each takes the same columns mmsb gets (page index, offset, payload rows) and computes its own
# indices inside the timed region, as mmsb does; each also counts epochs, the other half of a
# commit's effect.

def scatter_flat(state, b):
    """The general form: one flat byte index per payload byte (works for any offset)."""
    idx = (b.page * wl.PAGE_SIZE + b.offset)[:, None] + LANES
    state.reshape(-1)[idx] = b.payload


def scatter_put(state, b):
    idx = (b.page * wl.PAGE_SIZE + b.offset)[:, None] + LANES
    np.put(state.reshape(-1), idx, b.payload)


def scatter_2d(state, b):
    """Row and column fancy indices on the 2-D page array (broadcast, not materialised)."""
    state[b.page[:, None], b.offset[:, None] + LANES] = b.payload


def scatter_slots(state, b):
    """One index per delta into a (slots, 64) view: needs 64-aligned offsets (which this
    workload has), so it is NumPy's best case rather than a general method."""
    state.reshape(-1, wl.DELTA_BYTES)[b.slot] = b.payload


NUMPY_SCATTERS = {
    "numpy flat[idx] = payload": scatter_flat,
    "numpy np.put(flat, idx, payload)": scatter_put,
    "numpy 2-D fancy index": scatter_2d,
    "numpy (N,64) slot rows [64-aligned only]": scatter_slots,
}


def bench_numpy_batches(batches, expected, counts, cfg) -> tuple[list[Result], np.ndarray]:
    results, state = [], None
    runs = 1 + cfg["repeats"]
    for name, scatter in NUMPY_SCATTERS.items():
        state = np.zeros((wl.PAGES, wl.PAGE_SIZE), dtype=np.uint8)
        epochs = np.zeros(wl.PAGES, dtype=np.int64)

        def apply_all(scatter=scatter, state=state, epochs=epochs):
            for b in batches:
                scatter(state, b)
                epochs += np.bincount(b.page, minlength=wl.PAGES)

        results.append(measure("batch", name, sum(map(len, batches)), apply_all, cfg["repeats"]))
        verify_equal(state, expected, f"{name}: bytes differ from the expected state")
        verify(np.array_equal(epochs, counts * runs), f"{name}: epoch counts are wrong")
    return results, state


# ---- (c) Python loops of single deltas ---------------------------------------------------------

def bench_loops(b: wl.DeltaRows, pages, state: np.ndarray, cfg) -> list[Result]:
    """Starts from an mmsb bus and a NumPy array holding the same bytes; both loops replay the
    same rows in the same order, so they must still agree afterwards."""
    k = min(cfg["loop_rows"], len(b))
    page_index = b.page[:k].tolist()
    offsets = b.offset[:k].tolist()
    rows = list(b.payload[:k])              # one uint8 row view per delta, for both sides
    rows_bytes = [r.tobytes() for r in rows]
    targets = [pages[i] for i in page_index]
    views = list(state)                     # one writable 1-D view per page
    view_targets = [views[i] for i in page_index]
    n = wl.DELTA_BYTES

    def mmsb_loop():
        for p, off, row in zip(targets, offsets, rows):
            p.write(off, row)

    def mmsb_loop_bytes():
        for p, off, data in zip(targets, offsets, rows_bytes):
            p.write(off, data)

    def numpy_loop():
        for v, off, row in zip(view_targets, offsets, rows):
            v[off:off + n] = row

    results = [
        measure("loop", "mmsb p.write(off, ndarray row)", k, mmsb_loop, cfg["repeats"]),
        measure("loop", "mmsb p.write(off, bytes)", k, mmsb_loop_bytes, cfg["repeats"]),
        measure("loop", "numpy view[off:off+64] = row", k, numpy_loop, cfg["repeats"]),
    ]
    verify_equal(wl.page_bytes(pages), state, "loops: mmsb pages differ from the NumPy array")
    return results


# ---- (d) page creation -------------------------------------------------------------------------

def bench_create(cfg) -> list[Result]:
    n = cfg["create_pages"]

    def mmsb_raw():
        bus = mmsb.Bus()
        for _ in range(n):
            bus.create_page(wl.PAGE_SIZE)
        return bus

    def mmsb_typed():
        bus = mmsb.Bus()
        for _ in range(n):
            bus.create_page(shape=(1024,), dtype="float32")
        return bus

    def numpy_raw():
        return [np.zeros(wl.PAGE_SIZE, dtype=np.uint8) for _ in range(n)]

    def numpy_typed():
        return [np.zeros(1024, dtype=np.float32) for _ in range(n)]

    bus = mmsb_raw()
    verify(len(bus) == n and not wl.page_bytes(bus.pages()).any(), "create_page: pages not zeroed")
    del bus  # freed before timing, so every timed run sees the same allocator state
    r = cfg["repeats"]
    return [
        measure("create", "mmsb create_page(4096)", n, mmsb_raw, r),
        measure("create", "numpy np.zeros(4096, uint8)", n, numpy_raw, r),
        measure("create", "mmsb create_page(shape=(1024,), float32)", n, mmsb_typed, r),
        measure("create", "numpy np.zeros(1024, float32)", n, numpy_typed, r),
    ]


# ---- (e) durable log: mmsb bus directory against SQLite WAL and LMDB ---------------------------
# Each run appends the stream from its start into a fresh store, one transaction per batch, and
# stops at the stream's end or after the first commit that ends past the time cap; its rates are
# rows (and commits) done over the seconds taken. Every system gets its input prepared in its own
# natural form outside the timed region (mmsb: the columns; SQLite: row tuples; LMDB: key/value
# bytes); slicing out one batch is timed, for all alike. Opening and closing stores is not timed.
# Like for like: mmsb fsync, SQLite synchronous=FULL and LMDB sync=True survive power loss; mmsb
# flush, SQLite NORMAL and LMDB sync=False survive the process being killed.

DURABLE_BATCHES = (1, 64, 4096)
DURABLE_THREADS = 1  # SQLite and LMDB commit on the calling thread; mmsb applies on one thread too
FLOOR_PROBE_S = 0.2  # per fdatasync_floor sample
RAM_FILESYSTEMS = {"tmpfs", "ramfs"}
# Used when /tmp is in RAM, where fsync costs nothing and the figures would mean nothing.
FALLBACK_TMP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "build", "bench-tmp")


def filesystem_of(path: str) -> str:
    """'type on device' of the mount holding `path` (the longest mount point that prefixes it)."""
    path, best, found = os.path.realpath(path), "", "unknown"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                device, mount, fstype = line.split()[:3]
                mount = mount.replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, found = mount, f"{fstype} on {device}"
    except OSError:
        pass
    return found


def durable_base() -> tuple[str, str]:
    """(directory for the durable stores, its filesystem): /tmp unless that lives in RAM."""
    fs = filesystem_of("/tmp")
    if fs.split()[0] not in RAM_FILESYSTEMS:
        return "/tmp", fs
    os.makedirs(FALLBACK_TMP, exist_ok=True)
    return FALLBACK_TMP, filesystem_of(FALLBACK_TMP)


def fdatasync_floor(root: str, seconds: float) -> dict[str, float]:
    """Median seconds of pwrite(64 B) + fdatasync on a file in `root`, each kind sampled for about
    seconds / 2: 'append' grows the file (so its size is journaled too, as for a log appended to),
    'overwrite' rewrites blocks a pre-zeroed file already holds. The disk's floor under every
    fsync'ed commit below."""
    path, size, data = os.path.join(root, "fdatasync-probe"), 4 << 20, bytes(wl.DELTA_BYTES)
    floor = {}
    for kind in ("append", "overwrite"):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if kind == "overwrite":
                os.write(fd, bytes(size))
                os.fdatasync(fd)
            samples: list[float] = []
            end = time.perf_counter() + seconds / 2
            while time.perf_counter() < end or len(samples) < 3:
                offset = len(samples) * len(data)
                t0 = time.perf_counter()
                os.pwrite(fd, data, offset % size if kind == "overwrite" else offset)
                os.fdatasync(fd)
                samples.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
            os.remove(path)
        floor[kind] = statistics.median(samples)
    return floor


def fixed_width(buf: bytes, width: int) -> list[bytes]:
    return [buf[i:i + width] for i in range(0, len(buf), width)]


class DurableStream:
    """The stream every durable store appends, in each system's input form, and its oracle."""

    def __init__(self, rows: int):
        self.n = rows
        self.deltas = d = wl.make_batches(rows)[0]
        # (page index, offset, payload): SQLite's executemany rows and the arguments of p.write
        self.rows = list(zip(d.page.tolist(), d.offset.tolist(),
                             fixed_width(d.payload.tobytes(), wl.DELTA_BYTES)))
        # LMDB (key, value): the sequence number big-endian, so key order is commit order (and
        # append=True holds); the value packs page index and offset (u32 each) before the payload.
        packed = np.empty(rows, dtype=[("page", "<u4"), ("offset", "<u4"),
                                       ("data", "u1", wl.DELTA_BYTES)])
        packed["page"], packed["offset"], packed["data"] = d.page, d.offset, d.payload
        self.records = list(zip(fixed_width(np.arange(rows, dtype=">u8").tobytes(), 8),
                                fixed_width(packed.tobytes(), packed.itemsize)))
        self.expected = functools.lru_cache(maxsize=2)(self._expected)

    def _expected(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(page bytes, epochs per page) after the first `rows` deltas."""
        head = [self.deltas.head(rows)]
        return wl.expected_state(head), wl.epoch_counts(head)


def check_recovered(bus: mmsb.Bus, stream: DurableStream, rows: int, what: str) -> None:
    """A reopened bus holds the pages and exactly the first `rows` deltas of the stream."""
    verify(not bus.recovery["truncated_tail"], f"{what}: recovery cut a torn tail: {bus.recovery}")
    verify(bus.lsn == wl.PAGES + rows,
           f"{what}: lsn {bus.lsn:,} after reopening, expected {wl.PAGES + rows:,} "
           f"({wl.PAGES:,} page creations + {rows:,} deltas)")
    pages = bus.pages()
    state, epochs = stream.expected(rows)
    verify_equal(wl.page_bytes(pages), state, f"{what}: reopened page bytes differ from the expected state")
    verify(np.array_equal(wl.page_epochs(pages), epochs),
           f"{what}: reopened page epochs differ from the deltas per page")


class DurableStore:
    """A fresh store in the empty directory `path`. commit(a, b) makes rows [a, b) of the stream
    durable as one transaction, as its mode promises; after close(), verify(rows) reopens the
    store and checks that it holds exactly the first `rows` rows."""

    system = ""
    how = ""                         # the call that commits a batch
    MODES: dict[str, object] = {}    # label -> the mode argument of __init__

    def __init__(self, path: str, mode, stream: DurableStream):
        self.path, self.mode, self.stream = path, mode, stream
        self.label = f"{self.system} " + next(k for k, v in self.MODES.items() if v == mode)

    def commit(self, a: int, b: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def verify(self, rows: int) -> None:
        raise NotImplementedError

    def verify_rows(self, count: int, last, rows: int, want_last) -> None:
        verify(count == rows, f"{self.label}: {count:,} rows after reopening, expected {rows:,}")
        verify(last == want_last, f"{self.label}: the last row after reopening is not delta {rows - 1}")


class MmsbLog(DurableStore):
    system, how = "mmsb", "apply_batch"
    MODES = {"flush": "flush", "fsync": "fsync"}

    def __init__(self, path, mode, stream):
        super().__init__(path, mode, stream)
        # The pages are created (and logged in one write, at close) before the bus is reopened in
        # the mode under test: 16,384 page creations are set-up, not part of the stream.
        with mmsb.Bus(path, durability="none", threads=DURABLE_THREADS) as bus:
            first = wl.create_pages(bus)[0].id
        self.bus = mmsb.open(path, durability=mode, threads=DURABLE_THREADS)
        self.pages = self.bus.pages()
        self.columns = stream.deltas.mmsb_columns(first)

    def commit(self, a, b):
        ids, offsets, lengths, payload = self.columns
        self.bus.apply_batch(mmsb.DeltaBatch(ids[a:b], offsets[a:b], lengths[a:b], payload[a:b]))

    def close(self):
        self.bus.close()

    def verify(self, rows):
        bus = mmsb.open(self.path, threads=DURABLE_THREADS)
        try:
            check_recovered(bus, self.stream, rows, self.label)
        finally:
            bus.close()


class MmsbWrites(MmsbLog):
    """One p.write per delta: for batches of 1, cheaper than building a 1-row DeltaBatch."""
    how = "p.write"

    def commit(self, a, b):
        pages = self.pages
        for page, offset, data in self.stream.rows[a:b]:
            pages[page].write(offset, data)


class SqliteWal(DurableStore):
    system, how = "SQLite", "executemany"
    MODES = {"WAL, synchronous=NORMAL": "NORMAL", "WAL, synchronous=FULL": "FULL"}
    INSERT = "INSERT INTO deltas VALUES (?, ?, ?)"

    def __init__(self, path, mode, stream):
        super().__init__(path, mode, stream)
        self.file = os.path.join(path, "deltas.db")
        self.db = sqlite3.connect(self.file, isolation_level=None)  # transactions by BEGIN/COMMIT
        journal = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        verify(journal == "wal", f"SQLite: journal_mode is {journal!r}, not 'wal'")
        self.db.execute(f"PRAGMA synchronous={mode}")
        self.db.execute("CREATE TABLE deltas (page INTEGER, offset INTEGER, data BLOB)")

    def commit(self, a, b):
        db = self.db
        db.execute("BEGIN")
        db.executemany(self.INSERT, self.stream.rows[a:b])
        db.execute("COMMIT")

    def close(self):
        self.db.close()

    def verify(self, rows):
        db = sqlite3.connect(self.file)
        try:
            count = db.execute("SELECT COUNT(*) FROM deltas").fetchone()[0]
            last = db.execute("SELECT page, offset, data FROM deltas ORDER BY rowid DESC LIMIT 1").fetchone()
        finally:
            db.close()
        self.verify_rows(count, last, rows, self.stream.rows[rows - 1])


class LmdbEnv(DurableStore):
    system, how = "LMDB", "putmulti(append)"
    MODES = {"sync=False": False, "sync=True": True}

    def __init__(self, path, mode, stream):
        super().__init__(path, mode, stream)
        # map_size reserves address space, not disk: room for every record and the B-tree.
        self.env = lmdb.open(path, map_size=(64 << 20) + 256 * stream.n, sync=mode)

    def commit(self, a, b):
        with self.env.begin(write=True) as txn:
            txn.cursor().putmulti(self.stream.records[a:b], append=True)

    def close(self):
        self.env.close()

    def verify(self, rows):
        env = lmdb.open(self.path, readonly=True, lock=False)
        try:
            count = env.stat()["entries"]
            with env.begin() as txn:
                cursor = txn.cursor()
                last = (cursor.key(), cursor.value()) if cursor.last() else None
        finally:
            env.close()
        self.verify_rows(count, last, rows, self.stream.records[rows - 1])


DURABLE_STORES = (MmsbWrites, MmsbLog, SqliteWal, LmdbEnv)


@dataclass
class DurableResult:
    system: str
    mode: str
    batch: int
    how: str
    runs: list[tuple[int, int, float]] = field(default_factory=list)  # (rows, commits, seconds)

    @property
    def name(self) -> str:
        return f"{self.system} {self.mode}, batch {self.batch}, {self.how}"

    @property
    def rates(self) -> list[float]:
        return [rows / seconds for rows, _, seconds in self.runs]

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median_run(self) -> tuple[int, int, float]:
        """The run with the median records/s (the lower middle one of an even count)."""
        return sorted(self.runs, key=lambda r: r[0] / r[2])[(len(self.runs) - 1) // 2]

    @property
    def median(self) -> float:
        rows, _, seconds = self.median_run
        return rows / seconds

    def as_dict(self) -> dict:
        rows, commits, seconds = self.median_run
        return {
            "system": self.system, "mode": self.mode, "batch": self.batch, "how": self.how,
            "runs": [dict(rows=r, commits=c, seconds=s) for r, c, s in self.runs],
            "best_records_per_s": self.best, "median_records_per_s": self.median,
            "median_commits_per_s": commits / seconds,
        }


def timed_append(store: DurableStore, n: int, batch: int, cap_s: float) -> tuple[int, int, float]:
    """Commits rows [0, n) in batches of `batch`, stopping early after the first commit that ends
    past cap_s; returns (rows, commits, seconds)."""
    commit, clock = store.commit, time.perf_counter
    rows = commits = 0
    gc.collect()
    gc.disable()
    try:
        t0 = clock()
        while True:
            end = min(rows + batch, n)
            commit(rows, end)
            rows, commits = end, commits + 1
            seconds = clock() - t0
            if rows == n or seconds >= cap_s:
                break
    finally:
        gc.enable()
    return rows, commits, seconds


def durable_variants():
    """(store class, mode label, batch) in report order: by batch, then system."""
    for batch in DURABLE_BATCHES:
        for cls in DURABLE_STORES:
            if cls is MmsbWrites and batch != 1:
                continue
            for mode in cls.MODES:
                yield cls, mode, batch


def durable_run(cls, mode: str, batch: int, stream: DurableStream, path: str, cap_s: float):
    """One timed run of a fresh store, verified after closing; returns (rows, commits, seconds)."""
    os.mkdir(path)
    store = cls(path, cls.MODES[mode], stream)
    os.sync()  # no dirty data of earlier runs or of the set-up is written back during this run
    run = timed_append(store, stream.n, batch, cap_s)
    store.close()
    store.verify(run[0])
    shutil.rmtree(path)
    return run


def bench_durable(stream: DurableStream, root: str, cfg) -> tuple[list[DurableResult], dict]:
    """Every variant once per round, rounds repeated: a drift of the disk's speed (a virtual
    disk's rate limiter empties and refills) then spreads over all variants instead of hitting
    whichever run last. The fdatasync floor is taken before each round and after the last."""
    variants = list(durable_variants())
    results = [DurableResult(cls.system, mode, batch, cls.how) for cls, mode, batch in variants]
    floors = {}
    for i in range(cfg["durable_repeats"]):
        floors[f"before round {i + 1}"] = fdatasync_floor(root, FLOOR_PROBE_S)
        for (cls, mode, batch), res in zip(variants, results):
            path = os.path.join(root, f"{cls.__name__}-{cls.MODES[mode]}-{batch}-{i}")
            res.runs.append(durable_run(cls, mode, batch, stream, path, cfg["durable_cap_s"]))
    floors["after"] = fdatasync_floor(root, FLOOR_PROBE_S)
    return results, floors


# ---- (f) recovery and checkpoint ---------------------------------------------------------------

def bench_recovery(stream: DurableStream, root: str, cfg) -> list[Result]:
    """The whole stream logged with durability flush in batches of 4096, then: mmsb.open of it
    (replays every record), bus.checkpoint() of its 16,384 pages, mmsb.open from that checkpoint.
    Open rates are lsn / seconds (records: page creations + deltas). The files were just written,
    so they are read from the page cache: this is the engine's replay cost, not the disk's."""
    path = os.path.join(root, "recovery")
    os.mkdir(path)
    log = MmsbLog(path, "flush", stream)
    batch = DURABLE_BATCHES[-1]
    timed_append(log, stream.n, batch, math.inf)
    log.close()
    os.sync()
    lsn, repeats = wl.PAGES + stream.n, cfg["recovery_repeats"]

    def open_bus():
        return mmsb.open(path, threads=DURABLE_THREADS)

    def opened(what: str, replayed: int) -> Callable[[mmsb.Bus], None]:
        def check(bus: mmsb.Bus) -> None:
            try:
                check_recovered(bus, stream, stream.n, what)
                got = bus.recovery["records_replayed"]
                verify(got == replayed, f"{what}: {got} records replayed, expected {replayed}")
            finally:
                bus.close()
        return check

    # 16,384 page-creation records, then one record per batch.
    replay_all = opened("open of the log", wl.PAGES + -(-stream.n // batch))
    results = [measure("recover", f"mmsb.open, log of {stream.n:,} deltas", lsn, open_bus, repeats,
                       warmup=0, check=replay_all)]
    bus = open_bus()
    try:
        results.append(measure("recover", f"bus.checkpoint(), {wl.PAGES:,} x 4 KiB pages", wl.PAGES,
                               bus.checkpoint, repeats, warmup=0))
    finally:
        bus.close()
    results.append(measure("recover", "mmsb.open from that checkpoint", lsn, open_bus, repeats,
                           warmup=0, check=opened("open from the checkpoint", 0)))
    results.append(bench_time_travel(stream, os.path.join(root, "time-travel"), cfg))
    return results


AT_CHECKPOINT_EVERY = 65_536  # deltas between checkpoints, as in the at(lsn) target
AT_PROBES = 12


def bench_time_travel(stream: DurableStream, path: str, cfg) -> Result:
    """bus.at(lsn) latency: the stream logged with a checkpoint every 65,536 deltas, then
    read-only buses at seeded random lsns (each rebuilt from the nearest checkpoint at or before
    its lsn plus the log after it), checked to sit at the asked lsn."""
    os.mkdir(path)
    log = MmsbLog(path, "flush", stream)
    for start in range(0, stream.n, AT_CHECKPOINT_EVERY):
        end = min(stream.n, start + AT_CHECKPOINT_EVERY)
        for a in range(start, end, DURABLE_BATCHES[-1]):
            log.commit(a, min(end, a + DURABLE_BATCHES[-1]))
        log.bus.checkpoint()
    bus = log.bus
    targets = iter(np.random.default_rng(wl.SEED).integers(wl.PAGES, bus.lsn + 1, AT_PROBES * 2))

    def at_some_lsn():
        lsn = int(next(targets))
        old = bus.at(lsn)
        verify(old.lsn == lsn and old.read_only, f"bus.at({lsn}) gave a bus at lsn {old.lsn}")
        return old

    try:
        return measure("recover", f"bus.at(lsn), checkpoint every {AT_CHECKPOINT_EVERY:,} deltas", 1,
                       at_some_lsn, AT_PROBES, warmup=1, check=lambda old: old.close())
    finally:
        log.close()


def run_durable(cfg, base: str) -> tuple[list[DurableResult], dict, list[Result]]:
    """(e) and (f) in a fresh directory under `base`; (e) also returns the fdatasync floors."""
    root = tempfile.mkdtemp(prefix="mmsb-durable-", dir=base)
    try:
        stream = DurableStream(cfg["durable_rows"])
        return (*bench_durable(stream, root, cfg), bench_recovery(stream, root, cfg))
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- report ------------------------------------------------------------------------------------

def machine_info() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = mmsb.build_info()
    return {
        "cpu_model": model, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__, "mmsb": info.get("version"),
        "simd": info.get("simd"), "parallel_backend": info.get("parallel_backend"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def print_table(results: list[Result]) -> None:
    head = f"{'section':<7} {'variant':<44} {'ops/run':>9} {'best ops/s':>12} {'median ops/s':>13} " \
           f"{'best ns/op':>11} {'median ns/op':>13}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.section:<7} {r.variant:<44} {r.ops:>9,} {r.ops / r.best:>12.4g} "
              f"{r.ops / r.median:>13.4g} {r.best / r.ops * 1e9:>11.1f} {r.median / r.ops * 1e9:>13.1f}")


def ratio(a: Result, b: Result) -> dict:
    """Rate of a over rate of b (> 1: a is faster), on best and on median times."""
    return {"a": a.variant, "b": b.variant, "best": b.best / a.best, "median": b.median / a.median}


def print_ratios(title: str, ratios: list[dict]) -> None:
    print(title)
    width = max(len(name) for r in ratios for name in (r["a"], r["b"]))
    for r in ratios:
        print(f"  {r['a']:<{width}} / {r['b']:<{width}} best {r['best']:7.3f}   median {r['median']:7.3f}")


def print_durable(results: list[DurableResult], n: int) -> None:
    head = f"{'system':<6} {'durability':<23} {'batch':>5} {'commit call':<16} {'records/s':>10} " \
           f"{'commits/s':>10} {'best rec/s':>10} {'rows':>10} {'seconds':>8}"
    print(head)
    print("-" * len(head))
    for r in results:
        rows, commits, seconds = r.median_run
        capped = "*" if rows < n else " "
        print(f"{r.system:<6} {r.mode:<23} {r.batch:>5} {r.how:<16} {r.median:>10.4g} "
              f"{commits / seconds:>10.4g} {r.best:>10.4g} {rows:>9,}{capped} {seconds:>8.3f}")
    print(f"records/s, commits/s, rows and seconds: the median run; * stopped at the time cap before "
          f"the end of the {n:,}-delta stream")


# (mmsb mode, other system, other mode, batch): the comparisons the durable ratios report.
DURABLE_PAIRS = [
    ("fsync", "SQLite", "WAL, synchronous=FULL", 4096),
    ("fsync", "LMDB", "sync=True", 4096),
    ("flush", "SQLite", "WAL, synchronous=FULL", 4096),
    ("flush", "LMDB", "sync=True", 4096),
    ("flush", "SQLite", "WAL, synchronous=NORMAL", 4096),
    ("flush", "LMDB", "sync=False", 4096),
    ("fsync", "SQLite", "WAL, synchronous=FULL", 1),
    ("fsync", "LMDB", "sync=True", 1),
]


def durable_ratios(results: list[DurableResult]) -> list[dict]:
    """Records/s of mmsb over the other system's (> 1: mmsb is faster). Where mmsb was measured
    with several commit calls (batch 1: p.write and a 1-row DeltaBatch), the faster one counts."""
    def pick(system: str, mode: str, batch: int) -> DurableResult:
        return max((r for r in results if (r.system, r.mode, r.batch) == (system, mode, batch)),
                   key=lambda r: r.median)

    out = []
    for mmsb_mode, system, mode, batch in DURABLE_PAIRS:
        a, b = pick("mmsb", mmsb_mode, batch), pick(system, mode, batch)
        out.append({"a": a.name, "b": b.name, "best": a.best / b.best, "median": a.median / b.median})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run (seconds), as in make test")
    ap.add_argument("--json", metavar="OUT", help="also write machine, config and results as JSON")
    args = ap.parse_args(argv)
    profile = "quick" if args.quick else "full"
    cfg = PROFILES[profile]
    machine = machine_info()
    all_threads = os.cpu_count() or 1

    print(f"mmsb {machine['mmsb']} vs NumPy {machine['numpy']} — {profile} run")
    print(f"machine: {machine['cpu_model']}, os.cpu_count()={machine['cpu_count']}, "
          f"simd={machine['simd']}, parallel backend={machine['parallel_backend']}, "
          f"load average={machine['load_average']}")
    print(f"batch workload: {cfg['batches']} x {cfg['rows']:,} deltas of {wl.DELTA_BYTES} B into "
          f"{wl.PAGES:,} x {wl.PAGE_SIZE} B pages (seed {wl.SEED}); {cfg['repeats']} timed runs "
          f"after 1 warm-up; rates are deltas (or calls) per second")
    durable_dir, durable_fs = durable_base()
    print(f"durable workload: a stream of {cfg['durable_rows']:,} such deltas, committed in batches of "
          f"{', '.join(map(str, DURABLE_BATCHES))} into fresh stores in {durable_dir} ({durable_fs}); "
          f"{cfg['durable_repeats']} run(s) each, stopped after {cfg['durable_cap_s']} s; "
          f"mmsb threads={DURABLE_THREADS}; SQLite {sqlite3.sqlite_version}, LMDB "
          f"{'.'.join(map(str, lmdb.version()))} (py-lmdb {lmdb.__version__})\n")

    batches = wl.make_batches(cfg["rows"], cfg["batches"])
    expected = wl.expected_state(batches)
    counts = wl.epoch_counts(batches)

    try:
        mmsb_results = []
        for history in (True, False):
            for threads in sorted({1, all_threads}):
                res, bus, pages = bench_mmsb_batches(batches, expected, counts, threads, cfg, history)
                mmsb_results.append(res)
        numpy_results, state = bench_numpy_batches(batches, expected, counts, cfg)
        # `bus`/`pages` (last thread count) and `state` (last NumPy variant) both hold `expected`.
        loop_results = bench_loops(batches[0], pages, state, cfg)
        create_results = bench_create(cfg)
        durable_results, fsync_floor, recovery_results = run_durable(cfg, durable_dir)
    except VerificationError as e:
        print(f"VERIFICATION FAILED: {e}", file=sys.stderr)
        return 1

    results = mmsb_results + numpy_results + loop_results + create_results + recovery_results
    print_table(results)

    numpy_best = min(numpy_results, key=lambda r: r.best)
    numpy_flat = numpy_results[0]
    ratios = [ratio(m, numpy_best) for m in mmsb_results]
    ratios += [ratio(m, numpy_flat) for m in mmsb_results if numpy_flat is not numpy_best]
    ratios += [ratio(loop_results[0], loop_results[2]), ratio(loop_results[1], loop_results[2]),
               ratio(create_results[0], create_results[1]), ratio(create_results[2], create_results[3])]
    print(f"\nfastest NumPy scatter: {numpy_best.variant}")
    print_ratios("ratios mmsb/NumPy (rate over rate; > 1 means mmsb is faster):", ratios)
    replay, checkpoint, from_checkpoint, time_travel = recovery_results
    n = cfg["durable_rows"]
    print(f"recovery, medians (the files were just written, so this is replay cost, not disk reads):\n"
          f"  mmsb.open of the log: lsn {replay.ops:,} in {replay.median:.3f} s = "
          f"{replay.ops / replay.median:.4g} records/s (lsn / open time), {n / replay.median:.4g} deltas/s\n"
          f"  bus.checkpoint() of {wl.PAGES:,} x {wl.PAGE_SIZE} B pages: {checkpoint.median:.3f} s "
          f"({wl.PAGES * wl.PAGE_SIZE / checkpoint.median / 2**20:.0f} MiB/s of page data, fsync'ed)\n"
          f"  mmsb.open from that checkpoint: {from_checkpoint.median:.3f} s\n"
          f"  bus.at(lsn) over lsn {replay.ops:,}, checkpoint every {AT_CHECKPOINT_EVERY:,} deltas: "
          f"median {time_travel.median * 1e3:.1f} ms, best {time_travel.best * 1e3:.1f} ms")

    print("\ndurable log: records/s and commits/s per system, durability and batch size")
    print(f"disk floor, pwrite(64 B) + fdatasync in {durable_dir}, median us (append / overwrite): "
          + "; ".join(f"{when} {f['append'] * 1e6:.0f} / {f['overwrite'] * 1e6:.0f}"
                      for when, f in fsync_floor.items()))
    print_durable(durable_results, cfg["durable_rows"])
    d_ratios = durable_ratios(durable_results)
    print_ratios("ratios mmsb/other, records/s (> 1 means mmsb is faster; like for like: fsync vs "
                 "FULL and sync=True, flush vs NORMAL and sync=False):", d_ratios)
    print("verification: all variants equal the expected bytes and epoch counts; every durable "
          "store reopened with exactly its committed rows")

    if args.json:
        report = {"profile": profile, "config": cfg, "machine": machine,
                  "workload": {"pages": wl.PAGES, "page_size": wl.PAGE_SIZE,
                               "delta_bytes": wl.DELTA_BYTES, "seed": wl.SEED},
                  "results": [r.as_dict() for r in results], "ratios": ratios,
                  "fastest_numpy": numpy_best.variant,
                  "durable": {"dir": durable_dir, "filesystem": durable_fs,
                              "fdatasync_floor_s": fsync_floor,
                              "stream_rows": cfg["durable_rows"], "threads": DURABLE_THREADS,
                              "sqlite": sqlite3.sqlite_version,
                              "lmdb": ".".join(map(str, lmdb.version())),
                              "results": [r.as_dict() for r in durable_results],
                              "ratios": d_ratios},
                  "verified": True}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
