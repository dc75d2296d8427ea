"""Side-by-side comparison: mmsb against plain NumPy, in one process, same seed and data.

  (a) mmsb DeltaBatch apply of 64-byte deltas into 16,384 x 4 KiB pages, on 1 thread and on all
  (b) the same deltas as vectorised NumPy scatters into one (16384, 4096) uint8 array, in several
      forms; the fastest is the NumPy figure the ratios use
  (c) a Python loop of single-delta p.write against a loop of NumPy slice assignments
  (d) create_page per call against np.zeros per call

Every timed variant does the work the verification checks: after its runs, its bytes must equal an
order-independent oracle (workloads.expected_state) and its per-page epochs the number of deltas
applied, or the script exits non-zero. Epochs are compared as counts, since each run adds to them.

    python benchmarks/compare.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import mmsb
import workloads as wl

# Full: batches of 4M rows, several per run, so payload (256 MiB a batch) and the page state both
# live far outside the caches, as in the throughput target. Quick: the smoke run of `make test`.
PROFILES = {
    "full": dict(rows=4 << 20, batches=2, repeats=5, loop_rows=200_000, create_pages=16_384),
    "quick": dict(rows=100_000, batches=2, repeats=3, loop_rows=20_000, create_pages=4096),
}

LANES = np.arange(wl.DELTA_BYTES, dtype=np.int64)  # byte positions inside one delta


class VerificationError(RuntimeError):
    pass


def verify(ok: bool, what: str) -> None:
    if not ok:
        raise VerificationError(what)


def verify_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Rows are pages: a mismatch names the first differing page (index from 0) and byte."""
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
            warmup: int = 1) -> Result:
    """Runs fn warmup + repeats times; times only the repeats. The warm-up takes first-touch page
    faults and lazy initialisation out of every variant's figures alike. The collector is paused
    so a collection triggered by one variant's garbage is not charged to another."""
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
        del out  # whatever fn built (a bus, arrays) is freed outside the timed region
        if i >= warmup:
            result.seconds.append(elapsed)
    return result


# ---- (a) mmsb batch apply ----------------------------------------------------------------------

def bench_mmsb_batches(batches, expected, counts, threads: int, cfg) -> tuple[Result, mmsb.Bus, list]:
    bus = mmsb.Bus(threads=threads)
    pages = wl.create_pages(bus)
    columns = [b.mmsb_columns(pages[0].id) for b in batches]

    def apply_all():
        for c in columns:
            bus.apply_batch(mmsb.DeltaBatch(*c))

    res = measure("batch", f"mmsb apply_batch, {threads} thread{'s' if threads > 1 else ''}",
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
          f"after 1 warm-up; rates are deltas (or calls) per second\n")

    batches = wl.make_batches(cfg["rows"], cfg["batches"])
    expected = wl.expected_state(batches)
    counts = wl.epoch_counts(batches)

    try:
        mmsb_results = []
        for threads in sorted({1, all_threads}):
            res, bus, pages = bench_mmsb_batches(batches, expected, counts, threads, cfg)
            mmsb_results.append(res)
        numpy_results, state = bench_numpy_batches(batches, expected, counts, cfg)
        # `bus`/`pages` (last thread count) and `state` (last NumPy variant) both hold `expected`.
        loop_results = bench_loops(batches[0], pages, state, cfg)
        create_results = bench_create(cfg)
    except VerificationError as e:
        print(f"VERIFICATION FAILED: {e}", file=sys.stderr)
        return 1

    results = mmsb_results + numpy_results + loop_results + create_results
    print_table(results)

    numpy_best = min(numpy_results, key=lambda r: r.best)
    numpy_flat = numpy_results[0]
    ratios = [ratio(m, numpy_best) for m in mmsb_results]
    ratios += [ratio(m, numpy_flat) for m in mmsb_results if numpy_flat is not numpy_best]
    ratios += [ratio(loop_results[0], loop_results[2]), ratio(loop_results[1], loop_results[2]),
               ratio(create_results[0], create_results[1]), ratio(create_results[2], create_results[3])]
    print(f"\nfastest NumPy scatter: {numpy_best.variant}")
    print("ratios mmsb/NumPy (rate over rate; > 1 means mmsb is faster):")
    for r in ratios:
        print(f"  {r['a']:<44} / {r['b']:<44} best {r['best']:7.3f}   median {r['median']:7.3f}")
    print("verification: all variants equal the expected bytes and epoch counts")

    if args.json:
        report = {"profile": profile, "config": cfg, "machine": machine,
                  "workload": {"pages": wl.PAGES, "page_size": wl.PAGE_SIZE,
                               "delta_bytes": wl.DELTA_BYTES, "seed": wl.SEED},
                  "results": [r.as_dict() for r in results], "ratios": ratios,
                  "fastest_numpy": numpy_best.variant, "verified": True}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
