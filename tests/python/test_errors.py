"""Every error path: the exact exception class (and its builtin base), and nothing changed.

Each test captures every page's bytes and epoch, the names and bus.lsn before the failing call
and compares them afterwards (DESIGN §2: "A failed call leaves the bus exactly as before").
"""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from error_checks import fails

E = mmsb.errors


# ---- the hierarchy --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "cls,base",
    [
        (E.PageNotFoundError, KeyError),
        (E.InvalidDeltaError, ValueError),
        (E.InvalidArgumentError, ValueError),
        (E.GraphCycleError, ValueError),
        (E.LogCorruptError, OSError),
        (E.DurabilityError, OSError),
        (E.DeviceUnavailableError, RuntimeError),
        (E.OutOfMemoryError, MemoryError),
        (E.EpochConflictError, None),
        (E.GraphError, None),
        (E.PropagationError, None),
        (E.BusLockedError, None),
        (E.HistoryUnavailableError, None),
        (E.QueueFullError, None),
        (E.ClosedError, None),
    ],
)
def test_error_hierarchy(cls, base):
    assert issubclass(cls, mmsb.MmsbError)
    assert getattr(mmsb, cls.__name__) is cls
    if base is not None:
        assert issubclass(cls, base)


def test_every_error_class_is_exported_by_name_from_mmsb():
    """`from mmsb import *` gives every error class; mmsb.__all__ names them literally (mypy
    does not follow `__all__ += errors.__all__`), so the two lists must not drift apart."""
    assert set(E.__all__) <= set(mmsb.__all__)
    assert {n for n in mmsb.__all__ if n.endswith("Error")} == set(E.__all__)
    assert {n for n, v in vars(E).items() if isinstance(v, type) and issubclass(v, Exception)
            and v.__module__ == E.__name__} == set(E.__all__)


def test_page_not_found_message_is_not_quoted(pop):
    bus = pop[0]
    err = fails(bus, E.PageNotFoundError, lambda: bus.page(12345), KeyError, contains=["12345"])
    assert str(err) == err.args[0]


# ---- offsets and lengths --------------------------------------------------------------------------

@pytest.mark.parametrize("offset,data", [(60, b"abcdef"), (64, b"a"), (1000, b"x"), (2**40, b"x")])
def test_write_out_of_range(pop, offset, data):
    bus, raw, *_ = pop
    fails(bus, E.InvalidDeltaError, lambda: raw.write(offset, data), ValueError, contains=[raw.id])


def test_write_empty_data_far_past_the_end(pop):
    # read() rejects an offset past the end even for 0 bytes; a write must too (it is a delta
    # "out of the page's bounds")
    bus, raw, *_ = pop
    fails(bus, E.InvalidDeltaError, lambda: raw.write(10**6, b""), ValueError)


def test_write_offset_overflow(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidDeltaError, lambda: raw.write(2**64 - 1, b"ab"), ValueError)


def test_negative_offsets(pop):
    bus, raw, typed, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: raw.write(-1, b"a"), ValueError, contains=["-1"])
    fails(bus, E.InvalidArgumentError, lambda: raw.read(-1, 1), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.read(0, -1), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: mmsb.Delta.at(typed, -4, b"abcd"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.write(np.int64(-3), b"a"), ValueError)


def test_huge_integer_message_does_not_say_negative(pop):
    # 2**63 .. 2**64-1 are valid uint64 values and 2**64 is too large: none of them is negative
    bus, raw, *_ = pop
    for value in (2**63, 2**64 - 1, 2**64, 2**70):
        err = fails(bus, E.InvalidArgumentError, lambda: bus.create_page(value), ValueError)
        assert "negative" not in str(err), (value, str(err))


def test_read_out_of_range(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: raw.read(60, 5), ValueError, contains=[raw.id, 64])
    fails(bus, E.InvalidArgumentError, lambda: raw.read(65, 0), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.read(0, 65), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.read(2**63 - 1, 2), ValueError)


def test_delta_at_out_of_range(pop):
    bus, raw, typed, anon, _ = pop
    d = mmsb.Delta.at(typed, 44, b"abcde")  # built without a size check: the page is checked at apply
    fails(bus, E.InvalidDeltaError, lambda: bus.apply(d), ValueError, contains=[typed.id])
    d2 = mmsb.Delta.at(anon.id, 100, b"x")
    fails(bus, E.InvalidDeltaError, lambda: bus.apply(d2), ValueError)
    assert d.lsn == 0 and d.epoch == 0 and d2.lsn == 0


def test_delta_at_offset_overflow(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidDeltaError, lambda: mmsb.Delta.at(raw, 2**64 - 2, b"abc"), ValueError)


def test_delta_runs_mismatch(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidDeltaError, lambda: mmsb.Delta.runs(raw, [0, 1], [b"a"]), ValueError)


def test_delta_runs_out_of_range(pop):
    bus, raw, *_ = pop
    d = mmsb.Delta.runs(raw, [0, 62], [b"ok", b"toolong"])
    fails(bus, E.InvalidDeltaError, lambda: bus.apply(d), ValueError)


def test_masked_errors(pop):
    bus, raw, typed, *_ = pop
    mask = np.zeros(64, dtype=bool)
    mask[:3] = True
    # payload neither dense (64) nor sparse (3)
    fails(bus, E.InvalidDeltaError, lambda: mmsb.Delta.masked(raw, mask, b"abcd"), ValueError)
    # mask length fits neither the page bytes nor its elements
    fails(bus, E.InvalidDeltaError, lambda: mmsb.Delta.masked(raw, mask[:10], b"abc"), ValueError)
    fails(bus, E.InvalidDeltaError, lambda: mmsb.Delta.masked(typed, np.ones(5, bool), b""), ValueError)
    # multi-byte mask items
    fails(bus, E.InvalidDeltaError, lambda: mmsb.Delta.masked(raw, mask.astype(np.int16), b"abc"), ValueError)
    # packed: a set bit past the extent, and a mask shorter than the page
    bits = np.packbits(mask, bitorder="little")
    fails(bus, E.InvalidDeltaError,
          lambda: mmsb.Delta.masked(raw, bits, b"abc", packed=True, extent=2), ValueError)
    fails(bus, E.InvalidDeltaError,
          lambda: mmsb.Delta.masked(raw, bits[:2], b"abc", packed=True), ValueError)
    # a mask longer than the page, given by id (no page to check against): rejected at apply
    long_mask = np.zeros(65, dtype=bool)
    long_mask[64] = True
    d = mmsb.Delta.masked(raw.id, long_mask, b"z")
    fails(bus, E.InvalidDeltaError, lambda: bus.apply(d), ValueError)


def test_diff_and_merge_errors(pop):
    bus, raw, typed, *_ = pop
    fails(bus, E.InvalidDeltaError, lambda: mmsb.Delta.diff(raw, b"abc", b"ab"), ValueError)
    a = mmsb.Delta.at(raw, 0, b"a")
    b = mmsb.Delta.at(typed, 0, b"b")
    fails(bus, E.InvalidDeltaError, lambda: mmsb.Delta.merge(a, b), ValueError)


# ---- batches --------------------------------------------------------------------------------------

def test_batch_lengths_do_not_match_payload(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidDeltaError, lambda: mmsb.DeltaBatch([raw.id], [0], [3], b"ab"), ValueError)
    fails(bus, E.InvalidDeltaError, lambda: mmsb.DeltaBatch([raw.id], [0], [1], b"ab"), ValueError)


def test_batch_column_length_mismatch(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidDeltaError, lambda: mmsb.DeltaBatch([raw.id, raw.id], [0], [1, 1], b"ab"), ValueError)
    fails(bus, E.InvalidDeltaError, lambda: mmsb.DeltaBatch([raw.id], [0], [1, 0], b"a"), ValueError)


@pytest.mark.parametrize("column", [0, 1, 2])
def test_batch_negative_values(pop, column):
    bus, raw, *_ = pop
    cols = [np.array([raw.id, raw.id], np.int64), np.array([0, 4], np.int64), np.array([1, 1], np.int64)]
    cols[column][1] = -1
    err = fails(bus, E.InvalidDeltaError, lambda: mmsb.DeltaBatch(*cols, b"ab"), ValueError)
    assert "[1]" in str(err)  # names the bad row


def test_batch_offset_and_length_overflow(pop):
    bus, raw, *_ = pop
    u = np.uint64
    fails(bus, E.InvalidDeltaError,
          lambda: mmsb.DeltaBatch(np.array([raw.id], u), np.array([2**64 - 1], u), np.array([2], u), b"ab"),
          ValueError)
    fails(bus, E.InvalidDeltaError,
          lambda: mmsb.DeltaBatch(np.array([raw.id] * 2, u), np.array([0, 0], u),
                                  np.array([2**63, 2**63], u), b""),
          ValueError)
    big_id = mmsb.DeltaBatch(np.array([2**63 + 5], u), np.array([0], u), np.array([1], u), b"a")
    fails(bus, E.PageNotFoundError, lambda: bus.apply_batch(big_id), KeyError)


def test_batch_bad_column_types(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidDeltaError, lambda: mmsb.DeltaBatch([raw.id], [0.5], [1], b"a"), ValueError)
    fails(bus, E.InvalidDeltaError, lambda: mmsb.DeltaBatch([[raw.id]], [[0]], [[1]], b"a"), ValueError)
    column = np.array([[raw.id]], dtype=np.uint64)  # the dtype the binding takes without a copy, but 2-D
    fails(bus, E.InvalidDeltaError, lambda: mmsb.DeltaBatch(column, column * 0, column, b"a"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: mmsb.DeltaBatch([raw.id], [0], [1], "a"), ValueError)


def test_batch_one_bad_row_in_the_middle_applies_nothing(pop):
    bus, raw, typed, anon, gone = pop
    n = 1001
    ids = np.full(n, raw.id, np.uint64)
    ids[1::3] = typed.id
    offs = np.zeros(n, np.uint64)
    lens = np.ones(n, np.uint64)
    payload = np.full(n, 0xAB, np.uint8)
    # out of bounds in the middle
    bad = offs.copy()
    bad[500] = 64 if ids[500] == raw.id else 48
    batch = mmsb.DeltaBatch(ids, bad, lens, payload)
    fails(bus, E.InvalidDeltaError, lambda: bus.apply_batch(batch), ValueError, contains=["500"])
    # an unknown / deleted page in the middle
    ids2 = ids.copy()
    ids2[600] = gone.id
    batch2 = mmsb.DeltaBatch(ids2, offs, lens, payload)
    fails(bus, E.PageNotFoundError, lambda: bus.apply_batch(batch2), KeyError, contains=["600"])
    ids3 = ids.copy()
    ids3[700] = 999
    batch3 = mmsb.DeltaBatch(ids3, offs, lens, payload)
    fails(bus, E.PageNotFoundError, lambda: bus.apply_batch(batch3), KeyError)
    # and a big one that would run in parallel
    big = 50_000
    ids4 = np.resize(np.array([raw.id, typed.id, anon.id], np.uint64), big)
    offs4 = np.zeros(big, np.uint64)
    offs4[big // 2] = 10_000
    batch4 = mmsb.DeltaBatch(ids4, offs4, np.ones(big, np.uint64), np.ones(big, np.uint8))
    fails(bus, E.InvalidDeltaError, lambda: bus.apply_batch(batch4), ValueError)


def test_batch_mutated_after_construction_is_revalidated(pop):
    # the batch keeps NumPy columns without copying them; apply must re-check what it reads
    bus, raw, *_ = pop
    lens = np.array([2], np.uint64)
    batch = mmsb.DeltaBatch(np.array([raw.id], np.uint64), np.array([0], np.uint64), lens, b"ab")
    lens[0] = 1_000_000
    fails(bus, E.InvalidDeltaError, lambda: bus.apply_batch(batch), ValueError)


# ---- unknown, deleted and foreign pages -----------------------------------------------------------

def test_unknown_page_id_and_name(pop):
    bus, raw, *_ = pop
    fails(bus, E.PageNotFoundError, lambda: bus.page(999), KeyError, contains=["999"])
    fails(bus, E.PageNotFoundError, lambda: bus.page(0), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.page("nope"), KeyError, contains=["nope"])
    fails(bus, E.PageNotFoundError, lambda: bus.delete_page(999), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.delete_page("nope"), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.apply(mmsb.Delta.at(999, 0, b"x")), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.apply_batch(mmsb.DeltaBatch([999], [0], [1], b"x")), KeyError)


def test_bad_page_key_types(pop):
    bus, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: bus.page(1.5), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.page(None), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.page(-1), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.delete_page(b"raw"), ValueError)


def test_deleted_page(pop):
    bus, raw, typed, anon, gone = pop
    gid = gone.id
    fails(bus, E.PageNotFoundError, lambda: bus.page(gid), KeyError, contains=[gid])
    fails(bus, E.PageNotFoundError, lambda: bus.page("gone"), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.page(gone), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.delete_page(gone), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.delete_page(gid), KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.write(0, b"x"), KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.read(0, 1), KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.view(), KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.snapshot(), KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.update(bytes(8)), KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.edit(), KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.set_metadata("k", "v"), KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.metadata, KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.epoch, KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.name, KeyError)
    fails(bus, E.PageNotFoundError, lambda: gone.__dlpack__(), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.apply(mmsb.Delta.at(gone, 0, b"x")), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.apply(mmsb.Delta.at(gid, 0, b"x")), KeyError)


def test_edit_of_page_deleted_meanwhile(pop):
    bus, raw, typed, anon, _ = pop
    with pytest.raises(E.PageNotFoundError):
        with anon.edit() as a:
            a[0] = 1
            bus.delete_page(anon)
    assert anon not in bus


def test_edit_context_cannot_be_entered_twice(pop):
    bus, raw, *_ = pop
    ctx = raw.edit()
    ctx.__enter__()
    fails(bus, E.InvalidArgumentError, lambda: ctx.__enter__(), ValueError)
    ctx.__exit__(None, None, None)  # exits cleanly: nothing changed, nothing committed
    assert raw.epoch == 1


def test_page_of_another_bus(pop):
    bus, raw, *_ = pop
    other = mmsb.Bus()
    foreign = other.create_page(64)  # same id as `raw`, other bus
    assert foreign.id == raw.id
    fails(bus, E.PageNotFoundError, lambda: bus.page(foreign), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.delete_page(foreign), KeyError)
    assert foreign not in bus
    assert foreign in other and foreign.epoch == 0


def test_delta_built_from_page_of_another_bus(pop):
    # a Delta made from another bus's Page must not land on this bus's page with the same id
    bus, raw, *_ = pop
    other = mmsb.Bus()
    foreign = other.create_page(64)
    d = mmsb.Delta.at(foreign, 0, b"XYZ")
    fails(bus, E.PageNotFoundError, lambda: bus.apply(d), KeyError)


# ---- names, dtypes, shapes, data ------------------------------------------------------------------

def test_duplicate_and_bad_names(pop):
    bus, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, name="raw"), ValueError, contains=["raw"])
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, name=""), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, name=5), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, name="x" * 2000), ValueError)
    # a failed creation does not consume an id
    assert bus.create_page(8).id == 5


def test_update_wrong_dtype(pop):
    bus, raw, typed, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: typed.update(np.zeros((3, 4), np.float64)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: typed.update(np.zeros((3, 4), np.int32)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: typed.update(bytes(48)), ValueError)


def test_update_wrong_shape_or_size(pop):
    bus, raw, typed, anon, _ = pop
    fails(bus, E.InvalidArgumentError, lambda: typed.update(np.zeros(12, np.float32)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: typed.update(np.zeros((4, 3), np.float32)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: typed.update(np.zeros((3, 5), np.float32)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.update(bytes(63)), ValueError, contains=[63, 64])
    fails(bus, E.InvalidArgumentError, lambda: anon.update(bytes(101)), ValueError)


def test_create_page_data_dtype_and_shape_mismatch(pop):
    bus, *_ = pop
    data = np.arange(6.0)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=data, dtype="float32"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=data, dtype="int64"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=data, shape=(4,)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=data, shape=(2, 2)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(47, data=data), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=b"abc", dtype="float32"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=b"abcd", shape=(4,)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=np.zeros(0)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=np.array(["a"])), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=np.zeros(3, ">f8")), ValueError)


def test_create_page_size_shape_dtype_inconsistent(pop):
    bus, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(0), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(-1), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(16, shape=(4,)), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(10, dtype="float32"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(15, shape=(2,), dtype="float64"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(shape=(0,), dtype="float64"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(shape=(-1,), dtype="float64"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(shape=(2.5,), dtype="float64"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(shape="ab", dtype="float64"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(shape=(1,) * 33, dtype="float64"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page("16"), ValueError)


NONCONTIGUOUS = {  # each 16 float32 = 64 bytes, the size of the `raw` page
    "step": lambda: np.arange(32, dtype=np.float32)[::2],
    "transpose": lambda: np.arange(16, dtype=np.float32).reshape(4, 4).T,
    "fortran": lambda: np.asfortranarray(np.arange(16, dtype=np.float32).reshape(4, 4)),
    "reversed": lambda: np.arange(16, dtype=np.float32)[::-1],
}


@pytest.mark.parametrize("kind", sorted(NONCONTIGUOUS))
def test_non_contiguous_arrays(pop, kind):
    bus, raw, *_ = pop
    arr = NONCONTIGUOUS[kind]()
    assert not arr.flags.c_contiguous and arr.nbytes == 64
    fails(bus, E.InvalidArgumentError, lambda: raw.write(0, arr), ValueError, contains=["contiguous"])
    fails(bus, E.InvalidArgumentError, lambda: raw.update(arr), ValueError, contains=["contiguous"])
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(data=arr), ValueError, contains=["contiguous"])
    fails(bus, E.InvalidArgumentError, lambda: mmsb.Delta.at(raw, 0, arr), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: mmsb.DeltaBatch([raw.id], [0], [64], arr), ValueError)


def test_non_contiguous_update_of_typed_page(pop):
    bus, raw, typed, *_ = pop
    arr = np.zeros((4, 3), np.float32).T  # shape (3, 4) but Fortran order
    assert arr.shape == (3, 4) and not arr.flags.c_contiguous
    fails(bus, E.InvalidArgumentError, lambda: typed.update(arr), ValueError, contains=["contiguous"])
    fails(bus, E.InvalidArgumentError, lambda: raw.update(np.zeros(128, np.uint8)[::2]), ValueError)


def test_data_of_wrong_type(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: raw.write(0, "text"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.write(0, 5), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.write("0", b"a"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.write(1.0, b"a"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.update("x" * 64), ValueError)


def test_huge_sizes(pop, state):
    bus, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(1 << 62), ValueError)
    fails(bus, E.InvalidArgumentError,
          lambda: bus.create_page(shape=(1 << 40, 1 << 40), dtype="float64"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(shape=(1 << 38,), dtype="complex128"), ValueError)
    # exactly at the 1 TiB limit: valid, but no machine here backs it
    before = state(bus)
    data_bytes = bus.memory().data_bytes
    with pytest.raises((E.InvalidArgumentError, E.OutOfMemoryError)) as info:
        bus.create_page(1 << 40)
    assert type(info.value) in (E.InvalidArgumentError, E.OutOfMemoryError)
    assert state(bus) == before
    assert bus.memory().data_bytes == data_bytes
    assert bus.create_page(8).id == 5  # no id was consumed


def test_bad_dtypes(pop):
    bus, *_ = pop
    for dtype in ("notadtype", "float128", "object", "U4", ">f4", "V8", "datetime64[s]", "S3"):
        fails(bus, E.InvalidArgumentError, lambda: bus.create_page(shape=(4,), dtype=dtype), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(16, dtype=3.5), ValueError)


def test_bad_metadata(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, metadata=[("a", "b")]), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, metadata={1: "b"}), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, metadata={"a": 1}), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, metadata={"a": None}), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.set_metadata("k", 5), ValueError, contains=["k"])
    fails(bus, E.InvalidArgumentError, lambda: raw.set_metadata("k", ["v"]), ValueError)
    assert raw.metadata == {}


def test_set_metadata_non_str_key(pop):
    # create_page(metadata={1: ...}) raises InvalidArgumentError; set_metadata must agree
    bus, raw, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: raw.set_metadata(1, "v"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.set_metadata(None, "v"), ValueError)


def test_bad_bus_options():
    with pytest.raises(E.InvalidArgumentError):
        mmsb.Bus(threads=0)
    with pytest.raises(E.InvalidArgumentError):
        mmsb.Bus(threads=-2)
    with pytest.raises(E.InvalidArgumentError):
        mmsb.Bus(threads=10**6)


def test_bad_delta_options(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: mmsb.Delta.at(raw, 0, b"x", source="bogus"), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: mmsb.Delta.at(raw, 0, b"x", expect_epoch=-1), ValueError)
    fails(bus, E.InvalidArgumentError, lambda: raw.write(0, b"x", expect_epoch=-1), ValueError)


# ---- epoch conflicts ------------------------------------------------------------------------------

def test_epoch_conflict(pop):
    bus, raw, typed, anon, _ = pop
    assert raw.epoch == 1
    fails(bus, E.EpochConflictError, lambda: raw.write(0, b"z", expect_epoch=0), contains=[raw.id])
    fails(bus, E.EpochConflictError, lambda: raw.write(0, b"z", expect_epoch=2))
    fails(bus, E.EpochConflictError, lambda: bus.apply(mmsb.Delta.at(raw, 0, b"z", expect_epoch=5)))
    fails(bus, E.EpochConflictError, lambda: typed.update(np.ones((3, 4), np.float32), expect_epoch=0))
    # an unchanged update still honours expect_epoch
    fails(bus, E.EpochConflictError, lambda: typed.update(typed.view().copy(), expect_epoch=0))
    assert not issubclass(E.EpochConflictError, (ValueError, KeyError))


def test_edit_conflict_changes_nothing_of_its_own(pop):
    bus, raw, *_ = pop
    with pytest.raises(E.EpochConflictError) as info:
        with raw.edit() as a:
            a[:] = 0
            raw.write(63, b"!")
    assert type(info.value) is E.EpochConflictError
    assert raw.view().tobytes() == bytes(range(63)) + b"!"
    assert raw.epoch == 2


# ---- devices --------------------------------------------------------------------------------------

@pytest.mark.skipif(mmsb.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_cuda_location_without_gpu(pop):
    bus, *_ = pop
    fails(bus, E.DeviceUnavailableError, lambda: bus.create_page(64, location="cuda:0"), RuntimeError)
    fails(bus, E.DeviceUnavailableError,
          lambda: bus.create_page(shape=(4,), dtype="float32", location="cuda:0", name="dev"), RuntimeError)


def test_unknown_location(pop):
    bus, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(64, location="tpu"), ValueError, contains=["tpu"])
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(64, location=""), ValueError)


# ---- closed bus -----------------------------------------------------------------------------------

CLOSED_CALLS = {
    "create_page": lambda bus, p, t: bus.create_page(8),
    "create_page_data": lambda bus, p, t: bus.create_page(data=np.zeros(2)),
    "page_id": lambda bus, p, t: bus.page(1),
    "page_name": lambda bus, p, t: bus.page("raw"),
    "page_Page": lambda bus, p, t: bus.page(p),
    "pages": lambda bus, p, t: bus.pages(),
    "len": lambda bus, p, t: len(bus),
    "iter": lambda bus, p, t: list(bus),
    "contains_id": lambda bus, p, t: 1 in bus,
    "contains_name": lambda bus, p, t: "raw" in bus,
    "contains_Page": lambda bus, p, t: p in bus,
    "delete_page": lambda bus, p, t: bus.delete_page(p),
    "apply": lambda bus, p, t: bus.apply(mmsb.Delta.at(p, 0, b"x")),
    "apply_batch": lambda bus, p, t: bus.apply_batch(mmsb.DeltaBatch([1], [0], [1], b"x")),
    "apply_empty_batch": lambda bus, p, t: bus.apply_batch(mmsb.DeltaBatch([], [], [], b"")),
    "name": lambda bus, p, t: p.name,
    "size": lambda bus, p, t: p.size,
    "epoch": lambda bus, p, t: p.epoch,
    "last_lsn": lambda bus, p, t: p.last_lsn,
    "dtype": lambda bus, p, t: t.dtype,
    "shape": lambda bus, p, t: t.shape,
    "location": lambda bus, p, t: p.location,
    "metadata": lambda bus, p, t: p.metadata,
    "set_metadata": lambda bus, p, t: p.set_metadata("k", "v"),
    "view": lambda bus, p, t: t.view(),
    "read": lambda bus, p, t: p.read(0, 1),
    "snapshot": lambda bus, p, t: t.snapshot(),
    "write": lambda bus, p, t: p.write(0, b"x"),
    "update": lambda bus, p, t: t.update(np.ones((3, 4), np.float32)),
    "edit": lambda bus, p, t: t.edit().__enter__(),
    "dlpack": lambda bus, p, t: t.__dlpack__(),
    "dlpack_versioned": lambda bus, p, t: t.__dlpack__(max_version=(1, 0)),
    "dlpack_device": lambda bus, p, t: t.__dlpack_device__(),
    "from_dlpack": lambda bus, p, t: np.from_dlpack(t),
    "asarray": lambda bus, p, t: np.asarray(t),
}


@pytest.mark.parametrize("call", sorted(CLOSED_CALLS))
def test_closed_bus_raises_closed_error(pop, call):
    bus, raw, typed, *_ = pop
    views = {p.id: p.view() for p in bus.pages()}
    before = {pid: (v.tobytes(), bus.page(pid).epoch) for pid, v in views.items()}
    lsn = bus.lsn
    bus.close()
    with pytest.raises(E.ClosedError) as info:
        CLOSED_CALLS[call](bus, raw, typed)
    assert type(info.value) is E.ClosedError
    assert bus.lsn == lsn
    assert {pid: v.tobytes() for pid, v in views.items()} == {pid: b for pid, (b, _) in before.items()}


def test_closed_bus_buffer_protocol(pop):
    bus, raw, typed, *_ = pop
    bus.close()
    # the buffer protocol can only raise BufferError; its cause must say why
    with pytest.raises((E.ClosedError, BufferError)) as info:
        memoryview(typed)
    err = info.value
    assert isinstance(err, E.ClosedError) or isinstance(err.__cause__, E.ClosedError)


def test_edit_open_when_bus_closes(pop):
    bus, raw, typed, *_ = pop
    v = typed.view()
    lsn = bus.lsn
    with pytest.raises(E.ClosedError):
        with typed.edit() as a:
            a[:] = 7
            bus.close()
    assert bus.lsn == lsn
    np.testing.assert_array_equal(v, np.arange(12, dtype=np.float32).reshape(3, 4))


# ---- found by auditing: empty runs, object buffers, stale and history keys -------------------------

def test_an_empty_run_past_the_end_is_refused_like_an_empty_write(pop):
    """An empty write names a position, which must exist: Delta.at/runs are checked as
    Page.write and a DeltaBatch row are (before, an empty Delta.at anywhere committed)."""
    bus, raw, *_ = pop
    for offset in (65, 2**63, 2**64 - 1):
        fails(bus, E.InvalidDeltaError, lambda o=offset: bus.apply(mmsb.Delta.at(raw, o, b"")), ValueError,
              contains=("empty run", f"page {raw.id}"))
    fails(bus, E.InvalidDeltaError, lambda: bus.apply(mmsb.Delta.runs(raw, [0, 70], [b"x", b""])), ValueError,
          contains=("offset 70",))
    lsn = bus.lsn
    bus.apply(mmsb.Delta.at(raw, 64, b""))  # the end itself is a position: an empty delta, committed
    assert bus.lsn == lsn + 1
    bus.submit(mmsb.Delta.at(raw, 65, b""))
    report = bus.tick()
    assert report["rejected"] == 1 and "empty run" in report["rejections"][0] and bus.lsn == lsn + 1


def test_buffers_of_python_objects_are_refused(pop):
    """Their bytes are PyObject addresses: never stored as page data."""
    bus, raw, *_ = pop
    objects = np.array(["hello", 123, None, 4.5, 6, 7, 8, 9], dtype=object)  # 64 bytes of pointers
    for call in (lambda: raw.write(0, objects), lambda: raw.update(objects),
                 lambda: mmsb.Delta.at(raw, 0, objects),
                 lambda: mmsb.DeltaBatch([raw.id], [0], [64], objects)):
        fails(bus, E.InvalidArgumentError, call, ValueError, contains=("Python objects",))
    fields = np.zeros(4, dtype=[("O", "<f8"), ("x", "<u8")])  # a field named O holds numbers
    raw.write(0, fields)
    assert raw.read(0, 64) == fields.tobytes()


def test_history_of_another_buses_page_is_refused(pop):
    bus, raw, *_ = pop
    other = mmsb.Bus()
    q = other.create_page(8)
    q.write(0, b"abc")
    fails(bus, E.PageNotFoundError, lambda: bus.history(q), KeyError, contains=("another bus",))
    assert [d.lsn for d in other.history(q)] == [2]


def test_stale_of_a_deleted_page_raises_as_its_other_attributes(pop):
    bus, raw, typed, anon, gone = pop
    fails(bus, E.PageNotFoundError, lambda: gone.stale, KeyError, contains=("deleted",))
    assert raw.stale is False
