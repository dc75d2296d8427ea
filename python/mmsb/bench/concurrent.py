"""Concurrent durable writers (part of category `persistence`): WRITERS Python threads each commit
single 64-byte deltas with power-loss durability, mmsb (durability='fsync': group commit, one
fdatasync for every commit written while the previous one ran) against LMDB (sync=True: write
transactions are serialized and each syncs on its own).

The stream is split by page (thread t takes the rows whose page % WRITERS == t), so each page is
written by one thread in stream order and the final state is known whatever the interleaving.
Each thread stops after the first commit that ends past the time cap. Every store is reopened
afterwards: mmsb must hold exactly the rows each thread committed (bytes and epochs), LMDB
exactly that many records.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import Callable

import numpy as np

import mmsb

from . import _stores as st
from . import workloads as wl
from ._measure import BenchContext, Figure, verify, verify_equal

WRITERS = 4
UNIT = "commits/s"


def figure_name(system: str, writers: int) -> str:
    how = "p.write" if system == "mmsb" else "put"
    mode = "fsync" if system == "mmsb" else "sync=True"
    return f"{system} {mode}, {writers} writer thread{'s' if writers > 1 else ''}, batch 1, {how}"


def _shares(stream: st.DurableStream, writers: int) -> list[np.ndarray]:
    """Row indices of each writer, in stream order."""
    page = stream.deltas.page
    return [np.flatnonzero(page % writers == t) for t in range(writers)]


def _drive(commit: Callable[[int], None], shares: list[np.ndarray], cap_s: float) -> tuple[list[int], float]:
    """Runs one thread per share committing its rows one by one; returns (rows done per thread,
    seconds from the start to the last thread's end)."""
    done = [0] * len(shares)
    errors: list[BaseException] = []
    start = threading.Barrier(len(shares) + 1)

    def worker(t: int) -> None:
        try:
            start.wait()
            t0 = time.perf_counter()
            for k, row in enumerate(shares[t].tolist()):
                commit(row)
                done[t] = k + 1
                if time.perf_counter() - t0 >= cap_s:
                    break
        except BaseException as e:  # re-raised below, after every thread ended
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(len(shares))]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return done, seconds


def _committed(stream: st.DurableStream, shares: list[np.ndarray], done: list[int]) -> wl.DeltaRows:
    """The rows the writers committed (pages are disjoint between writers, so order is free)."""
    idx = np.sort(np.concatenate([s[:n] for s, n in zip(shares, done)]))
    d = stream.deltas
    return wl.DeltaRows(d.page[idx], d.offset[idx], d.payload[idx])


def mmsb_run(path: str, stream: st.DurableStream, writers: int, cap_s: float) -> tuple[int, float]:
    """Concurrent p.write into a fresh fsync bus, verified by reopening; returns (commits, s)."""
    store = st.MmsbWrites(path, "fsync", stream)
    pages, rows = store.pages, stream.rows
    shares = _shares(stream, writers)

    def commit(row: int) -> None:
        page, offset, data = rows[row]
        pages[page].write(offset, data)

    os.sync()
    done, seconds = _drive(commit, shares, cap_s)
    store.close()
    committed = _committed(stream, shares, done)
    with mmsb.open(path, threads=st.THREADS) as bus:
        what = f"mmsb fsync with {writers} writers"
        verify(bus.lsn == wl.PAGES + len(committed),
               f"{what}: lsn {bus.lsn:,} after reopening, expected {wl.PAGES + len(committed):,}")
        verify_equal(wl.page_bytes(bus.pages()), wl.expected_state([committed]),
                        f"{what}: page bytes differ from the rows the writers committed")
        verify(np.array_equal(wl.page_epochs(bus.pages()), wl.epoch_counts([committed])),
               f"{what}: epochs differ from the rows the writers committed")
    shutil.rmtree(path)
    return sum(done), seconds


def lmdb_run(path: str, stream: st.DurableStream, writers: int, cap_s: float) -> tuple[int, float]:
    """Concurrent one-record write transactions into a fresh synced LMDB; returns (commits, s)."""
    os.mkdir(path)
    env = st.lmdb.open(path, map_size=(64 << 20) + 256 * stream.n, sync=True)
    records = stream.records

    def commit(row: int) -> None:
        key, value = records[row]
        with env.begin(write=True) as txn:
            txn.put(key, value)

    os.sync()
    done, seconds = _drive(commit, _shares(stream, writers), cap_s)
    env.close()
    env = st.lmdb.open(path, readonly=True, lock=False)
    try:
        count = env.stat()["entries"]
    finally:
        env.close()
    verify(count == sum(done), f"LMDB sync=True with {writers} writers: {count:,} records after reopening, "
                               f"expected {sum(done):,}")
    shutil.rmtree(path)
    return sum(done), seconds


def run(ctx: BenchContext, stream: st.DurableStream, cap_s: float, rounds: int) -> None:
    """Adds commits/s of WRITERS concurrent writers (and of one, the group-commit baseline)."""
    systems = [("mmsb", mmsb_run)] + ([("LMDB", lmdb_run)] if st.lmdb is not None else [])
    results: dict[tuple[str, int], list[float]] = {}
    for i in range(rounds):
        for system, fn in systems:
            for writers in (1, WRITERS):
                ctx.progress(f"round {i + 1}/{rounds}: {figure_name(system, writers)}")
                path = os.path.join(ctx.workdir, f"concurrent-{system}-{writers}-{i}")
                commits, seconds = fn(path, stream, writers, cap_s)
                results.setdefault((system, writers), []).append(commits / seconds)
    ctx.section.details["concurrent_writers"] = WRITERS
    for (system, writers), rates in results.items():
        anchors = ()
        if (system, writers) == ("mmsb", WRITERS):
            anchors = (figure_name("mmsb", 1),) + ((figure_name("LMDB", WRITERS),) if st.lmdb else ())
        ctx.section.add(Figure(figure_name(system, writers), UNIT, rates, True, ratio_to=anchors[0] if anchors else None,
                               also=anchors[1:], reference=system != "mmsb"))
