"""bus.memory() reports real bytes (checked against the process's resident memory), and bus.gc()
reclaims memory without changing committed state or retained history."""

from __future__ import annotations

import gc as pygc
import hashlib
import os

import numpy as np
import pytest

import mmsb

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def pages_hash(bus) -> str:
    h = hashlib.sha256()
    for p in bus.pages():
        h.update(np.uint64(p.id).tobytes() + np.uint64(p.epoch).tobytes() + bytes(p.view()))
    return h.hexdigest()


def retained_history(bus):
    """Everything the history API answers: per page history, time travel at a few lsns, diff."""
    pages = [p.id for p in bus.pages()]
    out = {pid: bus.history(pid) for pid in pages}
    for lsn in sorted({1, bus.lsn // 3, bus.lsn // 2, bus.lsn}):
        with bus.at(lsn) as old:
            out[("at", lsn)] = pages_hash(old)
    out["diff"] = bus.diff(0, bus.lsn)
    return out


def churn(bus, rng, n_pages=600, size=1024, writes=2000):
    pages = [bus.create_page(size) for _ in range(n_pages)]
    for _ in range(writes):
        p = pages[rng.integers(len(pages))]
        p.write(int(rng.integers(size - 16)), rng.bytes(16))
    return pages


def test_gc_keeps_every_page_and_all_history(rng):
    bus = mmsb.Bus()
    pages = churn(bus, rng)
    for p in pages[::3]:
        bus.delete_page(p)
    del pages
    pygc.collect()
    state, history = pages_hash(bus), retained_history(bus)
    before = bus.memory()
    report = bus.gc()
    assert isinstance(report, mmsb.GcReport)
    assert report.bytes_freed == before.total_bytes - bus.memory().total_bytes
    assert isinstance(report.pause_ns, int)
    assert pages_hash(bus) == state
    assert retained_history(bus) == history
    assert bus.verify().ok
    # the bus works on after gc (caches regrow)
    p = bus.create_page(8)
    p.write(0, b"\x01")
    assert bus.verify().ok
    bus.close()


def test_gc_releases_deleted_pages_memory_to_the_os():
    bus = mmsb.Bus(history=False)
    pages = [bus.create_page(data=np.full(4096, 7, np.uint8)) for _ in range(8192)]  # 32 MiB, resident
    pygc.collect()
    for p in pages:
        bus.delete_page(p)
    del pages
    pygc.collect()
    rss0, mem0 = rss_bytes(), bus.memory()
    report = bus.gc()
    rss1, mem1 = rss_bytes(), bus.memory()
    assert report.arena_bytes_released >= 30 << 20
    assert mem0.arena_slack_bytes - mem1.arena_slack_bytes == report.arena_bytes_released
    assert rss0 - rss1 >= 0.9 * report.arena_bytes_released  # really given back, not just counted
    bus.close()


def test_gc_releases_the_records_of_deleted_temporaries_without_history():
    """Without history nothing asks about a deleted page: gc() releases the 64-byte records of
    deleted pages, 4,096 consecutive ids at a time, once none is held by a Page object; with
    history they stay (provenance and time travel read them)."""
    chunk = 4096
    for history in (False, True):
        bus = mmsb.Bus(history=history)
        keep = bus.create_page(8)
        temps = [bus.create_page(8) for _ in range(3 * chunk)]
        held = temps[-2]  # id 3 * 4096: a Page object pins its record
        temps[0].write(0, b"x")
        for p in temps:
            bus.delete_page(p)
        del temps
        pygc.collect()
        state = pages_hash(bus)
        mem0 = bus.memory()
        report = bus.gc()
        mem1 = bus.memory()
        if history:
            assert report.record_bytes_freed == 0
            # the deleted page's past is still answered
            assert len(bus.history(2)) == 1 and "page=2 epoch=1" in repr(bus.provenance(2))
            bus.close()
            continue
        # ids 2 .. 3 * 4096 + 1: the blocks of ids 4097-8192 and 8193-12288 are wholly deleted,
        # the second holding the pinned record; 1-4096 holds a live page, 12289 is not full
        assert report.record_bytes_freed == chunk * 64
        assert mem0.metadata_bytes - mem1.metadata_bytes == report.record_bytes_freed
        assert report.bytes_freed == mem0.total_bytes - mem1.total_bytes
        assert pages_hash(bus) == state and bus.verify().ok
        with pytest.raises(mmsb.PageNotFoundError, match="was deleted"):
            bus.page(chunk + 10)
        with pytest.raises(mmsb.PageNotFoundError, match="was deleted"):
            held.epoch
        del held
        pygc.collect()
        assert bus.gc().record_bytes_freed == chunk * 64
        fresh = bus.create_page(8)
        fresh.write(0, b"x")
        assert fresh.id == 3 * chunk + 2 and [p.id for p in bus.pages()] == [keep.id, fresh.id]
        assert bus.verify().ok
        bus.close()


def provenance_of(bus, page, epoch=None):
    return [(n.page, n.epoch, n.lsn, n.source, tuple(n.inputs)) for n in bus.provenance(page, epoch)]


def test_provenance_answers_alike_after_gc_released_deleted_records():
    """Provenance works without history and may ask about deleted pages (a deleted parent, a
    deleted page itself): its answers are the same after gc() released their records, also for
    deltas still queued for the index when gc() ran."""
    chunk = 4096
    bus = mmsb.Bus(history=False)
    a = bus.create_page(shape=(1,), dtype="float64")  # id 1: its block is ids 1-4096
    temps = [bus.create_page(8) for _ in range(chunk - 1)]
    b = bus.create_page(shape=(1,), dtype="float64")  # id 4097
    bus.depend(b, on=a, fn=mmsb.ops.copy)
    for v in (1.0, 2.0, 3.0):
        a.write(0, np.float64(v).tobytes())
    for p in temps[: chunk // 2]:
        p.write(0, b"x")  # queued for the index, and deleted before it folds them
    unwritten, written = temps[-1].id, temps[0].id
    asked = [(b.id, None), (b.id, 2), (a.id, None), (a.id, 1), (written, None), (unwritten, None)]
    bus.remove_edge(a, b)
    bus.delete_page(a)
    for p in temps:
        bus.delete_page(p)
    del a, temps, p
    pygc.collect()
    before = [provenance_of(bus, page, epoch) for page, epoch in asked]
    assert before[0][1][:2] == (1, 3) and before[4] and not before[5]  # the deleted parent, at epoch 3
    assert bus.gc().record_bytes_freed == chunk * 64
    assert [provenance_of(bus, page, epoch) for page, epoch in asked] == before
    # deltas still queued when gc() released their pages' records
    fresh = mmsb.Bus(history=False)
    pages = [fresh.create_page(8) for _ in range(2 * chunk)]  # ids 1-8192: two blocks
    keep = fresh.create_page(8)
    for p in pages:
        p.write(0, b"y")
    ids = [pages[0].id, pages[-1].id]
    for p in pages:
        fresh.delete_page(p)
    del pages, p
    pygc.collect()
    assert fresh.gc().record_bytes_freed == 2 * chunk * 64
    assert provenance_of(fresh, keep) == []
    for pid in ids:
        assert [n[:2] for n in provenance_of(fresh, pid)] == [(pid, 1)]


def vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize in /proc/self/status")


def test_dropped_buses_and_time_travel_views_unmap_their_large_pages():
    # Pages over 256 KiB are mapped one by one; a bus (or a bus.at() view) that goes away must
    # unmap them even though they were never deleted. Address space, not RSS: a leaked mapping
    # keeps its whole size whether or not it was touched.
    pygc.collect()
    before = vm_bytes()
    for _ in range(40):
        bus = mmsb.Bus()
        page = bus.create_page(4 << 20)
        page.write(0, b"x" * 4096)
        for lsn in (1, 2):
            with bus.at(lsn):
                pass
        bus.close()
        del bus, page
    pygc.collect()
    # 40 buses and 80 views leaked 480 MiB of mappings before the fix.
    assert vm_bytes() - before < 64 << 20


def test_gc_with_retention_keeps_what_the_retention_keeps(tmp_path, rng):
    bus = mmsb.Bus(tmp_path / "b", retention=2, durability="none")
    p = bus.create_page(64)
    cps = []
    for k in range(4):
        for i in range(10):
            p.write(i, bytes([k * 10 + i]))
        cps.append(bus.checkpoint())
    assert p.epoch == 40
    # each checkpoint applied the retention, to the index too: epoch 5 is gone before any gc
    with pytest.raises(mmsb.HistoryUnavailableError):
        bus.provenance(p, epoch=5)
    state = pages_hash(bus)
    kept = {lsn: pages_hash(bus.at(lsn)) for lsn in (cps[-2], cps[-1])}
    report = bus.gc()
    assert report.index_bytes_freed == 0 and report.log_files_removed == 0  # nothing left beyond it
    assert pages_hash(bus) == state
    assert {lsn: pages_hash(bus.at(lsn)) for lsn in kept} == kept
    with pytest.raises(mmsb.HistoryUnavailableError):
        bus.provenance(p, epoch=5)
    assert bus.provenance(p, epoch=p.epoch).nodes[(p.id, 40)].epoch == 40
    assert (p.id, 30) in bus.provenance(p, epoch=30).nodes  # the page as of the oldest kept checkpoint
    bus.close()
    again = mmsb.open(tmp_path / "b")
    assert pages_hash(again) == state
    again.close()


def test_tick_runs_gc_over_the_memory_budget(bus):
    p = bus.create_page(1024)
    bus.configure_tick(memory_budget=1)
    bus.submit(mmsb.Delta.at(p, 0, b"\x01"))
    r = bus.tick()
    assert r.gc_ran and isinstance(r.gc, mmsb.GcReport)
    assert bus.stats().gc_runs == 1
    bus.configure_tick(memory_budget=None)
    assert not bus.tick().gc_ran


def test_memory_report_is_within_10_percent_of_rss_growth():
    pygc.collect()
    rss0 = rss_bytes()
    bus = mmsb.Bus()
    n, size = 20_000, 4096
    ids = np.array([bus.create_page(size).id for _ in range(n)], dtype=np.uint64)
    # make every page resident: one full-page row each (logged in the in-memory log as well)
    payload = np.random.default_rng(1).integers(0, 255, n * size, dtype=np.uint8)
    bus.apply_batch(mmsb.DeltaBatch(ids, np.zeros(n, np.uint64), np.full(n, size, np.uint64), payload))
    del payload, ids
    pygc.collect()
    reported = bus.memory().total_bytes  # first: it waits for buffers reserved ahead to become resident
    grown = rss_bytes() - rss0
    assert reported >= 2 * n * size  # the pages and the log of their writes
    assert abs(reported - grown) <= 0.10 * grown, f"memory() says {reported}, RSS grew by {grown}"
    bus.close()


def test_gc_never_grows_the_memory_it_reports():
    """gc() once shrank the provenance index's queue by copying it whole into new blocks of the
    index arena, which keeps the old ones: memory grew by the queue's size at every call."""
    bus = mmsb.Bus(history=False)
    pages = [bus.create_page(4096) for _ in range(16)]
    rows = 1000
    batch = mmsb.DeltaBatch(np.array([pages[i % 16].id for i in range(rows)], np.uint64), np.zeros(rows, np.uint64),
                            np.full(rows, 8, np.uint64), np.ones(rows * 8, np.uint8))
    for _ in range(500):
        bus.apply_batch(batch)
    before = bus.memory()
    for _ in range(3):
        bus.gc()
        after = bus.memory()
        assert after["total_bytes"] <= before["total_bytes"], (before, after)
        assert after["index_bytes"] == before["index_bytes"]  # the index is kept whole


def test_a_page_created_with_data_in_a_rolled_back_transaction_was_at_no_epoch():
    """Its first delta was rolled back with it: provenance sees epoch 0 (no node), whether or not
    gc() released its record."""
    bus = mmsb.Bus(history=False)
    with pytest.raises(RuntimeError):
        with bus.transaction():
            ids = [bus.create_page(data=b"12345678").id for _ in range(4096)]
            raise RuntimeError("roll back")
    keep = bus.create_page(8)
    for released in (False, True):
        for pid in (ids[0], ids[-1]):
            assert provenance_of(bus, pid) == []
            with pytest.raises(mmsb.InvalidArgumentError, match="has not reached epoch 1"):
                bus.provenance(pid, 1)
        if not released:
            assert bus.gc().record_bytes_freed == 4096 * 64
    assert keep.id == 4097
