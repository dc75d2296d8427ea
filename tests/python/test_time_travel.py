"""Time travel on a bus directory: bus.at(lsn), mmsb.replay(path, to=), bus.history(page),
page.at(epoch), and read-only buses. The oracle is the state captured right after each commit."""

from __future__ import annotations

import os

import numpy as np
import pytest

import mmsb
from reference_model import capture_state
from test_differential import Driver


class RecordingDriver(Driver):
    """test_differential's random workload on a directory bus, recording the state at every lsn
    a commit ends on, with occasional checkpoints."""

    def __init__(self, path, durability, rng):
        super().__init__(2, rng)
        self.bus.close()
        self.path = str(path)
        self.bus = mmsb.Bus(self.path, durability=durability, threads=2)
        self.states = {0: capture_state(self.bus)}
        self.OPS = list(Driver.OPS) + [("checkpoint", 2)]

    def op_checkpoint(self):
        self.bus.checkpoint()
        return []

    def check_cheap(self, touched):
        super().check_cheap(touched)
        self.states[self.bus.lsn] = capture_state(self.bus)


@pytest.mark.parametrize("durability", ["none", "flush"])
def test_at_and_replay_equal_the_state_recorded_at_that_lsn(tmp_path, durability, rng):
    drv = RecordingDriver(tmp_path / "bus", durability, rng)
    drv.run(400)
    assert drv.counts.get("checkpoint", 0) > 0
    lsns = sorted(drv.states)
    picks = sorted(set(int(x) for x in rng.choice(lsns, 25)) | {0, lsns[-1]})
    for lsn in picks:
        with drv.bus.at(lsn) as old:
            assert old.read_only and old.lsn == lsn
            assert capture_state(old) == drv.states[lsn], lsn
        with mmsb.replay(drv.path, to=lsn) as old:
            assert capture_state(old) == drv.states[lsn], lsn
            assert old.recovery["log_last_lsn"] == lsns[-1]
    # the writing bus is untouched by all that reading
    assert capture_state(drv.bus) == drv.states[lsns[-1]]
    drv.bus.close()


def test_at_inside_a_batch_applies_its_first_rows(tmp_path):
    with mmsb.Bus(tmp_path / "b") as bus:
        p = bus.create_page(shape=(4,), dtype="float64")  # lsn 1
        p.write(0, np.float64(1).tobytes())  # lsn 2
        bus.checkpoint()
        vals = np.float64([10, 20, 30, 40])
        last = bus.apply_batch(mmsb.DeltaBatch([p.id] * 4, [0, 8, 16, 24], [8] * 4, vals.view(np.uint8)))
        assert last == 6
        for lsn, want in [(2, [1, 0, 0, 0]), (3, [10, 0, 0, 0]), (4, [10, 20, 0, 0]), (5, [10, 20, 30, 0])]:
            with bus.at(lsn) as old:
                assert old.lsn == lsn
                assert old.page(p.id).view().tolist() == want
                assert old.page(p.id).epoch == lsn - 1


@pytest.mark.parametrize("durability", ["none", "flush", "fsync"])
def test_at_enters_a_transaction_holding_one_batch_row_by_row(tmp_path, durability):
    # a transaction of one batch is logged as a transaction record, and its rows are still
    # separate deltas: time travel lands between them as in a batch record
    with mmsb.Bus(tmp_path / "b", durability=durability) as bus:
        p = bus.create_page(12)
        with bus.transaction():
            bus.apply_batch(mmsb.DeltaBatch([p.id] * 3, [0, 4, 8], [4] * 3, bytes(range(1, 13))))
        first = bus.lsn - 2
    want = bytes(range(1, 13))
    for k in range(3):
        with mmsb.replay(tmp_path / "b", to=first + k) as old:
            assert old.page(p.id).read(0, 12) == want[:4 * (k + 1)] + bytes(8 - 4 * k)
            assert old.page(p.id).epoch == k + 1


def test_at_never_splits_a_transaction_record(tmp_path):
    # create_page(data=) is one record (creation + content): lsn 1 alone does not exist on disk
    with mmsb.Bus(tmp_path / "b") as bus:
        bus.create_page(data=np.arange(3.0), name="x")
        with bus.at(1) as old:
            assert old.lsn == 0 and len(old) == 0
        with bus.at(2) as old:
            assert old.page("x").view().tolist() == [0.0, 1.0, 2.0]


def test_history_lists_every_delta_with_its_epoch_and_lsn(tmp_path, rng):
    drv = RecordingDriver(tmp_path / "bus", "flush", rng)
    drv.run(300)
    for p in drv.bus.pages():
        hist = drv.bus.history(p)
        assert [h.epoch for h in hist] == list(range(1, p.epoch + 1)), p.id
        assert [h.lsn for h in hist] == sorted(h.lsn for h in hist)
        assert len({h.lsn for h in hist}) == len(hist)
        if hist:
            assert hist[-1].lsn == p.last_lsn
        for h in hist:
            stamp = h.timestamp_ns
            assert h.source == "user" and stamp > 0
            assert all(off + length <= p.size for off, length in h.runs)
            if h.lsn in drv.states:  # a commit ended there: the page is at exactly that epoch
                assert drv.states[h.lsn]["pages"][p.id][1] == h.epoch
    drv.bus.close()


def test_page_at_every_epoch_equals_the_content_after_that_delta(tmp_path, rng):
    with mmsb.Bus(tmp_path / "b") as bus:
        p = bus.create_page(shape=(16,), dtype="int32", name="p")
        q = bus.create_page(64)
        seen = [p.view().copy()]
        for step in range(40):
            kind = step % 4
            if kind == 0:
                p.write(4 * int(rng.integers(16)), np.int32(step).tobytes())
            elif kind == 1:
                with p.edit() as a:
                    a[int(rng.integers(16))] = -step
            elif kind == 2:
                bus.apply(mmsb.Delta.runs(p, [0, 32], [np.int32(step).tobytes(), b"\x01\x02"]))
            else:  # a batch touching both pages, p twice
                bus.apply_batch(mmsb.DeltaBatch([p.id, q.id, p.id], [8, 0, 12], [4, 1, 4], bytes(range(9))))
                seen.append(None)  # the first of p's two rows: content checked only via the second
            if step % 10 == 5:
                bus.checkpoint()
            seen.append(p.view().copy())
        assert p.epoch == len(seen) - 1
        for epoch, want in enumerate(seen):
            if want is not None:
                assert np.array_equal(p.at(epoch), want), epoch
        assert p.at(0).dtype == np.int32 and not p.at(0).any()


def test_read_only_bus_refuses_every_change_and_stays_unchanged(tmp_path):
    with mmsb.Bus(tmp_path / "b") as bus:
        p = bus.create_page(data=np.arange(4, dtype=np.int64), name="p")
        with bus.at(bus.lsn) as old:
            before = capture_state(old)
            op = old.page("p")
            attempts = [
                lambda: old.create_page(8),
                lambda: old.delete_page(op),
                lambda: op.write(0, b"x"),
                lambda: op.update(np.zeros(4, np.int64)),
                lambda: op.set_metadata("k", "v"),
                lambda: old.apply(mmsb.Delta.at(op, 0, b"x")),
                lambda: old.apply_batch(mmsb.DeltaBatch([op.id], [0], [1], b"x")),
                lambda: old.checkpoint(),
                lambda: setattr(old, "propagation", "deferred"),
                lambda: old.propagate(),
                lambda: old.depend(old.create_page(32), on=op, fn=mmsb.ops.copy),
                lambda: old.add_edge(op, op, kind="control"),
                lambda: old.tick(),
            ]
            for attempt in attempts:
                with pytest.raises(mmsb.ReadOnlyError):
                    attempt()
            with pytest.raises(mmsb.ReadOnlyError):
                with op.edit() as a:
                    a[0] = 7
            assert capture_state(old) == before and old.propagation == "eager"
            assert isinstance(mmsb.ReadOnlyError("x"), PermissionError)
        p.write(0, b"\x09")  # the owner still writes


def test_time_travel_errors(tmp_path):
    mem = mmsb.Bus()
    mp = mem.create_page(8)
    with pytest.raises(mmsb.HistoryUnavailableError):
        mem.at(mem.lsn + 1)  # in memory too: the future does not exist
    with mem.at(mem.lsn) as view, pytest.raises(mmsb.HistoryUnavailableError):
        view.history(mp.id)  # a view of the past keeps no log of its own
    with mmsb.Bus(tmp_path / "b") as bus:
        p = bus.create_page(8)
        p.write(0, b"a")
        with pytest.raises(mmsb.HistoryUnavailableError):
            bus.at(bus.lsn + 1)
        with pytest.raises(mmsb.PageNotFoundError):
            bus.history(99)
        with pytest.raises(mmsb.HistoryUnavailableError):
            p.at(p.epoch + 1)
        for bad in (-1, 1.5, True):
            with pytest.raises(mmsb.InvalidArgumentError):
                p.at(bad)
        path = bus.path
    with pytest.raises(mmsb.HistoryUnavailableError):
        mmsb.replay(path, to=100)
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.replay(tmp_path / "missing")


def test_replay_runs_beside_the_writer_without_the_lock(tmp_path):
    bus = mmsb.Bus(tmp_path / "b", durability="none")
    p = bus.create_page(16, name="p")
    p.write(0, b"hello")
    with bus.at(bus.lsn) as old:  # at() hands pending records of durability=none to the OS
        assert old.page("p").read(0, 5) == b"hello"
    with mmsb.replay(bus.path) as old:
        assert old.lsn == bus.lsn and old.page("p").read(0, 5) == b"hello"
    with pytest.raises(mmsb.BusLockedError):
        mmsb.open(bus.path)
    bus.close()


WRITER_WITH_RETENTION = r"""
import sys
import mmsb
bus = mmsb.Bus(sys.argv[1], retention=1, durability=sys.argv[2])
pages = [bus.create_page(256) for _ in range(50)]
print("ready", flush=True)
i = 0
while True:
    i += 1
    for p in pages:
        p.write(0, bytes([i % 256]) * 256)
    bus.checkpoint()
"""


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["flush", "fsync"])
def test_replay_and_inspect_beside_a_writer_whose_retention_deletes_files(tmp_path, durability):
    """The writer's retention deletes checkpoints and segments a replay or inspect may have listed
    but not opened yet (about one replay in 4,000 here), and a read of the segment being appended
    may catch a record half written after a whole sync mark (fsync, about one in 5,000): both look
    again, and every replay shows a state the writer committed (each checkpoint round writes every
    page the same byte), every inspect a directory without damage."""
    import signal
    import subprocess
    import sys
    import time

    from mmsb.inspect_cmd import inspect_dir

    path = str(tmp_path / "b")
    writer = subprocess.Popen([sys.executable, "-c", WRITER_WITH_RETENTION, path, durability], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        replays, end = 0, time.monotonic() + 15
        while time.monotonic() < end:
            with mmsb.replay(path) as old:
                contents = {old.page(i).read(0, 256) for i in range(1, 51)}
            assert all(len(set(c)) == 1 for c in contents)
            look = inspect_dir(path)
            assert [f for f in look["checkpoints"] + look["segments"] if "error" in f] == []
            replays += 1
        assert replays > 500
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()


def test_verify_of_a_view_whose_past_the_writers_retention_removed_says_so(tmp_path):
    with mmsb.Bus(tmp_path / "b", retention=1) as writer:
        p = writer.create_page(8)
        p.write(0, b"a")
        writer.checkpoint()
        with mmsb.replay(tmp_path / "b") as view:
            assert view.verify()
            for b in (b"b", b"c"):
                p.write(0, b)
                writer.checkpoint()
            with pytest.raises(mmsb.HistoryUnavailableError):
                view.verify()
            assert view.page(p.id).read(0, 1) == b"a"  # the view itself is as it was


def test_history_survives_reopen_and_deleted_pages(tmp_path):
    with mmsb.Bus(tmp_path / "b") as bus:
        p = bus.create_page(8)
        p.write(0, b"a")
        p.write(1, b"b")
        pid = p.id
        bus.checkpoint()
        bus.delete_page(p)
    with mmsb.open(tmp_path / "b") as bus:
        hist = bus.history(pid)
        assert [(h.lsn, h.epoch, h.runs) for h in hist] == [(2, 1, [(0, 1)]), (3, 2, [(1, 1)])]


def covered(runs, offset):
    return any(o <= offset < o + n for o, n in runs)


def test_diff_covers_every_changed_byte_and_matches_history(tmp_path, rng):
    drv = RecordingDriver(tmp_path / "bus", "flush", rng)
    drv.run(250)
    lsns = sorted(drv.states)
    for _ in range(12):
        a, b = sorted(int(x) for x in rng.choice(lsns, 2))
        d = drv.bus.diff(a, b)
        sa, sb = drv.states[a]["pages"], drv.states[b]["pages"]
        for pid, (data_b, _) in sb.items():
            if pid not in sa:
                continue
            old = np.frombuffer(sa[pid][0], np.uint8)
            new = np.frombuffer(data_b, np.uint8)
            for off in np.flatnonzero(old != new):
                assert covered(d.get(pid, []), int(off)), (a, b, pid, int(off))
        for pid, runs in d.items():  # canonical: sorted, disjoint, non-touching, non-empty
            assert all(n > 0 for _, n in runs)
            assert all(x[0] + x[1] < y[0] for x, y in zip(runs, runs[1:]))
            hist = [h for h in drv.bus.history(pid) if a < h.lsn <= b]
            assert hist, (pid, a, b)
            for h in hist:
                for off, n in h.runs:
                    if n:
                        assert covered(runs, off) and covered(runs, off + n - 1)
    assert drv.bus.diff(lsns[-1], lsns[-1]) == {}
    drv.bus.close()


def test_diff_errors(tmp_path):
    with mmsb.Bus(tmp_path / "b") as bus:
        bus.create_page(8).write(0, b"a")
        with pytest.raises(mmsb.InvalidArgumentError):
            bus.diff(2, 1)
        with pytest.raises(mmsb.InvalidArgumentError):
            bus.diff(0, bus.lsn + 1)
        assert bus.diff(0, bus.lsn) == {1: [(0, 1)]}
    with mmsb.Bus() as mem:
        assert mem.diff(0, 0) == {}  # in memory the log is kept too
        with mem.at(0) as view, pytest.raises(mmsb.HistoryUnavailableError):
            view.diff(0, 0)  # a view of the past keeps no log of its own


def test_retention_keeps_the_newest_checkpoints_and_refuses_older_history(tmp_path):
    path = tmp_path / "b"
    states = {}
    with mmsb.Bus(path, retention=2) as bus:
        p = bus.create_page(64, name="p")
        for round_ in range(5):
            for i in range(10):
                p.write(i, bytes([round_ * 10 + i]))
            states[bus.lsn] = p.read(0, 64)
            bus.checkpoint()
        ckpts = sorted(f for f in os.listdir(path) if f.endswith(".ckpt"))
        assert [int(f[5:25]) for f in ckpts] == sorted(states)[-2:]
        oldest = sorted(states)[-2]
        segs = sorted(int(f[4:24]) for f in os.listdir(path) if f.startswith("seg-"))
        assert segs[0] == oldest + 1  # nothing before the oldest retained checkpoint is left
        for lsn, content in states.items():
            if lsn >= oldest:
                with bus.at(lsn) as old:
                    assert old.page("p").read(0, 64) == content
            else:
                with pytest.raises(mmsb.HistoryUnavailableError):
                    bus.at(lsn)
        with pytest.raises(mmsb.HistoryUnavailableError):
            bus.history(p)
        rep = bus.verify()
        assert rep.ok, rep.problems
    with mmsb.open(path) as bus:  # recovery from the retained checkpoints still works
        assert bus.page("p").read(0, 64) == states[max(states)]
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.Bus(tmp_path / "c", retention=0)


def test_page_at_gives_each_epoch_inside_a_transaction(tmp_path):
    # bus.at(lsn) keeps a transaction whole, but Page.at(e) is the page right after its e-th
    # delta, wherever that delta sits inside a transaction record.
    with mmsb.Bus(tmp_path / "bus") as bus:
        p = bus.create_page(shape=(2,), dtype="float64")
        q = bus.create_page(4)
        with bus.transaction():
            p.write(0, np.float64(1).tobytes())
            q.write(0, b"abcd")
            p.write(8, np.float64(2).tobytes())
            p.write(0, np.float64(3).tobytes())
        assert [list(p.at(e)) for e in range(4)] == [[0, 0], [1, 0], [1, 2], [3, 2]]
        assert bytes(q.at(1)) == b"abcd"
        inside = bus.history(p)[0].lsn  # the first change of the transaction record
        with bus.at(inside) as old:
            assert old.lsn < inside and old.page(p.id).epoch == 0  # whole record or nothing


def test_in_memory_bus_keeps_its_history(rng):
    # DESIGN §1: an in-memory bus keeps its log in memory, so history, time travel and diff work
    # as on a directory bus: compare every lsn with the states recorded while committing.
    bus = mmsb.Bus()
    states = {0: capture_state(bus)}
    pages = [bus.create_page(16) for _ in range(3)]
    states[bus.lsn] = capture_state(bus)
    for step in range(40):
        p = pages[int(rng.integers(3))]
        if step % 7 == 3:
            with bus.transaction():
                p.write(int(rng.integers(16)), b"t")
                pages[0].write(0, bytes([step]))
        elif step % 5 == 4:
            ids = [pages[int(rng.integers(3))].id for _ in range(3)]
            bus.apply_batch(mmsb.DeltaBatch(ids, [1, 2, 3], [1, 1, 1], bytes([step] * 3)))
        else:
            p.write(int(rng.integers(16)), bytes([step]))
        states[bus.lsn] = capture_state(bus)
    for lsn, want in states.items():
        with bus.at(lsn) as old:
            assert old.read_only and old.lsn == lsn and old.recovery["log_last_lsn"] == bus.lsn
            assert capture_state(old) == want, lsn
    for p in pages:
        hist = bus.history(p)
        assert [h.epoch for h in hist] == list(range(1, p.epoch + 1))
        assert np.array_equal(p.at(p.epoch), p.view())
        assert not p.at(0).any()
    assert set(bus.diff(0, bus.lsn)) == {p.id for p in pages}
    assert bus.verify().log_checked and bus.verify().ok
    assert bus.memory().log_bytes > 0
    bus.close()


def test_history_false_keeps_no_log(tmp_path):
    bus = mmsb.Bus(history=False)
    p = bus.create_page(8)
    p.write(0, b"x")
    p.write(0, b"y")
    for call in (lambda: bus.at(0), lambda: bus.history(p), lambda: bus.diff(0, bus.lsn), lambda: p.at(1)):
        with pytest.raises(mmsb.HistoryUnavailableError, match="history=False"):
            call()
    assert p.at(2).tobytes() == p.read(0, 8)  # the present is no history
    assert bus.memory().log_bytes == 0 and bus.verify().ok and not bus.verify().log_checked
    assert bus.provenance(p).root == (p.id, 2)  # provenance has its own index
    with pytest.raises(mmsb.InvalidArgumentError, match="in-memory"):
        mmsb.Bus(tmp_path / "b", history=False)
    assert not (tmp_path / "b").exists()
    bus.close()


def test_edit_of_a_read_only_bus_is_refused_on_entry(bus):
    p = bus.create_page(8)
    p.write(0, b"x")
    with bus.at(bus.lsn) as old:
        ran = []
        with pytest.raises(mmsb.ReadOnlyError, match="read-only view of an in-memory bus at lsn 2"):
            with old.page(p.id).edit() as a:
                ran.append(a)  # the block's work would be lost: it must not run
        assert ran == []


@pytest.mark.parametrize("on_disk", [True, False])
def test_diff_reads_only_its_range_so_a_retention_keeps_recent_diffs(tmp_path, on_disk):
    """diff(a, b) needs the log from a + 1 only: after a retention dropped the older log it still
    answers for what was kept, and refuses what was dropped."""
    bus = mmsb.Bus(tmp_path / "b", retention=1) if on_disk else mmsb.Bus(retention=1)
    p = bus.create_page(64)
    p.write(0, b"a")
    first = bus.checkpoint()
    p.write(8, b"bb")
    kept = bus.checkpoint()
    p.write(16, b"ccc")
    q = bus.create_page(8)
    q.write(1, b"d")
    bus.gc()
    assert bus.diff(kept, bus.lsn) == {p.id: [(16, 3)], q.id: [(1, 1)]}
    assert bus.diff(kept + 1, bus.lsn - 1) == {}  # the creation of q changed no byte
    assert bus.diff(bus.lsn, bus.lsn) == {}
    with pytest.raises(mmsb.HistoryUnavailableError):
        bus.diff(first, bus.lsn)
    with pytest.raises(mmsb.HistoryUnavailableError):
        bus.history(p)
    bus.close()
    if on_disk:  # reopened from the checkpoint kept: its index starts there
        with mmsb.open(tmp_path / "b") as again:
            assert again.diff(kept, again.lsn) == {p.id: [(16, 3)], q.id: [(1, 1)]}
            with pytest.raises(mmsb.HistoryUnavailableError, match="no longer starts at lsn 1"):
                again.diff(first, again.lsn)
