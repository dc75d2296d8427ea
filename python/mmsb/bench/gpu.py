"""Category `gpu`: batched apply into device pages (issue 7's target), on CUDA device 0.

  mmsb        DeltaBatch apply of 64-byte rows into "cuda:0" pages of 4 KiB (1 GiB in all; history
              off), end to end: validation, epochs, one pinned host-to-device staging copy and
              one scatter kernel per batch
  CuPy        the same rows as a fancy-index scatter into a (slots, 64) device array: with the
              payload copied from the host inside the timed region (like for like with mmsb,
              whose payload starts on the host) and with the payload already on the device
  floor       a device-to-device copy of the same bytes (CuPy): the bandwidth bound
  mirror      the host mirror of one 256 MiB "cuda:0" page refreshed after a batch of 64-byte
              rows (it reads back only the runs written since its last refresh; the bytes it
              moved are recorded and checked), against `cupy.asnumpy` of the whole page: the
              manual full sync a Kokkos-style deep copy does

  wave        a semiring reduce (sum_product) of four float32 pages of WAVE_ELEMENTS elements,
              recomputed after 1024 scattered elements of one parent change: all pages on
              "cuda:0" (computed and diffed on the device, the changed bytes read back for the
              log), against the same graph on "cpu" pages and against CuPy by hand (the sum on
              the device, then the whole result copied to the host: a Kokkos-style deep copy)

Rows go to distinct 64-byte slots, so every scatter has one defined result (CuPy leaves the
winner of repeated indices unspecified). Rates are payload GB/s (1e9 bytes). Skipped, with the
reason, without a CUDA device; without CuPy its figures (the anchors) are skipped and mmsb's run.
bench_gpu_apply (benchmarks/cpp, run by scripts/gpu-check.sh) measures the kernel alone.
Every variant's bytes must equal the NumPy oracle, or the run fails (VerificationError).
"""

from __future__ import annotations

import time

import numpy as np

import mmsb

from . import workloads as wl
from ._measure import BenchContext, latency, rate, timed, verify, verify_equal

UNIT = "GB/s"
MMSB = "mmsb apply_batch into cuda:0 pages"
CUPY_HOST = "cupy fancy-index scatter, payload from host"
CUPY_DEVICE = "cupy fancy-index scatter, payload on device"
D2D = "cupy device-to-device copy (floor)"
MIRROR = "host mirror refresh after 1024 rows of 64 B"
FULL_SYNC = "cupy.asnumpy of the whole page (manual full sync)"
MIRROR_PAGE = 256 << 20  # --quick: 16 MiB
MIRROR_ROWS = 1024
WAVE_DEVICE = "reduce wave over 4 cuda:0 pages (computed on the device)"
WAVE_HOST = "reduce wave over 4 cpu pages"
WAVE_CUPY = "cupy sum of 4 arrays + copy of the result to the host"
WAVE_ELEMENTS = 1 << 22  # --quick: 1 << 16
WAVE_CHANGES = 1024


def distinct_rows(rows: int, pages: int, rng: np.random.Generator) -> wl.DeltaRows:
    """`rows` 64-byte deltas to distinct random slots of `pages` pages, in random order."""
    slots = rng.choice(pages * wl.SLOTS_PER_PAGE, size=rows, replace=False).astype(np.int64)
    return wl.DeltaRows(page=slots // wl.SLOTS_PER_PAGE, offset=slots % wl.SLOTS_PER_PAGE * wl.DELTA_BYTES,
                        payload=rng.integers(0, 256, size=(rows, wl.DELTA_BYTES), dtype=np.uint8))


def _mmsb(ctx: BenchContext, b: wl.DeltaRows, expected: np.ndarray, pages: int, repeats: int) -> None:
    ctx.progress(f"{MMSB} ({pages:,} pages)")
    bus = mmsb.Bus(history=False)
    try:
        dev = [bus.create_page(wl.PAGE_SIZE, location="cuda:0") for _ in range(pages)]
        verify(dev[-1].id - dev[0].id == pages - 1, "device page ids are not consecutive")
        batch = mmsb.DeltaBatch(*b.mmsb_columns(dev[0].id))
        seconds = timed(lambda: bus.apply_batch(batch), repeats)
        verify_equal(wl.page_bytes(dev), expected, f"{MMSB}: page bytes differ from the expected state")
        counts = np.bincount(b.page, minlength=pages) * (1 + repeats)
        verify(np.array_equal(wl.page_epochs(dev), counts), f"{MMSB}: page epochs are not the deltas applied")
    finally:
        bus.close()
    ctx.section.add(rate(MMSB, UNIT, b.payload.nbytes / 1e9, seconds, ratio_to=CUPY_HOST, also=(CUPY_DEVICE, D2D),
                         note="end to end, history off; payload starts on the host"))


def _cupy(ctx: BenchContext, cupy, b: wl.DeltaRows, expected: np.ndarray, repeats: int) -> None:
    gb = b.payload.nbytes / 1e9
    slots = cupy.asarray(b.slot)
    on_device = cupy.asarray(b.payload)
    sync = cupy.cuda.Device().synchronize

    def scatter(payload_of) -> float:
        state = cupy.zeros(expected.shape, dtype=cupy.uint8)
        rows = state.reshape(-1, wl.DELTA_BYTES)

        def once() -> None:
            rows[slots] = payload_of()
            sync()

        seconds = timed(once, repeats)
        verify_equal(cupy.asnumpy(state), expected, "cupy scatter: bytes differ from the expected state")
        return seconds

    ctx.progress(CUPY_HOST)
    ctx.section.add(rate(CUPY_HOST, UNIT, gb, scatter(lambda: cupy.asarray(b.payload)), ratio_to=D2D,
                         reference=True))
    ctx.progress(CUPY_DEVICE)
    ctx.section.add(rate(CUPY_DEVICE, UNIT, gb, scatter(lambda: on_device), ratio_to=D2D, reference=True))

    ctx.progress(D2D)
    dst = cupy.empty_like(on_device)

    def copy() -> None:
        dst.data.copy_from_device(on_device.data, on_device.nbytes)
        sync()

    seconds = timed(copy, repeats)
    verify(bool((dst == on_device).all()), f"{D2D}: the copy differs from its source")
    ctx.section.add(rate(D2D, UNIT, gb, seconds, reference=True))


def _mirror(ctx: BenchContext, cupy, repeats: int) -> None:
    """The mirror refresh after a batch, and (with `cupy`) the manual full sync it is compared with."""
    page_bytes = ctx.size(MIRROR_PAGE, 16 << 20)
    ctx.progress(MIRROR)
    rng = np.random.default_rng(wl.SEED + 1)
    model = np.zeros(page_bytes, dtype=np.uint8)
    bus = mmsb.Bus(history=False)
    try:
        p = bus.create_page(page_bytes, location="cuda:0")
        np.asarray(p)  # the first read fills the whole mirror; every later one is a refresh
        synced = []

        def write_then_read() -> float:
            slots = rng.choice(page_bytes // wl.DELTA_BYTES, size=MIRROR_ROWS, replace=False)
            payload = rng.integers(0, 256, size=(MIRROR_ROWS, wl.DELTA_BYTES), dtype=np.uint8)
            model.reshape(-1, wl.DELTA_BYTES)[slots] = payload
            bus.apply_batch(mmsb.DeltaBatch(np.full(MIRROR_ROWS, p.id, dtype=np.uint64),
                                            slots * wl.DELTA_BYTES, np.full(MIRROR_ROWS, wl.DELTA_BYTES), payload))
            before = bus._device_traffic()["mirror_bytes_synced"]
            t0 = time.perf_counter()
            view = np.asarray(p)
            seconds = time.perf_counter() - t0
            synced.append(bus._device_traffic()["mirror_bytes_synced"] - before)
            verify_equal(view.reshape(1, -1), model.reshape(1, -1), f"{MIRROR}: the mirror differs from the model")
            return seconds

        seconds = [write_then_read() for _ in range(repeats + 1)][1:]
        verify(all(n == MIRROR_ROWS * wl.DELTA_BYTES for n in synced),
               f"{MIRROR}: refreshes moved {synced} bytes, not the {MIRROR_ROWS * wl.DELTA_BYTES} written")
    finally:
        bus.close()
    ctx.section.details.update(mirror_page_bytes=page_bytes, mirror_bytes_per_refresh=synced[-1])
    ctx.section.add(latency(MIRROR, seconds, ratio_to=FULL_SYNC,
                            note=f"moves {synced[-1]:,} of {page_bytes:,} bytes per refresh"))

    if cupy is not None:
        ctx.progress(FULL_SYNC)
        whole = cupy.asarray(model)
        ctx.section.add(latency(FULL_SYNC, timed(lambda: cupy.asnumpy(whole), repeats), reference=True))


def _wave(ctx: BenchContext, cupy, repeats: int) -> None:
    """A commit to one parent and its wave: the reduce child recomputed where the pages live, and (with
    `cupy`) the same sum by hand."""
    elements = ctx.size(WAVE_ELEMENTS, 1 << 16)
    rng = np.random.default_rng(wl.SEED + 2)
    parents = [rng.standard_normal(elements).astype(np.float32) for _ in range(4)]
    results = {}
    for name, location in ((WAVE_DEVICE, "cuda:0"), (WAVE_HOST, "cpu")):
        ctx.progress(name)
        bus = mmsb.Bus(history=False)
        try:
            pages = [bus.create_page(data=a, location=location) for a in parents]
            child = bus.create_page(shape=(elements,), dtype="float32", location=location)
            bus.depend(child, pages, mmsb.ops.reduce("sum_product"))
            changes = np.random.default_rng(wl.SEED + 3)  # the same edits for both locations

            def commit() -> None:
                idx = np.sort(changes.choice(elements, WAVE_CHANGES, replace=False))
                values = changes.standard_normal(WAVE_CHANGES).astype(np.float32)
                bus.apply_batch(mmsb.DeltaBatch(np.full(WAVE_CHANGES, pages[0].id, dtype=np.uint64), idx * 4,
                                                np.full(WAVE_CHANGES, 4), values.view(np.uint8)))

            seconds = timed(commit, repeats)
            results[name] = np.asarray(child).copy()
            if location != "cpu":
                verify(bus._device_traffic()["device_recomputes"] > 0, f"{name}: no recompute ran on the device")
        finally:
            bus.close()
        ctx.section.add(latency(name, seconds, ratio_to=WAVE_CUPY if location != "cpu" else None,
                                also=(WAVE_HOST,) if location != "cpu" else ()))
    verify_equal(results[WAVE_DEVICE].view(np.uint8).reshape(1, -1), results[WAVE_HOST].view(np.uint8).reshape(1, -1),
                 "reduce wave: the device's result differs from the host's")
    if cupy is None:
        return

    ctx.progress(WAVE_CUPY)
    on_device = [cupy.asarray(a) for a in parents]
    out = cupy.empty_like(on_device[0])

    def by_hand() -> np.ndarray:
        cupy.add(on_device[0], on_device[1], out=out)
        cupy.add(out, on_device[2], out=out)
        cupy.add(out, on_device[3], out=out)
        return cupy.asnumpy(out)

    ctx.section.add(latency(WAVE_CUPY, timed(by_hand, repeats), reference=True))


def run(ctx: BenchContext) -> None:
    """Fills ctx.section with the gpu figures, or records why they were skipped."""
    if not mmsb.cuda.is_available():
        ctx.section.skip("gpu apply", "no CUDA device (mmsb.cuda.is_available() is False)")
        return
    pages, rows, repeats = ctx.size(1 << 18, 1 << 12), ctx.size(1 << 21, 1 << 16), 3
    ctx.section.details.update(pages=pages, page_size=wl.PAGE_SIZE, rows_per_batch=rows, delta_bytes=wl.DELTA_BYTES,
                               timed_runs=repeats, seed=wl.SEED, device_bytes=pages * wl.PAGE_SIZE)
    b = distinct_rows(rows, pages, np.random.default_rng(wl.SEED))
    expected = np.zeros((pages, wl.PAGE_SIZE), dtype=np.uint8)
    expected.reshape(-1, wl.DELTA_BYTES)[b.slot] = b.payload
    _mmsb(ctx, b, expected, pages, repeats)
    try:
        import cupy
    except ImportError as e:
        cupy = None
        ctx.section.skip("CuPy scatter, device copy and by-hand anchors", f"cupy cannot be imported ({e})")
    if cupy is not None:
        _cupy(ctx, cupy, b, expected, repeats)
    _mirror(ctx, cupy, repeats)
    _wave(ctx, cupy, repeats)
