"""kill -9 tests: a child process commits a seeded random op stream to a bus directory and reports
each acknowledged lsn; the parent SIGKILLs it at a random moment, reopens the directory and checks

- the recovered lsn is >= the last lsn the child acknowledged (flush and fsync both survive the
  process being killed), and at most one operation beyond it (the one in flight); durability
  'none' promises neither, so for it only the properties below are checked;
- the recovered lsn falls exactly on an operation boundary (each op is wholly present or absent);
- the recovered state (page ids, bytes, epochs, names, dtypes, shapes, metadata, lsn) equals the
  reference model replayed over the same op stream up to that lsn;
- the recovered bus keeps working: new commits (with a fresh page id, never a reused one)
  survive another close and reopen.

The op stream lives in crash_child.py (shared by child and parent). Some of its writes are
1 MiB, so a kill can land inside a write(2) and leave a torn record, and some of its batches are
128 KiB, whose records a flush or none log writes on its writer thread while they apply; the
count of torn tails (bus.recovery['truncated_tail']) is printed with the number of trials.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import mmsb
from crash_child import OpStream, run_op
from reference_model import RefBus, capture_full_state

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_child.py")
MODES = ("flush", "fsync", "none")
DEFAULT_TRIALS = 15    # per durability mode: 45 in the default run
SLOW_TRIALS = 250      # per durability mode: 750 in `make test-slow`


def _spawn(path, durability, seed, max_ops=None):
    args = [sys.executable, CHILD, str(path), durability, str(seed)]
    if max_ops is not None:
        args.append(str(max_ops))
    err = open(str(path) + ".stderr", "w+b")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err)
    lines = []
    ready = threading.Event()

    def drain():  # keep the pipe empty so the child never blocks on its acks
        for line in proc.stdout:
            lines.append(line)
            if line == b"READY\n":
                ready.set()
        ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    return proc, lines, ready, reader, err


def _stderr(err):
    err.seek(0)
    return err.read().decode(errors="replace")


def _acks(lines):
    """(step, lsn) of the last complete ack line, (0, 0) if none; and whether DONE was seen."""
    last = (0, 0)
    done = False
    for line in lines:
        if not line.endswith(b"\n"):
            continue  # a line cut by the kill was never acknowledged
        text = line.decode().strip()
        if text == "DONE":
            done = True
        elif text != "READY":
            step, lsn = text.split()
            last = (int(step), int(lsn))
    return last, done


def _crash_trial(base, durability, seed):
    """One kill -9 trial; returns bus.recovery of the reopened directory."""
    rnd = random.Random(seed)
    path = base / f"bus-{durability}-{seed}"
    proc, lines, ready, reader, err = _spawn(path, durability, seed)
    try:
        assert ready.wait(60), f"child never became ready: {_stderr(err)}"
        time.sleep(rnd.uniform(0.003, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        reader.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (acked_step, acked_lsn), done = _acks(lines)
    assert proc.returncode == -signal.SIGKILL or (done and proc.returncode == 0), (
        f"seed {seed}: child exited with {proc.returncode}: {_stderr(err)}")
    err.close()

    # durability='none' promises no acknowledged commit (up to a MiB of them waits in the
    # process), only that what recovers is a whole-op prefix of the stream.
    promised = durability != "none"
    bus = mmsb.open(path, durability=durability)
    try:
        rec = bus.recovery
        got = bus.lsn
        assert got >= acked_lsn or not promised, (
            f"seed {seed} ({durability}): recovered lsn {got} < acknowledged lsn {acked_lsn}; "
            f"recovery={rec}")
        # Rebuild the reference: first to the last acknowledged op, then over at most one more
        # op that takes lsns (the one in flight; ops taking no lsn may come before it).
        stream = OpStream(seed)
        while promised and stream.step < acked_step:
            stream.next()
        assert stream.ref.lsn == acked_lsn or not promised, f"seed {seed}: the child's acks disagree with the model"
        in_flight = 0
        while stream.ref.lsn < got:
            before = stream.ref.lsn
            stream.next()
            in_flight += stream.ref.lsn != before
        assert in_flight <= 1 or not promised, (
            f"seed {seed}: recovered lsn {got} is {in_flight} ops past the last acknowledged "
            f"lsn {acked_lsn}; only the op in flight may be there")
        assert stream.ref.lsn == got, (
            f"seed {seed}: recovered lsn {got} falls inside op {stream.step} (which ends at "
            f"lsn {stream.ref.lsn}): an op was recovered in part")
        ref = stream.ref
        assert capture_full_state(bus) == ref.full_state(), f"seed {seed}: state differs"
        assert bool(rec["tail_reason"]) == rec["truncated_tail"], rec

        # The recovered bus keeps working: a new page takes the next id, never a reused one.
        p = bus.create_page(64, name="after-crash", metadata={"m": b"\x00"})
        assert p.id == ref.create_page(64, name="after-crash", metadata={"m": b"\x00"})
        p.write(3, b"post")
        ref.write(p.id, 3, b"post")
        want = ref.full_state()
        assert capture_full_state(bus) == want
    finally:
        bus.close()
    with mmsb.open(path) as again:
        assert capture_full_state(again) == want, f"seed {seed}: commits after recovery lost"
        assert again.recovery["truncated_tail"] is False
    shutil.rmtree(path)  # trials write MiBs each; keep only failing ones
    os.unlink(str(path) + ".stderr")
    return rec


def _run_trials(tmp_path, trials, seed0):
    torn = {}
    for durability in MODES:
        torn[durability] = 0
        for i in range(trials):
            rec = _crash_trial(tmp_path, durability, seed0 + i)
            torn[durability] += bool(rec["truncated_tail"])
    return torn


def _report(capsys, trials, torn):
    with capsys.disabled():
        print(f"\n[kill -9] {len(MODES) * trials} trials ({trials} per mode: {', '.join(MODES)}); torn "
              f"tails cut at recovery: " + ", ".join(f"{m} {torn[m]}" for m in MODES))


def test_op_stream_is_deterministic_and_lsn_exact():
    # The parent's replay is only an oracle if the stream is a pure function of (seed, step)
    # and every op's lsn use is what the model says.
    a, b = OpStream(5), OpStream(5)
    for _ in range(300):
        sa, oa = a.next()
        sb, ob = b.next()
        assert sa == sb and repr(oa) == repr(ob)
    assert a.ref.full_state() == b.ref.full_state()
    bus = mmsb.Bus()  # in memory: checkpoint ops are skipped here
    stream = OpStream(11)
    kinds = set()
    for _ in range(600):
        _, op = stream.next()
        if op[0] != "checkpoint":
            run_op(bus, op)
        kinds.add(op[0])
        assert bus.lsn == stream.ref.lsn, op[0]
    assert capture_full_state(bus) == stream.ref.full_state()
    assert kinds >= {"create", "delete", "set_meta", "write", "runs", "masked", "update", "edit",
                     "batch", "checkpoint"}
    bus.close()


def test_kill_minus_9_recovers_every_acknowledged_commit(tmp_path, capsys):
    torn = _run_trials(tmp_path, DEFAULT_TRIALS, 1000)
    _report(capsys, DEFAULT_TRIALS, torn)


@pytest.mark.slow
def test_kill_minus_9_recovers_every_acknowledged_commit_soak(tmp_path, capsys):
    torn = _run_trials(tmp_path, SLOW_TRIALS, 50_000)
    _report(capsys, SLOW_TRIALS, torn)


def test_kill_minus_9_with_durability_none_keeps_exactly_the_checkpointed_prefix(tmp_path):
    # durability='none' buffers the log in memory: a kill loses everything after the last
    # checkpoint, and recovery gives exactly the checkpointed state (not a partial one).
    path = tmp_path / "none"
    script = (
        "import sys, os, mmsb\n"
        "bus = mmsb.Bus(sys.argv[1], durability='none')\n"
        "p = bus.create_page(256, name='a', metadata={'k': b'\\x01'})\n"
        "for i in range(50): p.write(i, bytes([i]))\n"
        "os.write(1, f'{bus.checkpoint()}\\n'.encode())\n"
        "for i in range(50): p.write(100 + i, b'lost')\n"
        "q = bus.create_page(8)\n"
        "os.write(1, f'{bus.lsn}\\n'.encode())\n"
        "sys.stdin.read()\n"  # wait to be killed
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt_lsn = int(proc.stdout.readline())
    last_lsn = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert (ckpt_lsn, last_lsn) == (51, 102)

    ref = RefBus()
    pid = ref.create_page(256, name="a", metadata={"k": b"\x01"})
    for i in range(50):
        ref.write(pid, i, bytes([i]))
    with mmsb.open(path) as bus:
        assert bus.lsn == ckpt_lsn
        assert bus.recovery["checkpoint_lsn"] == ckpt_lsn
        assert capture_full_state(bus) == ref.full_state()
        assert bus.create_page(8).id == 2  # the lost page's id is free again: it never existed
