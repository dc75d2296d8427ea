"""Propagation (DESIGN §1 "Propagation"): after every commit every derived page equals a
from-scratch NumPy recomputation in topological order (the `Oracle` of propagation_model.py); each
page is recomputed at most once per wave and exactly when one of its parents got a new epoch;
cutoff; deferred mode. Failures: test_propagation_failures.py; replay: test_propagation_replay.py;
the reduce kernels against NumPy: test_reduce_kernels.py."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from propagation_model import ELEMS, F64, OPS, Oracle, deferred_chain, expected_chain
from reference_model import capture_state

@pytest.mark.parametrize("seed", range(8))
def test_random_dags_match_a_from_scratch_recompute(seed):
    rng = np.random.default_rng(1000 + seed)
    bus = mmsb.Bus()
    orc = Oracle(bus, rng)
    # sources get content before or after the graph exists (eager depend computes at once)
    for pid in orc.sources[: len(orc.sources) // 2]:
        orc.pages[pid].update(orc.values(ELEMS))
    orc.register_all()
    orc.check("after depend")
    totals = {"recomputed": 0, "derived": 0, "cut": 0}
    for step in range(60):
        name = OPS[int(rng.integers(len(OPS)))]
        recomputed, derived = orc.commit_and_check(name)
        totals["recomputed"] += len(recomputed)
        totals["derived"] += len(derived)
        totals["cut"] += len(recomputed) - len(derived)
    # the run really exercised waves and cutoffs
    assert totals["derived"] > 30 and totals["cut"] > 5, totals
    assert bus.verify().ok
    bus.close()


@pytest.mark.parametrize("seed", range(3))
def test_random_dags_in_deferred_mode(seed):
    """Deferred: commits change only the sources and mark the children of what they touched
    stale (stale_pages() = those and everything below); propagate() recomputes each page whose
    parents moved since its last recompute exactly once, and returns the number of derived
    deltas; switching back to eager leaves them to propagate(), after which commits recompute."""
    rng = np.random.default_rng(2000 + seed)
    bus = mmsb.Bus()
    orc = Oracle(bus, rng)
    orc.register_all()
    memo = {pid: [orc.epochs[q] for q in orc.spec[pid][1]] for pid in orc.spec}
    assert memo == {pid: list(bus.graph.derivation(pid)["memo"]) for pid in orc.spec}
    bus.propagation = "deferred"
    marked = set()
    for step in range(48):  # ends with stale pages pending
        orc.calls.clear()
        stats0 = bus.stats()
        derived_before = {pid: (orc.pages[pid].view().tobytes(), orc.pages[pid].epoch) for pid in orc.spec}
        bumped = orc.op(OPS[int(rng.integers(len(OPS)))])
        for q in bumped:
            orc.epochs[q] += 1
            marked |= {c for c, spec in orc.spec.items() if q in spec[1]}
        assert orc.calls == {}, step
        assert {pid: (orc.pages[pid].view().tobytes(), orc.pages[pid].epoch) for pid in orc.spec} == derived_before
        assert {p.id for p in bus.stale_pages()} == orc.closure(marked), step
        assert all(orc.pages[pid].stale == (pid in orc.closure(marked)) for pid in orc.pages)
        d = {k: bus.stats()[k] - stats0[k] for k in stats0}
        assert d["recomputes"] == 0 and d["derived_deltas"] == 0, (step, d)
        for pid in orc.sources:
            assert orc.pages[pid].view().tobytes() == orc.vals[pid].tobytes()
            assert orc.pages[pid].epoch == orc.epochs[pid]
        assert bus.lsn == orc.lsn
        if step % 5 == 4:
            recomputed, derived = orc.settle(memo)
            assert bus.propagate() == len(derived), step
            orc.lsn += len(derived)
            marked.clear()
            assert bus.stale_pages() == []
            assert orc.calls == {pid: 1 for pid in recomputed if orc.spec[pid][0] == "py"}, step
            orc.check(f"propagate at {step}")
            assert bus.propagate() == 0
    # back to eager with pending stale pages: they wait for propagate() (a commit's wave visits
    # only what it reaches), which catches them up; then commits recompute again
    assert marked and bus.stale_pages()
    bus.propagation = "eager"
    assert bus.stale_pages()
    recomputed, derived = orc.settle(memo)
    assert bus.propagate() == len(derived)
    orc.lsn += len(derived)
    orc.check("propagate after eager")
    src = next(q for q in orc.sources if any(q in spec[1] for spec in orc.spec.values()))
    orc.pages[src].write(0, orc.vals[src][:1].tobytes())
    orc.lsn += 1
    orc.epochs[src] += 1
    recomputed, derived = orc.settle(memo)
    orc.lsn += len(derived)
    orc.check("eager again")
    assert bus.stale_pages() == []


def test_random_dag_inside_transactions(rng):
    """Each op in a transaction runs its own wave at once (the owner sees derived pages follow);
    the commit keeps them all, a rollback drops every user and derived delta."""
    bus = mmsb.Bus()
    orc = Oracle(bus, rng, n=24)
    orc.register_all()
    for trial in range(6):
        saved = (capture_state(bus), {k: v.copy() for k, v in orc.vals.items()}, dict(orc.epochs), orc.lsn)
        abort = trial % 2 == 1
        try:
            with bus.transaction():
                for _ in range(4):
                    orc.commit_and_check(OPS[int(rng.integers(len(OPS)))])
                if abort:
                    raise KeyError("abort")
        except KeyError:
            pass
        if abort:
            assert capture_state(bus) == saved[0]
            orc.vals, orc.epochs, orc.lsn = saved[1], saved[2], saved[3]
        orc.check(f"after transaction {trial}")
    bus.close()


# ---- at most once per wave: diamonds and fan-in ----------------------------------------------
def test_diamond_and_fan_in_recompute_each_page_once(bus):
    calls = {}

    def counted(name, kernel):
        def fn(out, *ps):
            calls[name] = calls.get(name, 0) + 1
            out[:] = kernel(*ps)
        fn.__qualname__ = name
        return fn

    a = bus.create_page(data=np.arange(ELEMS, dtype=F64), name="a")
    pages = {n: bus.create_page(shape=(ELEMS,), dtype=F64, name=n) for n in "bcdefg"}
    b, c, d, e, f, g = (pages[n] for n in "bcdefg")
    #      a
    #    /   \
    #   b     c        d = b + c (diamond), e = fan-in of a, b, c, d; f, g hang below e and d
    #    \   /
    #      d
    bus.depend(b, on=[a], fn=counted("b", lambda x: x + 1))
    bus.depend(c, on=[a], fn=counted("c", lambda x: x * 2))
    bus.depend(d, on=[b, c], fn=counted("d", lambda x, y: x + y))
    bus.depend(e, on=[a, b, c, d], fn=counted("e", lambda *xs: sum(xs)))
    bus.depend(f, on=[e, d], fn=counted("f", lambda x, y: x - y))
    bus.depend(g, on=[f, a, e], fn=mmsb.ops.reduce("max_plus"))
    calls.clear()
    bus.reset_stats()
    for i in range(5):
        a.write(8 * i, np.float64(100 + i).tobytes())
        assert calls == {n: 1 for n in "bcdef"}, (i, calls)
        calls.clear()
        av = a.view()
        bv, cv = av + 1, av * 2
        dv = bv + cv
        ev = av + bv + cv + dv
        fv = ev - dv
        assert np.array_equal(f.view(), fv)
        assert np.array_equal(g.view(), np.maximum.reduce([fv, av, ev]))
    s = bus.stats()
    assert s["waves"] == 5 and s["recomputes"] == 30 and s["derived_deltas"] == 30 and s["cutoffs"] == 0
    # a batch that writes a and b's parent twice still runs one wave, each page once
    bus.apply_batch(mmsb.DeltaBatch([a.id, a.id, a.id], [0, 8, 0], [8, 8, 8],
                                    np.array([7.0, 8.0, 9.0]).tobytes()))
    assert calls == {n: 1 for n in "bcdef"}
    assert a.view()[0] == 9.0 and b.view()[0] == 10.0
    assert bus.stats()["waves"] == 6


def test_wave_visits_pages_in_canonical_topological_order(bus):
    """Parents before children, ties by smaller id: the log order of derived deltas shows it."""
    order = []
    src = bus.create_page(shape=(ELEMS,), dtype=F64)
    kids = [bus.create_page(shape=(ELEMS,), dtype=F64) for _ in range(6)]
    k1, k2, k3, k4, k5, k6 = kids

    def rec(out, *ps):
        out[:] = sum(ps) + 1

    def tracking(page):
        def fn(out, *ps):
            order.append(page.id)
            rec(out, *ps)
        return fn

    bus.depend(k6, on=[src], fn=tracking(k6))
    bus.depend(k3, on=[src], fn=tracking(k3))
    bus.depend(k5, on=[k6], fn=tracking(k5))
    bus.depend(k1, on=[k5, k3], fn=tracking(k1))
    bus.depend(k4, on=[src], fn=tracking(k4))
    bus.depend(k2, on=[k4], fn=tracking(k2))
    order.clear()
    src.write(0, np.float64(5.0).tobytes())
    edges = {(k6.id, src.id), (k3.id, src.id), (k5.id, k6.id), (k1.id, k5.id), (k1.id, k3.id), (k4.id, src.id),
             (k2.id, k4.id)}
    want = [p for p in bus.graph.topological_order() if p != src.id]
    assert order == want
    # the lexicographically smallest order of this graph, worked out by hand
    assert [bus.page(p) for p in want] == [k3, k4, k2, k6, k5, k1]
    assert all(order.index(c) > order.index(p) for c, p in edges if p != src.id)


# ---- cutoff ----------------------------------------------------------------------------------
def test_cutoff_stops_the_branch_and_never_skips_changed_inputs(bus):
    calls = []

    def track(name, kernel):
        def fn(out, *ps):
            calls.append(name)
            out[:] = kernel(*ps)
        return fn

    a = bus.create_page(data=np.full(ELEMS, 0.25))
    x = bus.create_page(data=np.zeros(ELEMS))
    s = bus.create_page(shape=(ELEMS,), dtype=F64)  # sign(a): cut off while a stays positive
    t = bus.create_page(shape=(ELEMS,), dtype=F64)  # below s only
    u = bus.create_page(shape=(ELEMS,), dtype=F64)  # below s and x
    bus.depend(s, on=[a], fn=track("s", np.sign))
    bus.depend(t, on=[s], fn=track("t", lambda v: v * 10))
    bus.depend(u, on=[s, x], fn=mmsb.ops.reduce("sum_product"))
    v = bus.create_page(shape=(ELEMS,), dtype=F64)
    bus.depend(v, on=[u], fn=track("v", lambda w: w + 1))
    calls.clear()
    bus.reset_stats()
    epochs = {p.id: p.epoch for p in (s, t, u, v)}
    lsn = bus.lsn
    # a changes but sign(a) does not: s recomputes, commits nothing, t/u/v are not recomputed
    a.write(0, np.float64(3.0).tobytes())
    assert calls == ["s"]
    assert {p.id: p.epoch for p in (s, t, u, v)} == epochs
    assert bus.lsn == lsn + 1  # the user delta only
    st = bus.stats()
    assert st["recomputes"] == 1 and st["cutoffs"] == 1 and st["derived_deltas"] == 0
    # the same bytes again, explicitly: still a commit (epoch +1), still a cutoff
    a.write(0, np.float64(3.0).tobytes())
    assert calls == ["s", "s"] and s.epoch == epochs[s.id]
    # s cut off, but x changed in the same batch: u (and v) must be recomputed
    calls.clear()
    bus.reset_stats()
    bus.apply_batch(mmsb.DeltaBatch([a.id, x.id], [8, 0], [8, 8], np.array([4.0, 2.0]).tobytes()))
    assert calls == ["s", "v"]
    assert u.view()[0] == 1.0 + 2.0 and v.view()[0] == 4.0
    assert u.epoch == epochs[u.id] + 1 and t.epoch == epochs[t.id]
    st = bus.stats()
    assert st["recomputes"] == 3 and st["cutoffs"] == 1 and st["derived_deltas"] == 2
    # sign flips: the whole branch follows
    calls.clear()
    a.write(0, np.float64(-1.0).tobytes())
    assert calls == ["s", "t", "v"]
    assert t.view()[0] == -10.0 and u.view()[0] == 1.0 and v.view()[0] == 2.0


def test_memo_is_the_parents_epochs_of_the_last_recompute(bus):
    calls = []
    a = bus.create_page(data=np.ones(ELEMS))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    c = bus.create_page(shape=(ELEMS,), dtype=F64)

    def fn(out, x):
        calls.append(1)
        out[:] = x * 2
    bus.depend(b, on=[a], fn=fn)
    bus.depend(c, on=[b], fn=mmsb.ops.copy)
    assert bus.graph.derivation(b)["memo"] == [a.epoch]
    assert bus.graph.derivation(c)["memo"] == [b.epoch]
    calls.clear()
    a.write(0, np.float64(1.0).tobytes())  # epoch +1, same bytes: recompute, cutoff
    assert calls == [1]
    assert bus.graph.derivation(b)["memo"] == [a.epoch]  # the memo follows the inputs' epochs
    assert bus.graph.derivation(c)["memo"] == [b.epoch]


# ---- deferred mode ---------------------------------------------------------------------------
def test_deferred_depend_marks_stale_and_propagate_computes(bus):
    bus.propagation = "deferred"
    assert bus.propagation == "deferred"
    calls = []
    a = bus.create_page(data=np.arange(ELEMS, dtype=F64))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    c = bus.create_page(shape=(ELEMS,), dtype=F64)

    def dbl(out, x):
        calls.append(1)
        out[:] = 2 * x
    lsn = bus.lsn
    bus.depend(b, on=[a], fn=dbl)
    bus.depend(c, on=[b], fn=mmsb.ops.copy)
    assert calls == [] and bus.lsn == lsn + 2  # two graph records, no derived delta yet
    assert b.stale and c.stale and not a.stale
    assert [p.id for p in bus.stale_pages()] == [b.id, c.id]
    assert not b.view().any()
    assert bus.propagate() == 2
    assert calls == [1]
    assert np.array_equal(c.view(), 2 * a.view())
    assert bus.stale_pages() == [] and not b.stale
    assert bus.propagate() == 0 and calls == [1]


def test_deferred_batch_marks_stale_and_propagate_recomputes_once(bus):
    calls, a, b, c, d = deferred_chain(bus)
    bus.propagation = "deferred"
    bus.reset_stats()
    epochs, lsn = {p.id: p.epoch for p in (b, c, d)}, bus.lsn
    for i in range(3):
        bus.apply_batch(mmsb.DeltaBatch([a.id], [8 * i], [8], np.float64(50 + i).tobytes()))
    assert calls == []
    assert {p.id: p.epoch for p in (b, c, d)} == epochs and bus.lsn == lsn + 3
    assert {p.id for p in bus.stale_pages()} == {b.id, c.id, d.id}
    assert b.stale and c.stale and d.stale and not a.stale
    assert bus.stats()["recomputes"] == 0
    assert bus.propagate() == 3
    assert calls == ["b"]  # once, however many commits marked it
    for page, want in zip((b, c, d), expected_chain(a)):
        assert np.array_equal(page.view(), want)
    assert bus.stale_pages() == []
    assert bus.lsn == lsn + 3 + 3
    # back to eager: commits propagate at once again
    bus.propagation = "eager"
    a.write(0, np.float64(-9.0).tobytes())
    assert calls == ["b", "b"] and b.view()[0] == -18.0 and bus.stale_pages() == []


@pytest.mark.parametrize("how", ["write", "apply", "update", "edit"])
def test_deferred_single_delta_commits_only_mark_stale(bus, how):
    calls, a, b, c, d = deferred_chain(bus)
    bus.propagation = "deferred"
    before = {p.id: (p.view().tobytes(), p.epoch) for p in (b, c, d)}
    new = a.snapshot()[0]
    new[3] = 77.0
    if how == "write":
        a.write(24, np.float64(77.0).tobytes())
    elif how == "apply":
        bus.apply(mmsb.Delta.at(a, 24, np.float64(77.0).tobytes()))
    elif how == "update":
        a.update(new)
    else:
        with a.edit() as arr:
            arr[3] = 77.0
    assert calls == [], "deferred mode must not recompute inside the commit"
    assert {p.id: (p.view().tobytes(), p.epoch) for p in (b, c, d)} == before
    assert {p.id for p in bus.stale_pages()} == {b.id, c.id, d.id}
    assert bus.propagate() == 3 and calls == ["b"]


def test_deferred_mode_rejects_unknown_modes(bus):
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.propagation = "lazy"
    assert bus.propagation == "eager"


def test_a_callable_starts_from_the_childs_bytes_in_an_array_it_may_keep(bus):
    """`out` holds the child's bytes at every call, and an `out` the callable keeps is never
    handed out again: only an array nobody else holds is refilled for the next call."""
    a = bus.create_page(shape=(ELEMS,), dtype=F64)
    total = bus.create_page(shape=(ELEMS,), dtype=F64)
    kept = []

    def accumulate(out, x):
        out += x
        if x[0] in (2, 4, 6, 8):
            kept.append(out)

    bus.depend(total, on=[a], fn=accumulate)
    want = np.zeros(ELEMS)
    for i in range(1, 9):
        a.write(0, np.full(ELEMS, float(i)).tobytes())
        want += i
        assert np.array_equal(total.view(), want), i
    assert len({id(k) for k in kept}) == len(kept) == 4
    # each kept array still holds what it was at the end of its own call
    assert [k[0] for k in kept] == [sum(range(1, i + 1)) for i in (2, 4, 6, 8)]


def test_an_out_array_changed_in_place_is_never_handed_out_again(bus):
    """A callable may give `out` another shape or dtype in place: the next call still gets a
    fresh array shaped like the child. One that resizes `out` (refcheck=False) no longer holds
    the child's bytes: a PropagationError, and nothing commits, instead of heap bytes past the
    new end copied into the page."""
    a = bus.create_page(data=np.arange(4.0))
    c = bus.create_page(shape=(4,), dtype=F64)
    seen = []

    def reshaping(out, p):
        seen.append((out.shape, str(out.dtype), out.flags.writeable))
        out[:] = 2 * p
        out.shape = (2, 2)
        out.dtype = np.int64

    bus.depend(c, on=[a], fn=reshaping)
    a.write(0, np.float64(10).tobytes())
    assert seen == [((4,), "float64", True)] * 2
    assert np.array_equal(c.view(), [20.0, 2.0, 4.0, 6.0])

    def shrinking(out, p):
        out.resize(1, refcheck=False)
        out[0] = 42.0

    d = bus.create_page(shape=(4,), dtype=F64)
    before = bus.lsn
    with pytest.raises(mmsb.PropagationError, match="resized its out array"):
        bus.depend(d, on=[a], fn=shrinking)
    assert bus.lsn == before and bus.graph.derivation(d) is None and np.array_equal(d.view(), np.zeros(4))


def test_parent_views_a_callable_keeps_outlive_the_bus(tmp_path):
    """A parent's view handed to a callable pins the page and keeps the bus's memory alive, as
    a Page's view does: read after the bus is closed and dropped, it holds the last bytes."""
    import gc

    bus = mmsb.Bus(str(tmp_path / "b"))
    a = bus.create_page(shape=(ELEMS,), dtype=F64)
    child = bus.create_page(shape=(ELEMS,), dtype=F64)
    seen = []

    def copy(out, x):
        seen.append(x)
        out[:] = x

    bus.depend(child, on=[a], fn=copy)
    child_id = child.id
    for i in range(3):
        a.write(0, np.full(ELEMS, float(i + 1)).tobytes())
    assert all(not v.flags.writeable for v in seen)
    with pytest.raises(ValueError):
        seen[-1][0] = 0.0
    bus.close()
    del bus, a, child
    gc.collect()
    assert np.array_equal(seen[-1], np.full(ELEMS, 3.0))
    with mmsb.open(str(tmp_path / "b")) as reopened:
        assert reopened.page(child_id).view()[0] == 3.0
