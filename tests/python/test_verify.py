"""bus.verify(): internal invariants, log checksums, and log = memory (from lsn 1 and from the
newest checkpoint). It must pass on healthy buses and name the damage on broken ones."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import mmsb
from test_time_travel import RecordingDriver


def segment_files(path):
    return sorted(f for f in os.listdir(path) if f.startswith("seg-"))


def put_log_under(path, other):
    """Replaces the log segments of the bus directory `path` with those of `other`."""
    for seg in segment_files(path):
        os.remove(os.path.join(path, seg))
    for seg in segment_files(other):
        shutil.copyfile(os.path.join(other, seg), os.path.join(path, seg))


def test_in_memory_bus_verifies_its_invariants(rng):
    bus = mmsb.Bus()
    pages = [bus.create_page(int(rng.integers(1, 100)), name=f"p{i}") for i in range(20)]
    for p in pages[::3]:
        bus.delete_page(p)
    rep = bus.verify()
    assert rep.ok and bool(rep) and rep.problems == []
    # the in-memory log is replayed and compared with memory, as for a directory bus
    assert rep.pages_checked == len(bus) and rep.log_checked and rep.records_checked == 20 + 7


def test_healthy_directory_bus_verifies_after_random_work(tmp_path, rng):
    drv = RecordingDriver(tmp_path / "bus", "flush", rng)
    drv.run(300)
    rep = drv.bus.verify()
    assert rep.ok, rep.problems
    assert rep.log_checked and rep.records_checked > 0 and rep.pages_checked == len(drv.bus)
    drv.bus.close()


def test_damage_in_a_segment_covered_by_a_checkpoint_is_reported(tmp_path):
    path = str(tmp_path / "b")
    with mmsb.Bus(path) as bus:
        p = bus.create_page(data=np.arange(8.0), name="x")
        for i in range(5):
            p.write(8 * i, np.float64(-i).tobytes())
        bus.checkpoint()
        p.write(0, np.float64(7).tobytes())
    first = os.path.join(path, segment_files(path)[0])
    data = bytearray(open(first, "rb").read())
    data[100] ^= 0x01  # inside an early record's body
    open(first, "wb").write(data)
    with mmsb.open(path) as bus:  # recovery starts at the checkpoint, so the open succeeds...
        rep = bus.verify()  # ...but verify reads every record
        assert not rep.ok
        assert any("corrupt at byte" in line and first in line for line in rep.problems), rep.problems


@pytest.mark.parametrize("which", ["newest", "older"])
def test_a_damaged_checkpoint_is_reported(tmp_path, which):
    """Recovery falls back past a damaged checkpoint without a word, so the replays verify runs
    may never read it; verify reads every checkpoint and names the damaged one."""
    path = str(tmp_path / "b")
    bus = mmsb.Bus(path)
    p = bus.create_page(data=np.full(64, ord("A"), np.uint8), name="p")
    bus.checkpoint()
    p.write(0, b"B")
    bus.checkpoint()
    assert bus.verify().ok
    ckpts = sorted(f for f in os.listdir(path) if f.endswith(".ckpt"))
    damaged = os.path.join(path, ckpts[-1] if which == "newest" else ckpts[0])
    data = bytearray(open(damaged, "rb").read())
    at = data.find(b"A" * 32)
    assert at > 0
    data[at + 5] ^= 0x01  # a page byte: the file still parses
    open(damaged, "wb").write(data)
    rep = bus.verify()
    assert not rep.ok
    assert any(damaged in line for line in rep.problems), rep.problems
    bus.close()


def test_log_that_disagrees_with_memory_is_reported(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for path, fill in ((a, 1), (b, 2)):  # same record structure, different bytes
        with mmsb.Bus(path) as bus:
            p = bus.create_page(32, name="p")
            p.write(0, bytes([fill]) * 16)
    bus = mmsb.open(a)
    seg = segment_files(a)[0]
    shutil.copyfile(os.path.join(b, seg), os.path.join(a, seg))  # the log now says "2", memory "1"
    rep = bus.verify()
    assert not rep.ok
    assert any("page 1 bytes differ" in line for line in rep.problems), rep.problems
    bus.close()


def _plain(bus):
    p = bus.create_page(32, name="p")
    p.write(0, b"\x01" * 8)
    p.write(8, b"\x02" * 8)


def _two_pages(bus):
    bus.create_page(32, name="p").write(0, b"\x01" * 8)
    bus.create_page(8)


def _renamed(bus):
    p = bus.create_page(32, name="q")
    p.write(0, b"\x01" * 8)
    p.write(8, b"\x02" * 8)


def _in_one_write(bus):  # _plain's bytes in one write, then another page
    bus.create_page(32, name="p").write(0, b"\x01" * 8 + b"\x02" * 8)
    bus.create_page(8)


def _graph(fn, edge_from):
    def build(bus):
        a = bus.create_page(data=np.zeros(2), name="a")
        c = bus.create_page(shape=(2,), dtype="float64", name="c")
        pages = {"x": bus.create_page(8, name="x"), "y": bus.create_page(8, name="y")}
        bus.depend(c, on=[a], fn=fn)
        bus.add_edge(pages[edge_from], c, kind="control")
    return build


# Each pair leaves logs of the same length (verify replays the log up to the bus's lsn).
@pytest.mark.parametrize("memory,log,expected", [
    pytest.param(_plain, _two_pages, ["page 2 exists only in the log", "page 1 bytes differ"], id="page-only-in-log"),
    pytest.param(_two_pages, _plain, ["page 2 exists only in memory", "page 1 epoch 1 in memory, 2 in the log"],
                 id="page-only-in-memory"),
    pytest.param(_plain, _renamed, ["page 1 name, shape or metadata differ"], id="name"),
    pytest.param(_in_one_write, _plain, ["page 1 epoch 1 in memory, 2 in the log", "page 1 last lsn differs"],
                 id="epoch"),
    pytest.param(_graph(mmsb.ops.copy, "x"), _graph(mmsb.ops.reduce("max_plus"), "x"),
                 ["page 2 recompute (depend) differs"], id="recompute"),
    pytest.param(_graph(mmsb.ops.copy, "x"), _graph(mmsb.ops.copy, "y"), ["the dependency graph differs"],
                 id="graph"),
])
def test_each_way_the_log_can_disagree_with_memory_is_named(tmp_path, memory, log, expected):
    """The log of another history put under a running bus: verify() names what differs (and
    passes on the bus's own log first)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with mmsb.Bus(b) as other:
        log(other)
    bus = mmsb.Bus(a)
    memory(bus)
    assert bus.verify().ok
    bus.close()
    bus = mmsb.open(a)
    put_log_under(a, b)
    rep = bus.verify()
    assert not rep.ok
    for part in expected:
        assert any(part in line for line in rep.problems), (part, rep.problems)
    bus.close()


def test_log_records_past_the_bus_lsn_are_reported(tmp_path):
    """A log that goes further than memory (here another history's, one write longer) is named
    even though every lsn the bus has matches; a read-only view at an earlier lsn is not."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with mmsb.Bus(b) as other:
        _plain(other)
        other.page(1).write(16, b"\x03" * 8)
    with mmsb.Bus(a) as bus:
        _plain(bus)
    bus = mmsb.open(a)
    assert bus.lsn == 3 and bus.recovery["log_last_lsn"] == 3 and bus.verify().ok
    put_log_under(a, b)
    rep = bus.verify()
    assert not rep.ok
    assert rep.problems == ["the log holds lsns 4..4 past the bus lsn 3, not applied in memory"], rep.problems
    bus.close()
    past = mmsb.replay(a, to=2)
    assert past.lsn == 2 and past.recovery["log_last_lsn"] == 4
    assert past.verify().ok, past.verify().problems
