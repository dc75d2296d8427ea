"""Stale pages are logged state (DESIGN §1 "Propagation", docs/format.md "Wave"): after random
writes, batches, ticks, transactions, control / device_sync edges, removed edges, depend()s and
deleted pages, in eager and deferred mode, with propagate() and checkpoints, a reopened bus,
bus.at(lsn) and mmsb.replay report exactly the stale pages (and memos) the live bus had at that
lsn.

The oracle is the live bus itself, recorded after every step; a step that takes no lsn must not
change what it reports."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from propagation_model import stale_state

F64 = "float64"
ELEMS = 2


class Run:
    def __init__(self, rng, path=None):
        self.rng = rng
        self.path = path
        self.bus = mmsb.Bus(path) if path is not None else mmsb.Bus()
        self.ids = [self.bus.create_page(shape=(ELEMS,), dtype=F64).id for _ in range(10)]
        self.states = {}
        self.record()

    def pick(self):
        return self.ids[int(self.rng.integers(len(self.ids)))]

    def value(self):
        return np.float64(self.rng.integers(3)).tobytes()  # few values: cutoffs happen

    def record(self):
        now = stale_state(self.bus)
        seen = self.states.setdefault(self.bus.lsn, now)
        assert seen == now, f"stale pages changed without an lsn at lsn {self.bus.lsn}"

    # ---- the random steps ---------------------------------------------------------------------
    def write(self):
        self.bus.page(self.pick()).write(8 * int(self.rng.integers(ELEMS)), self.value())

    def batch(self):
        rows = int(self.rng.integers(2, 5))
        pages = [self.pick() for _ in range(rows)]
        offsets = [8 * int(self.rng.integers(ELEMS)) for _ in range(rows)]
        self.bus.apply_batch(mmsb.DeltaBatch(pages, offsets, [8] * rows, b"".join(self.value() for _ in range(rows))))

    def depend(self):
        child, parents = self.pick(), [self.pick()]
        if self.rng.integers(2):
            parents.append(self.pick())
        fn = mmsb.ops.copy if len(parents) == 1 and self.rng.integers(2) else mmsb.ops.reduce(
            "max_plus" if self.rng.integers(2) else "min_plus")
        self.bus.depend(child, on=parents, fn=fn)

    def edge(self, kind="control"):
        self.bus.add_edge(self.pick(), self.pick(), kind=kind)

    def unlink(self):
        edges = self.bus.graph.in_edges(self.pick())
        if edges:
            e = edges[int(self.rng.integers(len(edges)))]
            self.bus.remove_edge(e.parent, e.child)

    def delete(self):
        victim = self.pick()
        self.bus.delete_page(victim)  # GraphError while it has children
        self.ids.remove(victim)
        self.ids.append(self.bus.create_page(shape=(ELEMS,), dtype=F64).id)

    def toggle(self):
        self.bus.propagation = "deferred" if self.bus.propagation == "eager" else "eager"

    def transaction(self):
        class Rollback(Exception):
            pass
        try:
            with self.bus.transaction():
                for _ in range(int(self.rng.integers(2, 6))):
                    k = int(self.rng.integers(6))
                    (self.toggle, self.bus.propagate, self.depend, self.edge, self.batch, self.write)[k]()
                if self.rng.integers(5) == 0:
                    raise Rollback()
        except Rollback:
            pass

    def tick(self):
        for _ in range(int(self.rng.integers(4))):
            self.bus.submit(mmsb.Delta.at(self.pick(), 0, self.value()))
        self.bus.tick()

    def reopen(self):
        mode = self.bus.propagation  # not logged: a program sets it again
        self.bus.close()
        self.bus = mmsb.open(self.path)
        self.bus.propagation = mode
        assert stale_state(self.bus) == self.states[self.bus.lsn], f"reopened at lsn {self.bus.lsn}"

    def step(self):
        r = int(self.rng.integers(100))
        try:
            if r < 28:
                self.write()
            elif r < 36:
                self.batch()
            elif r < 46:
                self.depend()
            elif r < 54:
                self.edge("device_sync" if self.rng.integers(10) == 0 else "control")
            elif r < 61:
                self.unlink()
            elif r < 67:
                self.toggle()
            elif r < 74:
                self.bus.propagate()
            elif r < 82:
                self.transaction()
            elif r < 87:
                self.tick()
            elif r < 91:
                self.delete()
            elif r < 95:
                self.bus.checkpoint()  # in memory too: at() then restores its graph image
            elif r < 97 and self.path is not None:
                self.reopen()
            else:
                self.write()
        except (mmsb.GraphCycleError, mmsb.GraphError, mmsb.InvalidArgumentError):
            pass  # refused, and nothing changed: record() checks that the lsn did not move either
        self.record()


@pytest.mark.parametrize("seed", range(3))
def test_reopen_at_and_replay_report_the_live_stale_pages(tmp_path, seed):
    run = Run(np.random.default_rng(9100 + seed), tmp_path / "bus")
    for _ in range(220):
        run.step()
    assert sum(1 for s, _ in run.states.values() if s) > len(run.states) // 5, "too few stale states to prove much"
    for lsn, want in run.states.items():
        with run.bus.at(lsn) as old:
            assert stale_state(old) == want, f"bus.at({lsn})"
    last = run.bus.lsn
    run.bus.close()
    for lsn in list(run.states)[::7] + [last]:
        with mmsb.replay(tmp_path / "bus", to=lsn) as old:
            assert stale_state(old) == run.states[lsn], f"mmsb.replay(to={lsn})"
    with mmsb.open(tmp_path / "bus") as bus:
        assert stale_state(bus) == run.states[last]


def test_in_memory_time_travel_reports_the_live_stale_pages():
    run = Run(np.random.default_rng(9200))
    for _ in range(220):
        run.step()
    assert sum(1 for s, _ in run.states.values() if s) > len(run.states) // 5
    for lsn, want in run.states.items():
        with run.bus.at(lsn) as old:
            assert stale_state(old) == want, f"bus.at({lsn})"
    run.bus.close()


def test_control_child_stays_stale_across_reopen_until_propagate(tmp_path):
    with mmsb.Bus(tmp_path / "bus") as bus:
        a = bus.create_page(shape=(ELEMS,), dtype=F64, name="a")
        b = bus.create_page(shape=(ELEMS,), dtype=F64, name="b")
        bus.add_edge(a, b, kind="control")
        a.write(0, np.float64(1).tobytes())
        assert b.stale
        marked = bus.lsn
    with mmsb.open(tmp_path / "bus") as bus:
        assert [p.name for p in bus.stale_pages()] == ["b"]  # eager mode, and still stale
        assert bus.propagate() == 0 and bus.stale_pages() == []
        assert bus.lsn == marked + 1  # the acknowledgement is logged
        assert [p.name for p in bus.at(marked).stale_pages()] == ["b"]
    with mmsb.open(tmp_path / "bus") as bus:
        assert bus.stale_pages() == []


def names(pages):
    return [p.name for p in pages]


def test_a_page_that_loses_its_last_parent_is_stale_no_longer(tmp_path):
    """Control edges a -> c -> e. Once c has no parents, its mark goes: a mark kept on a page
    outside the graph (after e is deleted) made every checkpoint unreadable."""
    with mmsb.Bus(tmp_path / "bus") as bus:
        a, c, e = (bus.create_page(shape=(ELEMS,), dtype=F64, name=n) for n in "ace")
        bus.add_edge(a, c)
        bus.add_edge(c, e)
        a.write(0, np.float64(1).tobytes())
        assert names(bus.stale_pages()) == ["c", "e"]
        bus.remove_edge(a, c)
        assert names(bus.stale_pages()) == [] and not c.stale
        bus.delete_page(e)
        bus.checkpoint()
        with bus.at(bus.lsn) as old:
            assert old.stale_pages() == []
        assert bus.verify().ok
        last = bus.lsn
    with mmsb.replay(tmp_path / "bus") as old:
        assert old.lsn == last and old.stale_pages() == []
    with mmsb.open(tmp_path / "bus") as bus:
        assert bus.stale_pages() == [] and bus.lsn == last


def test_a_rolled_back_remove_edge_restores_the_mark():
    bus = mmsb.Bus()
    a, c = (bus.create_page(shape=(ELEMS,), dtype=F64, name=n) for n in "ac")
    bus.add_edge(a, c)
    a.write(0, np.float64(1).tobytes())
    with pytest.raises(RuntimeError):
        with bus.transaction():
            bus.remove_edge(a, c)
            assert not c.stale
            raise RuntimeError("abort")
    assert names(bus.stale_pages()) == ["c"]


def test_deleting_pages_keeps_stale_pages_answerable(tmp_path):
    """k -> p (control) marks p; c derives from k and p. Removing k -> p leaves p without parents,
    so unmarked; deleting c and p then leaves no mark behind (stale_pages() named the deleted
    page and raised PageNotFoundError)."""
    with mmsb.Bus(tmp_path / "bus") as bus:
        k, p, c = (bus.create_page(shape=(4,), dtype="int64", name=n) for n in "kpc")
        bus.add_edge(k, p)
        k.write(0, np.int64(1).tobytes())
        bus.depend(c, on=[k, p], fn=lambda out, x, y: np.add(x, y, out=out))
        bus.remove_edge(k, p)
        assert names(bus.stale_pages()) == []
        bus.delete_page(c)
        bus.delete_page(p)
        assert bus.stale_pages() == []
        with bus.at(bus.lsn) as old:
            assert old.stale_pages() == []
    with mmsb.open(tmp_path / "bus") as bus:
        assert bus.stale_pages() == []


def test_a_reattached_callable_that_loses_its_parent_agrees_with_the_log(tmp_path):
    def neg(out, x):
        out[:] = -x

    with mmsb.Bus(tmp_path / "bus") as bus:
        a, b, k = (bus.create_page(shape=(4,), dtype="int64", name=n) for n in "abk")
        bus.add_edge(b, k)
        bus.depend(b, on=a, fn=neg)
    with mmsb.open(tmp_path / "bus") as bus:
        bus.propagation = "deferred"
        bus.depend("b", on="a", fn=neg)  # re-attached: waits for a wave
        assert names(bus.stale_pages()) == ["b", "k"]
        bus.remove_edge("a", "b")  # b is derived no longer, and has no parents
        assert bus.stale_pages() == []
        with bus.at(bus.lsn) as old:
            assert old.stale_pages() == []
    with mmsb.open(tmp_path / "bus") as bus:
        assert bus.stale_pages() == []
