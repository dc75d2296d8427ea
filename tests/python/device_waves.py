"""Random dependency graphs of built-in recomputes, built the same way on two buses, to compare a
wave over device pages with the same wave over CPU pages: every page's bytes and epoch, the lsn and
every derived delta must be identical. Used by test_device_pages.py (emulated devices) and
test_gpu.py (a real GPU)."""

from __future__ import annotations

import numpy as np

import mmsb

SUPPORTED = {
    "int32": mmsb.Semiring.NAMES, "int64": mmsb.Semiring.NAMES,
    "float32": mmsb.Semiring.NAMES, "float64": mmsb.Semiring.NAMES,
    "bool": ("boolean", "max_min"),
}


def random_values(rng, dtype, n):
    """Values of `dtype`: full-range integers and bools, finite floats (a NaN result is NaN on a
    GPU too, but its payload bits are not specified across processors)."""
    if dtype == "bool":
        return rng.integers(0, 2, n).astype(bool)
    if dtype.startswith("int"):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    return (rng.standard_normal(n) * 100).astype(dtype)


def random_dag(rng, dtype, n, derived=7):
    """A plan: three source pages then `derived` pages, each a copy of one earlier page or a
    reduce over 1-3 earlier pages with a random supported semiring, weighted half of the time."""
    plan = []
    for i in range(derived):
        parents = sorted(set(rng.integers(0, 3 + i, rng.integers(1, 4)).tolist()))
        if len(parents) == 1 and rng.random() < 0.25:
            plan.append((parents, mmsb.ops.copy, None))
            continue
        semiring = str(rng.choice(SUPPORTED[dtype]))
        weights = None
        if rng.random() < 0.5:
            if dtype == "bool":
                weights = rng.integers(0, 2, len(parents)).astype(float).tolist()
            elif dtype.startswith("int"):
                weights = rng.integers(-5, 6, len(parents)).astype(float).tolist()
            else:
                weights = (rng.random(len(parents)) * 8 - 4).tolist()
        plan.append((parents, mmsb.ops.reduce(semiring), weights))
    return plan


def build(bus, plan, dtype, n, locations):
    """The plan on `bus`, page i at locations[i % len(locations)]; returns the pages in order."""
    pages = [bus.create_page(shape=(n,), dtype=dtype, location=locations[i % len(locations)])
             for i in range(3 + len(plan))]
    for i, (parents, fn, weights) in enumerate(plan):
        bus.depend(pages[3 + i], [pages[p] for p in parents], fn, weights=weights)
    return pages


def write_sources(rng, dtype, n, buses_pages, steps):
    """The same random writes into the three sources of every (bus, pages) pair."""
    for _ in range(steps):
        src = int(rng.integers(0, 3))
        lo = int(rng.integers(0, n))
        hi = n if rng.random() < 0.25 else min(n, lo + int(rng.integers(1, 6)))
        values = random_values(rng, dtype, hi - lo)
        for _bus, pages in buses_pages:
            pages[src].write(lo * values.itemsize, values)


def assert_same(want_bus, want_pages, got_bus, got_pages):
    assert got_bus.lsn == want_bus.lsn
    for i, (a, b) in enumerate(zip(want_pages, got_pages)):
        assert b.epoch == a.epoch, f"page #{i}"
        assert np.asarray(b).tobytes() == np.asarray(a).tobytes(), f"page #{i} bytes"
        ha = [(e.lsn, e.epoch, e.source, e.runs) for e in want_bus.history(a)]
        hb = [(e.lsn, e.epoch, e.source, e.runs) for e in got_bus.history(b)]
        assert hb == ha, f"page #{i} history"


def compare_waves(rng, dtype, n, locations, steps=25):
    """The same random plan and writes on a CPU bus and on a bus with pages at `locations`;
    asserts that both end identical (assert_same) and returns the second bus's device traffic
    from before that comparison read its pages."""
    plan = random_dag(rng, dtype, n)
    cpu, dev = mmsb.Bus(), mmsb.Bus()
    a = build(cpu, plan, dtype, n, ["cpu"])
    b = build(dev, plan, dtype, n, locations)
    write_sources(rng, dtype, n, [(cpu, a), (dev, b)], steps)
    traffic = dev._device_traffic()
    assert_same(cpu, a, dev, b)
    return traffic

