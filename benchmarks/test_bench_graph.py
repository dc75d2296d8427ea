"""pytest-benchmark suites for the dependency graph from Python (DESIGN.md §1 Propagation).

  test_hop            one user write + the eager wave it starts, per op: `write_only` (a page
                      without dependents: the baseline), `callable` (child = Python
                      ``fn(out, x): np.copyto(out, x)``; target <= 10 us per hop beyond the write),
                      `copy_op` (the built-in C++ ``mmsb.ops.copy``), each as one hop and as a
                      chain of 10
  test_plain_chain    the same hop / chain as a plain Python topological recompute, as tight as
                      NumPy allows (np.copyto over (destination, source) pairs fixed beforehand
                      in topological order): the floor for Python callables
  test_validate       bus.graph.validate() at 10k pages / 40k control edges (random DAG)
  test_provenance     bus.provenance(last, max_depth=31) over a chain of 32 copy pages

`make test` runs them with --benchmark-disable (each body once, untimed, at quick sizes); `make
bench` with --benchmark-only. Every benchmark checks its result, so the smoke run proves the
benchmarked path is correct. Per-op figures go to extra_info (ns_per_op_*) through the bench_ops
fixture (bench_fixtures.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from bench_fixtures import bench_ops  # noqa: F401  (a fixture: pytest finds it by name)
from mmsb.bench import workloads as wl

PAGE_SHAPE = (8,)  # 64 bytes of float64
HOP_OPS = 1000     # writes per round (each runs one wave)
VALIDATE_PAGES, VALIDATE_EDGES = 10_000, 40_000
QUICK_VALIDATE_PAGES, QUICK_VALIDATE_EDGES = 500, 2_000
PROVENANCE_CHAIN = 32  # pages: a root written by the user + 31 copies


def _quick(config) -> bool:
    """True under --benchmark-disable (the smoke run of `make test`): build smaller workloads."""
    return bool(config.getoption("benchmark_disable")) and not config.getoption("benchmark_enable")




def _values(ops: int) -> list:
    # Consecutive writes always differ (also from the last of the previous round), so every
    # recompute changes its page: no cutoff, no memo skip.
    return [np.float64(i + 1).tobytes() for i in range(ops)]


def _copy(out, x):
    np.copyto(out, x)


@pytest.mark.parametrize("hops", [1, 10], ids=["hop", "chain10"])
@pytest.mark.parametrize("fn", ["write_only", "callable", "copy_op"])
def test_hop(bench_ops, fn, hops):
    bus = mmsb.Bus(threads=1)
    pages = [bus.create_page(shape=PAGE_SHAPE, dtype="float64") for _ in range(hops + 1)]
    if fn != "write_only":
        for parent, child in zip(pages, pages[1:]):
            bus.depend(child, on=[parent], fn=_copy if fn == "callable" else mmsb.ops.copy)
    root, last = pages[0], pages[-1]
    work = _values(HOP_OPS)
    write = root.write
    bus.reset_stats()

    def writes():
        for data in work:
            write(0, data)

    bench_ops(writes, HOP_OPS)
    assert root.epoch % HOP_OPS == 0 and root.epoch > 0  # every call committed exactly one delta
    s = bus.stats()
    derived = 0 if fn == "write_only" else hops
    assert s["waves"] == (root.epoch if derived else 0)
    assert s["recomputes"] == s["derived_deltas"] == root.epoch * derived
    assert s["cutoffs"] == 0 and s["memo_skips"] == 0
    expected = np.zeros(8)
    expected[0] = HOP_OPS
    np.testing.assert_array_equal(root.view(), expected)
    if derived:
        for p in pages[1:]:
            np.testing.assert_array_equal(p.view(), expected)
            assert p.epoch == root.epoch  # one derived delta per write (depend's first recompute was a cutoff)


@pytest.mark.parametrize("hops", [1, 10], ids=["hop", "chain10"])
def test_plain_chain(bench_ops, hops):
    """The floor for a Python-callable wave: the same pages as NumPy arrays, a write into the root
    and np.copyto over (destination, source) pairs fixed beforehand in topological order, with
    nothing else (no lookup, no diff, epochs or undo)."""
    arrays = [np.zeros(PAGE_SHAPE) for _ in range(hops + 1)]
    pairs = list(zip(arrays[1:], arrays[:-1]))
    work = [float(i + 1) for i in range(HOP_OPS)]
    root, copyto = arrays[0], np.copyto

    def waves():
        for value in work:
            root[0] = value
            for dst, src in pairs:
                copyto(dst, src)

    bench_ops(waves, HOP_OPS)
    expected = np.zeros(8)
    expected[0] = HOP_OPS
    for a in arrays:
        np.testing.assert_array_equal(a, expected)


@pytest.fixture(scope="module")
def control_graph(request):
    """A bus with N pages and 4N control edges of a random DAG (each edge from a lower to a higher
    random rank; ids unrelated to ranks), as benchmarks/cpp/bench_graph.cpp builds it."""
    n, m = (QUICK_VALIDATE_PAGES, QUICK_VALIDATE_EDGES) if _quick(request.config) else (VALIDATE_PAGES, VALIDATE_EDGES)
    rng = np.random.default_rng(wl.SEED)
    bus = mmsb.Bus(threads=1)
    ids = np.array([bus.create_page(64).id for _ in range(n)])
    id_of_rank = rng.permutation(ids)
    pairs: set = set()
    while len(pairs) < m:
        a, b = rng.integers(0, n, size=2 * (m - len(pairs)), dtype=np.int64).reshape(-1, 2).T
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        for x, y in zip(lo[lo != hi].tolist(), hi[lo != hi].tolist()):
            if len(pairs) < m:
                pairs.add((x, y))
    edges = [(int(id_of_rank[x]), int(id_of_rank[y])) for x, y in pairs]
    for parent, child in edges:
        bus.add_edge(parent, child, "control")
    return bus, edges


def test_validate(benchmark, control_graph):
    bus, edges = control_graph
    graph = bus.graph
    r = benchmark(graph.validate)
    assert r.ok and not r["cycles"] and not r["dangling"]
    endpoints = {p for e in edges for p in e}
    assert r["nodes"] == len(endpoints) and r["edges"] == len(edges)
    order = r["order"]
    assert len(order) == len(endpoints) and set(order) == endpoints
    pos = {page: i for i, page in enumerate(order)}
    assert all(pos[p] < pos[c] for p, c in edges)  # a topological order of every edge


def test_provenance(benchmark):
    bus = mmsb.Bus(threads=1)
    pages = [bus.create_page(shape=PAGE_SHAPE, dtype="float64") for _ in range(PROVENANCE_CHAIN)]
    for parent, child in zip(pages, pages[1:]):
        bus.depend(child, on=[parent], fn=mmsb.ops.copy)
    for data in _values(10):  # some history before the epoch asked about
        pages[0].write(0, data)
    last = pages[-1]
    depth = PROVENANCE_CHAIN - 1

    prov = benchmark(lambda: bus.provenance(last, max_depth=depth))
    # Back from the last page's current epoch, one hop per copy, to the user delta on the root.
    assert len(prov) == PROVENANCE_CHAIN and prov.depth == depth
    assert prov.root == (last.id, last.epoch)
    (source,) = prov.sources()
    assert source.page == pages[0].id and source.epoch == pages[0].epoch and source.source == "user"
    assert all(n.source == "propagation" for n in prov if n.page != pages[0].id)
