"""Validator 6, tick: the latency of bus.tick() (drain the ingest queue, apply, propagate) on a
frame-sized workload, checked for exactness (DESIGN §1 "Ingest queue and tick", §5 row 6).

Workload (full; quick in brackets): 10,000 [1,000] source pages of 4 KiB (512 float64), and
1,000 [100] derived pages, each mmsb.ops.reduce over 4 sources drawn by a fixed-seed RNG, the
semiring cycling through sum_product, min_plus, max_plus and max_min. Per tick, 100,000
[10,000] deltas of 8 bytes (one float64 at a random element of a random source page) are
submitted with bus.submit as DeltaBatch submissions of 1,000 rows (outside the timed region);
then bus.tick() is timed with perf_counter. 5 [3] warm-up ticks, then 200 [20] timed ticks: at
full size enough that the 99th percentile is not simply the slowest tick (with 50 it was the
maximum, give or take, so one scheduling hiccup of a shared machine decided it).

Each TickReport must say deltas_applied == the rows submitted, rejected == 0 and
recomputes == the number of derived pages. At the end every source page must equal a NumPy
mirror of the stream (last writer of each element, in submission order), every source's epoch
its number of deltas, and every derived page the reduce of its parents computed by NumPy; the
validator raises otherwise.

The primary figure runs the default bus (in memory, history on); the same workload on
mmsb.Bus(history=False) is noted. Metric: tick_p99_ms (own timings of the timed ticks); noted:
p50, max, the mean of each TickReport phase, and the bus's own bus.latency("tick") p99.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

import numpy as np

import mmsb

from ._framework import Context, validator

ELEMS = 512  # float64 per 4 KiB page
SEMIRINGS = ("sum_product", "min_plus", "max_plus", "max_min")
SUBMISSION = 1_000


def _matches_reduce(got: np.ndarray, sname: str, parents: np.ndarray) -> bool:
    """got == ⊕ over the 4 parents (weights 1): exact for min/max; for sum_product within
    rounding of the terms' magnitudes (the summation order is the kernel's)."""
    if sname == "sum_product":
        want = parents[0] + parents[1] + parents[2] + parents[3]
        return bool(np.all(np.abs(got - want) <= 1e-12 * np.abs(parents).sum(axis=0)))
    fn = {"min_plus": np.minimum, "max_plus": np.maximum, "max_min": np.maximum}[sname]
    return np.array_equal(got, fn.reduce(parents, axis=0))


def run_ticks(seed: int, history: bool, sources: int, derived: int, per_tick: int, warmup: int, ticks: int,
              progress: Optional[Callable[..., Iterable]] = None) -> dict:
    """The tick workload on one bus (in memory, `history` on or off), checked as the module
    docstring says (RuntimeError otherwise). Returns own_ns (each timed tick's wall time, ns),
    phase_ms (mean of each TickReport phase), latency_p99_ms and latency_count (the bus's own
    tick histogram). `progress(iterable, total=, desc=)` may wrap the tick loop. Also the
    workload of `mmsb bench`'s stress category."""
    progress = progress or (lambda it, **_: it)
    rng = np.random.default_rng(seed)
    bus = mmsb.Bus(history=history)
    try:
        src = [bus.create_page(shape=(ELEMS,), dtype="float64") for _ in range(sources)]
        first = src[0].id
        if src[-1].id - first != sources - 1:
            raise RuntimeError(f"page ids are not consecutive: {first}..{src[-1].id}")
        parents = [rng.choice(sources, size=4, replace=False) for _ in range(derived)]
        out = []
        for i, ps in enumerate(parents):
            page = bus.create_page(shape=(ELEMS,), dtype="float64")
            bus.depend(page, on=[src[j] for j in ps], fn=mmsb.ops.reduce(SEMIRINGS[i % 4]))
            out.append(page)
        mirror = np.zeros((sources, ELEMS))
        counts = np.zeros(sources, dtype=np.int64)
        lengths = np.full(SUBMISSION, 8, dtype=np.uint64)
        own, phases = [], {}
        for t in progress(range(warmup + ticks), total=warmup + ticks, desc=f"tick (history={history})"):
            if t == warmup:
                bus.reset_stats()
            page = rng.integers(0, sources, size=per_tick)
            elem = rng.integers(0, ELEMS, size=per_tick)
            value = rng.normal(size=per_tick)
            ids = (page + first).astype(np.uint64)
            offs = (elem * 8).astype(np.uint64)
            for a in range(0, per_tick, SUBMISSION):
                b = min(a + SUBMISSION, per_tick)
                bus.submit(mmsb.DeltaBatch(ids[a:b], offs[a:b], lengths[:b - a], value[a:b]))
            t0 = time.perf_counter_ns()
            r = bus.tick()
            elapsed = time.perf_counter_ns() - t0
            if r.deltas_applied != per_tick or r.rejected != 0 or r.recomputes != derived:
                raise RuntimeError(f"tick {r.tick}: deltas_applied={r.deltas_applied} (want {per_tick}), rejected="
                                   f"{r.rejected} {r.rejections[:2]}, recomputes={r.recomputes} (want {derived})")
            flat = page * ELEMS + elem  # the mirror: last writer of each element in this tick
            uniq, first_rev = np.unique(flat[::-1], return_index=True)
            mirror.reshape(-1)[uniq] = value[per_tick - 1 - first_rev]
            counts += np.bincount(page, minlength=sources)
            if t >= warmup:
                own.append(elapsed)
                for k, v in r.phase_ns.items():
                    phases[k] = phases.get(k, 0) + v
        got = np.stack([p.view() for p in src])
        if not np.array_equal(got, mirror):
            raise RuntimeError(f"history={history}: {int(np.sum(np.any(got != mirror, axis=1)))} source pages "
                               "differ from the NumPy mirror of the submitted stream")
        epochs = np.fromiter((p.epoch for p in src), dtype=np.int64, count=sources)
        if not np.array_equal(epochs, counts):
            raise RuntimeError(f"history={history}: source epochs differ from their delta counts")
        bad = [out[i].id for i, ps in enumerate(parents)
               if not _matches_reduce(out[i].view(), SEMIRINGS[i % 4], mirror[ps])]
        if bad:
            raise RuntimeError(f"history={history}: derived pages {bad[:5]} differ from the reduce of their parents")
        lat = bus.latency("tick")
        return {"own_ns": np.asarray(own, dtype=np.float64), "phase_ms": {k: v / ticks / 1e6 for k, v in phases.items()},
                "latency_p99_ms": lat["p99_ns"] / 1e6, "latency_count": lat["count"]}
    finally:
        bus.close()


@validator(6, "tick", ("tick_p99_ms",))
def run(ctx: Context) -> dict:
    args = dict(sources=ctx.size(10_000, 1_000), derived=ctx.size(1_000, 100), per_tick=ctx.size(100_000, 10_000),
                warmup=ctx.size(5, 3), ticks=ctx.size(200, 20))
    for k, v in args.items():
        ctx.note(k, v)
    primary = run_ticks(ctx.seed, True, progress=ctx.progress, **args)
    ms = primary["own_ns"] / 1e6
    ctx.note("tick_p50_ms", float(np.percentile(ms, 50)))
    ctx.note("tick_max_ms", float(ms.max()))
    ctx.note("phase_mean_ms", primary["phase_ms"])
    ctx.note("bus_latency_tick_p99_ms", primary["latency_p99_ms"])
    ctx.note("bus_latency_tick_count", primary["latency_count"])
    nohist = run_ticks(ctx.seed, False, progress=ctx.progress, **args)
    nms = nohist["own_ns"] / 1e6
    ctx.note("history_off_tick_p99_ms", float(np.percentile(nms, 99)))
    ctx.note("history_off_tick_p50_ms", float(np.percentile(nms, 50)))
    ctx.note("history_off_phase_mean_ms", nohist["phase_ms"])
    return {"tick_p99_ms": float(np.percentile(ms, 99))}
