"""PropagationError (DESIGN §1 "Propagation"): a recompute that raises rolls the whole commit
back, in memory and in the log, whatever made the commit; callables that misbehave (a wrong
shape, a call into the bus) fail cleanly, and Python recomputes on a worker thread do not
deadlock with Python writers."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from propagation_model import ELEMS, F64
from reference_model import capture_full_state

# ---- PropagationError: the whole commit rolls back -------------------------------------------
class Boom(Exception):
    pass


def failing_graph(bus, exc=Boom):
    """a -> b (copy) -> c (raises `exc` when a[0] > 100) -> e; a -> d (sum_product)."""
    a = bus.create_page(data=np.arange(ELEMS, dtype=F64), name="a")
    b, c, d, e = (bus.create_page(shape=(ELEMS,), dtype=F64, name=n) for n in "bcde")

    def fragile(out, x):
        if x[0] > 100:
            raise exc("input too large")
        out[:] = x + 1
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    bus.depend(c, on=[b], fn=fragile)
    bus.depend(d, on=[a], fn=mmsb.ops.reduce("sum_product"), weights=[3.0])
    bus.depend(e, on=[c], fn=mmsb.ops.copy)
    return a, b, c, d, e


BAD = np.float64(500.0).tobytes()


def commit_bad(bus, a, how):
    if how == "write":
        a.write(0, BAD)
    elif how == "apply":
        bus.apply(mmsb.Delta.at(a, 0, BAD))
    elif how == "update":
        new = a.snapshot()[0]
        new[0] = 500.0
        a.update(new)
    elif how == "edit":
        with a.edit() as arr:
            arr[0] = 500.0
    elif how == "batch":
        other = bus.page("d")  # a row on another page in the same batch goes too
        bus.apply_batch(mmsb.DeltaBatch([other.id, a.id], [8, 0], [8, 8], np.float64(1.0).tobytes() + BAD))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["write", "apply", "update", "edit", "batch"])
def test_failing_recompute_rolls_back_the_whole_commit(bus, how):
    a, b, c, d, e = failing_graph(bus)
    a.write(16, np.float64(5.0).tobytes())
    before = capture_full_state(bus)
    memos = {p.id: bus.graph.derivation(p)["memo"] for p in (b, c, d, e)}
    with pytest.raises(mmsb.PropagationError) as ei:
        commit_bad(bus, a, how)
    msg = str(ei.value)
    assert f"page {c.id}" in msg and "input too large" in msg
    assert capture_full_state(bus) == before  # bytes, epochs, lsn: the user delta too
    assert {p.id: bus.graph.derivation(p)["memo"] for p in (b, c, d, e)} == memos
    assert bus.stale_pages() == []
    assert bus.verify().ok
    # the bus goes on normally
    a.write(0, np.float64(7.0).tobytes())
    assert e.view()[0] == 8.0 and d.view()[0] == 21.0


# ---- Ctrl-C (KeyboardInterrupt) and SystemExit: rolled back like any failure, raised as ------
# themselves, so that `except Exception` around a commit cannot swallow them.
STOPS = [KeyboardInterrupt, SystemExit]


@pytest.mark.parametrize("exc", STOPS)
@pytest.mark.parametrize("how", ["write", "batch", "edit"])
def test_an_interrupt_in_a_recompute_rolls_back_and_reaches_the_caller_as_itself(bus, exc, how):
    a, b, c, d, e = failing_graph(bus, exc)
    before = capture_full_state(bus)
    memos = {p.id: bus.graph.derivation(p)["memo"] for p in (b, c, d, e)}
    with pytest.raises(exc, match="input too large") as ei:
        commit_bad(bus, a, how)
    assert type(ei.value) is exc
    assert capture_full_state(bus) == before
    assert {p.id: bus.graph.derivation(p)["memo"] for p in (b, c, d, e)} == memos
    assert bus.stale_pages() == [] and bus.verify().ok
    a.write(0, np.float64(7.0).tobytes())
    assert e.view()[0] == 8.0


@pytest.mark.parametrize("exc", STOPS)
def test_an_interrupt_in_propagate_leaves_the_stale_pages_stale(bus, exc):
    a, b, c, d, e = failing_graph(bus, exc)
    bus.propagation = "deferred"
    a.write(0, BAD)
    stale, before = bus.stale_pages(), capture_full_state(bus)
    assert stale
    with pytest.raises(exc):
        bus.propagate()
    assert bus.stale_pages() == stale and capture_full_state(bus) == before


@pytest.mark.parametrize("exc", STOPS)
def test_an_interrupt_in_the_first_recompute_refuses_depend(bus, exc):
    a = bus.create_page(data=np.full(ELEMS, 1000.0))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    before = capture_full_state(bus)

    def stop(out, x):
        raise exc
    with pytest.raises(exc):
        bus.depend(b, on=[a], fn=stop)
    assert capture_full_state(bus) == before and bus.graph.derivation(b) is None


@pytest.mark.parametrize("exc", STOPS)
def test_an_interrupt_in_the_clock_commits_nothing(exc):
    def clock():
        raise exc
    bus = mmsb.Bus(clock=clock)
    p = bus.create_page(8)
    lsn = bus.lsn
    with pytest.raises(exc):
        p.write(0, b"x")
    assert bus.lsn == lsn and p.epoch == 0 and bytes(p.view()) == bytes(8)


def test_an_interrupt_in_a_ticks_sampled_validation_comes_after_the_tick(bus):
    # The tick's commit stands (it is done before validation): its bookkeeping and events too,
    # then the interrupt is raised instead of the report.
    a = bus.create_page(data=np.zeros(ELEMS))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    calls = []

    def double(out, x):
        calls.append(1)
        if len(calls) == 3:  # 1: depend, 2: the tick's wave, 3: its sampled validation
            raise KeyboardInterrupt
        out[:] = 2 * x
    bus.depend(b, on=[a], fn=double)
    bus.configure_tick(validate_sample=1)
    ticks = []
    bus.subscribe("tick", ticks.append)
    bus.submit(mmsb.DeltaBatch([a.id], [0], [8], np.float64(3.0).tobytes()))
    lsn = bus.lsn
    with pytest.raises(KeyboardInterrupt):
        bus.tick()
    assert len(calls) == 3 and bus.lsn == lsn + 2 and b.view()[0] == 6.0
    assert bus.stats().ticks == 1 and [t.lsn for t in ticks] == [bus.lsn]
    report = bus.tick()  # the next tick validates normally
    assert report.validated == 1 and report.validation_failures == [] and bus.stats().ticks == 2


def test_failing_recompute_inside_a_transaction_undoes_only_that_op(bus):
    a, b, c, d, e = failing_graph(bus)
    before = capture_full_state(bus)
    with bus.transaction():
        a.write(8, np.float64(9.0).tobytes())
        inside = capture_full_state(bus)
        with pytest.raises(mmsb.PropagationError):
            a.write(0, BAD)
        assert capture_full_state(bus) == inside
        a.write(16, np.float64(10.0).tobytes())
    assert a.view()[1] == 9.0 and a.view()[2] == 10.0 and a.view()[0] == 0.0
    assert e.view()[2] == 11.0 and e.view()[1] == 10.0
    assert a.epoch == before["pages"][a.id][1] + 2
    # an error that escapes the block rolls the whole transaction back
    before = capture_full_state(bus)
    with pytest.raises(mmsb.PropagationError):
        with bus.transaction():
            a.write(8, np.float64(-1.0).tobytes())
            a.write(0, BAD)
    assert capture_full_state(bus) == before


def test_failing_first_recompute_refuses_depend(bus):
    a = bus.create_page(data=np.full(ELEMS, 1000.0))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    before = capture_full_state(bus)

    def bad(out, x):
        raise Boom("nope")
    with pytest.raises(mmsb.PropagationError) as ei:
        bus.depend(b, on=[a], fn=bad)
    assert f"page {b.id}" in str(ei.value)
    assert capture_full_state(bus) == before
    assert bus.graph.derivation(b) is None and bus.graph.parents(b) == []


def test_failing_recompute_is_not_logged(tmp_path):
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        a, b, c, d, e = failing_graph(bus)
        a.write(8, np.float64(3.0).tobytes())
        for how in ("write", "batch"):
            with pytest.raises(mmsb.PropagationError):
                commit_bad(bus, a, how)
        want = capture_full_state(bus)
        assert bus.verify().ok
    with mmsb.replay(path) as old:
        assert capture_full_state(old) == want
    with mmsb.open(path) as bus:
        assert capture_full_state(bus) == want


def test_callable_may_return_a_wrong_shape_only_as_an_error(bus):
    a = bus.create_page(data=np.arange(ELEMS, dtype=F64))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    bus.depend(b, on=[a], fn=lambda out, x: x[: ELEMS // 2] if x[0] > 10 else x * 3)
    before = capture_full_state(bus)
    with pytest.raises(mmsb.PropagationError) as ei:
        a.write(0, np.float64(20.0).tobytes())
    assert f"page {b.id}" in str(ei.value)
    assert capture_full_state(bus) == before


def test_python_recomputes_on_a_worker_thread_do_not_deadlock_with_python_writers():
    # The worker commits batches with the GIL released; their waves need the GIL for the
    # callable while the main thread keeps writing to the same bus (and so waits for its lock).
    import threading

    bus = mmsb.Bus()
    src = bus.create_page(shape=(16,), dtype="float64")
    out = bus.create_page(shape=(16,), dtype="float64")
    other = bus.create_page(16)
    bus.depend(out, on=[src], fn=lambda o, x: np.multiply(x, 2.0, out=o))
    errors = []

    def worker():
        try:
            for i in range(300):
                row = np.array([float(i)]).tobytes()
                bus.apply_batch(mmsb.DeltaBatch([src.id], [8 * (i % 16)], [8], row))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    for i in range(300):
        other.write(i % 16, b"x")
    t.join(timeout=60)
    assert not t.is_alive(), "worker thread deadlocked"
    assert not errors
    np.testing.assert_array_equal(out.view(), src.view() * 2.0)
    bus.close()


@pytest.mark.parametrize("call", ["lookup", "submit"])
def test_a_recompute_that_calls_into_the_bus_fails_cleanly(call):
    """A lookup would wait for the lock its own wave holds; a submission takes no lock, but would
    stay queued after the commit that made it rolled back (and a blocking one could wait for a
    tick forever)."""
    bus = mmsb.Bus()
    a = bus.create_page(data=np.arange(4.0))
    c = bus.create_page(shape=(4,), dtype="float64")
    side = bus.create_page(8)

    def reentrant(out, x):
        if call == "lookup":
            bus.page(a.id)
        else:
            bus.submit(mmsb.Delta.at(side, 0, b"side-eff"))
        out[:] = x

    lsn = bus.lsn
    with pytest.raises(mmsb.PropagationError, match="must not read or write the bus"):
        bus.depend(c, on=[a], fn=reentrant)
    assert bus.lsn == lsn and bus.graph.derivation(c) is None and c.epoch == 0
    assert bus.queue_depth == 0 and bus.tick().deltas_applied == 0 and side.epoch == 0
    bus.close()
