"""Writing: write / edit / update, Delta constructors and fields, apply, batches."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

import mmsb
from reference_model import RefBus, canonical_runs


def page_bytes(p) -> bytes:
    return p.view().tobytes()


# ---- write ----------------------------------------------------------------------------------------

def test_write_commits_one_delta(bus):
    p = bus.create_page(16)
    lsn = bus.lsn
    assert p.write(4, b"abcd") == 1
    assert p.epoch == 1 and bus.lsn == lsn + 1 and p.last_lsn == bus.lsn
    assert page_bytes(p) == bytes(4) + b"abcd" + bytes(8)
    assert p.write(0, np.arange(3, dtype=np.uint8)) == 2
    assert p.write(12, bytearray(b"wxyz")) == 3
    assert p.write(14, memoryview(b"QR")) == 4
    assert page_bytes(p) == b"\x00\x01\x02\x00abcd" + bytes(4) + b"wxQR"
    assert bus.lsn == lsn + 4


def test_write_typed_data_is_bytes(bus):
    p = bus.create_page(shape=(4,), dtype="float32")
    p.write(4, np.array([1.5, 2.5], dtype=np.float32))
    np.testing.assert_array_equal(p.view(), [0, 1.5, 2.5, 0])
    # a write is bytes at a byte offset, whatever the data's dtype
    p.write(0, np.array([1], dtype=np.uint8))
    assert p.view().tobytes()[:1] == b"\x01"


def test_identical_explicit_writes_still_bump_epoch(bus):
    p = bus.create_page(data=b"same")
    lsn = bus.lsn
    p.write(0, b"same")
    assert p.epoch == 2 and bus.lsn == lsn + 1
    bus.apply(mmsb.Delta.at(p, 1, b"am"))
    assert p.epoch == 3 and bus.lsn == lsn + 2
    bus.apply_batch(mmsb.DeltaBatch([p.id, p.id], [0, 0], [1, 1], b"ss"))
    assert p.epoch == 5 and bus.lsn == lsn + 4
    p.write(0, b"")  # an empty explicit delta is still a delta
    assert p.epoch == 6 and bus.lsn == lsn + 5
    assert page_bytes(p) == b"same"


def test_write_expect_epoch(bus):
    p = bus.create_page(8)
    assert p.write(0, b"a", expect_epoch=0) == 1
    assert p.write(1, b"b", expect_epoch=1) == 2
    with pytest.raises(mmsb.EpochConflictError):
        p.write(2, b"c", expect_epoch=1)
    assert p.epoch == 2 and page_bytes(p)[:3] == b"ab\x00"


# ---- Delta.at and fields --------------------------------------------------------------------------

def test_delta_at_fields_and_apply(bus):
    p = bus.create_page(32)
    d = mmsb.Delta.at(p, 8, b"hello")
    assert d.page_id == p.id
    assert d.run_list == [(8, 5)]
    assert d.offsets.tolist() == [8] and d.lengths.tolist() == [5]
    assert d.offsets.dtype == np.uint64
    assert d.payload == b"hello" and d.nbytes == 5 and len(d) == 1
    assert d.lsn == 0 and d.epoch == 0 and d.expect_epoch is None
    assert d.source == "user"
    before = time.time_ns()
    lsn = bus.apply(d)
    assert lsn == bus.lsn == d.lsn
    assert d.epoch == p.epoch == 1
    stamp = d.timestamp_ns  # wall clock at commit, not a counter: within an hour of ours
    assert abs(stamp - before) < 3600 * 10**9
    assert page_bytes(p)[8:13] == b"hello"
    # the same Delta object can be committed again: a new record
    bus.apply(d)
    assert d.lsn == lsn + 1 and d.epoch == 2 and p.epoch == 2


def test_delta_at_by_id_and_numpy_data(bus):
    p = bus.create_page(shape=(4,), dtype="int16")
    d = mmsb.Delta.at(p.id, 2, np.array([7, 8], dtype=np.int16))
    assert d.page_id == p.id and d.run_list == [(2, 4)]
    bus.apply(d)
    np.testing.assert_array_equal(p.view(), [0, 7, 8, 0])


def test_delta_expect_epoch(bus):
    p = bus.create_page(8)
    d = mmsb.Delta.at(p, 0, b"x", expect_epoch=0)
    assert d.expect_epoch == 0
    bus.apply(d)
    with pytest.raises(mmsb.EpochConflictError):
        bus.apply(d)  # the page is at epoch 1 now
    d.expect_epoch = 1
    bus.apply(d)
    assert p.epoch == 2
    d.expect_epoch = None
    bus.apply(d)
    assert p.epoch == 3


def test_delta_source(bus):
    p = bus.create_page(8)
    d = mmsb.Delta.at(p, 0, b"x", source="remote")
    assert d.source == "remote"
    d.source = "user"
    assert d.source == "user"


def test_delta_equality(bus):
    p = bus.create_page(8)
    a = mmsb.Delta.at(p, 0, b"ab")
    b = mmsb.Delta.merge(mmsb.Delta.at(p, 0, b"a"), mmsb.Delta.at(p, 1, b"b"))
    assert a == b
    assert a != mmsb.Delta.at(p, 0, b"ac")
    assert a != mmsb.Delta.at(p, 1, b"ab")
    assert a != "not a delta"


# ---- Delta.runs: canonical runs -------------------------------------------------------------------

def test_delta_runs_sorted_and_touching(bus):
    p = bus.create_page(16)
    d = mmsb.Delta.runs(p, [0, 2, 8], [b"ab", b"cd", b"ef"])
    assert d.run_list == [(0, 4), (8, 2)]  # touching runs merge
    assert d.payload == b"abcdef"
    bus.apply(d)
    assert page_bytes(p)[:10] == b"abcd\x00\x00\x00\x00ef"
    assert p.epoch == 1  # many runs, one delta


def test_delta_runs_overlapping_unsorted_match_reference(bus, rng):
    p = bus.create_page(200)
    ref = RefBus()
    rid = ref.create_page(200)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        offsets = [int(x) for x in rng.integers(0, 180, n)]
        datas = [rng.integers(0, 256, int(rng.integers(0, 20))).astype(np.uint8).tobytes() for _ in range(n)]
        d = mmsb.Delta.runs(p, offsets, datas)
        want_runs, want_payload = canonical_runs(list(zip(offsets, datas)))
        assert d.run_list == want_runs
        assert d.payload == want_payload
        bus.apply(d)
        ref.apply(rid, list(zip(offsets, datas)))
        assert page_bytes(p) == bytes(ref.pages[rid])
        assert p.epoch == ref.epochs[rid]
    assert bus.lsn == ref.lsn


def test_delta_runs_last_writer_wins(bus):
    p = bus.create_page(8)
    d = mmsb.Delta.runs(p, [0, 2, 1], [b"AAAAAA", b"bb", b"c"])
    assert d.run_list == [(0, 6)]
    assert d.payload == b"AcbbAA"


# ---- Delta.merge (the same canonicalisation, the same code path as Delta.runs) --------------------

def test_merge_equals_sequential_apply(bus, rng):
    p = bus.create_page(300)
    q = bus.create_page(300)
    for _ in range(100):
        a_off, b_off = (int(x) for x in rng.integers(0, 250, 2))
        a_data = rng.integers(0, 256, int(rng.integers(0, 50))).astype(np.uint8).tobytes()
        b_data = rng.integers(0, 256, int(rng.integers(0, 50))).astype(np.uint8).tobytes()
        a = mmsb.Delta.at(p, a_off, a_data)
        b = mmsb.Delta.at(p, b_off, b_data)
        m = mmsb.Delta.merge(a, b)
        want_runs, want_payload = canonical_runs([(a_off, a_data), (b_off, b_data)])
        assert m.run_list == want_runs and m.payload == want_payload
        bus.apply(a)
        bus.apply(b)
        bus.apply(mmsb.Delta.at(q, 0, page_bytes(q)))  # keep q's epoch out of the comparison
        bus.apply(mmsb.Delta.merge(mmsb.Delta.at(q, a_off, a_data), mmsb.Delta.at(q, b_off, b_data)))
        assert page_bytes(p) == page_bytes(q)


def test_merge_of_merges_random_overlaps(rng):
    # three-way and deeper merges with many overlapping runs against the reference paint
    bus = mmsb.Bus()
    p = bus.create_page(128)
    for _ in range(60):
        pieces = [(int(rng.integers(0, 120)), rng.integers(0, 256, int(rng.integers(1, 9))).astype(np.uint8).tobytes())
                  for _ in range(int(rng.integers(2, 10)))]
        m = mmsb.Delta.at(p, *pieces[0])
        for off, data in pieces[1:]:
            m = mmsb.Delta.merge(m, mmsb.Delta.at(p, off, data))
        want_runs, want_payload = canonical_runs(pieces)
        assert m.run_list == want_runs
        assert m.payload == want_payload


def test_merge_keeps_first_expect_epoch(bus):
    p = bus.create_page(8)
    m = mmsb.Delta.merge(mmsb.Delta.at(p, 0, b"a", expect_epoch=0), mmsb.Delta.at(p, 1, b"b"))
    assert m.expect_epoch == 0 and m.page_id == p.id


# ---- Delta.masked ---------------------------------------------------------------------------------

def test_masked_byte_mask_dense_and_sparse(bus):
    p = bus.create_page(8)
    ref = RefBus()
    rid = ref.create_page(8)
    mask = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    dense = b"ABCDEFGH"
    d = mmsb.Delta.masked(p, mask, dense)
    assert d.run_list == [(0, 2), (4, 1), (6, 2)]
    assert d.payload == b"ABEGH"
    bus.apply(d)
    ref.masked(rid, mask, dense)
    assert page_bytes(p) == bytes(ref.pages[rid]) == b"AB\x00\x00E\x00GH"
    sparse = b"vwxyz"
    d2 = mmsb.Delta.masked(p, mask.astype(np.uint8) * 7, sparse)  # any nonzero byte marks
    assert d2.run_list == d.run_list and d2.payload == sparse
    bus.apply(d2)
    ref.masked(rid, mask, sparse)
    assert page_bytes(p) == bytes(ref.pages[rid]) == b"vw\x00\x00x\x00yz"
    assert p.epoch == ref.epochs[rid] == 2


def test_masked_element_mask_on_typed_page(bus):
    p = bus.create_page(shape=(6,), dtype="float32")
    mask = np.array([True, False, False, True, True, False])
    d = mmsb.Delta.masked(p, mask, np.arange(6, dtype=np.float32))  # dense over elements
    assert d.run_list == [(0, 4), (12, 8)]
    bus.apply(d)
    np.testing.assert_array_equal(p.view(), [0, 0, 0, 3, 4, 0])
    d2 = mmsb.Delta.masked(p, mask, np.array([10, 13, 14], dtype=np.float32))  # sparse
    bus.apply(d2)
    np.testing.assert_array_equal(p.view(), [10, 0, 0, 13, 14, 0])
    # a mask over the bytes of a typed page works too
    bmask = np.zeros(24, dtype=bool)
    bmask[4:8] = True
    bus.apply(mmsb.Delta.masked(p, bmask, np.float32(-1).tobytes()))
    assert p.view()[1] == -1
    assert p.epoch == 3


def test_masked_2d_element_mask(bus):
    p = bus.create_page(shape=(2, 3), dtype="int64")
    mask = np.array([[True, False, True], [False, True, False]])
    bus.apply(mmsb.Delta.masked(p, mask, np.array([1, 2, 3], dtype=np.int64)))
    np.testing.assert_array_equal(p.view(), [[1, 0, 2], [0, 3, 0]])


@pytest.mark.parametrize("size", [8, 13, 64, 100])
def test_masked_packed(bus, rng, size):
    p = bus.create_page(size)
    ref = RefBus()
    rid = ref.create_page(size)
    for _ in range(5):
        mask = rng.random(size) < 0.4
        bits = np.packbits(mask, bitorder="little")
        dense = rng.integers(0, 256, size).astype(np.uint8).tobytes()
        bus.apply(mmsb.Delta.masked(p, bits, dense, packed=True))
        ref.masked(rid, mask, dense)
        sparse = rng.integers(0, 256, int(mask.sum())).astype(np.uint8).tobytes()
        if len(sparse) != size:
            bus.apply(mmsb.Delta.masked(p, bits, sparse, packed=True))
            ref.masked(rid, mask, sparse)
        assert page_bytes(p) == bytes(ref.pages[rid])
        assert p.epoch == ref.epochs[rid]


def test_masked_packed_with_extent(bus):
    p = bus.create_page(16)
    bits = np.packbits(np.array([0, 1, 1, 0, 0, 0, 0, 1], dtype=bool), bitorder="little")
    d = mmsb.Delta.masked(p.id, bits, b"xyz", packed=True, extent=8)
    assert d.run_list == [(1, 2), (7, 1)]
    bus.apply(d)
    assert page_bytes(p)[:8] == b"\x00xy\x00\x00\x00\x00z"


def test_masked_empty_mask_is_an_empty_delta(bus):
    p = bus.create_page(4)
    d = mmsb.Delta.masked(p, np.zeros(4, dtype=bool), b"")
    assert d.run_list == [] and len(d) == 0
    bus.apply(d)
    assert p.epoch == 1  # explicit: commits even when empty


# ---- Delta.diff -----------------------------------------------------------------------------------

def test_diff_applies_old_to_new(bus, rng):
    p = bus.create_page(1000)
    for _ in range(30):
        old = page_bytes(p)
        new = bytearray(old)
        for i in rng.integers(0, 1000, int(rng.integers(0, 40))):
            new[i] = int(rng.integers(0, 256))
        d = mmsb.Delta.diff(p, old, bytes(new))
        covered = set()
        for off, ln in d.run_list:
            covered.update(range(off, off + ln))
        changed = {i for i in range(1000) if old[i] != new[i]}
        assert changed <= covered
        assert d.nbytes == len(covered)
        # runs are sorted and disjoint, and the payload holds the new bytes
        assert all(a[0] + a[1] < b[0] for a, b in zip(d.run_list, d.run_list[1:]))
        pos = 0
        for off, ln in d.run_list:
            assert d.payload[pos:pos + ln] == bytes(new[off:off + ln])
            pos += ln
        bus.apply(d)
        assert page_bytes(p) == bytes(new)


def test_diff_is_small_for_small_changes(bus):
    old = np.zeros(4096, dtype=np.uint8)
    new = old.copy()
    new[100] = 1
    new[3000:3004] = 2
    p = bus.create_page(4096)
    d = mmsb.Delta.diff(p, old, new)
    assert d.run_list == [(100, 1), (3000, 4)]
    assert d.nbytes == 5


def test_diff_of_equal_content_is_empty(bus):
    p = bus.create_page(64)
    a = np.arange(16, dtype=np.float32)
    d = mmsb.Delta.diff(p, a, a.copy())
    assert len(d) == 0 and d.run_list == [] and d.payload == b""


# ---- update ---------------------------------------------------------------------------------------

def test_update_commits_only_changes(bus):
    p = bus.create_page(shape=(1024,), dtype="float32")
    new = np.zeros(1024, dtype=np.float32)
    new[10] = 1.0
    bus.reset_stats()
    lsn = bus.lsn
    assert p.update(new) is True
    assert p.epoch == 1 and bus.lsn == lsn + 1
    np.testing.assert_array_equal(p.view(), new)
    assert bus.stats().bytes_applied <= 8  # only the changed bytes are stored, not 4096
    assert p.update(new.copy()) is False
    assert p.epoch == 1 and bus.lsn == lsn + 1
    assert bus.stats().deltas_applied == 1


def test_update_raw_page_with_bytes(bus):
    p = bus.create_page(4)
    assert p.update(b"abcd") is True
    assert p.update(bytearray(b"abcd")) is False
    assert p.update(np.frombuffer(b"abce", dtype=np.uint8)) is True
    assert page_bytes(p) == b"abce" and p.epoch == 2


def test_update_expect_epoch(bus):
    p = bus.create_page(shape=(2,), dtype="int32")
    assert p.update(np.array([1, 2], np.int32), expect_epoch=0)
    with pytest.raises(mmsb.EpochConflictError):
        p.update(np.array([3, 4], np.int32), expect_epoch=0)
    np.testing.assert_array_equal(p.view(), [1, 2])
    assert p.epoch == 1


def test_update_multidimensional(bus):
    p = bus.create_page(shape=(3, 4), dtype="int16")
    new = np.arange(12, dtype=np.int16).reshape(3, 4)
    assert p.update(new)
    np.testing.assert_array_equal(p.view(), new)


# ---- edit -----------------------------------------------------------------------------------------

def test_edit_commits_changes_as_one_delta(bus):
    p = bus.create_page(shape=(100,), dtype="float64")
    lsn = bus.lsn
    with p.edit() as a:
        assert a.flags.writeable
        assert a.shape == (100,) and a.dtype == np.float64
        assert not np.shares_memory(a, p.view())
        a[10:20] = 1.0
        a[50] = 2.0
        assert not p.view().any()  # nothing visible before exit
    assert p.epoch == 1 and bus.lsn == lsn + 1
    want = np.zeros(100)
    want[10:20] = 1.0
    want[50] = 2.0
    np.testing.assert_array_equal(p.view(), want)


def test_edit_without_change_commits_nothing(bus):
    p = bus.create_page(data=np.arange(5.0))
    lsn, epoch = bus.lsn, p.epoch
    with p.edit() as a:
        a[2] = 2.0  # same value
    assert bus.lsn == lsn and p.epoch == epoch
    with p.edit():
        pass
    assert bus.lsn == lsn and p.epoch == epoch


def test_edit_with_exception_commits_nothing(bus):
    p = bus.create_page(data=np.arange(5.0))
    lsn = bus.lsn
    with pytest.raises(RuntimeError, match="boom"):
        with p.edit() as a:
            a[:] = 99.0
            raise RuntimeError("boom")
    assert bus.lsn == lsn and p.epoch == 1
    np.testing.assert_array_equal(p.view(), np.arange(5.0))


def test_edit_conflict_when_someone_else_committed(bus):
    p = bus.create_page(data=np.zeros(4, np.int32))
    with pytest.raises(mmsb.EpochConflictError):
        with p.edit() as a:
            a[0] = 1
            p.write(4, np.int32(5).tobytes())  # another writer commits in between
    np.testing.assert_array_equal(p.view(), [0, 5, 0, 0])
    assert p.epoch == 2


def test_an_edit_begun_in_a_rolled_back_transaction_never_commits(bus):
    """A rollback brings epochs back, so a later commit can reach the copy's epoch with other
    bytes: the epoch check alone would let the edit bring back the rolled-back write and lose
    the committed one."""
    p = bus.create_page(shape=(4,), dtype="float64")
    ed = p.edit()
    with pytest.raises(RuntimeError):
        with bus.transaction():
            p.write(0, np.float64(1.0).tobytes())
            a = ed.__enter__()
            raise RuntimeError("abandon")
    p.write(8, np.float64(2.0).tobytes())  # committed, at the epoch the copy was taken at
    a[3] = 3.0
    with pytest.raises(mmsb.EpochConflictError, match="rolled back"):
        ed.__exit__(None, None, None)
    assert np.array_equal(p.view(), [0.0, 2.0, 0.0, 0.0]) and p.epoch == 1
    with bus.transaction():  # begun and ended inside one transaction: as any edit
        with p.edit() as b:
            b[0] = 5.0
    assert p.view()[0] == 5.0


def test_edit_raw_page(bus):
    p = bus.create_page(8)
    with p.edit() as a:
        assert a.dtype == np.uint8 and a.shape == (8,)
        a[3] = 9
    assert page_bytes(p) == b"\x00\x00\x00\x09" + bytes(4)


def test_edit_sees_current_content(bus):
    p = bus.create_page(data=np.arange(4, dtype=np.int64))
    p.write(0, np.int64(10).tobytes())
    with p.edit() as a:
        np.testing.assert_array_equal(a, [10, 1, 2, 3])
        a += 1
    np.testing.assert_array_equal(p.view(), [11, 2, 3, 4])
    assert p.epoch == 3


# ---- batches --------------------------------------------------------------------------------------

def test_batch_columns_and_apply(bus):
    a = bus.create_page(8)
    b = bus.create_page(shape=(2,), dtype="float32")
    payload = b"xy" + np.array([1.5, 2.5], np.float32).tobytes() + b"z"
    batch = mmsb.DeltaBatch([a.id, b.id, a.id], [0, 0, 7], [2, 8, 1], payload)
    assert len(batch) == 3 and batch.nbytes == 11
    assert batch.page_ids.tolist() == [a.id, b.id, a.id]
    assert batch.offsets.tolist() == [0, 0, 7]
    assert batch.lengths.tolist() == [2, 8, 1]
    lsn = bus.lsn
    last = bus.apply_batch(batch)
    assert last == lsn + 3 == bus.lsn
    assert a.epoch == 2 and b.epoch == 1
    assert page_bytes(a) == b"xy\x00\x00\x00\x00\x00z"
    np.testing.assert_array_equal(b.view(), [1.5, 2.5])
    assert a.last_lsn == lsn + 3 and b.last_lsn == lsn + 2
    # a batch object can be applied again
    assert bus.apply_batch(batch) == lsn + 6
    assert a.epoch == 4


def test_batch_numpy_columns(bus):
    pages = [bus.create_page(16) for _ in range(3)]
    ids = np.array([p.id for p in pages] * 2, dtype=np.int64)
    offs = np.array([0, 4, 8, 12, 0, 4], dtype=np.int64)
    lens = np.array([4] * 6, dtype=np.int32)
    payload = np.arange(24, dtype=np.uint8)
    strided = np.repeat(ids.astype(np.uint64), 2)[::2]  # a view with a stride of 16 bytes
    for ids_col in (ids, ids.astype(np.uint64), ids.astype(np.int32), ids.tolist(), strided, ids.astype(">u8")):
        batch = mmsb.DeltaBatch(ids_col, offs, lens, payload)
        lsn = bus.lsn
        assert bus.apply_batch(batch) == lsn + 6
    for p in pages:
        assert p.epoch == 12
    assert page_bytes(pages[0])[0:4] == bytes([0, 1, 2, 3])
    assert page_bytes(pages[0])[12:16] == bytes([12, 13, 14, 15])
    assert page_bytes(pages[1])[4:8] == bytes([4, 5, 6, 7])
    assert page_bytes(pages[2])[8:12] == bytes([8, 9, 10, 11])
    assert page_bytes(pages[1])[0:4] == bytes([16, 17, 18, 19])


def test_batch_columns_of_python_ints_are_read_exactly_or_refused_by_row(bus):
    """A list mixing ints past 2**63 with small ones is no float64 column to NumPy's taste, but
    it is integers: read exactly. Anything else names the column, the row and the value, and
    ragged lists are an InvalidDeltaError too, never NumPy's own ValueError."""
    p = bus.create_page(16)
    batch = mmsb.DeltaBatch([p.id, p.id], [0, 2**64 - 1], [1, 0], b"a")
    assert batch.offsets.tolist() == [0, 2**64 - 1]
    bad = [
        (([[1], [1, 2]], [0, 0], [1, 1], b"ab"), "page_ids is not a column of integers: ValueError"),
        (([1, 1], [2**64 - 1, -1], [0, 0], b""), r"offsets\[1\] is negative \(-1\)"),
        (([1], [2**64], [0], b""), r"offsets\[0\] is past 2\*\*64 - 1 \(18446744073709551616\)"),
        (([1], [2**64 - 1], [1.5], b""), r"lengths\[0\] is not an integer \(1.5\)"),
    ]
    for args, says in bad:
        with pytest.raises(mmsb.InvalidDeltaError, match=says):
            mmsb.DeltaBatch(*args)


def test_data_that_is_no_buffer_says_why(bus):
    """Only a strided buffer is told to be made contiguous; a buffer that cannot be exported at
    all says NumPy's or Python's reason, and nothing is written."""
    p = bus.create_page(16)
    released = memoryview(b"abcd")
    released.release()
    for data, says in [
        (np.zeros(2, "M8[ns]"), "data cannot be read as a buffer: ValueError: cannot include dtype 'M'"),
        (released, "data cannot be read as a buffer: ValueError: operation forbidden on released memoryview"),
        (np.zeros(8)[::2], "data must be C-contiguous"),
    ]:
        with pytest.raises(mmsb.InvalidArgumentError, match=re.escape(says)):
            p.write(0, data)
    assert p.epoch == 0 and bus.lsn == 1


def test_batch_rows_apply_in_order_per_page(bus):
    p = bus.create_page(4)
    batch = mmsb.DeltaBatch([p.id] * 4, [0, 1, 0, 2], [2, 2, 1, 1], b"aabbcd")
    bus.apply_batch(batch)
    assert page_bytes(p) == b"cbd\x00" and p.epoch == 4


def test_empty_batch(bus):
    p = bus.create_page(4)
    lsn = bus.lsn
    assert bus.apply_batch(mmsb.DeltaBatch([], [], [], b"")) == lsn
    assert bus.apply_batch(mmsb.DeltaBatch(np.array([], np.uint64), np.array([], np.uint64),
                                           np.array([], np.uint64), np.zeros(0, np.uint8))) == lsn
    assert bus.lsn == lsn and p.epoch == 0


def test_batch_zero_length_rows_still_count(bus):
    p = bus.create_page(4)
    bus.apply_batch(mmsb.DeltaBatch([p.id, p.id], [0, 4], [0, 0], b""))
    assert p.epoch == 2 and bus.lsn == 3


def test_an_empty_change_has_no_runs_however_it_was_committed(tmp_path):
    """history() gives one canonical run list per change: an empty one is [] from a write, a
    Delta, a batch row or a tick alike (a batch row said [(4, 0)]), also after a reopen."""
    with mmsb.Bus(tmp_path / "b") as bus:
        p = bus.create_page(16)
        p.write(4, b"")
        bus.apply(mmsb.Delta.at(p, 4, b""))
        bus.apply_batch(mmsb.DeltaBatch([p.id], [4], [0], b""))
        bus.submit(mmsb.Delta.at(p, 4, b""))
        bus.submit(mmsb.DeltaBatch([p.id], [4], [0], b""))
        bus.tick()
        assert [r.runs for r in bus.history(p)] == [[]] * 5
        path = bus.path
    with mmsb.open(path) as bus:
        assert [r.runs for r in bus.history(1)] == [[]] * 5


def test_batch_payload_kinds(bus):
    p = bus.create_page(4)
    for payload in (b"abcd", bytearray(b"abcd"), memoryview(b"abcd"), np.frombuffer(b"abcd", np.uint8),
                    np.frombuffer(b"abcd", np.uint32)):
        bus.apply_batch(mmsb.DeltaBatch([p.id], [0], [4], payload))
        assert page_bytes(p) == b"abcd"
    assert p.epoch == 5


def _big_batch(rng, page_ids, page_size, rows):
    ids = rng.choice(np.asarray(page_ids, dtype=np.uint64), rows)
    lens = rng.integers(0, 17, rows).astype(np.uint64)
    offs = (rng.integers(0, page_size - 16, rows)).astype(np.uint64)
    payload = rng.integers(0, 256, int(lens.sum())).astype(np.uint8)
    return ids, offs, lens, payload


def test_apply_batch_parallel_matches_sequential_and_reference(rng):
    rows = 200_000  # >= 2 * 8192 rows per lane, so Bus(threads=2) really splits the work
    page_size = 512
    n_pages = 97
    buses = [mmsb.Bus(threads=1), mmsb.Bus(threads=2)]
    assert [b.threads for b in buses] == [1, 2]
    ref = RefBus()
    for b in buses:
        for i in range(n_pages):
            b.create_page(page_size) if i % 3 else b.create_page(shape=(page_size // 4,), dtype="int32")
    for i in range(n_pages):
        ref.create_page(page_size)
    ids, offs, lens, payload = _big_batch(rng, list(range(1, n_pages + 1)), page_size, rows)
    batch = mmsb.DeltaBatch(ids, offs, lens, payload)
    lasts = [b.apply_batch(batch) for b in buses]
    pos = 0
    raw = payload.tobytes()
    ref_rows = []
    for pid, off, ln in zip(ids.tolist(), offs.tolist(), lens.tolist()):
        ref_rows.append((pid, off, raw[pos:pos + ln]))
        pos += ln
    want_last = ref.batch(ref_rows)
    assert lasts == [want_last, want_last]
    for b in buses:
        assert b.lsn == ref.lsn
        for p in b.pages():
            assert p.epoch == ref.epochs[p.id], p.id
            assert page_bytes(p) == bytes(ref.pages[p.id]), p.id
            rows_of_page = np.flatnonzero(ids == p.id)
            assert p.last_lsn == n_pages + 1 + int(rows_of_page[-1]), p.id  # lsn of its last row


def test_apply_batch_many_threads_deterministic(rng):
    # the same batch on many thread counts: identical bytes and epochs
    rows = 40_000
    results = []
    ids, offs, lens, payload = _big_batch(rng, list(range(1, 21)), 256, rows)
    for threads in (1, 2, 4, 7):
        b = mmsb.Bus(threads=threads)
        for _ in range(20):
            b.create_page(256)
        b.apply_batch(mmsb.DeltaBatch(ids, offs, lens, payload))
        results.append([(p.epoch, page_bytes(p)) for p in b.pages()] + [b.lsn])
    assert all(r == results[0] for r in results[1:])


def test_more_threads_than_cores_split_the_work_without_a_word_on_stderr():
    """oneTBB runs no more threads than cores; an arena asking for more printed a warning at its
    first parallel batch. The bus still splits the work for the threads asked for."""
    import subprocess
    import sys

    script = ("import numpy as np, os, mmsb\n"
              "n = 8 * os.cpu_count()\n"
              "bus = mmsb.Bus(threads=n)\n"
              "p = bus.create_page(1 << 20)\n"
              "rows = 100_000\n"
              "bus.apply_batch(mmsb.DeltaBatch(np.full(rows, p.id, np.uint64), np.arange(rows, dtype=np.uint64),\n"
              "                                np.ones(rows, np.uint64), np.ones(rows, np.uint8)))\n"
              "assert bus.threads == n and p.epoch == rows\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_write_from_a_view_of_the_same_page(bus):
    # the payload is taken before the page changes (memmove semantics)
    p = bus.create_page(data=bytes(range(16)))
    p.write(2, p.view()[0:8])
    assert page_bytes(p) == bytes([0, 1, 0, 1, 2, 3, 4, 5, 6, 7]) + bytes(range(10, 16))
    assert p.update(p.view()) is False
    bus.apply(mmsb.Delta.at(p, 0, memoryview(p)[8:16]))
    assert page_bytes(p)[:8] == page_bytes(p)[8:16]


def test_concurrent_writers_and_batches():
    import threading

    bus = mmsb.Bus(threads=2)
    own = [bus.create_page(64) for _ in range(4)]
    shared = [bus.create_page(256) for _ in range(8)]
    writes_per_thread = 2000
    batch_rows = 20_000
    batches = 5
    errors = []

    def writer(k):
        try:
            p = own[k]
            for i in range(writes_per_thread):
                p.write(i % 60, i.to_bytes(4, "little"), expect_epoch=i)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def batcher(seed):
        try:
            r = np.random.default_rng(seed)
            for _ in range(batches):
                ids = r.choice([p.id for p in shared], batch_rows).astype(np.uint64)
                offs = r.integers(0, 252, batch_rows).astype(np.uint64)
                bus.apply_batch(mmsb.DeltaBatch(ids, offs, np.full(batch_rows, 4, np.uint64),
                                                np.zeros(4 * batch_rows, np.uint8)))
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=batcher, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    created = len(own) + len(shared)
    assert bus.lsn == created + 4 * writes_per_thread + 2 * batches * batch_rows
    for k, p in enumerate(own):
        assert p.epoch == writes_per_thread
        last = writes_per_thread - 1
        assert p.read(last % 60, 4) == last.to_bytes(4, "little")
    assert sum(p.epoch for p in shared) == 2 * batches * batch_rows
    assert not any(p.view().any() for p in shared)


def test_batch_columns_changed_during_apply_batch_do_not_reach_it(tmp_path):
    """apply_batch applies and logs the rows it validated. The bus's clock runs between the two
    (as another thread may, the GIL being released), and here it moves the caller's offsets
    past the page: the rows as they were at the call still apply, and nothing outside the page
    is written (before, this wrote out of bounds)."""
    ids = np.array([1, 1], np.uint64)
    offs = np.array([0, 8], np.uint64)
    lens = np.array([8, 8], np.uint64)
    ticks = iter(range(1000, 10**9, 1000))

    def meddling_clock():
        offs[1], ids[0], lens[0] = 2**40, 999, 2**20
        return next(ticks)
    bus = mmsb.Bus(str(tmp_path / "b"), clock=meddling_clock)
    p = bus.create_page(16)
    batch = mmsb.DeltaBatch(ids, offs, lens, bytes(range(16)))
    bus.apply_batch(batch)
    assert p.read(0, 16) == bytes(range(16)) and p.epoch == 2
    assert bus.verify().ok
    bus.close()
    with mmsb.open(str(tmp_path / "b")) as again:
        assert again.page(1).read(0, 16) == bytes(range(16))
    with pytest.raises(mmsb.InvalidDeltaError):  # the next call sees the changed columns
        mmsb.Bus().apply_batch(batch)


@pytest.mark.parametrize("threads,rows", [(1, 2), (1, 300), (2, 40_000)])
def test_a_batch_payload_that_is_a_view_of_the_page_it_writes(tmp_path, threads, rows):
    """The payload is read as it was at the call, whichever rows write first: memory and the log
    agree (before, later rows read bytes that earlier rows had written, which the log did not
    hold). 40,000 rows over two pages run in parallel lanes."""
    rng = np.random.default_rng(rows)
    path = str(tmp_path / "alias")
    bus = mmsb.Bus(path, threads=threads)
    a = bus.create_page(data=rng.integers(0, 256, 8 * rows + 64, dtype=np.uint8))
    b = bus.create_page(data=rng.integers(0, 256, 4096, dtype=np.uint8))
    ids = np.where(rng.random(rows) < 0.5, a.id, b.id).astype(np.uint64)
    lengths = rng.integers(0, 9, rows).astype(np.uint64)
    sizes = np.where(ids == a.id, a.size, b.size)
    offsets = (rng.integers(0, 1 << 30, rows) % (sizes - lengths + 1)).astype(np.uint64)
    payload = a.view()[8:8 + int(lengths.sum())]  # a's own bytes, which the rows overwrite
    model = {a.id: bytearray(a.read(0, a.size)), b.id: bytearray(b.read(0, b.size))}
    src, pos = payload.tobytes(), 0
    for pid, off, ln in zip(ids.tolist(), offsets.tolist(), lengths.tolist()):
        model[pid][off:off + ln] = src[pos:pos + ln]
        pos += ln
    bus.apply_batch(mmsb.DeltaBatch(ids, offsets, lengths, payload))
    assert a.read(0, a.size) == bytes(model[a.id]) and b.read(0, b.size) == bytes(model[b.id])
    assert bus.verify().ok
    bus.close()
    with mmsb.open(path) as again:
        assert again.page(a.id).read(0, len(model[a.id])) == bytes(model[a.id])
