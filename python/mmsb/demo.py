"""`mmsb demo`: a narrated tour of pages, deltas, views and batches, on real measurements."""

from __future__ import annotations

import time
from typing import TextIO

import numpy as np

from . import Bus, Delta, DeltaBatch, InvalidDeltaError, build_info
from . import open as open_bus


def _step(out: TextIO, title: str) -> None:
    out.write(f"\n== {title}\n")


def run_demo(rows: int = 1_000_000, out: TextIO | None = None) -> int:
    import sys

    out = out or sys.stdout
    info = build_info()
    out.write(
        f"mmsb {info['version']} ({info['compiler']}, simd={info['simd']}, "
        f"parallel={info['parallel_backend']}, cuda compiled={info['cuda']}, "
        f"cuda devices={info['cuda_devices']})\n"
    )

    _step(out, "1. Pages: fixed-size, 64-byte aligned, versioned")
    bus = Bus()
    pos = bus.create_page(shape=(8,), dtype="float32", name="pos")
    raw = bus.create_page(64, name="raw")
    w = bus.create_page(data=np.arange(4.0), name="weights")
    for p in bus.pages():
        out.write(f"   {p!r}  (address % 64 = {p.view().ctypes.data % 64})\n")
    out.write(f"   bus.lsn = {bus.lsn}: one record per creation, plus delta 1 for data= content\n")

    _step(out, "2. Every change is a delta; epochs count them")
    view = pos.view()  # zero copy, read-only, live
    pos.write(4, np.float32(1.5).tobytes())
    with pos.edit() as a:
        a[5:7] = [2.0, 3.0]
    d = Delta.masked(pos, np.array([1, 0, 0, 0, 0, 0, 0, 1], bool), np.full(8, 9.0, np.float32))
    bus.apply(d)
    out.write(f"   view (no copy) now reads {view.tolist()}\n")
    out.write(f"   pos.epoch = {pos.epoch} after write, edit and a masked delta; bus.lsn = {bus.lsn}\n")
    out.write(f"   the masked delta stored runs {d.run_list} ({d.nbytes} bytes), lsn {d.lsn}\n")
    changed = w.update(np.arange(4.0))
    out.write(f"   update() with identical content committed a delta: {changed} (epoch {w.epoch})\n")

    _step(out, "3. Bad input is rejected before anything changes")
    before = (raw.read(0, 64), raw.epoch, bus.lsn)
    try:
        raw.write(60, b"12345678")
    except InvalidDeltaError as e:
        out.write(f"   InvalidDeltaError: {e}\n")
    after = (raw.read(0, 64), raw.epoch, bus.lsn)
    out.write(f"   bytes, epoch and lsn unchanged: {before == after}\n")

    _step(out, f"4. A columnar batch of {rows:,} 64-byte deltas over 16,384 x 4 KiB pages")
    rng = np.random.default_rng(7)
    for threads in sorted({1, info["hardware_threads"]}):
        big = Bus(threads=threads)
        ids = np.array([big.create_page(4096).id for _ in range(16_384)], np.uint64)
        batch = DeltaBatch(
            ids[rng.integers(0, ids.size, rows)],
            rng.integers(0, 4096 // 64, rows).astype(np.uint64) * 64,
            np.full(rows, 64, np.uint64),
            rng.integers(0, 256, rows * 64, dtype=np.uint8),
        )
        big.apply_batch(batch)  # first touch of fresh page memory costs page faults: warm up
        t0 = time.perf_counter()
        big.apply_batch(batch)
        dt = time.perf_counter() - t0
        out.write(
            f"   threads={threads}: {rows / dt / 1e6:6.1f} M deltas/s measured now, second pass "
            f"(lsn {big.lsn:,}, {big.stats().bytes_applied / 2**20:.0f} MiB applied)\n"
        )

    _step(out, "5. Log first: a directory bus survives a crash")
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.mmsb")
        with Bus(path, durability="flush") as dbus:
            x = dbus.create_page(shape=(4,), dtype="float64", name="x")
            for i in range(4):
                x.write(8 * i, np.float64(i + 0.5).tobytes())
            committed = dbus.lsn
        seg = sorted(f for f in os.listdir(path) if f.startswith("seg-"))[-1]
        size = os.path.getsize(os.path.join(path, seg))
        os.truncate(os.path.join(path, seg), size - 5)  # as if the last write was cut short
        reopened = open_bus(path)
        out.write(f"   committed lsn {committed}; after cutting 5 bytes off the log: lsn {reopened.lsn}, "
                  f"x = {reopened.page('x').view().tolist()}\n")
        out.write(f"   recovery: {reopened.recovery}\n")
        reopened.close()

    _step(out, "6. Zero-copy interop")
    arr = np.from_dlpack(pos)
    out.write(f"   np.from_dlpack(pos) shares memory: {np.shares_memory(arr, pos.view())}, "
              f"writeable: {arr.flags.writeable}\n")
    mem = bus.memory()
    out.write(f"   bus.memory(): {mem.pages} pages, {mem.data_bytes} data bytes, "
              f"{mem.page_metadata_bytes} metadata bytes per page record\n")
    return 0
