"""Provenance (DESIGN §1 "Provenance", §2 bus.provenance): which delta produced (page, epoch), and
for a propagated delta the parents at the epochs they had, recursively to max_depth."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb

F8 = np.float64


def f8(x):
    return F8(x).tobytes()


def hop_levels(prov):
    """Shortest hop count from the root to every node, over the nodes' inputs (BFS)."""
    levels, todo = {prov.root: 0}, [prov.root]
    while todo:
        nxt = []
        for k in todo:
            for i in prov.nodes[k].inputs:
                if i in prov.nodes and i not in levels:
                    levels[i] = levels[k] + 1
                    nxt.append(i)
        todo = nxt
    return levels


def check_well_formed(bus, prov):
    """Every node is reachable from the root, its lsn is later than its inputs', propagated nodes
    have inputs and user nodes none, edges are exactly the (node, input) pairs inside the DAG."""
    assert prov.root in prov.nodes
    levels = hop_levels(prov)
    assert set(levels) == set(prov.nodes)
    assert prov.depth == max(levels.values())
    assert prov.depth <= prov.max_depth
    want_edges = set()
    for key, n in prov.nodes.items():
        assert key == (n.page, n.epoch)
        assert n.source in ("user", "propagation", "replay", "remote")
        assert (n.source == "propagation") == bool(n.inputs), n
        for i in n.inputs:
            if i in prov.nodes:
                want_edges.add((key, i))
                assert prov.nodes[i].lsn < n.lsn
            elif i[1] != 0:  # (an input at epoch 0 had no delta: no node)
                # only a node at the depth limit keeps inputs that were not expanded
                assert levels[key] == prov.max_depth, (key, i)
    assert set(prov.edges) == want_edges and len(prov.edges) == len(want_edges)
    # Every node carries the commit's wall-clock stamp, and stamps follow lsn order.
    stamps = [n.timestamp_ns for n in sorted(prov.nodes.values(), key=lambda n: n.lsn)]
    assert all(stamps) and stamps == sorted(stamps)
    assert {n for n in prov.sources()} == {n for n in prov.nodes.values() if not n.inputs}


def chain(bus, n):
    src = bus.create_page(data=np.arange(4, dtype=F8), name="src")
    pages = [src]
    for _ in range(n):
        p = bus.create_page(shape=(4,), dtype=F8)
        bus.depend(p, on=[pages[-1]], fn=mmsb.ops.copy)
        pages.append(p)
    return pages


def test_chain_of_40_copies_stops_at_max_depth(bus):
    pages = chain(bus, 40)
    lsn = bus.lsn
    pages[0].write(0, f8(9.0))  # epoch 2 everywhere below; lsns lsn+1 .. lsn+41 in wave order
    last = pages[-1]
    assert last.epoch == 2
    prov = bus.provenance(last, max_depth=31)
    check_well_formed(bus, prov)
    assert prov.root == (last.id, 2) and prov.depth == 31
    assert len(prov.nodes) == 32
    assert sorted(prov.nodes) == sorted((p.id, 2) for p in pages[-32:])
    edge = prov.nodes[(pages[-32].id, 2)]  # the node at the limit: included, not expanded
    assert edge.inputs == ((pages[-33].id, 2),) and (pages[-33].id, 2) not in prov.nodes
    assert prov.sources() == []
    for k, p in enumerate(pages[-32:]):
        n = prov.nodes[(p.id, 2)]
        assert n.source == "propagation" and n.lsn == lsn + 1 + (len(pages) - 32) + k
    # the default limit is 32
    assert bus.provenance(last).depth == 32 and len(bus.provenance(last)) == 33
    # deep enough: down to the user delta
    full = bus.provenance(last, max_depth=40)
    check_well_formed(bus, full)
    assert full.depth == 40 and len(full) == 41
    [leaf] = full.sources()
    assert (leaf.page, leaf.epoch, leaf.lsn, leaf.source, leaf.inputs) == (pages[0].id, 2, lsn + 1, "user", ())
    # max_depth 0: the root alone
    only = bus.provenance(last, max_depth=0)
    assert list(only.nodes) == [(last.id, 2)] and only.depth == 0 and only.edges == []
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.provenance(last, max_depth=-1)


def test_fan_in_names_the_right_parents_at_the_right_epochs(bus):
    """a, b, c sources; d = min_plus(a, b); e = f(d, c); g = copy(e). Epochs and lsns recorded at
    each commit are what provenance reports, including a cut-off d that keeps its old epoch."""
    a = bus.create_page(data=np.zeros(4), name="a")
    b = bus.create_page(data=np.zeros(4), name="b")
    c = bus.create_page(data=np.zeros(4), name="c")
    d, e, g = (bus.create_page(shape=(4,), dtype=F8, name=n) for n in "deg")
    bus.depend(d, on=[a, b], fn=mmsb.ops.reduce("min_plus"))
    bus.depend(e, on=[d, c], fn=lambda out, x, y: x * 10 + y)
    bus.depend(g, on=[e], fn=mmsb.ops.copy)
    recorded = {}  # (page, epoch) -> lsn of the delta, for every page

    def note(*pages):
        for p in pages:
            recorded[(p.id, p.epoch)] = bus.provenance(p, max_depth=0).nodes[(p.id, p.epoch)].lsn

    a.write(0, f8(-1.0))                      # d changes (min), e, g follow
    snap1 = {p.id: p.epoch for p in (a, b, c, d, e, g)}
    lsn1 = bus.lsn
    c.write(8, f8(5.0))                       # e, g follow; d untouched
    snap2 = {p.id: p.epoch for p in (a, b, c, d, e, g)}
    b.write(0, f8(3.0))                       # min(-1, 3) = -1: d is cut off, nothing below moves
    assert {p.id: p.epoch for p in (d, e, g)} == {k: snap2[k] for k in (d.id, e.id, g.id)}
    c.write(0, f8(2.0))                       # e recomputes from d (old epoch) and c (new)
    prov = bus.provenance(g)
    check_well_formed(bus, prov)
    ge = prov.nodes[(g.id, g.epoch)]
    assert ge.inputs == ((e.id, e.epoch),)
    en = prov.nodes[(e.id, e.epoch)]
    assert en.inputs == ((d.id, snap2[d.id]), (c.id, c.epoch))  # d's epoch from before the cutoff
    dn = prov.nodes[(d.id, snap2[d.id])]
    assert dn.inputs == ((a.id, snap1[a.id]), (b.id, 1))        # b at its epoch before b.write
    assert dn.lsn < lsn1
    leaves = {(n.page, n.epoch): n for n in prov.sources()}
    assert set(leaves) == {(a.id, 2), (b.id, 1), (c.id, 3)}
    assert all(n.source == "user" for n in leaves.values())
    assert leaves[(c.id, 3)].lsn == bus.lsn - 2  # c.write, then e and g
    assert prov.depth == 3
    # the earlier epoch of g: built from the first wave
    old = bus.provenance(g, epoch=snap1[g.id])
    check_well_formed(bus, old)
    assert old.root == (g.id, snap1[g.id])
    assert old.nodes[(e.id, snap1[e.id])].inputs == ((d.id, snap1[d.id]), (c.id, 1))
    assert {(n.page, n.epoch) for n in old.sources()} == {(a.id, 2), (b.id, 1), (c.id, 1)}


def test_batch_rows_and_initial_data_are_user_leaves(bus):
    a = bus.create_page(data=np.ones(4), name="a")   # data= is delta 1 (lsn 2)
    b = bus.create_page(shape=(4,), dtype=F8, name="b")
    x = bus.create_page(shape=(4,), dtype=F8, name="x")
    bus.depend(b, on=[a, x], fn=mmsb.ops.reduce("sum_product"), weights=[2.0, 3.0])
    first = bus.provenance(b)
    assert {(n.page, n.epoch, n.lsn) for n in first.sources()} == {(a.id, 1, 2)}
    assert first.nodes[(b.id, 1)].inputs == ((a.id, 1), (x.id, 0))  # x at epoch 0: no delta, no node
    assert (x.id, 0) not in first.nodes
    start = bus.lsn
    bus.apply_batch(mmsb.DeltaBatch([x.id, a.id], [0, 8], [8, 8], f8(1.0) + f8(4.0)))
    prov = bus.provenance(b)
    check_well_formed(bus, prov)
    leaves = {(n.page, n.epoch): n for n in prov.sources()}
    assert leaves[(x.id, 1)].lsn == start + 1 and leaves[(a.id, 2)].lsn == start + 2
    assert all(n.source == "user" for n in leaves.values())
    assert prov.nodes[(b.id, b.epoch)].lsn == start + 3


def test_to_dot_and_to_svg_show_every_node_and_edge(bus):
    a = bus.create_page(data=np.arange(4, dtype=F8))
    b = bus.create_page(data=np.arange(4, dtype=F8))
    m = [bus.create_page(shape=(4,), dtype=F8) for _ in range(4)]
    bus.depend(m[0], on=[a], fn=mmsb.ops.copy)
    bus.depend(m[1], on=[a, b], fn=mmsb.ops.reduce("max_min"))
    bus.depend(m[2], on=[m[0], m[1]], fn=lambda out, x, y: x + y)
    bus.depend(m[3], on=[m[2], b], fn=mmsb.ops.reduce("max_plus"), weights=[1.0, -2.0])
    a.write(0, f8(10.0))
    prov = bus.provenance(m[3])
    check_well_formed(bus, prov)
    assert len(prov.nodes) >= 6
    dot, svg, html = prov.to_dot(), prov.to_svg(), prov._repr_html_()
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg in html
    for (p, e), n in prov.nodes.items():
        assert f'"p{p}e{e}" [label="page {p} @ epoch {e}\\nlsn {n.lsn} ({n.source})"]' in dot
        assert f"page {p} @ {e}<" in svg
        assert f"lsn {n.lsn} {n.source}<" in svg
    for (cp, ce), (pp, pe) in prov.edges:
        assert f'"p{pp}e{pe}" -> "p{cp}e{ce}";' in dot
    assert dot.count(" -> ") == len(prov.edges)
    assert svg.count("<line ") == len(prov.edges)
    assert svg.count("<rect ") == len(prov.nodes)
    assert repr(prov) == f"<mmsb.Provenance page={m[3].id} epoch={m[3].epoch} nodes={len(prov)} depth={prov.depth}>"


def test_depth_is_the_hop_distance_used_by_the_limit(bus):
    """f = max_plus(a, c) with c = copy(b), b = copy(a): a is one hop from f (and three along the
    long path); depth counts hops the way max_depth does."""
    a = bus.create_page(data=np.arange(4, dtype=F8))
    b, c, f = (bus.create_page(shape=(4,), dtype=F8) for _ in range(3))
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    bus.depend(c, on=[b], fn=mmsb.ops.copy)
    bus.depend(f, on=[a, c], fn=mmsb.ops.reduce("max_plus"))
    a.write(0, f8(9.0))
    for md, want in [(0, {f}), (1, {f, a, c}), (2, {f, a, b, c}), (5, {f, a, b, c})]:
        prov = bus.provenance(f, max_depth=md)
        check_well_formed(bus, prov)
        assert {k[0] for k in prov.nodes} == {p.id for p in want}, md
        assert prov.depth == min(md, 2)


@pytest.mark.parametrize("case", ["future", "negative", "unknown_page", "bad_depth"])
def test_errors_name_the_page(bus, case):
    a = bus.create_page(data=np.arange(4, dtype=F8))
    b = bus.create_page(shape=(4,), dtype=F8)
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    lsn = bus.lsn
    if case == "future":
        with pytest.raises(mmsb.MmsbError) as ei:
            bus.provenance(b, epoch=b.epoch + 1)
        assert isinstance(ei.value, (mmsb.InvalidArgumentError, mmsb.HistoryUnavailableError))
        assert type(ei.value) is mmsb.InvalidArgumentError  # what this engine raises
        assert f"page {b.id}" in str(ei.value) and str(b.epoch + 1) in str(ei.value)
    elif case == "negative":
        with pytest.raises(mmsb.InvalidArgumentError):
            bus.provenance(b, epoch=-1)
    elif case == "unknown_page":
        with pytest.raises(mmsb.PageNotFoundError) as ei:
            bus.provenance(77)
        assert "77" in str(ei.value)
    else:
        for bad in (-1, 1.5, True, "3"):
            with pytest.raises(mmsb.InvalidArgumentError):
                bus.provenance(b, max_depth=bad)
    assert bus.lsn == lsn


def test_provenance_of_epoch_zero_names_the_page(bus):
    """Epoch 0 had no delta: an empty DAG whose root still names the page (or an error that does)."""
    bus.create_page(8)
    a = bus.create_page(shape=(4,), dtype=F8, name="a")
    for kwargs in ({"epoch": 0}, {}):
        try:
            prov = bus.provenance("a", **kwargs)
        except mmsb.MmsbError as e:
            assert f"page {a.id}" in str(e)
        else:
            assert prov.root == (a.id, 0) and len(prov) == 0 and prov.edges == [] and prov.depth == 0
            assert f"page={a.id}" in repr(prov)


def test_provenance_after_reopen_and_replay(tmp_path):
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        a = bus.create_page(data=np.arange(4, dtype=F8), name="a")
        b = bus.create_page(shape=(4,), dtype=F8, name="b")
        c = bus.create_page(shape=(4,), dtype=F8, name="c")
        bus.depend(b, on=[a], fn=lambda out, x: x + 0.5)
        bus.depend(c, on=[a, b], fn=mmsb.ops.reduce("min_plus"), weights=[1.0, -1.0])
        for i in range(4):
            a.write(8 * i, f8(10.0 + i))
        want = {e: bus.provenance(c, epoch=e).nodes for e in range(1, c.epoch + 1)}
        top = c.epoch
    with mmsb.replay(path) as old:
        for e, nodes in want.items():
            assert old.provenance(3, epoch=e).nodes == nodes, e
    with mmsb.open(path) as bus:
        assert bus.provenance("c").nodes == want[top]
        bus.page("a").write(0, f8(-5.0))  # the callable is not registered: b stays, c follows a
        prov = bus.provenance("c")
        node = prov.nodes[prov.root]
        assert node.inputs == ((1, bus.page("a").epoch), (2, bus.page("b").epoch))


def test_provenance_across_a_checkpoint_needs_no_earlier_history_call(tmp_path):
    """A bus reopened from a checkpoint indexes the log after it; the first answer that lies
    before it reads the older log once (it raised HistoryUnavailableError until history() had
    been called, and a page deleted before the checkpoint, which has no record, crashed it)."""
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        a = bus.create_page(data=np.arange(4, dtype=F8), name="a")
        b = bus.create_page(data=np.ones(4), name="b")
        c = bus.create_page(shape=(4,), dtype=F8, name="c")
        bus.depend(c, on=[a, b], fn=mmsb.ops.reduce("sum_product"))
        a.write(0, f8(5.0))
        gone = bus.create_page(8)
        gone.write(0, b"x")
        gone_id = gone.id
        bus.delete_page(gone)
        want = bus.provenance(c).nodes
        want_gone = bus.provenance(gone_id).nodes
        bus.checkpoint()
    with mmsb.open(path) as bus:
        assert bus.recovery["records_replayed"] == 0
        assert bus.provenance("c").nodes == want
        assert bus.provenance(gone_id).nodes == want_gone
        bus.page("b").write(0, f8(7.0))  # a recompute after the reopen, from an input before it
        prov = bus.provenance("c")
        assert set(prov.nodes) == {(3, 3), (1, 2), (2, 2)}


@pytest.mark.parametrize("where", ["memory", "directory"])
def test_an_input_older_than_the_retention_is_listed_without_a_node(tmp_path, where):
    """With a retention the index keeps each page's newest entry at the floor; a derived delta's
    input older than that has no node (as one at epoch 0), and the call still answers."""
    bus = mmsb.Bus(retention=1) if where == "memory" else mmsb.Bus(tmp_path / "b", retention=1)
    a = bus.create_page(data=np.zeros(1))
    c = bus.create_page(shape=(1,), dtype=F8)
    bus.depend(c, on=a, fn=mmsb.ops.copy)
    a.write(0, f8(1.0))  # c's epoch 1 comes from a at epoch 2
    bus.propagation = "deferred"
    a.write(0, f8(2.0))  # a at epoch 3; c stale
    bus.checkpoint()
    bus.gc()
    prov = bus.provenance(c)
    assert list(prov.nodes) == [(c.id, 1)] and prov.nodes[(c.id, 1)].inputs == ((a.id, 2),)
    with pytest.raises(mmsb.HistoryUnavailableError, match="older than the history"):
        bus.provenance(a, epoch=1)
    bus.close()


def test_a_directory_checkpoint_with_a_retention_trims_the_index(tmp_path):
    """The retention runs at each checkpoint: the index entries of the lsns it dropped go too,
    as in memory (the directory bus kept them until gc(), 32 bytes a write)."""
    sizes = {}
    for where in ("memory", "directory"):
        bus = mmsb.Bus(retention=1) if where == "memory" else mmsb.Bus(tmp_path / "b", retention=1)
        p = bus.create_page(64)
        for _ in range(3):
            for i in range(2000):
                p.write(0, i.to_bytes(8, "little"))
            bus.checkpoint()
        sizes[where] = bus.memory().index_bytes
        bus.close()
    assert sizes["directory"] == sizes["memory"] < 2000 * 32, sizes
