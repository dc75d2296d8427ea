"""The ingest queue and tick from Python: submit from any thread, tick commits in submission
order as one record, invalid submissions are reported (not applied), a full queue raises or
blocks with the GIL released, a failing tick loses nothing, and producers on several threads
lose or duplicate nothing (checked against a NumPy model)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import mmsb
from child_script import script_finishes


def u64(x: int) -> bytes:
    return np.uint64(x).tobytes()


def test_submit_then_tick_applies_in_order(bus, state):
    p = bus.create_page(64)
    q = bus.create_page(64)
    bus.submit(mmsb.Delta.at(p, 0, b"\x01" * 8))
    bus.submit(mmsb.DeltaBatch([q.id, p.id], [0, 0], [4, 2], b"\x02" * 4 + b"\x03" * 2))
    bus.submit(mmsb.Delta.runs(p, [8, 16], [b"\x04", b"\x05"]))
    bus.submit(mmsb.Delta.at(p, 0, b"\x06", expect_epoch=3))  # sees the three before it
    assert bus.queue_depth == 4
    before = bus.lsn
    assert p.epoch == 0  # nothing is applied before the tick
    r = bus.tick()
    assert isinstance(r, mmsb.TickReport)
    assert (r.tick, r.submissions, r.rejected, r.deltas_applied) == (1, 4, 0, 5)
    assert (r.first_lsn, r.last_lsn) == (before, before + 5)
    assert bytes(p.read(0, 17)) == b"\x06\x03" + b"\x01" * 6 + b"\x04" + b"\x00" * 7 + b"\x05"
    assert bytes(q.read(0, 4)) == b"\x02" * 4
    assert p.epoch == 4 and q.epoch == 1
    assert bus.queue_depth == 0
    assert set(r.phase_ns) == {"drain", "apply", "propagate", "validate", "gc"}
    # Structure, not speed: the phases are disjoint sub-intervals of the tick's total.
    assert sum(r.phase_ns.values()) <= r.total_ns
    s = bus.stats()
    assert (s.submits, s.ticks, s.submits_rejected) == (4, 1, 0)
    assert bus.verify().ok


def test_submitted_bytes_are_copied(bus):
    p = bus.create_page(8)
    payload = np.full(8, 7, dtype=np.uint8)
    bus.submit(mmsb.DeltaBatch([p.id], [0], [8], payload))
    payload[:] = 9  # changing the caller's buffer after submit() must not matter
    bus.tick()
    assert bytes(p.read(0, 8)) == b"\x07" * 8


def test_invalid_submissions_are_reported_not_applied(bus):
    p = bus.create_page(16)
    bus.submit(mmsb.Delta.at(p, 0, b"\x01"))
    bus.submit(mmsb.Delta.at(999, 0, b"\x01"))
    bus.submit(mmsb.Delta.at(p, 15, b"\x01\x02"))
    bus.submit(mmsb.Delta.at(p, 1, b"\x02", expect_epoch=0))
    bus.submit(mmsb.Delta.at(p, 2, b"\x03"))
    r = bus.tick()
    assert (r.submissions, r.rejected, r.deltas_applied) == (5, 3, 2)
    assert "submission 2" in r.rejections[0] and "999" in r.rejections[0]
    assert "epoch" in r.rejections[2]
    assert bytes(p.read(0, 4)) == b"\x01\x00\x03\x00"
    assert bus.stats().submits_rejected == 3


def test_submit_refuses_what_is_not_a_delta_and_foreign_deltas(bus):
    p = bus.create_page(8)
    with pytest.raises(mmsb.InvalidArgumentError, match="Delta or mmsb.DeltaBatch"):
        bus.submit(b"bytes")
    other = mmsb.Bus()
    q = other.create_page(8)
    with pytest.raises(mmsb.PageNotFoundError, match="another bus"):
        bus.submit(mmsb.Delta.at(q, 0, b"\x01"))
    with pytest.raises(mmsb.InvalidDeltaError):
        bus.submit(mmsb.DeltaBatch([p.id], [0], [4], b"\x01"))  # lengths and payload disagree
    assert bus.queue_depth == 0
    other.close()


def test_full_queue_raises_or_blocks_with_the_gil_released(state):
    bus = mmsb.Bus(queue_capacity=3)
    assert bus.queue_capacity == 4  # rounded up to a power of two
    p = bus.create_page(64)
    for i in range(4):
        bus.submit(mmsb.Delta.at(p, 8 * i, u64(i)), block=False)
    before = state(bus)
    with pytest.raises(mmsb.QueueFullError, match="full"):
        bus.submit(mmsb.Delta.at(p, 0, b"\x09"), block=False)
    assert state(bus) == before and bus.queue_depth == 4
    done = threading.Event()

    def producer():
        bus.submit(mmsb.Delta.at(p, 56, u64(42)))  # blocks until the tick below drains the ring
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.05)  # the main thread keeps running Python while the producer waits
    assert not done.is_set()
    assert bus.tick().deltas_applied == 4
    t.join(timeout=10)
    assert done.is_set()
    assert bus.tick().deltas_applied == 1
    assert np.frombuffer(p.read(56, 8), np.uint64)[0] == 42
    assert bus.stats().queue_high_water == 4
    bus.close()


def test_close_wakes_a_blocked_producer_with_closed_error():
    bus = mmsb.Bus(queue_capacity=1)
    p = bus.create_page(8)
    bus.submit(mmsb.Delta.at(p, 0, b"\x01"))
    errors = []

    def producer():
        try:
            bus.submit(mmsb.Delta.at(p, 0, b"\x02"))
        except mmsb.MmsbError as e:
            errors.append(e)

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.05)
    bus.close()
    t.join(timeout=10)
    assert len(errors) == 1 and isinstance(errors[0], mmsb.ClosedError)
    assert bus.stats().submits_discarded == 1


INTERRUPTED_SUBMIT = r"""
import os, signal, threading, time
import mmsb
# A process started in the background of a non-interactive shell (CI, nohup) inherits SIGINT
# ignored, and Python keeps it so: Ctrl-C's handler is installed explicitly.
signal.signal(signal.SIGINT, signal.default_int_handler)
bus = mmsb.Bus(queue_capacity=1)
p = bus.create_page(8)
bus.submit(mmsb.Delta.at(p, 0, b"\x01"))
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    bus.submit(mmsb.Delta.at(p, 0, b"\x02"))  # the ring is full and nobody ticks
except KeyboardInterrupt:
    assert bus.queue_depth == 1 and bus.stats()["submits"] == 1
    assert bus.tick().deltas_applied == 1 and p.read(0, 1) == b"\x01"
    bus.submit(mmsb.Delta.at(p, 0, b"\x03"))  # room again: queued at once
    assert bus.tick().deltas_applied == 1 and p.read(0, 1) == b"\x03"
    print("interrupted")
"""


def test_ctrl_c_interrupts_a_submit_blocked_on_the_main_thread():
    script_finishes(INTERRUPTED_SUBMIT, "a submit blocked on a full ring ignored Ctrl-C", timeout=30,
                    says="interrupted")


def test_failing_tick_changes_nothing_and_keeps_its_submissions(bus, state):
    a = bus.create_page(shape=4, dtype=np.float64)
    c = bus.create_page(shape=4, dtype=np.float64)
    refuse = [False]

    def double(out, x):
        if refuse[0]:
            raise RuntimeError("refused")
        out[:] = 2 * x

    bus.depend(c, on=[a], fn=double)
    bus.submit(mmsb.Delta.at(a, 0, np.float64(1.5).tobytes()))
    refuse[0] = True
    before = state(bus)
    with pytest.raises(mmsb.PropagationError, match=f"page {c.id}"):
        bus.tick()
    assert state(bus) == before
    assert bus.queue_depth == 1 and bus.stats().ticks == 0
    refuse[0] = False
    r = bus.tick()
    assert (r.deltas_applied, r.derived_deltas) == (1, 1)
    assert c.view()[0] == 3.0 and bus.queue_depth == 0


def test_tick_runs_the_wave_in_deferred_mode_and_emits_a_tick_event(bus):
    a = bus.create_page(shape=4, dtype=np.int64)
    c = bus.create_page(shape=4, dtype=np.int64)
    bus.depend(c, on=[a], fn=mmsb.ops.copy)
    bus.propagation = "deferred"
    ticks = []
    bus.subscribe("tick", ticks.append)
    bus.submit(mmsb.Delta.at(a, 0, np.int64(5).tobytes()))
    r = bus.tick()
    assert r.recomputes == 1 and c.view()[0] == 5
    assert c not in bus.stale_pages()
    assert [e.kind for e in ticks] == ["tick"] and ticks[0].lsn == r.last_lsn


def test_a_tick_ends_alike_in_both_modes_and_its_history_agrees(tmp_path):
    # a control child a submission reaches is acknowledged by that tick in either mode (in eager
    # mode its wave used to mark it after the acknowledgement); derived pages are recomputed
    results = {}
    for mode in ("eager", "deferred"):
        with mmsb.Bus(tmp_path / mode) as bus:
            a, k, c = (bus.create_page(shape=4, dtype=np.int64, name=n) for n in "akc")
            bus.add_edge(a, k, kind="control")
            bus.depend(c, on=[a], fn=mmsb.ops.copy)
            bus.propagation = mode
            stale = []
            bus.subscribe("page_stale", lambda e: stale.append(e.page))
            bus.submit(mmsb.Delta.at(a, 0, np.int64(7).tobytes()))
            r = bus.tick()
            assert bus.stale_pages() == [] and c.view()[0] == 7 and r.recomputes == 1
            assert bus.propagation == mode
            with bus.at(bus.lsn) as old:
                assert old.stale_pages() == []
            results[mode] = (bus.lsn, sorted(stale), k.epoch, c.epoch)
        with mmsb.open(tmp_path / mode) as again:
            assert again.stale_pages() == []
    assert results["eager"] == results["deferred"]


def test_budgets_overruns_and_sampled_validation(bus):
    a = bus.create_page(shape=8, dtype=np.float64)
    c = bus.create_page(shape=8, dtype=np.float64)
    calls = [0]

    def impure(out, x):
        calls[0] += 1
        out[:] = x + calls[0]  # depends on how often it ran: not a function of its parent

    bus.depend(c, on=[a], fn=impure)
    bus.configure_tick(apply=1e-9, validate_sample=5)
    opts = bus.tick_options()
    assert opts["apply"] == pytest.approx(1e-9) and opts["validate_sample"] == 5 and opts["drain"] is None
    bus.submit(mmsb.Delta.at(a, 0, np.float64(1).tobytes()))
    r = bus.tick()
    assert "apply" in r.overruns
    assert r.validated == 1 and r.validation_failures == [c.id]
    s = bus.stats()
    assert s.tick_overruns == 1 and s.validation_failures == 1
    # bad settings change nothing
    with pytest.raises(mmsb.InvalidArgumentError, match="drain"):
        bus.configure_tick(drain=-1, validate_sample=0)
    assert bus.tick_options() == opts
    bus.configure_tick(apply=None, validate_sample=0)
    assert bus.tick_options()["apply"] is None


def test_a_recompute_that_raises_when_validated_is_a_validation_failure(bus):
    """Validation recomputes the sampled page again; one whose function fails that time is
    reported as not matching, and the tick, its commits and the page stay as they were."""
    a = bus.create_page(shape=4, dtype=np.float64)
    c = bus.create_page(shape=4, dtype=np.float64)
    calls = [0]

    def once(out, x):
        calls[0] += 1
        if calls[0] > 2:  # the first computation and the tick's wave; not validation's rerun
            raise RuntimeError("cannot run again")
        out[:] = x

    bus.depend(c, on=[a], fn=once)
    bus.configure_tick(validate_sample=1)
    bus.submit(mmsb.Delta.at(a, 0, np.float64(3).tobytes()))
    r = bus.tick()
    assert calls[0] == 3 and r.validated == 1 and r.validation_failures == [c.id]
    assert r.deltas_applied == 1 and r.last_lsn == bus.lsn
    assert c.view().tolist() == [3, 0, 0, 0] and c.epoch == 1
    assert bus.stats().validation_failures == 1


def test_many_producers_lose_and_duplicate_nothing():
    """4 threads x 250k deltas (batches of 500 rows and single deltas) against a NumPy model:
    every producer owns a page and writes its sequence number i at slot i % 64."""
    producers, per_producer, slots, chunk = 4, 250_000, 64, 500
    bus = mmsb.Bus(queue_capacity=256, history=False)
    pages = [bus.create_page(shape=slots, dtype=np.uint64) for _ in range(producers)]
    stop = threading.Event()

    def produce(k):
        pid = pages[k].id
        i = 1
        while i <= per_producer:
            if (i // chunk) % 5 == 4:  # every fifth chunk as single deltas, some non-blocking
                for j in range(i, min(i + 50, per_producer + 1)):
                    d = mmsb.Delta.at(pid, (j % slots) * 8, u64(j))
                    while True:
                        try:
                            bus.submit(d, block=(j % 2 == 0))
                            break
                        except mmsb.QueueFullError:
                            time.sleep(0)
                i = min(i + 50, per_producer + 1)
                continue
            seq = np.arange(i, min(i + chunk, per_producer + 1), dtype=np.uint64)
            ids = np.full(len(seq), pid, dtype=np.uint64)
            bus.submit(mmsb.DeltaBatch(ids, (seq % slots) * 8, np.full(len(seq), 8, np.uint64), seq))
            i += len(seq)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    applied = 0
    while any(t.is_alive() for t in threads) or bus.queue_depth:
        applied += bus.tick().deltas_applied
    for t in threads:
        t.join()
    applied += bus.tick().deltas_applied
    stop.set()
    assert applied == producers * per_producer
    for p in pages:
        assert p.epoch == per_producer
        want = np.array([per_producer - ((per_producer - s) % slots) for s in range(slots)], dtype=np.uint64)
        np.testing.assert_array_equal(p.view(), want)
    assert bus.stats().deltas_applied == producers * per_producer
    bus.close()


def test_latency_histograms(bus):
    p = bus.create_page(8)
    for i in range(100):
        p.write(0, bytes([i]))
    h = bus.latency("commit")
    assert h.count == 100
    # Structure, not speed: durations were recorded (not zeros) and quantiles are ordered.
    assert 0 < h.p50_ns <= h.p99_ns <= h.max_ns
    assert sum(c for _, _, c in h.buckets) == 100
    assert all(lo <= hi for lo, hi, _ in h.buckets)
    s = bus.stats()
    assert s.commit_count == 100 and s.commit_p99_ns == h.p99_ns
    with pytest.raises(mmsb.InvalidArgumentError, match="commit"):
        bus.latency("nope")
    bus.reset_stats()
    assert bus.latency("commit").count == 0


def test_page_ages_report_last_writes(bus):
    a, b, c = (bus.create_page(8) for _ in range(3))
    a.write(0, b"\x01")
    for _ in range(5):
        b.write(0, b"\x02")
    ages = bus.page_ages()
    assert list(ages.ids) == [a.id, b.id, c.id]
    assert ages.last_lsn[1] == bus.lsn == ages.lsn
    assert ages.age[1] == 0 and ages.age[0] == bus.lsn - ages.last_lsn[0]
    assert list(ages.cold(5)) == [a.id, c.id]


def test_a_submitted_delta_keeps_its_source(bus):
    """A single-run delta of another source than "user" is not merged into the tick's batch,
    whose rows are user deltas: history records the source it was made with."""
    p = bus.create_page(16)
    for source in ("remote", "propagation", "user", "replay"):
        bus.submit(mmsb.Delta.at(p, 0, source[:4].encode(), source=source))
    assert bus.tick()["deltas_applied"] == 4
    assert [d.source for d in bus.history(p)] == ["remote", "propagation", "user", "replay"]
    assert p.read(0, 4) == b"repl"


def test_a_budget_below_a_nanosecond_is_still_a_budget(bus):
    bus.configure_tick(total=1e-10)
    assert bus.tick_options()["total"] == pytest.approx(1e-9)
    assert "total" in bus.tick().overruns
    with pytest.raises(mmsb.InvalidArgumentError, match="at most 1e6 seconds"):
        bus.configure_tick(total=2e6)


RING_TOO_BIG = r"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import mmsb
bus = mmsb.Bus(queue_capacity=2**30)  # 16 GiB of ring, allocated at the first submit
p = bus.create_page(8)
try:
    bus.submit(mmsb.Delta.at(p, 0, b"x"))
except mmsb.OutOfMemoryError as e:
    assert "queue_capacity" in str(e), e
    assert bus.queue_depth == 0 and bus.lsn == 1
    p.write(0, b"y")  # the bus still works
    print("done")
"""


def test_a_ring_too_big_for_this_process_is_out_of_memory():
    script_finishes(RING_TOO_BIG, "the submit hung", timeout=120)
