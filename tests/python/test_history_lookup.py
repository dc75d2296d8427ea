"""bus.history(page) is a lookup (the provenance index names the page's lsns, the log's record
index the records holding them), not a log scan. The oracles reach the log by other roads: the
full scan behind bus.diff(lsn - 1, lsn) gives each delta's page and bytes, the commit events
(delta_applied for the user's deltas, page_changed for propagated ones) each delta's lsn, epoch
and source, and the history read before a checkpoint and reopen must come back unchanged after
it, timestamps included (the first call after the reopen indexes the older log)."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb

SIZE = 64


def merged(runs):
    """bus.diff's form of one delta's runs: sorted, overlapping and touching runs joined."""
    out = []
    for off, n in sorted(r for r in runs if r[1]):
        if out and off <= out[-1][0] + out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][0] + out[-1][1], off + n) - out[-1][0])
        else:
            out.append((off, n))
    return out


class Workload:
    """Random creates, writes, multi-run deltas, batches, transactions (some rolled back) with
    waves, derived copies, deletes and ticks; on a directory bus also checkpoints and reopens."""

    def __init__(self, rng, path=None):
        self.rng = rng
        self.path = path
        self.bus = mmsb.Bus(path) if path else mmsb.Bus()
        self.events = {}  # page id -> [(lsn, epoch, source)]
        self.subscribe()
        self.live = []
        self.ids = set()
        self.reopens = 0

    def subscribe(self):
        for kind, source in (("delta_applied", "user"), ("page_changed", "propagation")):
            self.bus.subscribe(kind, lambda e, s=source: self.events.setdefault(e.page, []).append((e.lsn, e.epoch, s)))

    def pick(self):
        return self.live[int(self.rng.integers(len(self.live)))]

    def data(self, n):
        return self.rng.bytes(int(n))

    def create(self, with_data=False):
        if with_data:  # creation and content: one record, lsns of two ops
            p = self.bus.create_page(data=np.frombuffer(self.data(SIZE), np.uint8))
        else:
            p = self.bus.create_page(shape=(SIZE,), dtype="uint8")
        self.live.append(p.id)
        self.ids.add(p.id)
        return p.id

    def step(self):
        r = int(self.rng.integers(100))
        bus = self.bus
        if r < 5:
            self.create(bool(r % 2))
        elif r < 30:
            off = int(self.rng.integers(SIZE))
            bus.page(self.pick()).write(off, self.data(self.rng.integers(0, SIZE - off + 1)))
        elif r < 38:
            bus.apply(mmsb.Delta.runs(self.pick(), [int(self.rng.integers(20)), 40], [self.data(4), self.data(9)]))
        elif r < 52:
            n = int(self.rng.integers(1, 200))
            ids = [self.pick() for _ in range(n)]
            offs = [int(x) for x in self.rng.integers(0, SIZE - 8, n)]
            lens = [int(x) for x in self.rng.integers(0, 9, n)]
            bus.apply_batch(mmsb.DeltaBatch(ids, offs, lens, self.data(sum(lens))))
        elif r < 62:
            rollback = self.rng.integers(4) == 0
            a, b = self.pick(), self.pick()
            try:
                with bus.transaction():
                    bus.page(a).write(0, self.data(8))
                    made = bus.create_page(shape=(SIZE,), dtype="uint8")
                    bus.apply_batch(mmsb.DeltaBatch([a, b, made.id], [8, 16, 0], [4, 4, 4], self.data(12)))
                    bus.page(b).write(60, self.data(4))
                    if rollback:
                        raise KeyError("roll back")
            except KeyError:
                pass
            else:
                self.live.append(made.id)
                self.ids.add(made.id)
        elif r < 67 and len(self.live) > 4:
            parent = self.pick()
            child = self.create()
            bus.depend(child, on=[parent], fn=mmsb.ops.copy)
        elif r < 73:
            for _ in range(int(self.rng.integers(1, 12))):
                bus.submit(mmsb.Delta.at(self.pick(), 16, self.data(4)))
            bus.tick()
        elif r < 77 and len(self.live) > 6:
            pid = self.pick()
            if not bus.graph.children(pid):
                bus.delete_page(pid)
                self.live.remove(pid)
        elif r < 82 and self.path:
            bus.checkpoint()
        elif r < 85 and self.path:
            self.reopen()

    def reopen(self):
        before = {pid: self.bus.history(pid) for pid in self.ids}
        self.bus.close()
        self.bus = mmsb.open(self.path)
        self.subscribe()
        self.reopens += 1
        assert {pid: self.bus.history(pid) for pid in self.ids} == before

    def check(self, rng, deep_pages=4):
        """Every page's (lsn, epoch, source) against the events; every delta of a few pages
        against the full scan behind diff."""
        deep = set(int(x) for x in rng.choice(sorted(self.ids), min(deep_pages, len(self.ids)), replace=False))
        for pid in sorted(self.ids):
            hist = self.bus.history(pid)
            assert [(h.lsn, h.epoch, h.source) for h in hist] == self.events.get(pid, []), pid
            assert all(h.timestamp_ns > 0 for h in hist)
            if pid in self.live:
                assert len(hist) == self.bus.page(pid).epoch
            if pid in deep:
                for h in hist:
                    assert self.bus.diff(h.lsn - 1, h.lsn) == {pid: merged(h.runs)}, (pid, h)


@pytest.mark.parametrize("kind", ["memory", "directory"])
def test_history_lookup_equals_the_log_read_other_ways(tmp_path, rng, kind):
    w = Workload(rng, str(tmp_path / "bus") if kind == "directory" else None)
    for _ in range(6):
        w.create(True)
    for step in range(600):
        w.step()
        if step % 60 == 59:
            w.check(rng)
    w.check(rng, deep_pages=len(w.ids))
    if kind == "directory":
        assert w.reopens > 0
        w.bus.checkpoint()
        w.reopen()
        w.check(rng)
    assert any(s == "propagation" for v in w.events.values() for _, _, s in v)
    w.bus.close()


def test_history_is_refused_once_the_retention_removed_the_log_start(tmp_path):
    path = tmp_path / "bus"
    with mmsb.Bus(path, retention=2) as bus:
        p = bus.create_page(8)
        for i in range(100):
            p.write(0, bytes([i]))
        assert [h.epoch for h in bus.history(p)] == list(range(1, 101))
        index = bus.memory().index_bytes
        bus.checkpoint()  # the log before the oldest kept checkpoint goes, and its index entries
        assert bus.memory().index_bytes < index
        lsn = bus.lsn
        with pytest.raises(mmsb.HistoryUnavailableError, match="lsn 1"):
            bus.history(p)
        assert bus.lsn == lsn and p.epoch == 100
    with mmsb.open(path) as bus, pytest.raises(mmsb.HistoryUnavailableError):
        bus.history(1)
