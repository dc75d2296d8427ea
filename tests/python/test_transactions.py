"""bus.transaction(): all or nothing, in memory and across crashes; isolation from other threads."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import mmsb
from log_files import last_record
from reference_model import capture_full_state
from test_differential import Driver

TXN_OPS = ["write", "delta_at", "delta_runs", "masked", "update", "edit", "batch", "create_raw",
           "create_typed", "delete", "merge", "metadata"]


def random_ops(drv, n):
    """n random committing operations of test_differential's Driver (bus and reference both)."""
    for _ in range(n):
        name = TXN_OPS[int(drv.rng.integers(len(TXN_OPS)))]
        if name == "delete" and len(drv.handles) <= 2:
            name = "write"
        getattr(drv, "op_" + name)()


def make_driver(tmp_path, rng, directory):
    drv = Driver(2, rng)
    if directory:
        drv.bus.close()
        drv.bus = mmsb.Bus(tmp_path / "bus", threads=2)
    for _ in range(6):
        drv.op_create_raw()
    drv.op_create_typed()
    return drv


@pytest.mark.parametrize("directory", [False, True], ids=["memory", "directory"])
def test_exception_rolls_back_every_change(tmp_path, rng, directory):
    drv = make_driver(tmp_path, rng, directory)
    for trial in range(15):
        random_ops(drv, 5)
        before, stats, ref_state = capture_full_state(drv.bus), drv.bus.stats(), drv.ref
        handles = dict(drv.handles)
        with pytest.raises(KeyError):
            with drv.bus.transaction():
                assert drv.bus.in_transaction
                shadow = Driver.__new__(Driver)  # same bus, a throwaway reference
                shadow.__dict__.update(drv.__dict__)
                shadow.ref = copy.deepcopy(drv.ref)
                shadow.handles = dict(handles)
                shadow.deleted = list(drv.deleted)
                random_ops(shadow, int(rng.integers(1, 12)))
                assert capture_full_state(drv.bus) == shadow.ref.full_state()  # the owner sees its changes
                raise KeyError("abort")
        assert not drv.bus.in_transaction
        assert capture_full_state(drv.bus) == before, trial
        # ids of pages created inside stay used (never handed out twice), as in the engine
        drv.ref.next_id = shadow.ref.next_id
        assert drv.bus.stats() == stats
        assert drv.ref is ref_state
        assert drv.bus.verify().ok, drv.bus.verify().problems
    drv.bus.close()


@pytest.mark.parametrize("directory", [False, True], ids=["memory", "directory"])
def test_commit_keeps_every_change_and_logs_one_record(tmp_path, rng, directory):
    drv = make_driver(tmp_path, rng, directory)
    for _ in range(10):
        records_before = records_in(drv.bus)
        with drv.bus.transaction():
            random_ops(drv, int(rng.integers(1, 10)))
        assert capture_full_state(drv.bus) == drv.ref.full_state()
        if directory:
            assert records_in(drv.bus) == records_before + 1
    assert drv.bus.verify().ok
    if directory:
        path, want = drv.bus.path, capture_full_state(drv.bus)
        drv.bus.close()
        with mmsb.open(path) as bus:
            assert capture_full_state(bus) == want


def records_in(bus):
    if bus.path is None:
        return 0
    from mmsb.inspect_cmd import inspect_dir

    return sum(seg["records"] for seg in inspect_dir(bus.path)["segments"])


def test_empty_transaction_commits_nothing(tmp_path):
    with mmsb.Bus(tmp_path / "b") as bus:
        bus.create_page(8)
        n = records_in(bus)
        with bus.transaction():
            pass
        assert records_in(bus) == n and bus.lsn == 1


def test_a_rolled_back_transaction_restores_the_propagation_mode():
    """bus.propagation set inside a block goes with the block's changes: after a rollback, the
    next write runs its wave as before the block, and committed, the setting stays."""
    bus = mmsb.Bus()
    a = bus.create_page(data=np.zeros(2))
    c = bus.create_page(shape=(2,), dtype="float64")
    bus.depend(c, on=[a], fn=mmsb.ops.copy)
    with pytest.raises(RuntimeError):
        with bus.transaction():
            bus.propagation = "deferred"
            a.write(0, np.float64(1).tobytes())
            raise RuntimeError("abandon")
    assert bus.propagation == "eager"
    a.write(0, np.float64(2).tobytes())
    assert not c.stale and c.view()[0] == 2.0
    with bus.transaction():
        bus.propagation = "deferred"
    assert bus.propagation == "deferred"


CHILD = r"""
import os, signal, sys
import numpy as np
import mmsb
path, mode = sys.argv[1], sys.argv[2]
bus = mmsb.Bus(path, durability="fsync")
p = bus.create_page(64, name="p")
p.write(0, b"before")
with bus.transaction():
    p.write(0, b"inside")
    bus.create_page(data=np.arange(3.0), name="q")
    bus.delete_page(p) if mode == "delete" else p.write(32, b"more")
    if mode != "commit":
        print("killing inside", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
print("committed", bus.lsn, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("mode", ["kill_inside", "delete", "commit"])
def test_kill_9_inside_or_after_a_transaction_is_all_or_nothing(tmp_path, mode):
    path = str(tmp_path / "b")
    proc = subprocess.run([sys.executable, "-c", CHILD, path, mode], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    with mmsb.open(path) as bus:
        if mode == "commit":
            assert bus.page("p").read(0, 6) == b"inside" and bus.page("p").read(32, 4) == b"more"
            assert bus.page("q").view().tolist() == [0.0, 1.0, 2.0]
            assert bus.lsn == int(proc.stdout.split()[-1])
        else:
            assert bus.lsn == 2 and bus.page("p").read(0, 6) == b"before" and "q" not in bus
        assert bus.verify().ok


def test_torn_transaction_record_is_dropped_whole(tmp_path):
    path = str(tmp_path / "b")
    with mmsb.Bus(path) as bus:
        p = bus.create_page(64)
        with bus.transaction():
            for i in range(8):
                p.write(8 * i, bytes([i + 1]) * 8)
    seg, start, end = last_record(path)  # the transaction's record
    with open(seg, "rb") as f:
        whole = f.read()
    for cut in (end - 1, end - 100, start + 30):
        assert start < cut < end
        with open(seg, "wb") as f:
            f.write(whole[:cut])
        with mmsb.open(path) as bus:  # the writer cuts the torn tail back to the first record
            assert bus.lsn == 1 and bus.page(1).read(0, 64) == bytes(64)
            assert bus.recovery["truncated_tail"] is True


def test_other_threads_wait_for_the_transaction_and_never_interleave(tmp_path):
    bus = mmsb.Bus(tmp_path / "b")
    p = bus.create_page(64)
    done = []

    def writer():
        done.append(("start", bus.lsn))
        p.write(0, b"other")
        done.append(("written", bus.lsn))

    with bus.transaction():
        p.write(8, b"txn-1")
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.2)  # the other thread runs Python meanwhile, then waits (in bus.lsn)
        assert done == []  # it has read nothing of our transaction, and written nothing inside it
        p.write(16, b"txn-2")
        lsn_inside = bus.lsn
    t.join(timeout=10)
    assert not t.is_alive()
    # it read the lsn the transaction committed, and its delta came after the whole transaction
    assert done == [("start", lsn_inside), ("written", lsn_inside + 1)]
    hist = bus.history(p)
    assert [h.lsn for h in hist] == [2, 3, 4]
    bus.close()


def test_transaction_misuse_raises_and_changes_nothing(tmp_path):
    with mmsb.Bus(tmp_path / "b") as bus:
        p = bus.create_page(16)
        with bus.transaction():
            with pytest.raises(mmsb.InvalidArgumentError):
                with bus.transaction():
                    pass
            for call in (bus.checkpoint, lambda: bus.at(0), lambda: bus.history(p),
                         lambda: bus.diff(0, 0), bus.verify):
                with pytest.raises(mmsb.InvalidArgumentError):
                    call()
            with pytest.raises(mmsb.InvalidDeltaError):  # a failed call inside changes nothing...
                p.write(15, b"xy")
            p.write(0, b"ok")  # ...and the transaction goes on
        assert p.read(0, 2) == b"ok" and p.epoch == 1
        with bus.at(bus.lsn) as old:
            with pytest.raises(mmsb.ReadOnlyError):
                with old.transaction():
                    pass


def test_closing_inside_a_transaction_abandons_it(tmp_path):
    path = tmp_path / "b"
    bus = mmsb.Bus(path)
    p = bus.create_page(8)
    tx = bus.transaction()
    tx.__enter__()
    p.write(0, b"lost")
    bus.close()
    with mmsb.open(path) as again:
        assert again.lsn == 1 and again.page(1).read(0, 4) == bytes(4)


def test_other_threads_read_only_committed_lsn_epochs_and_stats():
    """While a transaction is open on one thread, another thread's bus.lsn, stats() and
    Page.epoch wait for it: they never show a change the rollback then takes back (they used
    to, and went backwards after it)."""
    bus = mmsb.Bus()
    p = bus.create_page(8)
    seen, inside = [], threading.Event()

    def reader():
        inside.wait(10)
        seen.append((bus.lsn, p.epoch, p.last_lsn, bus.stats().deltas_applied))
    t = threading.Thread(target=reader)
    t.start()
    with pytest.raises(RuntimeError):
        with bus.transaction():
            p.write(0, b"a")
            p.write(1, b"b")
            assert (bus.lsn, p.epoch) == (3, 2)  # this thread sees its own changes
            inside.set()
            time.sleep(0.2)  # the reader is waiting now
            raise RuntimeError("roll back")
    t.join(10)
    assert seen == [(1, 0, 1, 0)]


def test_a_transaction_ends_only_on_its_own_thread():
    bus = mmsb.Bus()
    p = bus.create_page(8)
    txn = bus.transaction()
    txn.__enter__()
    p.write(0, b"x")
    errors = []

    def exit_elsewhere():
        try:
            txn.__exit__(None, None, None)
        except mmsb.InvalidArgumentError as e:
            errors.append(str(e))
    t = threading.Thread(target=exit_elsewhere)
    t.start()
    t.join(10)
    assert not t.is_alive(), "exiting another thread's transaction hung"
    assert errors and "thread that opened it" in errors[0]
    assert bus.in_transaction
    txn.__exit__(None, None, None)  # still this thread's to commit
    assert not bus.in_transaction and p.read(0, 1) == b"x" and bus.lsn == 2


def test_close_inside_a_transaction_rolls_it_back_and_the_exit_says_so(tmp_path):
    path = str(tmp_path / "b")
    bus = mmsb.Bus(path)
    p = bus.create_page(8)
    with pytest.raises(mmsb.ClosedError, match="closed inside this transaction"):
        with bus.transaction():
            p.write(0, b"lost")
            bus.close()
    with mmsb.open(path) as again:
        assert again.lsn == 1 and again.page(p.id).read(0, 4) == bytes(4)
    bus2 = mmsb.Bus()
    with pytest.raises(KeyError):  # an exception leaving the block is not replaced
        with bus2.transaction():
            bus2.close()
            raise KeyError("mine")
