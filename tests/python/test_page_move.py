"""Page.to(location): moving a page between the host and (emulated) devices.

The devices are the host emulation (`_core.cuda_emulate_devices`), which stores bytes inverted,
so a move that copied device memory as host memory would show wrong bytes. A move keeps bytes
and epoch, costs one lsn, is logged (a reopen puts the page back where it was) and is refused,
changing nothing, while anything holds the address of the page's bytes: views, arrays derived
from them, memoryviews, DLPack tensors, views a recompute kept.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import mmsb
from mmsb import _core


def state(bus, page):
    return page.location, page.epoch, bus.lsn, page.read(0, page.size)


def test_moves_keep_bytes_and_epoch_and_cost_one_lsn(devices):
    bus = mmsb.Bus()
    rng = np.random.default_rng(3)
    data = rng.standard_normal(300)
    p = bus.create_page(data=data)
    for to in ["cuda:0", "cuda:1", "cpu", "cuda:1", "cuda:0", "cpu"]:
        lsn, epoch = bus.lsn, p.epoch
        assert p.to(to) is p
        assert p.location == to and bus.lsn == lsn + 1 and p.epoch == epoch
        assert np.array_equal(np.frombuffer(p.read(0, p.size), dtype=np.float64), data)
        p.write(8, np.float64(to == "cpu").tobytes())  # commits land in the new memory
        data[1] = float(to == "cpu")
        assert np.array_equal(np.asarray(p), data)
    lsn = bus.lsn
    assert p.to("cpu") is p and bus.lsn == lsn  # already there: nothing committed
    assert bus.verify().ok


@pytest.mark.parametrize("hold", ["view", "asarray", "slice", "memoryview", "dlpack"])
def test_a_live_export_refuses_the_move_until_dropped(devices, hold):
    bus = mmsb.Bus()
    p = bus.create_page(data=np.arange(16.0))
    held = {
        "view": lambda: p.view(),
        "asarray": lambda: np.asarray(p),
        "slice": lambda: p.view()[3:5],  # a derived array keeps the export through its base
        "memoryview": lambda: memoryview(p),
        "dlpack": lambda: np.from_dlpack(p),
    }[hold]()
    before = state(bus, p)
    with pytest.raises(mmsb.InvalidArgumentError, match="1 view"):
        p.to("cuda:0")
    assert state(bus, p) == before
    if hold == "memoryview":
        held.release()
    del held
    gc.collect()
    p.to("cuda:0")
    assert p.location == "cuda:0" and p.view().tolist() == list(np.arange(16.0))


def test_views_taken_after_a_move_see_the_new_memory(devices):
    bus = mmsb.Bus()
    p = bus.create_page(data=np.arange(4.0), location="cuda:0")
    p.to("cpu")
    v = p.view()
    p.write(0, np.float64(9).tobytes())
    assert v[0] == 9.0  # a host page's view is live


def test_refusals_change_nothing(devices):
    bus = mmsb.Bus()
    p = bus.create_page(data=np.arange(4.0), name="p")
    before = state(bus, p)
    with pytest.raises(mmsb.InvalidArgumentError, match="gpu"):
        p.to("gpu")
    with pytest.raises(mmsb.DeviceUnavailableError):
        p.to("cuda:7")
    # inside a transaction every move is refused, also one to where the page is or to a device
    # this machine lacks (the transaction is checked first)
    for where in ("cuda:0", "cpu", "cuda:7"):
        with pytest.raises(mmsb.InvalidArgumentError, match="transaction"):
            with bus.transaction():
                p.write(0, np.float64(5).tobytes())
                p.to(where)
    assert state(bus, p) == before
    with pytest.raises(mmsb.ReadOnlyError):
        bus.at(bus.lsn).page("p").to("cuda:0")
    bus.delete_page(p)
    with pytest.raises(mmsb.PageNotFoundError):
        p.to("cuda:0")


def test_a_recompute_that_keeps_a_view_of_its_parent_blocks_the_parent_move(devices):
    bus = mmsb.Bus()
    a = bus.create_page(data=np.arange(4.0))
    b = bus.create_page(shape=(4,), dtype="float64")
    kept = []

    def double(out, parent):
        kept.append(parent)
        out[:] = parent * 2

    bus.depend(b, [a], double)
    assert kept and b.view().tolist() == [0.0, 2.0, 4.0, 6.0]
    with pytest.raises(mmsb.InvalidArgumentError, match="view"):
        a.to("cuda:0")
    kept.clear()
    gc.collect()
    a.to("cuda:0")
    a.write(0, np.float64(1).tobytes())  # the recompute now reads a's mirror
    assert b.view().tolist() == [2.0, 2.0, 4.0, 6.0]


def test_reopen_and_replay_put_pages_where_they_were(devices, tmp_path):
    with mmsb.Bus(tmp_path / "bus") as bus:
        p = bus.create_page(data=np.arange(8.0), name="p")
        p.to("cuda:1")
        moved_at = bus.lsn
        p.write(0, np.float64(-1).tobytes())
        expect = np.asarray(p).copy()
    with mmsb.open(tmp_path / "bus") as bus:
        p = bus.page("p")
        assert p.location == "cuda:1" and p.__dlpack_device__() == (2, 1)
        assert np.array_equal(np.asarray(p), expect)
        assert bus.at(moved_at - 1).page("p").location == "cpu"
        assert bus.at(moved_at).page("p").location == "cuda:1"
    past = mmsb.replay(tmp_path / "bus")
    assert past.page("p").location == "cuda:1" and np.array_equal(np.asarray(past.page("p")), expect)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_device_a_page_left_is_not_needed_to_reopen(devices, tmp_path, checkpoint):
    """Only where pages live at the end matters: a page that lived on cuda:1 and came back to
    the host, or was deleted there, reopens on a machine without cuda:1 (and without any GPU)."""
    with mmsb.Bus(tmp_path / "bus") as bus:
        p = bus.create_page(data=np.arange(4.0), name="p")
        gone = bus.create_page(8, location="cuda:1")
        p.to("cuda:1")
        p.write(0, np.float64(7).tobytes())
        if checkpoint:
            bus.checkpoint()  # taken while both live on cuda:1
        p.to("cpu")
        bus.delete_page(gone)
        stays = bus.create_page(8, name="stays", location="cuda:1")
        expect, last = np.asarray(p).copy(), bus.lsn
    _core.cuda_emulate_devices(1)  # cuda:1 is gone
    with pytest.raises(mmsb.DeviceUnavailableError, match="page 3 'stays' lives on cuda:1"):
        mmsb.open(tmp_path / "bus")
    _core.cuda_emulate_devices(2)
    with mmsb.open(tmp_path / "bus") as bus:
        bus.delete_page("stays")
    for count in (1, 0):
        _core.cuda_emulate_devices(count)
        with mmsb.open(tmp_path / "bus") as bus:
            assert bus.lsn == last + 1 and [q.name for q in bus.pages()] == ["p"]
            assert bus.page("p").location == "cpu" and np.array_equal(np.asarray(bus.page("p")), expect)
            assert bus.verify().ok


@pytest.mark.parametrize("other", ["cpu", "cuda:0"])
def test_a_batch_is_entered_mid_way_in_fsync_mode_beside_device_pages(devices, tmp_path, other):
    """With group commit and a device in use, a batch is logged inside a transaction record of its
    own (its device transfer may fail after the record is written); at() and replay still enter
    it row by row."""
    path = tmp_path / "bus"
    with mmsb.Bus(path, durability="fsync") as bus:
        h = bus.create_page(8)
        bus.create_page(8, location=other)
        first = bus.lsn + 1
        bus.apply_batch(mmsb.DeltaBatch([h.id, h.id], [0, 0], [8, 8], b"AAAAAAAABBBBBBBB"))
        with bus.at(first) as past:
            assert past.lsn == first and past.page(h.id).read(0, 8) == b"A" * 8 and past.page(h.id).epoch == 1
    with mmsb.replay(path, to=first) as past:
        assert past.lsn == first and past.page(h.id).read(0, 8) == b"A" * 8


def test_a_device_has_one_spelling(devices, bus):
    p = bus.create_page(8, location="cuda:1")
    for other in ("cuda:01", "cuda:001", "cuda:", "cuda:-1", "cuda:-0", "cuda:+1", "cuda: 1"):
        with pytest.raises(mmsb.InvalidArgumentError, match="unknown location"):
            bus.create_page(8, location=other)
        with pytest.raises(mmsb.InvalidArgumentError, match="unknown location"):
            p.to(other)
    assert p.location == "cuda:1" and len(bus) == 1


def test_inspect_names_the_move(devices, tmp_path):
    with mmsb.Bus(tmp_path / "bus") as bus:
        bus.create_page(64).to("cuda:0")
    records = _core._inspect(str(tmp_path / "bus"), True)
    assert "move page 1 to cuda:0" in repr(records)
