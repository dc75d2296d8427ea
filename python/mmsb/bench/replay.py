"""Category `replay`: getting state back from a durable log, mmsb against SQLite WAL and LMDB.

The stream of `persistence` (1,000,000 deltas full, 100,000 quick) is logged once per system
(mmsb durability flush in batches of 4096; SQLite synchronous=NORMAL; LMDB sync=False). SQLite
and LMDB log it two ways: a row (record) per delta, and one value per committed batch of 4096
(the batch's packed rows), the granularity of mmsb's log record. Then:

  whole log     mmsb.open (recovery replays every record) against reading every row back from
                SQLite / LMDB and rebuilding the page bytes and epochs with NumPy
  checkpoint    bus.checkpoint() of the 16,384 x 4 KiB pages, and mmsb.open from it
  at an lsn     bus.at(lsn) on a bus with a checkpoint every 65,536 deltas (rebuilt from the
                nearest checkpoint plus the log after it) against SQLite / LMDB reading the
                rows up to the same point and rebuilding the state; same seeded random points
                for every system, and each figure is the mean over all of them (a round per
                repeat, the best round kept): the fastest single point would compare one
                system's cheapest point with another's

All figures are latencies (ms; lower is better). The files were just written, so they are read
from the page cache: this is each system's replay cost, not the disk's. Every rebuilt state, of
every system, is checked against the oracle (bytes, and epochs where the system keeps them).
"""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np

import mmsb

from . import _stores as st
from . import workloads as wl
from ._measure import BenchContext, latency, timed, verify

BATCH = 4096
AT_CHECKPOINT_EVERY = 65_536  # deltas between checkpoints, as in the at(lsn) target
OPEN_LOG = "mmsb.open: replay the whole log"
AT_LSN = "bus.at(lsn) at seeded random lsns (mean)"
STATE_AT = "state at seeded random rows (mean)"
# name -> store; the first is the anchor of the mmsb figures, the others are reported beside it
OTHERS = {"SQLite WAL, a row per delta": st.SqliteWal, "LMDB, a record per delta": st.LmdbEnv,
          "SQLite WAL, a blob per batch": st.SqliteBlob, "LMDB, a value per batch": st.LmdbBlob}


def _mean_over_points(at: Callable[[int], object], points: list[int], repeats: int,
                      checked: Callable[[int], Callable]) -> list[float]:
    """Seconds per state, the mean over `points`, for each of `repeats` rounds (each result
    checked). One untimed state at the first point comes first, taking first-call costs out."""
    timed(lambda: at(points[0]), 0, warmup=1, check=checked(points[0]))
    rounds = []
    for _ in range(repeats):
        per_point = [timed(lambda upto=upto: at(upto), 1, warmup=0, check=checked(upto))[0] for upto in points]
        rounds.append(sum(per_point) / len(per_point))
    return rounds


def _log_stream(path: str, stream: st.DurableStream, checkpoint_every: float = math.inf) -> st.MmsbLog:
    os.mkdir(path)
    log = st.MmsbLog(path, "flush", stream)
    step = int(min(checkpoint_every, stream.n))
    for start in range(0, stream.n, step):
        end = min(stream.n, start + step)
        for a in range(start, end, BATCH):
            log.commit(a, min(end, a + BATCH))
        if checkpoint_every != math.inf:
            log.bus.checkpoint()
    return log


def _mmsb_open(ctx: BenchContext, stream: st.DurableStream, repeats: int) -> None:
    path = os.path.join(ctx.workdir, "recovery")
    _log_stream(path, stream).close()
    os.sync()

    def opened(what: str, replayed: int) -> Callable[[mmsb.Bus], None]:
        def check(bus: mmsb.Bus) -> None:
            try:
                st.check_recovered(bus, stream, stream.n, what)
                got = bus.recovery["records_replayed"]
                verify(got == replayed, f"{what}: {got} records replayed, expected {replayed}")
            finally:
                bus.close()
        return check

    def open_bus() -> mmsb.Bus:
        return mmsb.open(path, threads=st.THREADS)

    ctx.progress(OPEN_LOG)
    # 16,384 page-creation records, then one record per batch.
    whole = opened("open of the log", wl.PAGES + -(-stream.n // BATCH))
    others = tuple(f"{name}: read all rows + NumPy rebuild" for name in OTHERS)
    ctx.section.add(latency(OPEN_LOG, timed(open_bus, repeats, warmup=0, check=whole),
                            ratio_to=others[0], also=others[1:]))
    bus = open_bus()
    try:
        ctx.progress("bus.checkpoint()")
        ctx.section.add(latency("bus.checkpoint() of all pages", timed(bus.checkpoint, repeats, warmup=0)))
    finally:
        bus.close()
    ctx.section.add(latency("mmsb.open from the checkpoint",
                            timed(open_bus, repeats, warmup=0, check=opened("open from the checkpoint", 0)),
                            ratio_to=OPEN_LOG))


def _rebuild(cls: type, path: str, upto: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Read the first `upto` rows of a store, rebuild (page bytes, epochs) as of that row."""
    rows = cls.read_rows(path, upto)
    return wl.expected_state([rows]), wl.epoch_counts([rows]), len(rows)


def _others(ctx: BenchContext, stream: st.DurableStream, points: list[int], repeats: int) -> None:
    for name, cls in OTHERS.items():
        if issubclass(cls, st.LmdbEnv) and st.lmdb is None:
            ctx.section.skip(name, "the Python package lmdb is not installed (pip install 'mmsb[bench]')")
            continue
        ctx.progress(f"{name}: read back and rebuild")
        path = os.path.join(ctx.workdir, cls.__name__)
        os.mkdir(path)
        store = cls(path, "NORMAL" if issubclass(cls, st.SqliteWal) else False, stream)
        st.timed_append(store, stream.n, BATCH, math.inf)
        store.close()
        store.verify(stream.n)

        def checked(upto: int) -> Callable[[tuple], None]:
            def check(got: tuple) -> None:
                state, epochs, n = got
                verify(n == upto, f"{name}: read {n} rows, expected {upto}")
                st.check_state(state, epochs, stream, upto, f"{name} rebuilt at row {upto}")
            return check

        seconds = timed(lambda: _rebuild(cls, path, stream.n), repeats, warmup=0, check=checked(stream.n))
        ctx.section.add(latency(f"{name}: read all rows + NumPy rebuild", seconds, reference=True))
        rounds = _mean_over_points(lambda upto: _rebuild(cls, path, upto), points, repeats, checked)
        ctx.section.add(latency(f"{name}: {STATE_AT}", rounds, reference=True))


def _time_travel(ctx: BenchContext, stream: st.DurableStream, points: list[int], repeats: int) -> None:
    """bus.at(lsn) at the same points, each result checked against the oracle at that point."""
    ctx.progress(AT_LSN)
    log = _log_stream(os.path.join(ctx.workdir, "time-travel"), stream, AT_CHECKPOINT_EVERY)
    bus = log.bus

    def checked(upto: int) -> Callable[[mmsb.Bus], None]:
        def check(old: mmsb.Bus) -> None:
            try:
                lsn = wl.PAGES + upto
                verify(old.lsn == lsn and old.read_only, f"bus.at({lsn}) gave a bus at lsn {old.lsn}")
                pages = old.pages()
                st.check_state(wl.page_bytes(pages), wl.page_epochs(pages), stream, upto, f"bus.at({lsn})")
            finally:
                old.close()
        return check

    try:
        rounds = _mean_over_points(lambda upto: bus.at(wl.PAGES + upto), points, repeats, checked)
        others = tuple(f"{name}: {STATE_AT}" for name in OTHERS)
        ctx.section.add(latency(AT_LSN, rounds, ratio_to=others[0], also=others[1:]))
    finally:
        log.close()


def run(ctx: BenchContext) -> None:
    """Fills ctx.section with recovery, checkpoint and time-travel latencies."""
    rows, repeats, probes = ctx.size(1_000_000, 100_000), ctx.size(3, 1), ctx.size(12, 3)
    points = sorted(np.random.default_rng(wl.SEED).integers(1, rows + 1, probes).tolist())
    ctx.section.details.update(stream_rows=rows, batch=BATCH, timed_runs=repeats, probes=points,
                               checkpoint_every=AT_CHECKPOINT_EVERY, filesystem=st.filesystem_of(ctx.workdir))
    stream = st.DurableStream(rows)
    _mmsb_open(ctx, stream, repeats)
    _others(ctx, stream, points, repeats)
    _time_travel(ctx, stream, points, repeats)
    # Report order: mmsb first, then what it is measured against.
    ctx.section.figures.sort(key=lambda f: not f.name.startswith(("mmsb", "bus.")))
