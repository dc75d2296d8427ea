"""The dependency graph (DESIGN §1 "Dependency graph"): cycles are always refused and leave the
graph unchanged, the topological order is the canonical one (parents first, ties by smaller id),
validate() reports the whole graph, remove_edge / delete_page follow the rules, and every refused
call leaves the bus exactly as it was.

The oracle is a plain Python edge dict with a reachability check and a naive Kahn sort."""

from __future__ import annotations

import heapq
import re

import numpy as np
import pytest

import mmsb
from reference_model import capture_full_state

DT = "float64"
N = 4  # elements per page


# ---- the oracle ------------------------------------------------------------------------------
def reaches(edges, src, dst):
    """True if dst is reachable from src following edges {(parent, child): kind} (src == dst too)."""
    seen, todo = {src}, [src]
    while todo:
        u = todo.pop()
        if u == dst:
            return True
        for (p, c) in edges:
            if p == u and c not in seen:
                seen.add(c)
                todo.append(c)
    return False


def has_cycle(edges):
    return any(reaches(edges, c, p) for (p, c) in edges)


def smallest_topo_order(edges):
    """Lexicographically smallest topological order of every page with an edge (naive Kahn with a
    min-heap: the ready page with the smallest id goes first)."""
    nodes = {p for p, _ in edges} | {c for _, c in edges}
    indeg = {n: 0 for n in nodes}
    for _, c in edges:
        indeg[c] += 1
    ready = [n for n in nodes if indeg[n] == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        n = heapq.heappop(ready)
        out.append(n)
        for (p, c) in sorted(edges):
            if p == n:
                indeg[c] -= 1
                if indeg[c] == 0:
                    heapq.heappush(ready, c)
    assert len(out) == len(nodes), "the oracle graph has a cycle"
    return out


def bus_edges(bus):
    """{(parent, child): kind} as the bus reports it, checked for consistency between the four
    graph views (out_edges, in_edges, children, parents)."""
    out = {}
    for p in bus.pages():
        for e in bus.graph.out_edges(p):
            assert e.parent == p.id
            out[(e.parent, e.child)] = e.kind
        assert sorted(c.id for c in bus.graph.children(p)) == sorted(e.child for e in bus.graph.out_edges(p))
    inn = {}
    for p in bus.pages():
        for e in bus.graph.in_edges(p):
            assert e.child == p.id
            inn[(e.parent, e.child)] = e.kind
        assert sorted(q.id for q in bus.graph.parents(p)) == sorted(e.parent for e in bus.graph.in_edges(p))
    assert out == inn
    return out


def cycle_in_message(msg):
    """The cycle 'a -> b -> ... -> a' named by a GraphCycleError message, as a list of page ids;
    a long cycle's middle is elided as '... (K more)', which becomes K Nones."""
    m = re.search(r"cycle ((?:(?:\d+|\.\.\. \(\d+ more\)) -> )+\d+)", msg)
    assert m, f"GraphCycleError does not name the cycle: {msg}"
    out = []
    for tok in m.group(1).split(" -> "):
        if tok.startswith("..."):
            out += [None] * int(re.search(r"\d+", tok).group())
        else:
            out.append(int(tok))
    return out


def assert_named_cycle_is_real(msg, edges_after):
    ids = cycle_in_message(msg)
    assert ids[0] == ids[-1], msg
    for a, b in zip(ids, ids[1:]):
        if a is not None and b is not None:
            assert (a, b) in edges_after, f"{a} -> {b} of the named cycle is not an edge: {msg}"


def derivations(bus):
    return {p.id: (None if (d := bus.graph.derivation(p)) is None else (d["fn"], list(d["parents"]), d["weights"]))
            for p in bus.pages()}


def graph_state(bus, with_derivations=True):
    st = {
        "edges": bus_edges(bus),
        "order": bus.graph.topological_order(),
        "bus": capture_full_state(bus),
    }
    if with_derivations:
        st["derivations"] = derivations(bus)
    return st




def make_pages(bus, n, rng):
    return [bus.create_page(data=rng.normal(size=N)) for _ in range(n)]


# ---- random DAG property test -----------------------------------------------------------------
@pytest.mark.parametrize("with_derivations", [
    False, True],
    ids=["edges", "derivations"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_edges_never_close_a_cycle(seed, with_derivations):
    """~300 random attempts mixing control edges, depend (copy and multi-parent reduce) and
    removals: the bus accepts exactly the changes that keep the graph acyclic, a refused change
    leaves edges, derivations, bytes, epochs and lsn as they were, and the topological order is
    always the lexicographically smallest one."""
    rng = np.random.default_rng(seed)
    bus = mmsb.Bus()
    pages = make_pages(bus, 14, rng)
    ids = [p.id for p in pages]
    model = {}  # (parent, child) -> kind
    refused_cycles = accepted = 0
    for step in range(300):
        before = graph_state(bus, with_derivations)
        lsn = bus.lsn
        roll = rng.random()
        if roll < 0.1 and model:
            (p, c) = sorted(model)[int(rng.integers(len(model)))]
            derived = bus.stats()["derived_deltas"]
            bus.remove_edge(p, c)
            del model[(p, c)]
            # the edge record, plus the child recomputed from its remaining parents (its wave)
            assert bus.lsn == lsn + 1 + bus.stats()["derived_deltas"] - derived
        elif roll < 0.55:
            u, v = (int(x) for x in rng.choice(ids, 2, replace=rng.random() < 0.05))
            after = dict(model)
            after[(u, v)] = "control"
            if (u, v) in model:
                with pytest.raises(mmsb.GraphError):
                    bus.add_edge(u, v, kind="control")
                assert graph_state(bus, with_derivations) == before and bus.lsn == lsn
            elif has_cycle(after):
                with pytest.raises(mmsb.GraphCycleError) as ei:
                    bus.add_edge(u, v, kind="control")
                assert_named_cycle_is_real(str(ei.value), after)
                assert graph_state(bus, with_derivations) == before and bus.lsn == lsn, step
                refused_cycles += 1
            else:
                bus.add_edge(u, v, kind="control")
                model = after
                accepted += 1
                assert bus.lsn == lsn + 1
        else:
            child = int(rng.choice(ids))
            k = int(rng.integers(1, 4))
            parents = [int(x) for x in rng.choice(ids, k, replace=False)]
            fn = mmsb.ops.copy if k == 1 else mmsb.ops.reduce("max_plus")
            after = {e: kd for e, kd in model.items() if not (e[1] == child and kd == "data")}
            for p in parents:
                after[(p, child)] = "data"
            control_clash = any(model.get((p, child)) == "control" for p in parents)
            cyclic = has_cycle(after)
            if control_clash or cyclic:
                errs = (mmsb.GraphError, mmsb.GraphCycleError) if control_clash and cyclic else (
                    mmsb.GraphError if control_clash else mmsb.GraphCycleError)
                with pytest.raises(errs) as ei:
                    bus.depend(child, on=parents, fn=fn)
                if isinstance(ei.value, mmsb.GraphCycleError):
                    assert_named_cycle_is_real(str(ei.value), after)
                    refused_cycles += 1
                assert graph_state(bus, with_derivations) == before and bus.lsn == lsn, step
            else:
                bus.depend(child, on=parents, fn=fn)
                model = after
                accepted += 1
                assert bus.lsn > lsn
                d = bus.graph.derivation(child)
                assert list(d["parents"]) == parents
        assert bus_edges(bus) == model, step
        order = bus.graph.topological_order()
        assert order == smallest_topo_order(model), step
        rep = bus.graph.validate()
        assert rep.ok and bool(rep)
        assert rep.cycles == [] and rep.dangling == []
        assert rep.edges == len(model)
        assert rep.nodes == len(order)
        assert list(rep.order) == order
    # the run exercised both outcomes a fair number of times
    assert refused_cycles > 20 and accepted > 40, (refused_cycles, accepted)
    bus.close()


def test_long_chain_refuses_the_closing_edge_and_names_the_whole_cycle(bus):
    pages = [bus.create_page(shape=(N,), dtype=DT) for _ in range(30)]
    for a, b in zip(pages, pages[1:]):
        bus.depend(b, on=[a], fn=mmsb.ops.copy)
    before, lsn = graph_state(bus), bus.lsn
    for kind in ("control", "device_sync"):
        with pytest.raises(mmsb.GraphCycleError) as ei:
            bus.add_edge(pages[-1], pages[0], kind=kind)
        assert isinstance(ei.value, ValueError)  # GraphCycleError is a ValueError too
        ids = cycle_in_message(str(ei.value))
        assert len(ids) == 31 and ids[0] == ids[-1] == pages[0].id and ids[-2] == pages[-1].id
        model = {(x.id, y.id): 1 for x, y in zip(pages, pages[1:])}
        assert_named_cycle_is_real(str(ei.value), {**model, (pages[-1].id, pages[0].id): 1})
    with pytest.raises(mmsb.GraphCycleError):
        bus.depend(pages[0], on=[pages[29]], fn=mmsb.ops.copy)
    with pytest.raises(mmsb.GraphCycleError):
        bus.depend(pages[10], on=[pages[3], pages[20]], fn=mmsb.ops.reduce("min_plus"))
    assert graph_state(bus) == before and bus.lsn == lsn
    assert bus.graph.topological_order() == [p.id for p in pages]


def test_topological_order_breaks_ties_by_id(bus):
    """Ids created in an order unrelated to the graph: parents first, ready ties by smaller id."""
    p = {i: bus.create_page(shape=(N,), dtype=DT) for i in range(1, 9)}
    bus.add_edge(p[8], p[1])
    bus.add_edge(p[7], p[1])
    bus.depend(p[2], on=[p[8]], fn=mmsb.ops.copy)
    bus.depend(p[3], on=[p[1], p[6]], fn=mmsb.ops.reduce("sum_product"))
    bus.add_edge(p[5], p[4])
    model = {(8, 1): 1, (7, 1): 1, (8, 2): 1, (1, 3): 1, (6, 3): 1, (5, 4): 1}
    want = smallest_topo_order(model)
    assert want == [5, 4, 6, 7, 8, 1, 2, 3]
    assert bus.graph.topological_order() == want
    assert list(bus.graph.validate().order) == want


@pytest.mark.parametrize("how", ["cycle", "existing", "transaction"])
def test_rolled_back_add_edge_keeps_the_child_derived(bus, rng, how):
    a, b, c = make_pages(bus, 3, rng)
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    before = graph_state(bus)
    if how == "cycle":
        with pytest.raises(mmsb.GraphCycleError):
            bus.add_edge(b, b)
    elif how == "existing":
        with pytest.raises(mmsb.GraphError):
            bus.add_edge(a, b)  # the data edge is already there
    else:
        with pytest.raises(KeyError):
            with bus.transaction():
                bus.add_edge(c, b)
                raise KeyError("abort")
    assert graph_state(bus) == before  # edges are restored; the derivation must be too
    a.write(0, np.float64(42.0).tobytes())
    assert b.view()[0] == 42.0  # and b still follows a


def test_validate_reports_every_edge_kind(bus):
    a, b, c, d, e = (bus.create_page(shape=(N,), dtype=DT) for _ in range(5))
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    bus.add_edge(b, c, kind="control")
    bus.add_edge(a, d, kind="device_sync")
    rep = bus.graph.validate()
    assert rep.ok and rep.nodes == 4 and rep.edges == 3
    assert rep.cycles == [] and rep.dangling == []
    assert list(rep.order) == [1, 2, 3, 4]
    kinds = {(x.parent, x.child): x.kind for p in bus.pages() for x in bus.graph.out_edges(p)}
    assert kinds == {(1, 2): "data", (2, 3): "control", (1, 4): "device_sync"}
    assert bus.graph.children(e) == [] and bus.graph.parents(e) == []
    assert e.id not in bus.graph.topological_order()


def test_add_edge_rules(bus):
    a, b, c = (bus.create_page(shape=(N,), dtype=DT) for _ in range(3))
    bus.add_edge(a, b)  # control is the default kind
    assert bus.graph.in_edges(b) == [mmsb.Edge(a.id, b.id, "control")]
    before, lsn = graph_state(bus), bus.lsn
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.add_edge(a, c, kind="data")  # data edges come from depend
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.add_edge(a, c, kind="sideways")
    with pytest.raises(mmsb.GraphError):
        bus.add_edge(a, b, kind="control")  # already there
    with pytest.raises(mmsb.GraphError):
        bus.add_edge(a, b, kind="device_sync")  # already there with another kind
    with pytest.raises(mmsb.GraphError):
        bus.depend(b, on=[a], fn=mmsb.ops.copy)  # a is a control parent of b
    bus.add_edge(a, c, kind="device_sync")
    before, lsn = graph_state(bus), bus.lsn
    with pytest.raises(mmsb.GraphError, match="device_sync child"):
        bus.depend(c, on=[b], fn=mmsb.ops.copy)  # c is kept a copy of a
    with pytest.raises(mmsb.PageNotFoundError):
        bus.add_edge(a, 999)
    with pytest.raises(mmsb.PageNotFoundError):
        bus.add_edge(999, a)
    assert graph_state(bus) == before and bus.lsn == lsn


def test_remove_edge(bus, rng):
    a, b, c, d = make_pages(bus, 4, rng)
    bus.depend(d, on=[a, b, c], fn=mmsb.ops.reduce("sum_product"), weights=[1.0, 2.0, 3.0])
    bus.add_edge(a, b)
    lsn = bus.lsn
    bus.remove_edge(b, d)
    assert bus.lsn == lsn + 2  # the edge record, then d recomputed from a and c
    np.testing.assert_allclose(d.view(), 1.0 * a.view() + 3.0 * c.view())
    assert [e.parent for e in bus.graph.in_edges(d)] == [a.id, c.id]
    der = bus.graph.derivation(d)
    assert list(der["parents"]) == [a.id, c.id]
    assert list(der["weights"]) == [1.0, 3.0]  # the weight goes with its parent
    # no such edge, or the wrong direction: GraphError, nothing changes
    before, lsn = graph_state(bus), bus.lsn
    for p, q in [(b, d), (d, a), (b, a), (c, c)]:
        with pytest.raises(mmsb.GraphError) as ei:
            bus.remove_edge(p, q)
        assert str(p.id) in str(ei.value) and str(q.id) in str(ei.value)
    with pytest.raises(mmsb.PageNotFoundError):
        bus.remove_edge(a, 999)
    assert graph_state(bus) == before and bus.lsn == lsn
    # removing the last data parent ends the derivation; a control edge goes the same way
    bus.remove_edge(a, d)
    bus.remove_edge(c, d)
    assert bus.graph.derivation(d) is None
    bus.remove_edge(a, b)
    assert bus_edges(bus) == {}
    assert bus.graph.topological_order() == []
    assert bus.graph.validate().nodes == 0
    # the edge that was removed can come back, in the other direction too
    bus.add_edge(d, a)
    assert bus_edges(bus) == {(d.id, a.id): "control"}


def test_control_edge_marks_its_child_stale(bus, rng):
    a, b = make_pages(bus, 2, rng)
    bus.add_edge(a, b)
    assert not b.stale
    b_before = b.snapshot()
    a.write(0, b"\x01")
    assert b.stale and [p.id for p in bus.stale_pages()] == [b.id]
    assert b.snapshot()[1] == b_before[1]  # invalidated only, never recomputed
    assert np.array_equal(b.snapshot()[0], b_before[0])


@pytest.mark.parametrize("mode", ["eager", "deferred"])
def test_a_derived_control_child_is_recomputed_when_a_wave_changes_its_control_parent(bus, mode):
    """api.md: a derived page that is also a control child is recomputed in the wave that changes
    its control parent (deferred: at the next propagate()), also when a recompute of that wave
    made the change, not only a direct write."""
    src = bus.create_page(data=np.zeros(2))
    mid = bus.create_page(shape=(2,), dtype=DT)
    other = bus.create_page(data=np.ones(2))
    d = bus.create_page(shape=(2,), dtype=DT)
    bus.depend(mid, on=[src], fn=mmsb.ops.copy)
    bus.depend(d, on=[other], fn=mmsb.ops.copy)
    bus.add_edge(mid, d)  # control: mid -> d
    d.write(0, np.float64(99).tobytes())  # a direct write the recompute overwrites
    bus.propagation = mode
    src.write(0, np.float64(5).tobytes())  # changes mid in its wave
    if mode == "deferred":
        assert d.stale
        assert bus.propagate() == 2  # mid, then d in the same wave
    assert np.array_equal(mid.view(), [5.0, 0.0])
    assert np.array_equal(d.view(), [1.0, 1.0]) and not d.stale and bus.stale_pages() == []


def test_an_eager_commit_recomputes_only_what_it_reaches(bus):
    """A commit's wave visits the descendants of what it changed: a page left stale by deferred
    mode elsewhere waits for propagate(), so its raising recompute cannot refuse an unrelated
    write."""
    a = bus.create_page(data=np.zeros(2))
    y = bus.create_page(shape=(2,), dtype=DT)
    x = bus.create_page(data=np.zeros(2))
    z = bus.create_page(shape=(2,), dtype=DT)

    def picky(out, p):
        if p[0] > 10:
            raise ValueError("a too big")
        out[:] = p

    bus.depend(y, on=[a], fn=picky)
    bus.depend(z, on=[x], fn=mmsb.ops.copy)
    bus.propagation = "deferred"
    a.write(0, np.float64(11).tobytes())
    bus.propagation = "eager"
    x.write(0, np.float64(1).tobytes())  # unrelated to a and y
    assert np.array_equal(z.view(), [1.0, 0.0])
    assert [p.id for p in bus.stale_pages()] == [y.id]
    with pytest.raises(mmsb.PropagationError, match="a too big"):
        bus.propagate()  # the stale page's own wave is where it fails
    assert y.stale


def test_a_page_without_parents_is_not_stale(bus, rng):
    a, b = make_pages(bus, 2, rng)
    bus.add_edge(a, b)
    a.write(0, b"\x01")
    bus.remove_edge(a, b)
    assert bus.graph.parents(b) == []
    assert not b.stale and bus.stale_pages() == []


def test_delete_page_with_children_is_refused(bus, rng):
    a, b, c, d = make_pages(bus, 4, rng)
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    bus.add_edge(b, c)
    bus.add_edge(a, d, kind="device_sync")
    for p in (a, b):
        before, lsn = graph_state(bus), bus.lsn
        with pytest.raises(mmsb.GraphError) as ei:
            bus.delete_page(p)
        assert f"page {p.id}" in str(ei.value)
        assert graph_state(bus) == before and bus.lsn == lsn
        assert p.id in bus and bus.page(p.id).id == p.id
    # a leaf can go; its edges go with it
    bus.delete_page(c)
    assert bus_edges(bus) == {(a.id, b.id): "data", (a.id, d.id): "device_sync"}
    bus.delete_page(b)
    bus.delete_page(d)
    assert bus_edges(bus) == {}
    bus.delete_page(a)  # no children left
    assert len(bus) == 0
    assert bus.graph.validate().ok


@pytest.mark.parametrize("bad", [
    "cycle", "self_loop", "data_kind", "unknown_kind", "duplicate", "missing_parent", "missing_child",
    "copy_two_parents", "copy_with_weights", "weights_count", "layout", "dtype", "duplicate_parent",
    "no_parents", "remove_missing", "not_callable",
])
def test_refused_graph_calls_leave_the_bus_unchanged(bus, rng, bad):
    a, b, c = make_pages(bus, 3, rng)
    small = bus.create_page(shape=(2,), dtype=DT)
    flags = bus.create_page(shape=(N,), dtype="bool")
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    bus.add_edge(b, c)
    calls = {
        "cycle": (mmsb.GraphCycleError, lambda: bus.add_edge(c, a)),
        "self_loop": (mmsb.GraphCycleError, lambda: bus.depend(a, on=[a], fn=mmsb.ops.copy)),
        "data_kind": (mmsb.InvalidArgumentError, lambda: bus.add_edge(a, c, kind="data")),
        "unknown_kind": (mmsb.InvalidArgumentError, lambda: bus.add_edge(a, c, kind="x")),
        "duplicate": (mmsb.GraphError, lambda: bus.add_edge(b, c)),
        "missing_parent": (mmsb.PageNotFoundError, lambda: bus.depend(c, on=[a, 77], fn=mmsb.ops.reduce("min_plus"))),
        "missing_child": (mmsb.PageNotFoundError, lambda: bus.depend(77, on=[a], fn=mmsb.ops.copy)),
        "copy_two_parents": (mmsb.InvalidArgumentError, lambda: bus.depend(c, on=[a, b], fn=mmsb.ops.copy)),
        "copy_with_weights": (mmsb.InvalidArgumentError, lambda: bus.depend(a, on=[c], fn=mmsb.ops.copy, weights=[1.0])),
        "weights_count": (mmsb.InvalidArgumentError,
                          lambda: bus.depend(a, on=[c], fn=mmsb.ops.reduce("sum_product"), weights=[1.0, 2.0])),
        "layout": (mmsb.InvalidArgumentError, lambda: bus.depend(small, on=[a], fn=mmsb.ops.copy)),
        "dtype": (mmsb.InvalidArgumentError, lambda: bus.depend(flags, on=[flags], fn=mmsb.ops.reduce("sum_product"))),
        "duplicate_parent": (mmsb.MmsbError, lambda: bus.depend(c, on=[a, a], fn=mmsb.ops.reduce("min_plus"))),
        "no_parents": (mmsb.InvalidArgumentError, lambda: bus.depend(c, on=[], fn=mmsb.ops.reduce("min_plus"))),
        "remove_missing": (mmsb.GraphError, lambda: bus.remove_edge(a, c)),
        "not_callable": (mmsb.InvalidArgumentError, lambda: bus.depend(c, on=[a], fn=42)),
    }
    err, call = calls[bad]
    before, stats, lsn = graph_state(bus), bus.stats(), bus.lsn
    with pytest.raises(err) as ei:
        call()
    assert isinstance(ei.value, mmsb.MmsbError)
    assert str(ei.value)
    assert graph_state(bus) == before
    assert bus.lsn == lsn
    assert bus.stats() == stats
    assert bus.verify().ok


def test_graph_changes_roll_back_with_a_transaction(bus, rng):
    a, b, c, d = make_pages(bus, 4, rng)
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    before = graph_state(bus)
    with pytest.raises(KeyError):
        with bus.transaction():
            bus.add_edge(b, c)
            bus.depend(d, on=[a, c], fn=mmsb.ops.reduce("max_min"))
            bus.remove_edge(a, b)
            assert bus_edges(bus) == {(b.id, c.id): "control", (a.id, d.id): "data", (c.id, d.id): "data"}
            raise KeyError("abort")
    assert graph_state(bus) == before
    # a cycle refused inside a transaction does not spoil the rest of it
    with bus.transaction():
        bus.add_edge(b, c)
        with pytest.raises(mmsb.GraphCycleError):
            bus.add_edge(c, a)
        bus.add_edge(c, d)
    assert bus_edges(bus) == {(a.id, b.id): "data", (b.id, c.id): "control", (c.id, d.id): "control"}


def test_edges_survive_reopen(tmp_path, rng):
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        a, b, c, d, e = make_pages(bus, 5, rng)
        bus.depend(b, on=[a], fn=mmsb.ops.copy)
        bus.depend(c, on=[a, b], fn=mmsb.ops.reduce("min_plus"), weights=[0.5, -1.0])
        bus.add_edge(c, d)
        bus.add_edge(a, e, kind="device_sync")
        bus.add_edge(b, e)
        bus.remove_edge(b, e)
        bus.checkpoint()
        bus.add_edge(d, e)
        want = graph_state(bus)
    with mmsb.replay(path) as old:
        assert graph_state(old) == want
    with mmsb.open(path) as bus:
        assert graph_state(bus) == want
        lsn = bus.lsn
        with pytest.raises(mmsb.GraphCycleError):
            bus.add_edge(e.id, a.id)  # the restored graph still refuses cycles
        assert graph_state(bus) == want and bus.lsn == lsn


@pytest.mark.parametrize("mode", ["eager", "deferred"])
def test_removing_a_data_parent_recomputes_the_child_from_the_rest(bus, rng, mode):
    a, b, c = make_pages(bus, 3, rng)
    bus.depend(c, on=[a, b], fn=mmsb.ops.reduce("sum_product"))
    np.testing.assert_array_equal(c.view(), a.view() + b.view())
    bus.propagation = mode
    bus.remove_edge(b, c)
    assert [p.id for p in bus.graph.parents(c)] == [a.id]
    if mode == "deferred":
        assert c.stale
        np.testing.assert_array_equal(c.view(), a.view() + b.view())  # not yet recomputed
        assert bus.propagate() == 1
    assert not c.stale
    np.testing.assert_array_equal(c.view(), a.view())
