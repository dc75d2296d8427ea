"""A directory run with propagation replays bit-exactly without running callables; a reopened
bus reports pages whose callable is not registered again stale, never silently wrong; history
and time travel see the propagated deltas."""

from __future__ import annotations

import numpy as np

import mmsb
from propagation_model import OPS, Oracle, deferred_chain, expected_chain
from reference_model import capture_full_state

# ---- directory runs: replay is bit-exact without running callables ----------------------------
def full_state(bus):
    st = capture_full_state(bus)
    st["edges"] = sorted((e.parent, e.child, e.kind) for p in bus.pages() for e in bus.graph.out_edges(p))
    return st


def random_run(path, seed, n):
    """A directory bus at `path` with a random DAG of `n` pages (6 sources) on it: (bus, oracle, rng)."""
    rng = np.random.default_rng(seed)
    bus = mmsb.Bus(path)
    orc = Oracle(bus, rng, n=n, n_sources=6)
    orc.register_all()
    return bus, orc, rng


def test_replay_of_a_propagating_run_is_bit_exact(tmp_path):
    path = tmp_path / "bus"
    bus, orc, rng = random_run(path, 77, 24)
    states = {bus.lsn: full_state(bus)}
    for step in range(30):
        orc.commit_and_check(OPS[int(rng.integers(len(OPS)))])
        states[bus.lsn] = full_state(bus)
        if step == 12:
            bus.checkpoint()
    final_lsn = bus.lsn
    # time travel on the live bus
    for lsn in sorted(states)[:: 4]:
        with bus.at(lsn) as old:
            assert full_state(old) == states[lsn], lsn
    assert bus.verify().ok
    bus.close()
    orc.calls.clear()
    with mmsb.replay(path) as old:
        assert full_state(old) == states[final_lsn]
        assert old.lsn == final_lsn
    for lsn in sorted(states)[1:: 5]:
        with mmsb.replay(path, to=lsn) as old:
            assert full_state(old) == states[lsn], lsn
    with mmsb.open(path) as bus2:
        assert full_state(bus2) == states[final_lsn]
        assert bus2.verify().ok
    assert orc.calls == {}  # no callable ran during replay or recovery


def test_reopen_marks_unregistered_callables_stale_until_depend_again(tmp_path):
    path = tmp_path / "bus"
    bus, orc, rng = random_run(path, 78, 26)
    for _ in range(8):
        orc.commit_and_check(OPS[int(rng.integers(len(OPS)))])
    want = full_state(bus)
    bus.close()

    py = [pid for pid, s in orc.spec.items() if s[0] == "py"]
    assert py, "the random DAG has Python callables"
    bus = mmsb.open(path)
    orc.bus = bus
    orc.pages = {pid: bus.page(pid) for pid in orc.pages}
    assert full_state(bus) == want
    stale = {p.id for p in bus.stale_pages()}
    assert orc.closure(py) <= stale
    # Cutoffs are not logged, so a built-in page whose last recompute was a cutoff comes back with
    # an older memo and is (conservatively) stale too; its bytes are up to date all the same.
    scratch = orc.from_scratch()
    for pid in stale - orc.closure(py):
        assert orc.spec[pid][0] != "py"
        d = bus.graph.derivation(pid)
        assert list(d["memo"]) != [bus.page(q).epoch for q in d["parents"]], pid
        assert scratch[pid].tobytes() == bus.page(pid).view().tobytes(), pid
    for pid in py:
        assert bus.page(pid).stale
        assert bus.graph.derivation(pid)["missing_callable"]
    # re-register in a random order: re-attached, nothing logged, nothing changes
    orc.calls.clear()
    lsn = bus.lsn
    for i in rng.permutation(len(py)):
        pid = py[int(i)]
        kind, parents, arg, weights = orc.spec[pid]
        bus.depend(pid, on=parents, fn=orc.fn_for(pid))
        assert bus.lsn == lsn
        assert not bus.graph.derivation(pid)["missing_callable"]
    assert bus.stale_pages() == []
    assert full_state(bus) == want
    # and the wave works as before
    orc.lsn = bus.lsn
    for _ in range(8):
        orc.commit_and_check(OPS[int(rng.integers(len(OPS)))])
    bus.close()


def test_writes_after_reopen_without_callables_leave_derived_pages_stale(tmp_path):
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        calls, a, b, c, d = deferred_chain(bus)
        a.write(0, np.float64(3.0).tobytes())
    with mmsb.open(path) as bus:
        a, b, c, d = (bus.page(n) for n in "abcd")
        assert [p.id for p in bus.stale_pages()] == [b.id, c.id, d.id]  # d is below c
        assert bus.graph.derivation(b)["missing_callable"]
        assert not bus.graph.derivation(d)["missing_callable"]
        b_before = b.snapshot()
        a.write(8, np.float64(11.0).tobytes())
        assert b.snapshot()[1] == b_before[1]  # not recomputed: its function is missing
        assert d.view()[1] == max(11.0 + 1.0, c.view()[1] - 1.0)  # built-in children still follow a
        assert {p.id for p in bus.stale_pages()} == {b.id, c.id, d.id}
        calls2 = []

        def dbl(out, x):
            calls2.append(1)
            out[:] = 2 * x
        bus.depend(b, on=[a], fn=dbl)  # re-attach: the wave catches b and c up
        assert calls2 == [1]
        for page, want in zip((b, c, d), expected_chain(a)):
            assert np.array_equal(page.view(), want)
        assert bus.stale_pages() == []


def test_history_lists_propagated_deltas(tmp_path):
    with mmsb.Bus(tmp_path / "bus") as bus:
        calls, a, b, c, d = deferred_chain(bus)
        lsn0 = bus.lsn
        a.write(0, np.float64(3.0).tobytes())
        for page in (b, c, d):
            hist = bus.history(page)
            assert [h.epoch for h in hist] == list(range(1, page.epoch + 1))
            assert all(h.source == "propagation" for h in hist)
            prov = bus.provenance(page, max_depth=0)
            assert hist[-1].lsn == prov.nodes[prov.root].lsn
        assert bus.history(a)[-1].lsn == lsn0 + 1 and bus.history(a)[-1].source == "user"
        assert set(bus.diff(lsn0, bus.lsn)) == {a.id, b.id, c.id, d.id}


def test_page_at_epoch_after_propagation(tmp_path):
    with mmsb.Bus(tmp_path / "bus") as bus:
        calls, a, b, c, d = deferred_chain(bus)
        for i in range(3):
            a.write(8 * i, np.float64(10.0 + i).tobytes())
            for page in (a, b, c, d):
                assert np.array_equal(page.at(page.epoch), page.view()), (i, page.id)
