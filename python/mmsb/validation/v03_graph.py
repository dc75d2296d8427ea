"""Validator 3, graph: whole-graph validation speed, the cost of single-page graph operations,
and that every edge closing a cycle is refused without changing anything (DESIGN §1 "Dependency
graph", §5 row 3).

Workload (full; quick in brackets): 10,000 [1,000] float64 pages wired into a random DAG of
about 40,000 [4,000] edges. A fixed-seed RNG draws a random topological order; each page takes
data parents (mmsb.ops.reduce over up to 5 earlier pages, half from a window of recent pages so
that long paths exist, half from anywhere) and about one control edge from an earlier page. The
graph is built in deferred propagation mode, then propagated and switched back to eager.

Measured:
- validate_ms_per_10k_pages: median of several bus.graph.validate() calls, scaled to 10k pages;
  the report must agree with the graph that was built (acyclic, node and edge counts), else the
  validator raises.
- page_op_ms_p99: p99 over single-page operations on the default (eager) bus, each timed alone:
  add_edge (control) of a random forward pair, remove_edge of that edge, depend of a fresh page
  on 4 existing ones, and the refused cycle-closing add_edge calls below. In eager mode an op
  that redefines a derived page includes that page's recompute; the same ops in deferred mode
  are noted (deferred_*_ms_p99).
- cycles_accepted: for 2,000 [300] pairs (u, v) with u reachable from v (a random walk down
  the built edges from v; some are self-loops u == v), add_edge(u, v) must raise
  mmsb.GraphCycleError and leave lsn, the topological order and the edges at u and v unchanged.
  Each attempt that does not raise, or that changes any of these, counts. At the end the whole
  edge set is compared with the one before the attempts.
"""

from __future__ import annotations

import time

import numpy as np

import mmsb

from ._framework import Context, validator


def _edge_set(bus: mmsb.Bus, ids: list) -> set:
    return {tuple(e) for pid in ids for e in bus.graph.out_edges(pid)}


def _local(bus: mmsb.Bus, u: int, v: int) -> tuple:
    """What a refused add_edge(u, v) must leave alone: lsn, and the edges at both ends."""
    return (bus.lsn, tuple(bus.graph.out_edges(u)), tuple(bus.graph.in_edges(v)))


def _page_ops(bus: mmsb.Bus, ctx: Context, rng: np.random.Generator, order: list, edges: set,
              pairs: int, depends: int) -> dict:
    """Times add_edge + remove_edge of control edges between random forward pairs (so the graph
    ends as it began) and depend of a fresh page on 4 random pages (deleted afterwards)."""
    op_ns: dict = {"add_edge": [], "remove_edge": [], "depend": []}
    n = len(order)
    for _ in ctx.progress(range(pairs), total=pairs, desc=f"graph: page ops ({bus.propagation})"):
        a, b = sorted(int(x) for x in rng.choice(n, size=2, replace=False))
        p, c = order[a], order[b]
        if (p, c) in edges:
            continue
        t0 = time.perf_counter_ns()
        bus.add_edge(p, c, kind="control")
        t1 = time.perf_counter_ns()
        bus.remove_edge(p, c)
        t2 = time.perf_counter_ns()
        op_ns["add_edge"].append(t1 - t0)
        op_ns["remove_edge"].append(t2 - t1)
    for _ in range(depends):
        fresh = bus.create_page(shape=(8,), dtype="float64")
        on = [order[int(j)] for j in rng.choice(n, size=4, replace=False)]
        t0 = time.perf_counter_ns()
        bus.depend(fresh, on=on, fn=mmsb.ops.reduce("max_plus"))
        op_ns["depend"].append(time.perf_counter_ns() - t0)
        bus.delete_page(fresh)
    return op_ns


@validator(3, "graph", ("validate_ms_per_10k_pages", "page_op_ms_p99", "cycles_accepted"))
def run(ctx: Context) -> dict:
    n = ctx.size(10_000, 1_000)
    rng = np.random.default_rng(ctx.seed)
    bus = mmsb.Bus()
    bus.propagation = "deferred"
    ids = [bus.create_page(shape=(8,), dtype="float64").id for _ in range(n)]
    order = [ids[i] for i in rng.permutation(n)]  # the random topological order
    pos = {pid: i for i, pid in enumerate(order)}
    children: dict = {pid: [] for pid in ids}
    edges: set = set()
    for i in ctx.progress(range(1, n), total=n - 1, desc="graph: build"):
        k = min(i, int(rng.integers(1, 6)))
        local = rng.integers(max(0, i - 64), i, size=k)
        anywhere = rng.integers(0, i, size=k)
        cand = np.where(rng.random(k) < 0.5, local, anywhere)
        parents = list(dict.fromkeys(order[j] for j in cand))
        child = order[i]
        bus.depend(child, on=parents, fn=mmsb.ops.reduce("sum_product"))
        for p in parents:
            edges.add((p, child))
        if i > 1 and rng.random() < 0.95:
            p = order[int(rng.integers(0, i))]
            if (p, child) not in edges:
                bus.add_edge(p, child, kind="control")
                edges.add((p, child))
    for p, c in edges:
        children[p].append(c)
    bus.propagate()
    bus.propagation = "eager"
    ctx.note("pages", n)
    ctx.note("edges", len(edges))

    # -- whole-graph validation ---------------------------------------------------------------
    runs = ctx.size(15, 7)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        report = bus.graph.validate()
        times.append(time.perf_counter_ns() - t0)
        if not report["ok"] or report["edges"] != len(edges) or report["nodes"] != n or report["cycles"]:
            raise RuntimeError(f"graph.validate() disagrees with the graph built: {dict(report)!r:.300} "
                               f"(built {n} pages, {len(edges)} edges, acyclic)")
    topo = bus.graph.topological_order()
    if sorted(topo) != sorted(ids):
        raise RuntimeError("topological_order() does not list every page of the graph")
    rank = {pid: i for i, pid in enumerate(topo)}
    bad = sum(rank[p] >= rank[c] for p, c in edges)
    if bad:
        raise RuntimeError(f"topological_order() puts {bad} children before their parents")
    validate_ms = float(np.median(times)) / 1e6
    ctx.note("validate_ms_median", validate_ms)
    ctx.note("validate_ms_min", min(times) / 1e6)

    # -- single-page operations: eager (the default, primary) and deferred (noted) -------------
    op_ns = _page_ops(bus, ctx, rng, order, edges, ctx.size(1_000, 200), ctx.size(300, 60))
    bus.propagation = "deferred"
    deferred = _page_ops(bus, ctx, rng, order, edges, ctx.size(300, 60), ctx.size(100, 20))
    bus.propagation = "eager"
    for k, v in deferred.items():
        ctx.note(f"deferred_{k}_ms_p99", float(np.percentile(np.asarray(v) / 1e6, 99)))
    op_ns["add_edge_refused"] = []

    # -- cycle-closing insertions -------------------------------------------------------------
    before_all = _edge_set(bus, ids)
    if {(p, c) for p, c, _ in before_all} != edges:
        raise RuntimeError("the bus's edges differ from the graph built before the cycle attempts")
    accepted = 0
    path_lengths = []
    attempts = ctx.size(2_000, 300)
    for i in ctx.progress(range(attempts), total=attempts, desc="graph: cycles"):
        v = order[int(rng.integers(0, n))]
        u, steps = v, 0
        if i % 20:  # 1 in 20 is a self-loop
            target = int(rng.integers(1, 200))
            while steps < target and children[u]:
                kids = children[u]  # the nearer of two random children: longer paths
                u = min(kids[int(rng.integers(0, len(kids)))], kids[int(rng.integers(0, len(kids)))], key=pos.get)
                steps += 1
        path_lengths.append(steps)
        before = _local(bus, u, v)
        topo_before = bus.graph.topological_order()
        t0 = time.perf_counter_ns()
        try:
            bus.add_edge(u, v, kind="control")
            refused = False
        except mmsb.GraphCycleError:
            refused = True
        op_ns["add_edge_refused"].append(time.perf_counter_ns() - t0)
        if not refused or _local(bus, u, v) != before or bus.graph.topological_order() != topo_before:
            accepted += 1
    if _edge_set(bus, ids) != before_all:
        accepted = max(accepted, 1)
        ctx.note("edge_set_changed", True)
    all_ops = np.concatenate([np.asarray(v, dtype=np.float64) for v in op_ns.values()]) / 1e6
    for k, v in op_ns.items():
        if v:
            ctx.note(f"{k}_ms_p99", float(np.percentile(np.asarray(v) / 1e6, 99)))
    ctx.note("cycle_attempts", attempts)
    ctx.note("cycle_path_length_mean", float(np.mean(path_lengths)))
    ctx.note("cycle_path_length_max", int(max(path_lengths)))
    bus.close()
    return {
        "validate_ms_per_10k_pages": validate_ms * 10_000 / n,
        "page_op_ms_p99": float(np.percentile(all_ops, 99)),
        "cycles_accepted": int(accepted),
    }
