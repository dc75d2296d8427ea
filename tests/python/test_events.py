"""Events (DESIGN §1 "Events", §2 "events, stats"): what each commit delivers and in which order,
page filters, cancel, handler isolation, transactions (delivered at commit, never on rollback)
and commits from other threads."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

import mmsb
from child_script import script_finishes

KINDS = ("page_created", "page_deleted", "delta_applied", "page_changed", "page_stale", "checkpoint", "tick")
F8 = np.float64


def f8(x):
    return F8(x).tobytes()


def subscribe_all(bus, pages=None):
    got = []
    subs = [bus.subscribe(k, got.append, pages=pages) for k in KINDS]
    return got, subs


def E(kind, page, lsn, epoch):
    return mmsb.Event(kind, page, lsn, epoch)


def test_scripted_sequence_delivers_the_right_events_in_commit_order(tmp_path):
    with mmsb.Bus(tmp_path / "bus") as bus:
        got, _ = subscribe_all(bus)
        a = bus.create_page(data=np.arange(4.0), name="a")           # lsn 1 create, 2 data
        b = bus.create_page(shape=(4,), dtype="float64", name="b")   # 3
        c = bus.create_page(shape=(4,), dtype="float64", name="c")   # 4
        assert got == [E("page_created", 1, 1, 0), E("delta_applied", 1, 2, 1), E("page_created", 2, 3, 0),
                       E("page_created", 3, 4, 0)]
        got.clear()
        bus.depend(b, on=[a], fn=lambda out, x: x * 2)                # 5 depend, 6 derived
        bus.depend(c, on=[a, b], fn=mmsb.ops.reduce("max_plus"))     # 7 depend, 8 derived
        assert got == [E("page_changed", 2, 6, 1), E("page_changed", 3, 8, 1)]
        got.clear()
        a.write(0, f8(10.0))                                          # 9 user, 10 b, 11 c
        assert got == [E("delta_applied", 1, 9, 2), E("page_changed", 2, 10, 2), E("page_changed", 3, 11, 2)]
        got.clear()
        # an edit that changes nothing commits nothing and delivers nothing
        with a.edit() as arr:
            arr[0] = 10.0
        a.update(a.snapshot()[0])
        assert got == []
        # a batch: one delta_applied per row, in row order, each with the epoch it produced;
        # then one wave
        bus.apply_batch(mmsb.DeltaBatch([a.id, b.id], [8, 0], [8, 8], f8(3.0) + f8(-1.0)))  # 12, 13
        assert got[:2] == [E("delta_applied", 1, 12, 3), E("delta_applied", 2, 13, 3)]
        assert [e.kind for e in got[2:]] == ["page_changed"] * len(got[2:])
        assert [e.page for e in got[2:]] == sorted({e.page for e in got[2:]}, key=[b.id, c.id].index)
        assert [e.lsn for e in got] == list(range(12, 12 + len(got)))
        got.clear()
        # checkpoint: page 0, the bus lsn
        lsn = bus.lsn
        bus.checkpoint()
        assert got == [E("checkpoint", 0, lsn, 0)]
        got.clear()
        # deferred mode: a batch marks children stale (at the lsn of the commit); propagate()
        # delivers page_changed
        bus.propagation = "deferred"
        bus.apply_batch(mmsb.DeltaBatch([a.id], [16], [8], f8(7.0)))
        L = bus.lsn
        assert got[0] == E("delta_applied", 1, L, a.epoch)
        assert [(e.kind, e.page, e.epoch) for e in got[1:]] == [("page_stale", b.id, b.epoch), ("page_stale", c.id, c.epoch)]
        assert bus.stale_pages() == [b, c]
        got.clear()
        bus.propagate()
        assert [(e.kind, e.page) for e in got] == [("page_changed", b.id), ("page_changed", c.id)]
        assert [e.lsn for e in got] == [L + 1, L + 2]
        bus.propagation = "eager"
        got.clear()
        # a control edge only marks its child stale
        d = bus.create_page(8, name="d")
        bus.add_edge(a, d)
        got.clear()
        L = bus.lsn + 1
        a.write(24, f8(1.0))
        assert got == [E("delta_applied", a.id, L, a.epoch), E("page_stale", d.id, L, 0),
                       E("page_changed", b.id, L + 1, b.epoch), E("page_changed", c.id, L + 2, c.epoch)]
        got.clear()
        # deletes
        bus.remove_edge(a, d)
        bus.delete_page(d)
        assert got == [E("page_deleted", d.id, bus.lsn, 0)]


def test_every_event_matches_the_page_at_that_lsn(bus, rng):
    """Over a random run: lsns never go backwards; delta_applied/page_changed carry the epoch
    the delta produced (checked against bus.provenance and p.epoch afterwards)."""
    got, _ = subscribe_all(bus)
    a = bus.create_page(data=rng.normal(size=8))
    x = bus.create_page(data=rng.normal(size=8))
    b = bus.create_page(shape=(8,), dtype="float64")
    c = bus.create_page(shape=(8,), dtype="float64")
    bus.depend(b, on=[a], fn=lambda out, v: np.round(v))
    bus.depend(c, on=[x, b], fn=mmsb.ops.reduce("sum_product"))
    for _ in range(40):
        if rng.random() < 0.5:
            (a if rng.random() < 0.5 else x).write(8 * int(rng.integers(8)), f8(rng.normal() * 3))
        else:  # each page at most once per batch (see test_batch_events_carry_the_epoch_of_each_row)
            rows = [a.id, x.id] if rng.random() < 0.5 else [x.id, a.id]
            rows = rows[: int(rng.integers(1, 3))]
            bus.apply_batch(mmsb.DeltaBatch(rows, [8 * int(i) for i in rng.integers(0, 8, len(rows))],
                                            [8] * len(rows), rng.normal(size=len(rows)).tobytes()))
    lsns = [e.lsn for e in got]
    assert lsns == sorted(lsns)
    changes = [e for e in got if e.kind in ("delta_applied", "page_changed")]
    assert len({e.lsn for e in changes}) == len(changes)  # one event per delta
    for page in (a, x, b, c):
        mine = [e for e in changes if e.page == page.id]
        assert [e.epoch for e in mine] == list(range(1, page.epoch + 1)), page.id
        assert all(e.kind == ("delta_applied" if page in (a, x) else "page_changed") for e in mine)
        for e in mine[-5:]:
            node = bus.provenance(page, epoch=e.epoch).nodes[(page.id, e.epoch)]
            assert node.lsn == e.lsn


def test_page_filter_and_cancel(bus):
    a = bus.create_page(8, name="a")
    b = bus.create_page(8, name="b")
    c = bus.create_page(8, name="c")
    only_ab, every, later = [], [], []
    s1 = bus.subscribe("delta_applied", only_ab.append, pages=[a, "b"])
    s2 = bus.subscribe("delta_applied", every.append)
    s3 = bus.subscribe("delta_applied", later.append, pages=[c.id])
    for p in (a, b, c, a):
        p.write(0, b"x")
    assert [e.page for e in only_ab] == [a.id, b.id, a.id]
    assert [e.page for e in every] == [a.id, b.id, c.id, a.id]
    assert [e.page for e in later] == [c.id]
    s1.cancel()
    assert not s1.active and s2.active
    s1.cancel()  # twice is fine
    for p in (a, b, c):
        p.write(0, b"y")
    assert len(only_ab) == 3
    assert [e.page for e in every[4:]] == [a.id, b.id, c.id]
    s2.cancel()
    s3.cancel()
    a.write(0, b"z")
    c.write(0, b"z")
    assert len(every) == 7 and len(later) == 2
    # a filter only sees its kind
    kinds = []
    bus.subscribe("page_created", kinds.append, pages=[99])
    bus.create_page(8)
    assert kinds == []
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.subscribe("page_exploded", print)
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.subscribe("delta_applied", "not callable")


def test_a_subscription_cancelled_by_an_earlier_handler_misses_the_event_being_delivered(bus):
    a = bus.create_page(8)
    got = []

    def first(e):
        second.cancel()
        got.append("first")

    bus.subscribe("delta_applied", first)
    second = bus.subscribe("delta_applied", lambda e: got.append("second"))
    a.write(0, b"x")
    assert got == ["first"] and not second.active


@pytest.mark.parametrize("pages", [b"a", bytearray(b"a"), memoryview(b"a")], ids=["bytes", "bytearray", "memoryview"])
def test_a_byte_string_for_pages_is_refused_as_a_key_of_another_type(bus, pages):
    for _ in range(97):  # b"a" read as one id per byte would name page 97
        bus.create_page(8)
    got = []
    with pytest.raises(mmsb.InvalidArgumentError, match=f"got {type(pages).__name__}"):
        bus.subscribe("delta_applied", got.append, pages=pages)
    bus.page(97).write(0, b"x")
    assert got == []  # nothing was subscribed


def test_a_raising_handler_is_logged_counted_and_isolated(bus, caplog):
    before, after = [], []
    a = bus.create_page(8, name="a")
    bus.subscribe("delta_applied", before.append)

    def bad(event):
        raise RuntimeError(f"handler exploded on {event.page}")
    bus.subscribe("delta_applied", bad)
    bus.subscribe("delta_applied", after.append)
    bus.reset_stats()
    with caplog.at_level(logging.ERROR, logger="mmsb"):
        a.write(0, b"one")
        a.write(0, b"two")
    assert a.read(0, 3) == b"two" and a.epoch == 2  # the commits happened
    assert len(before) == 2 and len(after) == 2     # the other handlers were called
    assert bus.stats()["handler_errors"] == 2
    records = [r for r in caplog.records if r.name == "mmsb"]
    assert len(records) == 2
    assert all(r.levelno >= logging.ERROR for r in records)
    assert records[0].exc_info and records[0].exc_info[0] is RuntimeError
    assert "handler exploded on 1" in caplog.text
    bus.reset_stats()
    assert bus.stats()["handler_errors"] == 0


def test_handler_errors_stay_counted_after_the_last_subscription_is_gone(bus, caplog):
    # a counter since creation (or reset_stats), as the metrics endpoint exports it: never back
    import gc

    a = bus.create_page(8)

    def bad(event):
        raise RuntimeError("handler bug")
    sub = bus.subscribe("delta_applied", bad)
    with caplog.at_level(logging.CRITICAL, logger="mmsb"):
        a.write(0, b"x")
    sub.cancel()
    del sub
    gc.collect()
    assert bus.stats()["handler_errors"] == 1


def test_a_subscription_through_another_python_object_of_the_same_bus_is_delivered():
    import gc

    def make():
        bus = mmsb.Bus()
        p = bus.create_page(64)
        bus.subscribe("delta_applied", lambda e: None)
        return p  # the Bus object goes; the page keeps the bus itself

    p = make()
    gc.collect()
    bus = p.bus  # another Python object for the same bus
    seen = []
    bus.subscribe("page_created", seen.append)
    bus.subscribe("tick", seen.append)
    q = bus.create_page(8)
    bus.tick()
    assert [(e.kind, e.page) for e in seen] == [("page_created", q.id), ("tick", 0)]
    bus.close()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_in_a_handler_leaves_the_call_after_its_commit(bus, exc):
    # Ctrl-C is not a handler failure to count and log: it leaves the call that delivered (whose
    # commit stands), the rest of that delivery is dropped, and later events arrive as before.
    a = bus.create_page(8, name="a")
    seen, later = [], []
    stop = [True]

    def interrupted(event):
        seen.append(event.lsn)
        if stop[0]:
            raise exc
    bus.subscribe("delta_applied", interrupted)
    bus.subscribe("delta_applied", later.append)
    with pytest.raises(exc):
        bus.apply_batch(mmsb.DeltaBatch([a.id, a.id], [0, 4], [1, 1], b"xy"))
    assert a.read(0, 5) == b"x\0\0\0y" and a.epoch == 2 and bus.lsn == 3  # committed
    assert seen == [2] and later == [] and bus.stats()["handler_errors"] == 0
    stop[0] = False
    a.write(1, b"z")
    assert seen == [2, 4] and [e.lsn for e in later] == [4]


def test_events_inside_a_transaction_arrive_at_commit_and_never_on_rollback(bus):
    got, _ = subscribe_all(bus)
    a = bus.create_page(data=np.zeros(4))
    b = bus.create_page(shape=(4,), dtype="float64")
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    got.clear()
    with pytest.raises(KeyError):
        with bus.transaction():
            a.write(0, f8(1.0))
            bus.create_page(8)
            assert got == []
            raise KeyError("abort")
    assert got == []
    lsn = bus.lsn
    with bus.transaction():
        a.write(0, f8(2.0))
        n = bus.create_page(8)
        a.write(8, f8(3.0))
        assert got == []
    assert got == [E("delta_applied", a.id, lsn + 1, 2), E("page_changed", b.id, lsn + 2, 1),
                   E("page_created", n.id, lsn + 3, 0), E("delta_applied", a.id, lsn + 4, 3),
                   E("page_changed", b.id, lsn + 5, 2)]


def test_a_failed_propagation_delivers_nothing(bus):
    got, _ = subscribe_all(bus)
    a = bus.create_page(data=np.zeros(4))
    b = bus.create_page(shape=(4,), dtype="float64")

    def fragile(out, x):
        if x[0] > 1:
            raise ValueError("too big")
        out[:] = x
    bus.depend(b, on=[a], fn=fragile)
    got.clear()
    for commit in (lambda: a.write(0, f8(5.0)),
                   lambda: bus.apply_batch(mmsb.DeltaBatch([a.id], [0], [8], f8(5.0)))):
        with pytest.raises(mmsb.PropagationError):
            commit()
        assert got == []
    with bus.transaction():
        a.write(8, f8(1.0))
        with pytest.raises(mmsb.PropagationError):
            a.write(0, f8(9.0))
    assert [(e.kind, e.page, e.epoch) for e in got] == [("delta_applied", a.id, 2), ("page_changed", b.id, 1)]


def test_events_of_a_worker_thread_commit_arrive_on_that_thread(bus):
    a = bus.create_page(shape=(8,), dtype="float64")
    x = bus.create_page(shape=(8,), dtype="float64")
    b = bus.create_page(shape=(8,), dtype="float64")
    bus.depend(b, on=[a, x], fn=lambda out, u, v: u + v + 1)
    got, threads = [], []

    def handler(e):
        got.append(e)
        threads.append(threading.get_ident())
    bus.subscribe("delta_applied", handler)
    bus.subscribe("page_changed", handler)
    lsn = bus.lsn
    worker_id = []

    def work():
        worker_id.append(threading.get_ident())
        bus.apply_batch(mmsb.DeltaBatch([a.id, x.id], [0, 8], [8, 8], f8(4.0) + f8(5.0)))
    t = threading.Thread(target=work)
    t.start()
    t.join(30)
    assert not t.is_alive()
    assert got == [E("delta_applied", a.id, lsn + 1, 1), E("delta_applied", x.id, lsn + 2, 1),
                   E("page_changed", b.id, lsn + 3, 2)]  # b: epoch 1 when depend computed ones
    assert set(threads) == set(worker_id) and threading.get_ident() not in threads
    assert b.view()[0] == 5.0 and b.view()[1] == 6.0


def test_concurrent_commits_are_delivered_in_commit_order(bus):
    pages = [bus.create_page(64) for _ in range(4)]
    lsns = []
    bus.subscribe("delta_applied", lambda e: lsns.append(e.lsn))
    start = bus.lsn
    n = 150

    def work(p):
        for i in range(n):
            if i % 3 == 0:
                bus.apply_batch(mmsb.DeltaBatch([p.id], [i % 64], [1], b"b"))
            else:
                p.write(i % 64, b"w")
    threads = [threading.Thread(target=work, args=(p,)) for p in pages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert lsns == list(range(start + 1, start + 1 + 4 * n))


def test_batch_events_carry_the_epoch_of_each_row(bus):
    got = []
    a = bus.create_page(8)
    c = bus.create_page(8)
    bus.subscribe("delta_applied", got.append)
    bus.apply_batch(mmsb.DeltaBatch([a.id, c.id, a.id, a.id], [0, 0, 1, 2], [1, 1, 1, 1], b"abcd"))
    assert [(e.page, e.lsn, e.epoch) for e in got] == [(1, 1 + 2, 1), (2, 2 + 2, 1), (1, 3 + 2, 2), (1, 4 + 2, 3)]


def test_page_stale_of_a_deferred_batch_carries_the_batch_lsn(bus):
    a = bus.create_page(8)
    b = bus.create_page(8)
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    bus.propagation = "deferred"
    got = []
    bus.subscribe("page_stale", got.append)
    bus.apply_batch(mmsb.DeltaBatch([a.id], [0], [1], b"q"))
    assert got == [E("page_stale", b.id, bus.lsn, 0)]


REENTRANT = r"""
import mmsb
bus = mmsb.Bus()
a = bus.create_page(8)
b = bus.create_page(8)
seen = []
def h(e):
    seen.append(e.page)
    if e.page == a.id:
        b.write(0, b"x")  # a handler that commits to the same bus
bus.subscribe("delta_applied", h)
a.write(0, b"y")
assert seen == [a.id, b.id], seen
assert b.read(0, 1) == b"x"
print("done")
"""


def test_a_handler_may_commit_to_the_same_bus():
    script_finishes(REENTRANT, "a handler committing to its own bus deadlocked", timeout=3)


WAITS_FOR_ANOTHER_THREAD = r"""
import concurrent.futures, threading
import mmsb
bus = mmsb.Bus()
a = bus.create_page(8)
b = bus.create_page(8)
seen = []
pool = concurrent.futures.ThreadPoolExecutor(1)
def h(e):
    seen.append((e.page, threading.get_ident()))
    if e.page == a.id:
        pool.submit(b.write, 0, b"x").result()  # waits for another thread's commit
bus.subscribe("delta_applied", h)
a.write(0, b"y")
# b's event was queued while this thread delivered: this thread delivered it next, in order
assert seen == [(a.id, threading.get_ident()), (b.id, threading.get_ident())], seen
assert b.read(0, 1) == b"x"
pool.shutdown()
print("done")
"""


def test_a_handler_may_wait_for_another_threads_commit():
    """The thread delivering takes the events other threads commit meanwhile, in commit order;
    those threads do not wait for it (they used to, and a handler waiting for one deadlocked)."""
    script_finishes(WAITS_FOR_ANOTHER_THREAD, "a handler waiting for another thread's commit deadlocked", timeout=20)


def test_a_subscription_copies_as_itself_and_does_not_pickle(bus):
    import copy
    import pickle

    got = []
    sub = bus.subscribe("page_created", got.append)
    assert copy.copy(sub) is sub and copy.deepcopy(sub) is sub
    with pytest.raises(TypeError, match="cannot pickle 'mmsb.Subscription'"):
        pickle.dumps(sub)
    copy.copy(sub).cancel()
    sub.cancel()  # idempotent, through either name
    bus.create_page(8)
    assert got == [] and not sub.active


RESUBSCRIBING = r"""
import threading, time
import mmsb
bus = mmsb.Bus()
a = bus.create_page(8)
seen, later = [], []
def once(e):
    seen.append(e.lsn)
    sub.cancel()  # a handler cancelling itself
    bus.subscribe("delta_applied", later.append)  # and subscribing another
sub = bus.subscribe("delta_applied", once)
a.write(0, b"1")
a.write(0, b"2")
assert seen == [2] and [e.lsn for e in later] == [3], (seen, later)

# another thread subscribes and cancels while a handler runs with the GIL released
inside = threading.Event()
def slow(e):
    inside.set()
    time.sleep(0.2)
slow_sub = bus.subscribe("delta_applied", slow)
t = threading.Thread(target=a.write, args=(0, b"3"))
t.start()
inside.wait()
extra = bus.subscribe("page_created", print)
extra.cancel()
slow_sub.cancel()
t.join()
a.write(0, b"4")
print("done")
"""


def test_handlers_and_other_threads_may_subscribe_and_cancel_during_a_delivery():
    script_finishes(RESUBSCRIBING, "subscribe() or cancel() during a delivery deadlocked", timeout=20)


def test_stats_count_delivered_events(bus):
    a = bus.create_page(8)
    bus.reset_stats()
    a.write(0, b"x")
    assert bus.stats()["events"] == 0  # nobody listens: nothing is queued
    got = []
    sub = bus.subscribe("delta_applied", got.append)
    a.write(0, b"y")
    a.write(1, b"z")
    assert bus.stats()["events"] == 2 == len(got)
    sub.cancel()
