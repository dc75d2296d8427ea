"""Group commit (DESIGN §1 "Concurrent commits are group-committed"): with durability='fsync',
Python threads committing at once share fdatasyncs. Every call that returned is durable (the
reopened directory has it), each thread's own writes land in its order, and events arrive in lsn
order. The failure side (a failed sync rolls back every commit it covered) is tested in C++
(tests/cpp/engine/GroupCommitTest.cpp), where a sync can be held and failed deterministically.
"""

from __future__ import annotations

import threading

import numpy as np

import mmsb

THREADS = 4
STEPS = 150
PAGE = 512


def _worker(bus: mmsb.Bus, page: mmsb.Page, seed: int, model: np.ndarray, errors: list) -> None:
    """Commits STEPS random changes to its own page in every form, mirroring them in `model`."""
    rng = np.random.default_rng(seed)
    try:
        for step in range(STEPS):
            data = rng.integers(0, 256, int(rng.integers(1, 48)), dtype=np.uint8)
            off = int(rng.integers(0, PAGE - data.size + 1))
            kind = step % 4
            if kind == 0:
                page.write(off, data.tobytes())
            elif kind == 1:
                bus.apply_batch(mmsb.DeltaBatch(np.array([page.id], dtype=np.uint64),
                                                np.array([off], dtype=np.uint64),
                                                np.array([data.size], dtype=np.uint64), data))
            elif kind == 2:
                with bus.transaction():
                    page.write(off, data.tobytes())
                    page.set_metadata("step", str(step))
            else:
                bus.apply(mmsb.Delta.at(page, off, data.tobytes()))
            model[off:off + data.size] = data
    except BaseException as e:  # reported by the test, not lost in the thread
        errors.append(e)


def test_concurrent_fsync_writers_are_all_durable(tmp_path):
    path = str(tmp_path / "bus")
    models = [np.zeros(PAGE, dtype=np.uint8) for _ in range(THREADS)]
    events: list = []
    errors: list = []
    with mmsb.Bus(path, durability="fsync") as bus:
        pages = [bus.create_page(PAGE, name=f"p{i}") for i in range(THREADS)]
        bus.subscribe("delta_applied", lambda e: events.append(e.lsn))
        threads = [threading.Thread(target=_worker, args=(bus, pages[i], i, models[i], errors))
                   for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for p, want in zip(pages, models):
            assert bytes(p.view()) == want.tobytes()
            assert p.epoch == STEPS
        final_lsn = bus.lsn
        assert bus.verify().ok
    # Every acknowledged commit is in the log; each was delivered exactly once, in lsn order.
    assert len(events) == THREADS * STEPS
    assert events == sorted(events) and len(set(events)) == len(events)
    with mmsb.open(path) as reopened:
        assert reopened.lsn == final_lsn
        for i, want in enumerate(models):
            p = reopened.page(f"p{i}")
            assert bytes(p.view()) == want.tobytes()
            assert p.epoch == STEPS
            assert p.metadata["step"] == str(max(s for s in range(STEPS) if s % 4 == 2))


def test_fsync_commit_from_one_thread_is_durable_before_it_returns(tmp_path):
    """A single writer leads its own sync: what a call returned for is in the files at once."""
    path = str(tmp_path / "bus")
    bus = mmsb.Bus(path, durability="fsync")
    p = bus.create_page(64)
    p.write(0, b"abc")
    bus.apply_batch(mmsb.DeltaBatch(np.array([p.id], dtype=np.uint64), np.array([8], dtype=np.uint64),
                                    np.array([2], dtype=np.uint64), np.frombuffer(b"xy", dtype=np.uint8)))
    # A read-only replay beside the writer sees what the files hold now.
    seen = mmsb.replay(path)
    assert seen.page(p.id).read(0, 10) == b"abc\0\0\0\0\0xy"
    bus.close()


def test_fsync_commits_in_deferred_mode_only_mark_stale(tmp_path):
    """Group commit runs each write as a transaction; that must not run the deferred wave."""
    with mmsb.Bus(str(tmp_path / "bus"), durability="fsync") as bus:
        a = bus.create_page(64, dtype="float64")
        b = bus.create_page(64, dtype="float64")
        bus.depend(b, on=[a], fn=mmsb.ops.copy)
        bus.propagation = "deferred"
        a.write(0, np.float64(3.0).tobytes())
        bus.apply_batch(mmsb.DeltaBatch(np.array([a.id], dtype=np.uint64), np.array([8], dtype=np.uint64),
                                        np.array([8], dtype=np.uint64), np.float64(4.0).tobytes()))
        assert b.stale and b.epoch == 0 and not b.view().any()
        assert bus.propagate() == 1
        assert not b.stale and b.view()[:2].tolist() == [3.0, 4.0]
