"""Bus(clock=...): commit timestamps from a callable instead of the wall clock. Timestamps are the
only field of the log the commits do not decide, so with a deterministic clock the bus directory
is a function of the commits alone: the same commits leave the same bytes whatever the thread
count. History shows the clock's values; a clock that raises, or returns anything but an int
>= 0, fails the commit it was called for and changes nothing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import mmsb
from log_files import files_of


def counting_clock(start: int = 1_000_000_000, step: int = 1_000):
    return itertools.count(start, step).__next__


def run_workload(path, threads: int) -> None:
    """Writes, batches big enough for the parallel apply, a transaction, a checkpoint and waves."""
    rng = np.random.default_rng(11)
    with mmsb.Bus(path, threads=threads, clock=counting_clock()) as bus:
        roots = [bus.create_page(shape=(4096,), dtype="float64") for _ in range(8)]
        sums = []
        for i in range(6):
            s = bus.create_page(shape=(4096,), dtype="float64")
            bus.depend(s, on=[roots[i], roots[i + 1], roots[(i + 5) % 8]], fn=mmsb.ops.reduce("sum_product"))
            sums.append(s)
        for step in range(30):
            ids = rng.integers(0, len(roots), 20_000)
            offsets = rng.integers(0, 4096, 20_000) * 8
            payload = rng.standard_normal(20_000).tobytes()
            bus.apply_batch(mmsb.DeltaBatch([roots[k].id for k in ids], offsets, [8] * 20_000, payload))
            roots[step % 8].write(0, rng.standard_normal(4).tobytes())
            if step == 10:
                bus.checkpoint()
            if step == 20:
                with bus.transaction():
                    roots[0].write(8, b"\x01" * 8)
                    roots[1].write(8, b"\x02" * 8)


def test_the_same_commits_and_clock_leave_the_same_directory_bytes_at_any_thread_count(tmp_path):
    dirs = []
    for threads in (1, 2):
        path = tmp_path / f"t{threads}"
        run_workload(path, threads)
        dirs.append({name: v for name, v in files_of(path).items() if name != "LOCK"})
    assert len(dirs[0]) >= 3  # segment(s) and a checkpoint
    assert dirs[0] == dirs[1]


def test_history_shows_the_clock_and_reopening_keeps_it(tmp_path):
    with mmsb.Bus(tmp_path / "b", clock=counting_clock(5_000, 10)) as bus:
        a = bus.create_page(8, data=b"abcdefgh")  # 5000
        a.write(0, b"A")  # 5010
        a.write(1, b"B")  # 5020
        assert [h.timestamp_ns for h in bus.history(a)] == [5_000, 5_010, 5_020]
    with mmsb.open(tmp_path / "b", clock=counting_clock(9_000, 1)) as bus:
        a = bus.page(a.id)
        a.write(2, b"C")
        assert [h.timestamp_ns for h in bus.history(a)] == [5_000, 5_010, 5_020, 9_000]


def test_commits_sharing_a_timestamp_keep_their_own_history(tmp_path):
    """With a clock that stands still, consecutive commits of one source continue one run of the
    history index (next lsns, same time): writes and batches between them must still leave every
    page the history, time travel and, reopened, the history a ticking clock gives them."""
    def run(path, clock):
        with mmsb.Bus(path, clock=clock) as bus:
            a, b, c = (bus.create_page(16) for _ in range(3))
            a.write(0, b"x")
            bus.apply_batch(mmsb.DeltaBatch([b.id, a.id, c.id], [0, 4, 8], [2, 2, 2], b"112233"))
            bus.apply_batch(mmsb.DeltaBatch([c.id, b.id, c.id], [0, 0, 1], [1, 1, 1], b"456"))
            c.write(15, b"z")
            pages = (a, b, c)
            live = [[(h.lsn, h.epoch, h.source, h.runs) for h in bus.history(p)] for p in pages]
            past = [[bytes(p.at(e)) for e in range(p.epoch + 1)] for p in pages]
        with mmsb.open(path) as bus:
            again = [[(h.lsn, h.epoch, h.source, h.runs) for h in bus.history(bus.page(p.id))] for p in pages]
        return live, past, again

    still = run(tmp_path / "still", lambda: 7)
    ticking = run(tmp_path / "ticking", counting_clock())
    assert still == ticking
    assert still[0] == still[2]
    assert [h[0] for h in still[0][2]] == [7, 8, 10, 11]  # page c: its three batch rows and its write


@pytest.mark.parametrize("bad", [
    pytest.param(lambda: 1 / 0, id="raises"),
    pytest.param(lambda: -1, id="negative"),
    pytest.param(lambda: "now", id="not-an-int"),
    pytest.param(lambda: 1.5, id="float"),
])
def test_a_failing_clock_fails_the_commit_and_changes_nothing(bad, state):
    good = True
    inner = counting_clock()

    def clock():
        return inner() if good else bad()

    bus = mmsb.Bus(clock=clock)
    a = bus.create_page(shape=(4,), dtype="float64", data=np.arange(4.0))
    b = bus.create_page(shape=(4,), dtype="float64")
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    before, lsn, pages = state(bus), bus.lsn, len(bus)
    good = False
    with pytest.raises(mmsb.errors.InvalidArgumentError, match="clock"):
        a.write(0, np.float64(7.0).tobytes())
    with pytest.raises(mmsb.errors.InvalidArgumentError, match="clock"):
        bus.apply_batch(mmsb.DeltaBatch([a.id], [8], [8], np.float64(8.0).tobytes()))
    with pytest.raises(mmsb.errors.InvalidArgumentError, match="clock"):
        bus.create_page(8, data=b"12345678")
    assert state(bus) == before and bus.lsn == lsn and len(bus) == pages
    assert len(bus.history(a)) == 1
    good = True
    a.write(0, np.float64(9.0).tobytes())
    assert bus.lsn == lsn + 2  # the write and its wave
    assert np.asarray(b)[0] == 9.0


def test_a_clock_that_calls_into_the_bus_fails_its_commit_instead_of_deadlocking(state):
    reenter = False
    holder = []

    def clock():
        return len(holder[0]) if reenter else 7

    bus = mmsb.Bus(clock=clock)
    holder.append(bus)
    a = bus.create_page(8, data=b"abcdefgh")
    before, lsn = state(bus), bus.lsn
    reenter = True
    with pytest.raises(mmsb.errors.InvalidArgumentError, match="clock called into the bus"):
        a.write(0, b"x")
    assert state(bus) == before and bus.lsn == lsn
    reenter = False
    a.write(0, b"y")
    assert bus.lsn == lsn + 1


def test_a_clock_that_is_not_callable_is_refused():
    with pytest.raises(mmsb.errors.InvalidArgumentError, match="clock must be None or a callable"):
        mmsb.Bus(clock=12)
