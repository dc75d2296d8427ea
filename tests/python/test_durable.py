"""Directory buses (DESIGN §1 durability modes, §2 lifetime, §4, §6): reopen restores everything,
the writer lock, lifetime errors, directory permissions, durability='none' buffering, and failed
commits that must leave the log untouched.

The property test drives ~2,000 random operations (every write form, DeltaBatch included, page
creation with data and metadata, deletes, metadata changes, rejected calls) through a directory
bus, closing and reopening it at random points (and checkpointing, in one variant), and compares
the reopened bus with the reference model every time.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import mmsb
from log_files import files_of
from reference_model import RefBus, capture_full_state
from test_differential import Driver

MODES = ["none", "flush", "fsync"]




def segment_sizes(path):
    return {n: os.path.getsize(os.path.join(path, n)) for n in os.listdir(path)
            if n.startswith("seg-")}


def page_extras(bus):
    """What capture_full_state leaves out: each page's last_lsn and location."""
    return {p.id: (p.last_lsn, p.location) for p in bus.pages()}


# ---- property test: random operations, random reopens ------------------------------------------

class DirDriver(Driver):
    """test_differential's Driver on a directory bus, plus metadata, checkpoints and reopens; the
    reopened bus must equal the reference model (and the bus before closing) in every detail."""

    def __init__(self, path, durability, checkpoints, rng):
        super().__init__(2, rng)
        self.bus.close()  # the in-memory bus the base class made
        self.path = str(path)
        self.durability = durability
        self.bus = mmsb.Bus(self.path, durability=durability, threads=2)
        self.OPS = list(Driver.OPS) + [("metadata", 6), ("create_meta", 2), ("reopen", 1)]
        if checkpoints:
            self.OPS.append(("checkpoint", 1))
        self.checkpoint_lsn = 0
        self.records_since_checkpoint = 0
        self.last_lsn = 0
        self.reopens = 0

    def meta_value(self):
        if self.rng.random() < 0.5:
            return "s" + str(int(self.rng.integers(10_000))) + "\u00e9\u6f22"
        return self.rand_bytes(int(self.rng.integers(0, 16)))  # arbitrary bytes, NULs included

    def op_create_meta(self):
        md = {f"key{i}": self.meta_value() for i in range(int(self.rng.integers(0, 4)))}
        name = self.new_name()
        if self.rng.random() < 0.5:
            data = self.rng.integers(0, 1000, int(self.rng.integers(1, 20))).astype(np.int32)
            p = self.bus.create_page(data=data, name=name, metadata=md)
            pid = self.ref.create_page(data=data, name=name, metadata=md)
        else:
            size = int(self.rng.integers(1, 300))
            p = self.bus.create_page(size, name=name, metadata=md)
            pid = self.ref.create_page(size, name=name, metadata=md)
        assert p.id == pid
        self.handles[pid] = p
        return [pid]

    def op_metadata(self):
        pid = self.pick()
        key = f"key{int(self.rng.integers(6))}"
        value = None if self.rng.random() < 0.2 else self.meta_value()
        self.handles[pid].set_metadata(key, value)
        self.ref.set_metadata(pid, key, value)
        assert self.handles[pid].metadata == self.ref.metadata[pid]
        return [pid]

    def op_checkpoint(self):
        assert self.bus.checkpoint() == self.ref.lsn
        self.checkpoint_lsn = self.ref.lsn
        self.records_since_checkpoint = 0
        return []

    def check_cheap(self, touched):
        super().check_cheap(touched)
        if self.bus.lsn != self.last_lsn:  # every committing call writes exactly one record
            self.records_since_checkpoint += 1
            self.last_lsn = self.bus.lsn

    def check_full(self):
        super().check_full()
        assert capture_full_state(self.bus) == self.ref.full_state()

    def op_reopen(self):
        before = capture_full_state(self.bus)
        extras = page_extras(self.bus)
        lsn = self.bus.lsn
        self.bus.close()
        assert self.bus.closed
        if self.rng.random() < 0.5:
            self.bus = mmsb.open(self.path, durability=self.durability, threads=2)
        else:
            self.bus = mmsb.Bus(self.path, durability=self.durability, threads=2)
        self.reopens += 1
        self.handles = {p.id: p for p in self.bus.pages()}
        assert self.bus.durability == self.durability
        assert self.bus.recovery == {
            "checkpoint_lsn": self.checkpoint_lsn,
            "records_replayed": self.records_since_checkpoint,
            "log_last_lsn": lsn,
            "truncated_tail": False,
            "tail_reason": "",
        }
        assert capture_full_state(self.bus) == before
        assert page_extras(self.bus) == extras
        self.check_full()
        return []


@pytest.mark.parametrize("checkpoints", [False, True], ids=["log-only", "checkpoints"])
@pytest.mark.parametrize("durability", MODES)
def test_reopen_restores_everything_property(tmp_path, durability, checkpoints, rng):
    drv = DirDriver(tmp_path / "bus", durability, checkpoints, rng)
    drv.run(2000)
    drv.op_reopen()  # a final close + reopen, whatever the random ones did
    assert drv.reopens >= 5
    for name, _ in drv.OPS:
        assert drv.counts.get(name, 0) > 0, name
    assert drv.counts["big_batch"] == 1
    if checkpoints:
        assert drv.checkpoint_lsn > 0
        assert any(n.endswith(".ckpt") for n in os.listdir(drv.path))
    else:
        assert not any(n.endswith(".ckpt") for n in os.listdir(drv.path))
    drv.bus.close()


# ---- reopen: focused checks ----------------------------------------------------------------------

def build_everything(bus, checkpoint_midway=False):
    """Pages of every layout, names, metadata with str and bytes values, deletes (the highest id
    among them), every write form; with `checkpoint_midway`, a checkpoint halfway through.
    Page ids on a fresh bus: 1 raw, 2 f16, 3 cplx, 4 deleted, 5 rawdata, 6 uint64, 7 f64,
    8 deleted. Returns the matching RefBus."""
    ref = RefBus()
    md = {"str": "v\u00e9", "bytes": b"\x00\xff\x00binary", "empty": "", "empty_b": b""}
    specs = [
        dict(size=100, name="raw", metadata=md),
        dict(shape=(3, 4, 2), dtype="float16", name="f16"),
        dict(data=np.arange(10, dtype=np.complex64), name="cplx", metadata={"k": b"\x01"}),
        dict(data=np.array([[True, False], [False, True]])),
        dict(data=b"raw bytes content", name="rawdata"),
        dict(shape=7, dtype="uint64"),
        dict(data=np.arange(6.0).reshape(2, 3), name="f64"),
    ]
    for spec in specs:
        p = bus.create_page(**spec)
        assert p.id == ref.create_page(**spec)
    bus.page("raw").write(5, b"hello")
    ref.write(1, 5, b"hello")
    bus.apply(mmsb.Delta.runs(bus.page(1), [0, 50, 52], [b"ab", b"xyz", b"Q"]))
    ref.apply(1, [(0, b"ab"), (50, b"xyz"), (52, b"Q")])
    mask = np.zeros(48, bool)
    mask[::5] = True
    bus.apply(mmsb.Delta.masked(bus.page("f16"), mask, bytes(range(int(mask.sum())))))
    ref.masked(2, mask, bytes(range(int(mask.sum()))))
    if checkpoint_midway:
        assert bus.checkpoint() == ref.lsn
    bus.apply_batch(mmsb.DeltaBatch([6, 1, 6], [0, 90, 8], [3, 2, 8], b"abc" + b"zz" + b"12345678"))
    ref.batch([(6, 0, b"abc"), (1, 90, b"zz"), (6, 8, b"12345678")])
    new = np.arange(6.0).reshape(2, 3)
    new[1, 2] = -1
    assert bus.page("f64").update(new)
    ref.update(7, new.tobytes())
    with bus.page(5).edit() as a:
        a[0] = ord("R")
    ref.write(5, 0, b"R")  # a one-byte diff is the same as a one-byte write
    bus.page("cplx").set_metadata("added", "x")
    ref.set_metadata(3, "added", "x")
    bus.page("cplx").set_metadata("k", None)
    ref.set_metadata(3, "k", None)
    bus.delete_page(4)
    ref.delete(4)
    last = bus.create_page(8, name="last")
    assert last.id == ref.create_page(8, name="last") == 8
    bus.delete_page("last")  # the highest id is deleted: it must stay used
    ref.delete(last.id)
    return ref


@pytest.mark.parametrize("checkpoint", ["no-checkpoint", "checkpoint-at-end",
                                        "checkpoint-midway"])
@pytest.mark.parametrize("durability", MODES)
def test_reopen_restores_every_detail(tmp_path, durability, checkpoint):
    path = tmp_path / "bus"
    bus = mmsb.Bus(path, durability=durability)
    assert bus.path == str(path) and bus.durability == durability
    ref = build_everything(bus, checkpoint_midway=checkpoint == "checkpoint-midway")
    if checkpoint == "checkpoint-at-end":
        assert bus.checkpoint() == bus.lsn == ref.lsn
    want = capture_full_state(bus)
    assert want == ref.full_state()
    extras = page_extras(bus)
    bus.close()

    again = mmsb.open(path)
    assert again.lsn == ref.lsn
    assert capture_full_state(again) == want
    assert page_extras(again) == extras  # last_lsn and location too
    p = again.page("cplx")
    assert p.dtype == np.complex64 and p.shape == (10,) and p.epoch == 1
    assert p.metadata == {"added": "x"}
    raw_md = again.page("raw").metadata
    assert raw_md == {"str": "v\u00e9", "bytes": b"\x00\xff\x00binary", "empty": "",
                      "empty_b": b""}
    assert type(raw_md["bytes"]) is bytes and type(raw_md["empty_b"]) is bytes
    assert type(raw_md["str"]) is str and type(raw_md["empty"]) is str
    assert again.page("f16").shape == (3, 4, 2) and again.page("f16").dtype == np.float16
    assert again.page("rawdata").dtype is None and again.page("rawdata").read(0, 3) == b"Raw"
    assert 4 not in again and 8 not in again and "last" not in again
    # deleted ids, the highest one included, are never reused after a reopen
    assert again.create_page(4, name="last").id == 9
    again.close()
    with mmsb.open(path) as third:
        assert third.create_page(4).id == 10


def test_recovery_report_names_the_checkpoint_and_the_replayed_records(tmp_path):
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        p = bus.create_page(64)
        for i in range(5):
            p.write(i, b"x")
        assert bus.checkpoint() == 6
        for i in range(3):
            p.write(i, b"y")
        bus.apply_batch(mmsb.DeltaBatch([1, 1], [0, 1], [1, 1], b"ab"))  # one record, 2 lsns
        bus.create_page(data=b"abc")  # one record, 2 lsns
    with mmsb.open(path) as bus:
        assert bus.lsn == 13
        assert bus.recovery == {"checkpoint_lsn": 6, "records_replayed": 5, "log_last_lsn": 13,
                                "truncated_tail": False, "tail_reason": ""}
    with mmsb.Bus(path) as bus:
        assert bus.recovery["checkpoint_lsn"] == 6 and bus.recovery["records_replayed"] == 5
        assert bus.checkpoint() == 13
    with mmsb.open(path) as bus:
        assert bus.recovery == {"checkpoint_lsn": 13, "records_replayed": 0, "log_last_lsn": 13,
                                "truncated_tail": False, "tail_reason": ""}
        assert bus.page(2).read(0, 3) == b"abc" and bus.page(2).epoch == 1


def test_reopen_of_an_empty_bus_and_a_checkpoint_without_commits(tmp_path):
    path = tmp_path / "bus"
    mmsb.Bus(path).close()
    with mmsb.open(path) as bus:
        assert bus.lsn == 0 and len(bus) == 0
        assert bus.checkpoint() == 0
        assert bus.checkpoint() == 0  # twice at the same lsn
    with mmsb.open(path) as bus:
        assert bus.lsn == 0 and len(bus) == 0
        assert bus.create_page(8).id == 1
    with mmsb.open(path) as bus:
        assert bus.lsn == 1 and [p.id for p in bus.pages()] == [1]


def test_many_reopens_with_checkpoints_in_between(tmp_path):
    path = tmp_path / "bus"
    ref = RefBus()
    rng = np.random.default_rng(3)
    for session in range(12):
        with mmsb.Bus(path, durability=MODES[session % 3]) as bus:
            assert capture_full_state(bus) == ref.full_state()
            pid = bus.create_page(32, metadata={"session": str(session)}).id
            assert pid == ref.create_page(32, metadata={"session": str(session)})
            for _ in range(5):
                off = int(rng.integers(0, 28))
                data = rng.bytes(4)
                bus.page(pid).write(off, data)
                ref.write(pid, off, data)
            if session % 4 == 1:
                bus.checkpoint()
            if session % 3 == 2:
                bus.delete_page(pid)
                ref.delete(pid)
    with mmsb.open(path) as bus:
        assert capture_full_state(bus) == ref.full_state()


# ---- lifetime: context manager, lock, closed bus -------------------------------------------------

def test_context_manager_closes_and_releases_the_lock(tmp_path):
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        assert not bus.closed
        bus.create_page(8, name="a")
    assert bus.closed
    with pytest.raises(mmsb.ClosedError):
        bus.page("a")
    with mmsb.open(path) as again:  # the lock was released
        assert "a" in again
    # also when the block ends with an exception
    with pytest.raises(RuntimeError, match="boom"):
        with mmsb.open(path) as bus:
            bus.page("a").write(0, b"x")
            raise RuntimeError("boom")
    assert bus.closed
    with mmsb.open(path) as again:
        assert again.page("a").read(0, 1) == b"x"


@pytest.mark.parametrize("second", ["Bus", "open"])
def test_second_writer_in_the_same_process_is_refused(tmp_path, second):
    path = tmp_path / "bus"
    first = mmsb.Bus(path)
    first.create_page(16, name="a")
    make = (lambda: mmsb.Bus(path)) if second == "Bus" else (lambda: mmsb.open(path))
    with pytest.raises(mmsb.BusLockedError) as info:
        make()
    assert str(path) in str(info.value)
    # the refused attempt must not have released or broken the first one's lock
    with pytest.raises(mmsb.BusLockedError):
        mmsb.open(path, durability="fsync")
    first.page("a").write(0, b"still works")
    assert first.lsn == 2
    first.close()
    with make() as bus:  # works after close
        assert bus.page("a").read(0, 11) == b"still works"


SECOND_PROCESS = """
import sys, mmsb
try:
    bus = (mmsb.Bus if sys.argv[2] == "Bus" else mmsb.open)(sys.argv[1])
except mmsb.BusLockedError as e:
    print("BusLockedError", e)
else:
    print("opened", bus.lsn)
    bus.close()
"""


@pytest.mark.parametrize("second", ["Bus", "open"])
def test_second_writer_in_another_process_is_refused(tmp_path, second):
    path = tmp_path / "bus"

    def other():
        out = subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(path), second],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    bus = mmsb.Bus(path)
    bus.create_page(8)
    assert other()[0] == "BusLockedError"
    bus.page(1).write(0, b"x")  # the first writer is unaffected
    bus.close()
    assert other() == ["opened", "2"]
    # and the other way round: while another process holds it, this one is refused
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, mmsb; b = mmsb.open(sys.argv[1]); print('held', "
         "flush=True); sys.stdin.read(); b.close()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(mmsb.BusLockedError):
            mmsb.Bus(path)
        with pytest.raises(mmsb.BusLockedError):
            mmsb.open(path)
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    with mmsb.open(path) as bus:
        assert bus.lsn == 2


def test_open_of_a_missing_directory_is_invalid_argument(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(mmsb.InvalidArgumentError) as info:
        mmsb.open(missing)
    assert str(missing) in str(info.value)
    assert not missing.exists()  # open() never creates a bus


def test_open_of_an_empty_or_foreign_directory_is_invalid_argument(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(mmsb.InvalidArgumentError) as info:
        mmsb.open(empty)
    assert str(empty) in str(info.value)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a bus")
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.open(foreign)
    with pytest.raises(mmsb.InvalidArgumentError):  # refused again: nothing was created
        mmsb.open(empty)
    # not even the writer's LOCK file: a failed open leaves the directory as it was
    assert os.listdir(empty) == [] and os.listdir(foreign) == ["notes.txt"]


def test_a_path_that_is_a_file_is_invalid_argument(tmp_path):
    f = tmp_path / "afile"
    f.write_bytes(b"not a bus")
    for call in (lambda: mmsb.open(f), lambda: mmsb.replay(f), lambda: mmsb.Bus(f)):
        with pytest.raises(mmsb.InvalidArgumentError) as info:
            call()
        assert str(f) in str(info.value) and "directory" in str(info.value)
    assert f.read_bytes() == b"not a bus"


def test_a_damaged_checkpoint_nothing_else_covers_is_corruption(tmp_path):
    """Recovery falls back to older checkpoints and the log; where they end before the damaged
    checkpoint's lsn, opening must refuse (LogCorruptError), not start a bus beside it."""
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        bus.create_page(data=b"x" * 64, name="p")
        covered = bus.checkpoint()
    for name in os.listdir(path):
        if name.startswith("seg-"):
            os.remove(path / name)  # the checkpoint covers every record
    with mmsb.open(path) as bus:
        assert bus.lsn == covered and bus.page("p").read(0, 1) == b"x"
    for name in os.listdir(path):
        if name.startswith("seg-"):
            os.remove(path / name)
    ckpt = next(path / n for n in os.listdir(path) if n.startswith("ckpt-"))
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    before = files_of(path)
    for call in (lambda: mmsb.open(path), lambda: mmsb.Bus(path), lambda: mmsb.replay(path)):
        with pytest.raises(mmsb.LogCorruptError) as info:
            call()
        assert ckpt.name in str(info.value) and f"lsn {covered}" in str(info.value)
    assert files_of(path) == before


def test_open_needs_a_path():
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.open(None)


@pytest.mark.parametrize("bad", ["", "sync", "FLUSH", "fsync ", "full"])
def test_bad_durability_is_invalid_argument(tmp_path, bad):
    path = tmp_path / "bus"
    with pytest.raises(mmsb.InvalidArgumentError) as info:
        mmsb.Bus(path, durability=bad)
    assert repr(bad)[1:-1] in str(info.value)
    assert not path.exists()  # a refused call creates nothing
    mmsb.Bus(path).close()
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.open(path, durability=bad)
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.Bus(durability=bad)
    with mmsb.open(path) as bus:  # the refused open did not take the lock
        assert bus.durability == "flush"


def test_in_memory_bus_has_no_path_or_durability_and_checkpoints_in_memory():
    bus = mmsb.Bus()
    assert bus.path is None and bus.durability is None
    bus.create_page(8)
    assert bus.checkpoint() == bus.lsn == 1  # kept beside the in-memory log: no file anywhere
    bus.close()
    with pytest.raises(mmsb.HistoryUnavailableError):
        mmsb.Bus(history=False).checkpoint()


CLOSED_CALLS = {
    "page": lambda b, p: b.page(1),
    "page_by_name": lambda b, p: b.page("a"),
    "pages": lambda b, p: b.pages(),
    "len": lambda b, p: len(b),
    "contains": lambda b, p: "a" in b,
    "create_page": lambda b, p: b.create_page(8),
    "delete_page": lambda b, p: b.delete_page(1),
    "apply": lambda b, p: b.apply(mmsb.Delta.at(1, 0, b"x")),
    "apply_batch": lambda b, p: b.apply_batch(mmsb.DeltaBatch([1], [0], [1], b"x")),
    "checkpoint": lambda b, p: b.checkpoint(),
    "write": lambda b, p: p.write(0, b"x"),
    "read": lambda b, p: p.read(0, 1),
    "view": lambda b, p: p.view(),
    "update": lambda b, p: p.update(np.zeros(8, np.uint8)),
    "set_metadata": lambda b, p: p.set_metadata("k", "v"),
    "metadata": lambda b, p: p.metadata,
    "epoch": lambda b, p: p.epoch,
}


@pytest.mark.parametrize("call", sorted(CLOSED_CALLS))
def test_closed_directory_bus_raises_closed_error(tmp_path, call):
    bus = mmsb.Bus(tmp_path / "bus")
    p = bus.create_page(8, name="a")
    bus.close()
    with pytest.raises(mmsb.ClosedError):
        CLOSED_CALLS[call](bus, p)
    bus.close()  # closing twice is harmless
    with mmsb.open(tmp_path / "bus") as again:  # and nothing was written by the refused call
        assert again.lsn == 1 and [q.id for q in again.pages()] == [1]


# ---- files: permissions, durability none, failed commits -----------------------------------------

def test_directory_is_created_owner_only(tmp_path):
    old = os.umask(0o002)  # a permissive umask must not widen the directory's mode
    try:
        path = tmp_path / "bus"
        with mmsb.Bus(path) as bus:
            bus.create_page(8).write(0, b"secret")
            bus.checkpoint()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    names = os.listdir(path)
    assert any(n.startswith("seg-") for n in names) and any(n.endswith(".ckpt") for n in names)
    for name in names:
        mode = stat.S_IMODE(os.stat(path / name).st_mode)
        assert mode & 0o077 == 0, f"{name} is readable by others: {oct(mode)}"


def test_links_planted_under_the_names_of_files_the_writer_makes_are_never_written_through(tmp_path):
    # anyone who may write the directory could plant them: the checkpoint's temporary name, the
    # next segment, the lock; the file they point at must stay as it was
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        p = bus.create_page(8)
        p.write(0, b"x")
        os.symlink(victim, path / f"ckpt-{bus.lsn:020d}.ckpt.tmp")
        bus.checkpoint()  # the link is replaced by the checkpoint's own new file
        assert not os.path.islink(path / f"ckpt-{bus.lsn:020d}.ckpt")
        p.write(0, b"y")
        os.symlink(victim, path / f"seg-{bus.lsn + 1:020d}.log")  # a checkpoint starts that segment
        with pytest.raises(mmsb.DurabilityError, match="seg-.*symbolic link"):
            bus.checkpoint()
        p.write(0, b"z")  # the log goes on in the segment it had
        lsn = bus.lsn
    assert victim.read_bytes() == b"precious"
    with mmsb.open(path) as again:
        assert again.lsn == lsn and again.page(p.id).read(0, 1) == b"z"
    elsewhere = tmp_path / "made-by-the-lock"
    os.remove(path / "LOCK")
    os.symlink(elsewhere, path / "LOCK")
    with pytest.raises(mmsb.DurabilityError, match="LOCK"):
        mmsb.open(path)
    assert not elsewhere.exists()


def test_nested_new_directory_path(tmp_path):
    path = tmp_path / "a" / "b"
    path.parent.mkdir()
    with mmsb.Bus(path) as bus:
        bus.create_page(8)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    with mmsb.open(str(path)) as bus:  # str and PathLike both work
        assert bus.lsn == 1


def test_durability_none_writes_nothing_before_close(tmp_path):
    path = tmp_path / "bus"
    bus = mmsb.Bus(path, durability="none")
    header = segment_sizes(path)
    assert len(header) == 1 and list(header.values()) == [32]  # the segment header only
    ref = build_everything(bus)
    for i in range(200):
        bus.page(1).write(i % 90, b"0123456789")
        ref.write(1, i % 90, b"0123456789")
    assert segment_sizes(path) == header
    assert not any(n.endswith(".ckpt") for n in os.listdir(path))
    want = capture_full_state(bus)
    assert want == ref.full_state()
    bus.close()
    assert sum(segment_sizes(path).values()) > 32 + 200 * 10
    with mmsb.open(path, durability="none") as again:
        assert capture_full_state(again) == want
        assert again.durability == "none"


def test_durability_none_writes_everything_at_checkpoint(tmp_path):
    path = tmp_path / "bus"
    bus = mmsb.Bus(path, durability="none")
    ref = build_everything(bus)
    assert segment_sizes(path) == {"seg-00000000000000000001.log": 32}
    lsn = bus.checkpoint()
    assert lsn == ref.lsn
    assert os.path.getsize(path / "seg-00000000000000000001.log") > 32  # the buffered records
    assert os.path.exists(path / f"ckpt-{lsn:020d}.ckpt")
    after = dict(segment_sizes(path))
    bus.page(1).write(0, b"later")  # buffered again
    ref.write(1, 0, b"later")
    assert segment_sizes(path) == after
    bus.close()
    with mmsb.open(path) as again:
        assert capture_full_state(again) == ref.full_state()


@pytest.mark.parametrize("durability", ["flush", "fsync"])
def test_flush_and_fsync_write_each_commit_before_it_returns(tmp_path, durability):
    path = tmp_path / "bus"
    bus = mmsb.Bus(path, durability=durability)
    p = bus.create_page(64)

    def written():
        # Bytes up to the last non-zero one: an fsync writer keeps zeros ahead of its records
        # (docs/format.md), so the file's size need not grow with each commit.
        return sum(len((path / n).read_bytes().rstrip(b"\0")) for n in segment_sizes(path))

    sizes = [written()]
    for i in range(5):
        p.write(i, b"abc")
        sizes.append(written())
    assert all(b > a for a, b in zip(sizes, sizes[1:])), sizes
    bus.close()


FAILING_CALLS = [
    ("write past the end", mmsb.InvalidDeltaError, lambda b: b.page("raw").write(99, b"xy")),
    ("delta past the end", mmsb.InvalidDeltaError,
     lambda b: b.apply(mmsb.Delta.runs(b.page("raw"), [0, 99], [b"a", b"bc"]))),
    ("epoch conflict", mmsb.EpochConflictError,
     lambda b: b.page("raw").write(0, b"x", expect_epoch=b.page("raw").epoch + 5)),
    ("unknown page delta", mmsb.PageNotFoundError, lambda b: b.apply(mmsb.Delta.at(4, 0, b"x"))),
    ("batch with one bad row", mmsb.InvalidDeltaError,
     lambda b: b.apply_batch(mmsb.DeltaBatch([1, 1, 1], [0, 100, 2], [1, 1, 1], b"abc"))),
    ("batch row to a deleted page", mmsb.PageNotFoundError,
     lambda b: b.apply_batch(mmsb.DeltaBatch([1, 4], [0, 0], [1, 1], b"ab"))),
    ("update of the wrong size", mmsb.InvalidArgumentError,
     lambda b: b.page("raw").update(bytes(101))),
    ("duplicate name", mmsb.InvalidArgumentError, lambda b: b.create_page(8, name="raw")),
    ("bad metadata", mmsb.InvalidArgumentError,
     lambda b: b.create_page(8, metadata={"k": 3})),
    ("bad metadata value", mmsb.InvalidArgumentError,
     lambda b: b.page("raw").set_metadata("k", 3.5)),
    ("delete of a deleted page", mmsb.PageNotFoundError, lambda b: b.delete_page(4)),
    ("data and shape mismatch", mmsb.InvalidArgumentError,
     lambda b: b.create_page(data=np.zeros(6, np.float32), shape=(4,))),
]


@pytest.mark.parametrize("durability", MODES)
@pytest.mark.parametrize("what,exc,call", FAILING_CALLS, ids=[c[0] for c in FAILING_CALLS])
def test_failed_commit_leaves_the_log_unchanged(tmp_path, durability, what, exc, call):
    path = tmp_path / "bus"
    bus = mmsb.Bus(path, durability=durability)
    ref = build_everything(bus)
    if durability == "none":
        bus.checkpoint()  # so the files hold everything; later commits stay in memory
    files = files_of(path)
    want = capture_full_state(bus)
    with pytest.raises(exc):
        call(bus)
    assert files_of(path) == files, f"{what}: the directory changed"
    assert capture_full_state(bus) == want == ref.full_state()
    bus.page("raw").write(0, b"ok")  # the bus still commits after the failure
    ref.write(1, 0, b"ok")
    bus.close()
    with mmsb.open(path) as again:
        assert again.recovery["truncated_tail"] is False
        assert capture_full_state(again) == ref.full_state()


@pytest.mark.parametrize("durability", MODES)
def test_concurrent_commits_from_threads_all_reach_the_log(tmp_path, durability):
    # Commits from several threads (group commit) are all logged, in an order that replays to
    # the same state: the reopened bus equals the bus before close.
    import threading

    path = tmp_path / "bus"
    bus = mmsb.Bus(path, durability=durability, threads=2)
    pages = [bus.create_page(512, name=f"t{k}") for k in range(4)]
    shared = bus.create_page(64, name="shared")
    errors = []

    def work(k):
        try:
            for i in range(150):
                pages[k].write((7 * i) % 500, bytes([k, i % 256, 0xEE]))
                shared.write(k * 16 + i % 16, bytes([k]))  # interleaved writers on one page
                if i % 25 == 0:
                    bus.apply_batch(mmsb.DeltaBatch([pages[k].id, shared.id], [0, 60], [2, 1],
                                                    bytes([k, k, k])))
                if i % 40 == 0:
                    pages[k].set_metadata("i", str(i))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert bus.lsn == 5 + 4 * (150 * 2 + 6 * 2 + 4)
    want = capture_full_state(bus)
    extras = page_extras(bus)
    bus.close()
    with mmsb.open(path) as again:
        assert capture_full_state(again) == want
        assert page_extras(again) == extras


def test_a_regular_file_is_not_a_bus_directory(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"precious")
    with pytest.raises(mmsb.MmsbError):
        mmsb.Bus(path)
    with pytest.raises(mmsb.MmsbError):
        mmsb.open(path)
    assert path.read_bytes() == b"precious"


EXIT_WITHOUT_CLOSE = r"""
import sys, mmsb
bus = mmsb.Bus(sys.argv[1], durability="none")
p = bus.create_page(16, name="x")
bus.subscribe("delta_applied", lambda e: bus.lsn)  # a cycle: bus -> handler -> bus
for i in range(100):
    p.write(0, bytes([i]))
print(bus.lsn)
"""


def test_a_bus_left_open_in_a_reference_cycle_is_closed_at_exit(tmp_path):
    path = tmp_path / "bus"
    r = subprocess.run([sys.executable, "-c", EXIT_WITHOUT_CLOSE, str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    with mmsb.open(path) as bus:
        assert bus.lsn == int(r.stdout) == 101 and bus.page("x").read(0, 1) == bytes([99])
