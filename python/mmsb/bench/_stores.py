"""The durable stores `persistence` and `replay` compare: an mmsb bus directory, SQLite in WAL
mode and LMDB, each appending the same stream of 64-byte deltas, one transaction per batch, and
each able to prove after reopening that it holds exactly the rows it committed.

Every system gets its input prepared in its own natural form outside the timed region (mmsb: the
columns; SQLite: row tuples; LMDB: key/value bytes; the one-value-per-batch stores: the stream's
packed bytes); slicing out one batch is timed, for all alike. Opening and closing stores is not
timed. Like for like: mmsb fsync, SQLite synchronous=FULL and LMDB sync=True survive power loss;
mmsb flush, SQLite NORMAL and LMDB sync=False survive the process being killed.

Granularity: mmsb logs one record per committed batch. SQLite and LMDB are measured both ways:
one row (record) per delta, which a table of deltas a program could query would hold, and one
value per committed batch (the batch's packed rows as one BLOB / one LMDB value, keyed by its first
row), which is what mmsb's log record is.
"""

from __future__ import annotations

import abc
import functools
import gc
import itertools
import os
import sqlite3
import statistics
import time
from typing import Any, Optional

import numpy as np

import mmsb

from . import workloads as wl
from ._measure import verify, verify_equal

try:
    import lmdb
except ImportError:  # an optional dependency (mmsb[bench]): its variants are skipped without it
    lmdb = None

THREADS = 1  # SQLite and LMDB commit on the calling thread; mmsb applies on one thread too
RAM_FILESYSTEMS = {"tmpfs", "ramfs"}


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
    """(a directory for scratch stores, its filesystem): the first of /tmp, /var/tmp and the
    working directory that is not in RAM, where fsync would cost nothing and mean nothing."""
    for base in ("/tmp", "/var/tmp", os.getcwd()):
        fs = filesystem_of(base)
        if os.path.isdir(base) and os.access(base, os.W_OK) and fs.split()[0] not in RAM_FILESYSTEMS:
            return base, fs
    return "/tmp", filesystem_of("/tmp")


def fdatasync_floor(root: str, seconds: float) -> dict[str, float]:
    """Median seconds of pwrite(64 B) + fdatasync on a file in `root`, each kind sampled for about
    seconds / 2: 'append' grows the file (so its size is journaled too, as for a log appended to),
    'overwrite' rewrites blocks a pre-zeroed file already holds. The disk's floor under every
    fsync'ed commit."""
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


# An LMDB value: page index and offset (u32 each), then the payload.
PACKED = np.dtype([("page", "<u4"), ("offset", "<u4"), ("data", "u1", wl.DELTA_BYTES)])


def fixed_width(buf: bytes, width: int) -> list[bytes]:
    return [buf[i:i + width] for i in range(0, len(buf), width)]


class DurableStream:
    """The stream every durable store appends, in each system's input form, and its oracle."""

    def __init__(self, rows: int):
        self.n = rows
        self.deltas = d = wl.make_batches(rows)[0]
        # (page index, offset, payload): SQLite's executemany rows and the arguments of p.write
        self.rows = list(zip(d.page.tolist(), d.offset.tolist(), fixed_width(d.payload.tobytes(), wl.DELTA_BYTES)))
        # LMDB (key, value): the sequence number big-endian, so key order is commit order (and
        # append=True holds); the value is a PACKED row.
        packed = np.empty(rows, dtype=PACKED)
        packed["page"], packed["offset"], packed["data"] = d.page, d.offset, d.payload
        self.packed = packed.tobytes()  # the stream as PACKED rows: a batch is one slice of it
        self.records = list(zip(fixed_width(np.arange(rows, dtype=">u8").tobytes(), 8),
                                fixed_width(self.packed, PACKED.itemsize)))
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
    check_state(wl.page_bytes(bus.pages()), wl.page_epochs(bus.pages()), stream, rows, what)


def check_state(state: np.ndarray, epochs: Optional[np.ndarray], stream: DurableStream, rows: int,
                what: str) -> None:
    """Page bytes (and epochs, when the system has them) equal the first `rows` deltas' oracle."""
    want_state, want_epochs = stream.expected(rows)
    verify_equal(state, want_state, f"{what}: page bytes differ from the expected state")
    if epochs is not None:
        verify(np.array_equal(epochs, want_epochs), f"{what}: page epochs differ from the deltas per page")


class DurableStore(abc.ABC):
    """A fresh store in the empty directory `path`. commit(a, b) makes rows [a, b) of the stream
    durable as one transaction, as its mode promises; after close(), verify(rows) reopens the
    store and checks that it holds exactly the first `rows` rows."""

    system = ""
    how = ""                         # the call that commits a batch (and what it stores per row or batch)
    MODES: dict[str, Any] = {}       # label -> the mode argument of __init__
    reference = True                 # what mmsb is measured against (mmsb's own stores say False)

    def __init__(self, path: str, mode: Any, stream: DurableStream):
        self.path, self.mode, self.stream = path, mode, stream
        self.label = f"{self.system} " + next(k for k, v in self.MODES.items() if v == mode)

    @abc.abstractmethod
    def commit(self, a: int, b: int) -> None:
        ...

    @abc.abstractmethod
    def close(self) -> None:
        ...

    @abc.abstractmethod
    def verify(self, rows: int) -> None:
        ...

    def verify_rows(self, count: int, last: Any, rows: int, want_last: Any) -> None:
        verify(count == rows, f"{self.label}: {count:,} rows after reopening, expected {rows:,}")
        verify(last == want_last, f"{self.label}: the last row after reopening is not delta {rows - 1}")


class MmsbLog(DurableStore):
    system, how = "mmsb", "apply_batch"
    MODES = {"none": "none", "flush": "flush", "fsync": "fsync"}
    reference = False

    def __init__(self, path: str, mode: str, stream: DurableStream):
        super().__init__(path, mode, stream)
        # The pages are created (and logged in one write, at close) before the bus is reopened in
        # the mode under test: 16,384 page creations are set-up, not part of the stream.
        with mmsb.Bus(path, durability="none", threads=THREADS) as bus:
            first = wl.create_pages(bus)[0].id
        self.bus = mmsb.open(path, durability=mode, threads=THREADS)
        self.pages = self.bus.pages()
        self.columns = stream.deltas.mmsb_columns(first)

    def commit(self, a: int, b: int) -> None:
        ids, offsets, lengths, payload = self.columns
        self.bus.apply_batch(mmsb.DeltaBatch(ids[a:b], offsets[a:b], lengths[a:b], payload[a:b]))

    def close(self) -> None:
        self.bus.close()

    def verify(self, rows: int) -> None:
        bus = mmsb.open(self.path, threads=THREADS)
        try:
            check_recovered(bus, self.stream, rows, self.label)
        finally:
            bus.close()


class MmsbWrites(MmsbLog):
    """One p.write per delta: for batches of 1, cheaper than building a 1-row DeltaBatch."""
    how = "p.write"

    def commit(self, a: int, b: int) -> None:
        pages = self.pages
        for page, offset, data in self.stream.rows[a:b]:
            pages[page].write(offset, data)


class SqliteWal(DurableStore):
    system, how = "SQLite", "executemany, a row per delta"
    MODES = {"WAL, synchronous=NORMAL": "NORMAL", "WAL, synchronous=FULL": "FULL"}
    SCHEMA = "CREATE TABLE deltas (page INTEGER, offset INTEGER, data BLOB)"
    INSERT = "INSERT INTO deltas VALUES (?, ?, ?)"

    def __init__(self, path: str, mode: str, stream: DurableStream):
        super().__init__(path, mode, stream)
        self.file = os.path.join(path, "deltas.db")
        self.db = sqlite3.connect(self.file, isolation_level=None)  # transactions by BEGIN/COMMIT
        journal = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        verify(journal == "wal", f"SQLite: journal_mode is {journal!r}, not 'wal'")
        self.db.execute(f"PRAGMA synchronous={mode}")
        self.db.execute(self.SCHEMA)

    def commit(self, a: int, b: int) -> None:
        db = self.db
        db.execute("BEGIN")
        db.executemany(self.INSERT, self.stream.rows[a:b])
        db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def verify(self, rows: int) -> None:
        db = sqlite3.connect(self.file)
        try:
            count = db.execute("SELECT COUNT(*) FROM deltas").fetchone()[0]
            last = db.execute("SELECT page, offset, data FROM deltas ORDER BY rowid DESC LIMIT 1").fetchone()
        finally:
            db.close()
        self.verify_rows(count, last, rows, self.stream.rows[rows - 1])

    @staticmethod
    def read_rows(path: str, upto: int) -> wl.DeltaRows:
        """The first `upto` rows of the store in `path`, in commit order, as columns."""
        db = sqlite3.connect(os.path.join(path, "deltas.db"))
        try:
            got = db.execute("SELECT page, offset, data FROM deltas WHERE rowid <= ? ORDER BY rowid",
                             (upto,)).fetchall()
        finally:
            db.close()
        page, offset, data = zip(*got) if got else ((), (), ())
        payload = np.frombuffer(b"".join(data), dtype=np.uint8).reshape(len(got), wl.DELTA_BYTES)
        return wl.DeltaRows(np.asarray(page, dtype=np.int64), np.asarray(offset, dtype=np.int64), payload)


def packed_rows(values: list[bytes], upto: int) -> wl.DeltaRows:
    """The first `upto` PACKED rows of the concatenated `values`, as columns."""
    packed = np.frombuffer(b"".join(values), dtype=PACKED)[:upto]
    return wl.DeltaRows(packed["page"].astype(np.int64), packed["offset"].astype(np.int64),
                        np.ascontiguousarray(packed["data"]))


class BatchValues:
    """Mixin of the one-value-per-batch stores: rows [a, b) are committed as the one value
    stream.packed[a * w:b * w] (w = PACKED.itemsize) keyed by a, and after reopening, the values
    in key order must concatenate to exactly the stream's first `rows` packed rows."""

    stream: DurableStream
    label: str

    def batch(self, a: int, b: int) -> bytes:
        return self.stream.packed[a * PACKED.itemsize:b * PACKED.itemsize]

    def verify_values(self, values: list[bytes], rows: int) -> None:
        got = b"".join(values)
        verify(len(got) == rows * PACKED.itemsize,
               f"{self.label}: {len(got) // PACKED.itemsize:,} rows after reopening, expected {rows:,}")
        verify(got == self.stream.packed[:len(got)], f"{self.label}: the rows after reopening differ from the stream")


class SqliteBlob(BatchValues, SqliteWal):
    """SQLite WAL with one BLOB per committed batch (its packed rows), keyed by its first row."""
    how = "insert, a blob per batch"
    SCHEMA = "CREATE TABLE batches (first_row INTEGER PRIMARY KEY, data BLOB)"

    def commit(self, a: int, b: int) -> None:
        db = self.db
        db.execute("BEGIN")
        db.execute("INSERT INTO batches VALUES (?, ?)", (a, self.batch(a, b)))
        db.execute("COMMIT")

    def verify(self, rows: int) -> None:
        db = sqlite3.connect(self.file)
        try:
            values = [v for (v,) in db.execute("SELECT data FROM batches ORDER BY first_row")]
        finally:
            db.close()
        self.verify_values(values, rows)

    @staticmethod
    def read_rows(path: str, upto: int) -> wl.DeltaRows:
        """The first `upto` rows of the store in `path`: the batches that begin before row
        `upto`, in commit order, cut at `upto`."""
        db = sqlite3.connect(os.path.join(path, "deltas.db"))
        try:
            values = [v for (v,) in db.execute("SELECT data FROM batches WHERE first_row < ? ORDER BY first_row",
                                               (upto,))]
        finally:
            db.close()
        return packed_rows(values, upto)


class LmdbEnv(DurableStore):
    system, how = "LMDB", "putmulti(append), a record per delta"
    MODES = {"sync=False": False, "sync=True": True}

    def __init__(self, path: str, mode: bool, stream: DurableStream):
        super().__init__(path, mode, stream)
        # map_size reserves address space, not disk: room for every record and the B-tree.
        self.env = lmdb.open(path, map_size=(64 << 20) + 256 * stream.n, sync=mode)

    def commit(self, a: int, b: int) -> None:
        with self.env.begin(write=True) as txn:
            txn.cursor().putmulti(self.stream.records[a:b], append=True)

    def close(self) -> None:
        self.env.close()

    def verify(self, rows: int) -> None:
        env = lmdb.open(self.path, readonly=True, lock=False)
        try:
            count = env.stat()["entries"]
            with env.begin() as txn:
                cursor = txn.cursor()
                last = (cursor.key(), cursor.value()) if cursor.last() else None
        finally:
            env.close()
        self.verify_rows(count, last, rows, self.stream.records[rows - 1])

    @staticmethod
    def read_rows(path: str, upto: int) -> wl.DeltaRows:
        """The first `upto` records of the store in `path` (key order = commit order), as columns."""
        env = lmdb.open(path, readonly=True, lock=False)
        try:
            with env.begin() as txn:
                cursor = txn.cursor()
                values = [v for _, v in zip(range(upto), cursor.iternext(keys=False, values=True))]
        finally:
            env.close()
        return packed_rows(values, upto)


class LmdbBlob(BatchValues, LmdbEnv):
    """LMDB with one value per committed batch (its packed rows), keyed by its first row
    (big-endian, so key order is commit order and append=True holds)."""
    how = "put(append), a value per batch"

    def commit(self, a: int, b: int) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(a.to_bytes(8, "big"), self.batch(a, b), append=True)

    def verify(self, rows: int) -> None:
        env = lmdb.open(self.path, readonly=True, lock=False)
        try:
            with env.begin() as txn:
                values = list(txn.cursor().iternext(keys=False, values=True))
        finally:
            env.close()
        self.verify_values(values, rows)

    @staticmethod
    def read_rows(path: str, upto: int) -> wl.DeltaRows:
        """The first `upto` rows of the store in `path`: the batches that begin before row
        `upto`, in key (= commit) order, cut at `upto`."""
        env = lmdb.open(path, readonly=True, lock=False)
        end = upto.to_bytes(8, "big")
        try:
            with env.begin() as txn:
                values = [v for _, v in itertools.takewhile(lambda kv: kv[0] < end, txn.cursor())]
        finally:
            env.close()
        return packed_rows(values, upto)


class NumpyScatter(DurableStore):
    """No store: the rows scattered into one (PAGES, PAGE_SIZE) uint8 array in memory, one
    vectorised slot-row assignment per batch, no log and no epochs. Not durable at all: the scale
    issue 3 sets mmsb's flush rate against (\"a vectorised NumPy scatter of the same deltas with no
    log\"), measured in the same run. The array's pages are faulted in before the run, so NumPy
    pays no first touch where a fresh bus's pages are faulted in as its rows land: the reference
    is the scatter at its best."""
    system, how = "NumPy", "slot-row scatter"
    MODES = {"in memory, no log": "memory"}

    def __init__(self, path: str, mode: str, stream: DurableStream):
        super().__init__(path, mode, stream)
        self.state = np.zeros((wl.PAGES, wl.PAGE_SIZE), dtype=np.uint8)
        self.state.fill(0)  # np.zeros maps pages lazily: fault them in now, outside the timing
        self.slots = self.state.reshape(-1, wl.DELTA_BYTES)
        # Indices computed here, as MmsbLog builds its columns before the timed run.
        self.slot, self.payload = stream.deltas.slot, stream.deltas.payload

    def commit(self, a: int, b: int) -> None:
        self.slots[self.slot[a:b]] = self.payload[a:b]

    def close(self) -> None:
        pass

    def verify(self, rows: int) -> None:
        check_state(self.state, None, self.stream, rows, self.label)


DURABLE_STORES = (MmsbWrites, MmsbLog, SqliteWal, LmdbEnv, SqliteBlob, LmdbBlob, NumpyScatter)


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
