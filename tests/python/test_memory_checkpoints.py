"""In-memory buses keep checkpoints too (DESIGN §1: "an in-memory bus keeps its log in memory ...
retention bounds it"): bus.checkpoint() keeps the bytes a checkpoint file would hold, time travel
starts from the nearest one, and retention=N drops the log and checkpoints older than the oldest
it keeps, refusing time travel there exactly as a directory bus does. The oracle is the state
captured right after each commit."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from reference_model import capture_state
from test_differential import Driver


class RecordingMemoryDriver(Driver):
    """test_differential's random workload on an in-memory bus, with checkpoints, recording the
    state at every lsn a commit ends on."""

    def __init__(self, rng, retention=None):
        super().__init__(2, rng)
        self.bus.close()
        self.bus = mmsb.Bus(threads=2, retention=retention)
        self.states = {0: capture_state(self.bus)}
        self.checkpoints: list[int] = []
        self.OPS = list(Driver.OPS) + [("checkpoint", 3)]

    def op_checkpoint(self):
        self.checkpoints.append(self.bus.checkpoint())
        return []

    def check_cheap(self, touched):
        super().check_cheap(touched)
        self.states[self.bus.lsn] = capture_state(self.bus)


def test_at_from_in_memory_checkpoints_equals_the_recorded_state(rng):
    drv = RecordingMemoryDriver(rng)
    drv.run(400)
    assert len(drv.checkpoints) > 2
    lsns = sorted(drv.states)
    picks = sorted(set(int(x) for x in rng.choice(lsns, 30)) | {0, lsns[-1]} | set(drv.checkpoints))
    for lsn in picks:
        with drv.bus.at(lsn) as old:
            assert old.read_only and old.lsn == lsn
            assert capture_state(old) == drv.states[lsn], lsn
    assert capture_state(drv.bus) == drv.states[lsns[-1]]
    rep = drv.bus.verify()
    assert rep.ok and rep.log_checked, rep.problems


def test_in_memory_retention_keeps_the_newest_checkpoints_and_refuses_older_history(rng):
    kept = mmsb.Bus(retention=2)
    full = mmsb.Bus()  # the same commits, all history kept: what retention must save
    states = {}
    for bus in (kept, full):
        p = bus.create_page(4096, name="p")
        for round_ in range(6):
            for i in range(50):
                p.write(8 * i, bytes([(round_ * 50 + i) % 256]) * 8)
            states[bus.lsn] = p.read(0, 4096)
            assert bus.checkpoint() == bus.lsn  # a checkpoint commits nothing
    oldest = sorted(states)[-2]
    p = kept.page("p")
    for lsn, content in states.items():
        if lsn >= oldest:
            with kept.at(lsn) as old:
                assert old.page("p").read(0, 4096) == content
        else:
            with pytest.raises(mmsb.HistoryUnavailableError, match="older than the history"):
                kept.at(lsn)
    with kept.at(kept.lsn - 3) as old:  # between checkpoints: from the newest one before it
        assert old.lsn == kept.lsn - 3
    for call in (lambda: kept.history(p), lambda: kept.diff(0, kept.lsn)):
        with pytest.raises(mmsb.HistoryUnavailableError, match="retention|still holds"):
            call()
    assert kept.memory().log_bytes < full.memory().log_bytes
    assert kept.verify().ok and full.verify().ok
    assert kept.gc().bytes_freed >= 0 and kept.verify().ok  # gc applies it again: nothing changes
    assert capture_state(kept) == capture_state(full)


def test_checkpoint_and_retention_need_the_in_memory_log():
    with pytest.raises(mmsb.InvalidArgumentError, match="history=False"):
        mmsb.Bus(history=False, retention=2)
    with pytest.raises(mmsb.InvalidArgumentError, match=">= 1"):
        mmsb.Bus(retention=0)
    bus = mmsb.Bus(history=False)
    with pytest.raises(mmsb.HistoryUnavailableError, match="history=False"):
        bus.checkpoint()


def test_in_memory_checkpoint_is_an_event_and_changes_no_state():
    bus = mmsb.Bus()
    seen = []
    bus.subscribe("checkpoint", lambda e: seen.append(e.lsn))
    p = bus.create_page(data=np.arange(16.0))
    before = capture_state(bus)
    lsn = bus.checkpoint()
    assert seen == [lsn] == [bus.lsn] and capture_state(bus) == before
    p.write(0, np.float64(-1).tobytes())
    with bus.at(lsn) as old:  # restored from the checkpoint's bytes, not replayed
        assert old.page(p.id).view().tolist() == list(np.arange(16.0))
        assert old.recovery["checkpoint_lsn"] == lsn


def retained_bus(where, tmp_path, retention):
    return mmsb.Bus(retention=retention) if where == "memory" else mmsb.Bus(tmp_path / "bus", retention=retention)


@pytest.mark.parametrize("where", ["memory", "directory"])
def test_retention_drops_the_log_before_the_oldest_checkpoint_also_below_n(tmp_path, where):
    """The rule of docs/api.md ("the newest N checkpoints and the log after the oldest of them")
    in memory as in a directory, while fewer than N checkpoints exist."""
    with retained_bus(where, tmp_path, 3) as bus:
        p = bus.create_page(8)  # lsn 1
        p.write(0, b"A")  # lsn 2, epoch 1
        assert bus.checkpoint() == 2
        p.write(0, b"B")  # lsn 3, epoch 2
        bus.gc()
        for call in (lambda: bus.at(1), lambda: bus.history(p), lambda: bus.diff(0, 3)):
            with pytest.raises(mmsb.HistoryUnavailableError):
                call()
        with bus.at(2) as old:
            assert old.page(p.id).read(0, 1) == b"A"
        assert p.at(1).tobytes()[:1] == b"A" and p.at(2).tobytes()[:1] == b"B"


@pytest.mark.parametrize("where", ["memory", "directory"])
def test_a_repeated_checkpoint_costs_no_history(tmp_path, where):
    with retained_bus(where, tmp_path, 2) as bus:
        bus.checkpoint()  # lsn 0
        p = bus.create_page(8)
        p.write(0, b"a")
        assert bus.checkpoint() == bus.checkpoint() == 2  # the same state twice: one checkpoint
        with bus.at(1) as old:
            assert old.page(p.id).read(0, 1) == b"\0"


@pytest.mark.parametrize("where", ["memory", "directory"])
def test_page_at_reaches_every_epoch_the_retention_keeps(tmp_path, where):
    with retained_bus(where, tmp_path, 1) as bus:
        p = bus.create_page(8)  # lsn 1
        quiet = bus.create_page(8)  # lsn 2
        quiet.write(0, b"q")  # lsn 3, its last delta: before every retained checkpoint
        p.write(0, b"A")  # lsn 4, epoch 1
        bus.checkpoint()
        p.write(0, b"B")  # lsn 5, epoch 2
        bus.checkpoint()  # retention 1: the log up to lsn 5 goes
        p.write(0, b"C")  # lsn 6, epoch 3
        quiet.write(0, b"r")  # lsn 7, epoch 2
        assert [p.at(e).tobytes()[:1] for e in (2, 3)] == [b"B", b"C"]
        assert quiet.at(1).tobytes()[:1] == b"q"  # from lsn 3 to 6: the retained part shows it
        assert p.at(0).tobytes() == bytes(8)
        with pytest.raises(mmsb.HistoryUnavailableError):
            p.at(1)  # only lsn 4 showed it, and the retention dropped it


def test_page_at_answers_the_same_after_a_reopen(tmp_path):
    """A reopened bus indexes only the log after the checkpoint it started from; the epochs
    between that and the oldest checkpoint the retention kept are still reached, and those
    before it refused, as on the bus before the close."""
    path = str(tmp_path / "b")
    bus = mmsb.Bus(path, retention=2)
    p = bus.create_page(8, name="p")
    for step, byte in enumerate(b"ABCDEFG"):
        p.write(0, bytes([byte]))
        if step % 2 == 1:
            bus.checkpoint()

    def answers(page):
        out = []
        for e in range(page.epoch + 1):
            try:
                out.append(page.at(e).tobytes()[:1])
            except mmsb.HistoryUnavailableError:
                out.append(None)
        return out

    live = answers(p)
    assert None in live and live[-3:] == [b"E", b"F", b"G"]
    bus.close()
    with mmsb.open(path, retention=2) as again:
        assert again.recovery["checkpoint_lsn"] > 2  # the index starts after the oldest kept
        assert answers(again.page("p")) == live
