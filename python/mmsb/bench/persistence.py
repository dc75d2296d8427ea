"""Category `persistence`: durable logging of a stream of 64-byte deltas, mmsb against SQLite in
WAL mode and LMDB.

One stream (1,000,000 deltas full, 100,000 quick) is committed in batches of 1, 64 and 4096 rows,
one transaction per batch, into fresh stores: an mmsb bus directory (durability none, flush and
fsync; for batches of 1 also p.write per delta), SQLite WAL (synchronous=NORMAL and FULL), LMDB
(sync=False and True). SQLite and LMDB store the rows two ways: a row (record) per delta, and,
for batches of 64 and 4096, one value per committed batch (a BLOB / an LMDB value holding the
batch's packed rows), the granularity of mmsb's log record; for batches of 1 the two are the
same. A run stops at the stream's end or after the first commit that ends past a time cap
(fsync'ed batches of 1 would take minutes to reach the end). Figures are records/s of each run;
every mmsb figure is anchored to the like-for-like SQLite figure of a row per delta, with LMDB's
and the one-value-per-batch figures of both beside it: fsync with FULL and sync=True (survive
power loss), flush with NORMAL and sync=False (survive the process being killed). Durability
none (a bulk load: up to a MiB of commits stays in the process until written) promises less than
any mode of the others, so it is anchored to mmsb flush of the same batch, which it should never
trail. Flush and none are also set against NumPy scattering the same rows, batch by batch, into
an in-memory array (faulted in beforehand) with no log at all (the scale issue 3 gives its flush
target: 0.8x of that scatter).

Every variant runs once per round, rounds repeated: a drift of the disk's speed (a virtual disk's
rate limiter empties and refills) then spreads over all variants instead of hitting whichever
ran last. The pwrite + fdatasync floor of the disk is taken before each round and after the last
(figures "disk floor: ...": syncs/s of one 64-byte write, appended or overwritten in place; the
bound on any fsync'ed commit rate of one writer). mmsb fsync with batches of 1 is set against
both: its log file is written ahead (pre-extended with zeros), so its fdatasyncs are overwrites
of blocks the file already holds, whose floor is its like-for-like bound; the append floor is
that of a file that grows with every commit.
Then concurrent writers (bench/concurrent.py): group commit against LMDB's one sync per commit.
Every store is closed and reopened after its run: an mmsb bus must hold the oracle's bytes and
epochs for the rows it committed, SQLite and LMDB exactly that many rows, ending with the last.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from typing import Iterator

from . import _stores as st
from . import concurrent
from ._measure import BenchContext, Figure

BATCHES = (1, 64, 4096)
FLOOR_PROBE_S = 0.2  # per fdatasync_floor sample
UNIT = "records/s"
DISK_FLOOR = "disk floor: pwrite(64 B) + fdatasync, {}"
FLOOR_KINDS = ("append", "overwrite")  # the kinds of st.fdatasync_floor
# mmsb mode -> the other systems' modes that promise the same durability
LIKE_FOR_LIKE = {"fsync": ("WAL, synchronous=FULL", "sync=True"),
                 "flush": ("WAL, synchronous=NORMAL", "sync=False")}


def figure_name(cls: type, mode: str, batch: int) -> str:
    return f"{cls.system} {mode}, batch {batch}, {cls.how}"


def variants(stores: tuple) -> Iterator[tuple[type, str, int]]:
    """(store class, mode label, batch) in report order: by batch, then system. p.write is a
    batch of 1; a value per batch is a value per delta at batches of 1 (measured as such)."""
    for batch in BATCHES:
        for cls in stores:
            if (cls is st.MmsbWrites and batch != 1) or (issubclass(cls, st.BatchValues) and batch == 1):
                continue
            for mode in cls.MODES:
                yield cls, mode, batch


def durable_run(cls: type, mode: str, batch: int, stream: st.DurableStream, path: str,
                cap_s: float) -> tuple[int, int, float]:
    """One timed run of a fresh store, verified after closing; returns (rows, commits, seconds)."""
    os.mkdir(path)
    store = cls(path, cls.MODES[mode], stream)
    os.sync()  # no dirty data of earlier runs or of the set-up is written back during this run
    run = st.timed_append(store, stream.n, batch, cap_s)
    store.close()
    store.verify(run[0])
    shutil.rmtree(path)
    return run


def _anchors(cls: type, mode: str, batch: int) -> tuple[str, ...]:
    # Flush and none also against NumPy's scatter with no log at all: issue 3's scale.
    numpy = (figure_name(st.NumpyScatter, "in memory, no log", batch),)
    if mode == "none":
        return (figure_name(cls, "flush", batch),) + numpy
    sqlite_mode, lmdb_mode = LIKE_FOR_LIKE[mode]
    like = (figure_name(st.SqliteWal, sqlite_mode, batch), figure_name(st.LmdbEnv, lmdb_mode, batch))
    if batch > 1:  # the other granularity, one value per committed batch, beside a row per delta
        like += (figure_name(st.SqliteBlob, sqlite_mode, batch), figure_name(st.LmdbBlob, lmdb_mode, batch))
    if mode == "fsync" and batch == 1:
        like += tuple(DISK_FLOOR.format(kind) for kind in FLOOR_KINDS)
    return like + (numpy if mode == "flush" else ())


def run(ctx: BenchContext) -> None:
    """Fills ctx.section with records/s per system, durability mode and batch size."""
    rows, cap_s, rounds = ctx.size(1_000_000, 100_000), ctx.size(2.0, 0.15), ctx.size(3, 1)
    stores = st.DURABLE_STORES
    if st.lmdb is None:
        stores = tuple(s for s in stores if not issubclass(s, st.LmdbEnv))
        ctx.section.skip("LMDB", "the Python package lmdb is not installed (pip install 'mmsb[bench]')")
    fs = st.filesystem_of(ctx.workdir)
    ctx.section.details.update(stream_rows=rows, time_cap_s=cap_s, rounds=rounds, batches=list(BATCHES),
                               threads=st.THREADS, dir=ctx.workdir, filesystem=fs,
                               sqlite=sqlite3.sqlite_version)
    if st.lmdb is not None:
        ctx.section.details["lmdb"] = ".".join(map(str, st.lmdb.version()))
    ctx.progress(f"a stream of {rows:,} deltas into {ctx.workdir} ({fs})")
    stream = st.DurableStream(rows)
    todo = list(variants(stores))
    runs: dict[tuple, list] = {v: [] for v in todo}
    floors = {}
    for i in range(rounds):
        floors[f"before round {i + 1}"] = st.fdatasync_floor(ctx.workdir, FLOOR_PROBE_S)
        for cls, mode, batch in todo:
            ctx.progress(f"round {i + 1}/{rounds}: {figure_name(cls, mode, batch)}")
            path = os.path.join(ctx.workdir, f"{cls.__name__}-{cls.MODES[mode]}-{batch}-{i}")
            runs[(cls, mode, batch)].append(durable_run(cls, mode, batch, stream, path, cap_s))
    floors["after"] = st.fdatasync_floor(ctx.workdir, FLOOR_PROBE_S)
    ctx.section.details["fdatasync_floor_us"] = {k: {kind: s * 1e6 for kind, s in v.items()}
                                                 for k, v in floors.items()}
    per_run = ctx.section.details.setdefault("runs", {})
    for (cls, mode, batch), done in runs.items():
        name = figure_name(cls, mode, batch)
        anchors = () if cls.reference else _anchors(cls, mode, batch)
        capped = any(r < rows for r, _, _ in done)
        ctx.section.add(Figure(name, UNIT, [r / s for r, _, s in done], True,
                               ratio_to=anchors[0] if anchors else None, also=anchors[1:], reference=cls.reference,
                               note="stopped at the time cap before the stream's end" if capped else ""))
        per_run[name] = [{"rows": r, "commits": c, "seconds": s} for r, c, s in done]
    for kind in FLOOR_KINDS:
        # The disk's own limit on synced commits: one sample per probe (before each round, after).
        ctx.section.add(Figure(DISK_FLOOR.format(kind), UNIT, [1 / f[kind] for f in floors.values()],
                               reference=True))
    concurrent.run(ctx, stream, cap_s, rounds)
