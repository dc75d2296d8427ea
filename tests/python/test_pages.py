"""Pages: creation (raw, typed, from data), lookup, deletion, metadata, reprs, build info, memory."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb

TYPED_DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
]


# ---- creation -----------------------------------------------------------------------------------

def test_create_raw_page(bus):
    p = bus.create_page(4096)
    assert p.id == 1
    assert p.size == 4096
    assert p.nbytes == 4096
    assert p.epoch == 0
    assert p.name is None
    assert p.dtype is None
    assert p.shape is None
    assert p.location == "cpu"
    assert p.metadata == {}
    assert bus.lsn == 1
    assert p.last_lsn == 1
    v = p.view()
    assert v.dtype == np.uint8 and v.shape == (4096,)
    assert not v.any()


@pytest.mark.parametrize("size", [1, 3, 63, 64, 65, 4095, 4097, 300_000])
def test_create_raw_page_odd_sizes_are_zeroed(bus, size):
    p = bus.create_page(size)
    assert p.size == size
    assert bytes(p.view()) == bytes(size)


def test_reused_arena_block_is_zeroed(bus):
    p = bus.create_page(256)
    p.write(0, b"\xff" * 256)
    bus.delete_page(p)
    del p
    q = bus.create_page(256)  # same size class: the freed block may come back
    assert bytes(q.view()) == bytes(256)


@pytest.mark.parametrize("dtype", TYPED_DTYPES)
def test_create_typed_page(bus, dtype):
    p = bus.create_page(shape=(3, 5), dtype=dtype, name="t")
    dt = np.dtype(dtype)
    assert p.dtype == dt
    assert p.shape == (3, 5)
    assert p.size == 15 * dt.itemsize
    assert p.epoch == 0
    assert bus.lsn == 1
    v = p.view()
    assert v.dtype == dt and v.shape == (3, 5)
    assert not v.any()


def test_create_typed_page_int_shape_and_numpy_dtype(bus):
    p = bus.create_page(shape=7, dtype=np.int16)
    assert p.shape == (7,)
    assert p.dtype == np.dtype("int16")
    assert p.size == 14


def test_create_typed_page_from_size_and_dtype_is_flat(bus):
    p = bus.create_page(64, dtype="float32")
    assert p.shape == (16,)
    assert p.dtype == np.float32


def test_create_typed_page_size_and_shape_agree(bus):
    p = bus.create_page(24, shape=(2, 3), dtype="float32")
    assert p.shape == (2, 3) and p.size == 24


@pytest.mark.parametrize(
    "data",
    [
        np.arange(8.0),
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.array([True, False, True]),
        np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
        np.arange(24, dtype=np.uint16).reshape(2, 3, 4),
    ],
    ids=["float64", "int32-2d", "bool", "complex64", "uint16-3d"],
)
def test_create_from_data_infers_dtype_and_shape(bus, data):
    lsn0 = bus.lsn
    p = bus.create_page(data=data, name="w")
    assert p.dtype == data.dtype
    assert p.shape == data.shape
    assert p.size == data.nbytes
    np.testing.assert_array_equal(p.view(), data)
    # creation (lsn + 1), then the content as delta 1 (lsn + 1, epoch 1)
    assert p.epoch == 1
    assert bus.lsn == lsn0 + 2
    assert p.last_lsn == lsn0 + 2


def test_create_from_zero_data_is_still_delta_1(bus):
    p = bus.create_page(data=np.zeros(4))
    assert p.epoch == 1
    assert bus.lsn == 2


def test_create_from_list_and_bytes(bus):
    p = bus.create_page(data=[1, 2, 3])
    assert p.dtype == np.asarray([1, 2, 3]).dtype
    assert p.shape == (3,)
    np.testing.assert_array_equal(p.view(), [1, 2, 3])
    r = bus.create_page(data=b"hello")
    assert r.dtype is None and r.shape is None
    assert r.size == 5
    assert bytes(r.view()) == b"hello"
    assert r.epoch == 1
    ba = bus.create_page(data=bytearray(b"xyz"))
    assert bytes(ba.view()) == b"xyz"


def test_create_from_data_with_shape_and_dtype(bus):
    data = np.arange(6.0)
    p = bus.create_page(data=data, shape=(2, 3), dtype="float64")
    assert p.shape == (2, 3)
    np.testing.assert_array_equal(p.view(), data.reshape(2, 3))
    # the page owns its bytes: changing the source later changes nothing
    data[:] = -1
    np.testing.assert_array_equal(p.view().ravel(), np.arange(6.0))


def test_create_from_bytes_with_dtype(bus):
    raw = np.arange(4, dtype=np.float32).tobytes()
    p = bus.create_page(data=raw, dtype="float32")
    assert p.dtype == np.float32 and p.shape == (4,)
    np.testing.assert_array_equal(p.view(), np.arange(4, dtype=np.float32))


def test_ids_increase_and_names_unique(bus):
    a = bus.create_page(8, name="a")
    b = bus.create_page(8, name="b")
    c = bus.create_page(8)
    assert [a.id, b.id, c.id] == [1, 2, 3]
    assert a.name == "a" and b.name == "b" and c.name is None
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.create_page(8, name="a")
    assert bus.page("a") == a


def test_unicode_names(bus):
    p = bus.create_page(8, name="température/π")
    assert p.name == "température/π"
    assert bus.page("température/π") == p
    assert "température/π" in bus


# ---- lookup ---------------------------------------------------------------------------------------

def test_page_lookup_by_id_name_and_page(bus):
    p = bus.create_page(16, name="pos")
    by_id = bus.page(p.id)
    by_name = bus.page("pos")
    by_page = bus.page(p)
    assert by_id == p and by_name == p and by_page == p
    assert by_id.id == by_name.id == by_page.id == p.id
    assert hash(by_id) == hash(p)
    assert bus.page(np.uint64(p.id)) == p  # NumPy integers are ids too
    # handles are views of one page: a write through one is seen through the others
    by_name.write(0, b"abc")
    assert p.read(0, 3) == b"abc"
    assert by_id.epoch == 1


def test_page_equality(bus):
    other = mmsb.Bus()
    p = bus.create_page(8)
    q = bus.create_page(8)
    o = other.create_page(8)
    assert p != q
    assert p != o  # same id, different bus
    assert p != p.id
    assert len({p, bus.page(1), q}) == 2


def test_pages_order_len_iter(bus):
    made = [bus.create_page(8 * (i + 1)) for i in range(6)]
    bus.delete_page(made[2])
    bus.delete_page(made[4])
    live = [made[i] for i in (0, 1, 3, 5)]
    assert len(bus) == 4
    assert [p.id for p in bus.pages()] == [p.id for p in live]
    assert [p.id for p in bus] == [p.id for p in live]
    assert all(isinstance(p, mmsb.Page) for p in bus.pages())


def test_contains_numpy_integer_id(bus):
    # bus.page() accepts NumPy integers as ids; `in` must agree with it
    p = bus.create_page(8)
    assert bus.page(np.int64(p.id)) == p
    assert np.int64(p.id) in bus
    assert np.uint64(p.id) in bus
    assert np.int64(99) not in bus


def test_contains(bus):
    p = bus.create_page(8, name="x")
    q = bus.create_page(8)
    assert p.id in bus and "x" in bus and p in bus and q in bus
    assert 99 not in bus
    assert 0 not in bus
    assert -1 not in bus
    assert 2**70 not in bus
    assert "y" not in bus
    assert 1.0 not in bus
    assert None not in bus
    other = mmsb.Bus()
    o = other.create_page(8)
    assert o not in bus  # a page of another bus, even with a live id here
    bus.delete_page(p)
    assert p not in bus and p.id not in bus and "x" not in bus
    assert q in bus


# ---- deletion -------------------------------------------------------------------------------------

def test_delete_page(bus):
    a = bus.create_page(8, name="a")
    b = bus.create_page(8)
    lsn = bus.lsn
    bus.delete_page(a)
    assert bus.lsn == lsn + 1
    assert len(bus) == 1
    assert a not in bus
    with pytest.raises(mmsb.PageNotFoundError):
        bus.page(a.id)
    with pytest.raises(mmsb.PageNotFoundError):
        bus.page("a")
    with pytest.raises(mmsb.PageNotFoundError):
        a.epoch  # noqa: B018
    assert "deleted" in repr(a)
    # ids are never reused; the name is free again
    c = bus.create_page(8, name="a")
    assert c.id == 3
    assert bus.page("a") == c
    assert c != a
    # deleting by id and by name work too
    bus.delete_page(b.id)
    bus.delete_page("a")
    assert len(bus) == 0
    assert bus.create_page(1).id == 4
    assert bus.lsn == lsn + 1 + 1 + 2 + 1


def test_recreated_name_starts_fresh(bus):
    p = bus.create_page(shape=(2, 2), dtype="float64", name="x", metadata={"k": "v"})
    p.write(0, b"\xff" * 8)
    bus.delete_page("x")
    q = bus.create_page(16, name="x")
    assert q.id == p.id + 1
    assert q.metadata == {} and q.dtype is None and q.shape is None and q.epoch == 0
    assert bytes(q.view()) == bytes(16)
    assert bus.page("x") == q


def test_delete_page_leaves_other_pages_alone(bus):
    pages = [bus.create_page(data=np.full(16, i, np.uint8)) for i in range(5)]
    bus.delete_page(pages[2])
    for i in (0, 1, 3, 4):
        assert bytes(pages[i].view()) == bytes([i]) * 16
        assert pages[i].epoch == 1


# ---- metadata -------------------------------------------------------------------------------------

def test_metadata_at_creation_and_set_metadata(bus):
    p = bus.create_page(8, metadata={"unit": "m/s", "blob": b"\x00\x01"})
    assert p.metadata == {"unit": "m/s", "blob": b"\x00\x01"}
    assert isinstance(p.metadata["blob"], bytes) and isinstance(p.metadata["unit"], str)
    lsn = bus.lsn
    p.set_metadata("unit", "km/h")
    assert bus.lsn == lsn + 1
    assert p.metadata["unit"] == "km/h"
    p.set_metadata("new", b"\xff")
    assert bus.lsn == lsn + 2
    p.set_metadata("blob", None)  # removal is a change too
    assert bus.lsn == lsn + 3
    assert p.metadata == {"unit": "km/h", "new": b"\xff"}
    p.set_metadata("missing", None)  # removing nothing commits nothing
    assert bus.lsn == lsn + 3
    assert p.epoch == 0  # metadata is not page content


def test_metadata_is_a_copy(bus):
    p = bus.create_page(8, metadata={"k": "v"})
    md = p.metadata
    md["k"] = "changed"
    md["x"] = "y"
    assert p.metadata == {"k": "v"}


def test_metadata_on_raw_anonymous_page(bus):
    p = bus.create_page(8)
    p.set_metadata("k", "v")
    assert p.metadata == {"k": "v"}
    assert p.name is None and p.dtype is None


# ---- reprs ----------------------------------------------------------------------------------------

def test_reprs_are_short_and_informative(bus):
    raw = bus.create_page(4096)
    typed = bus.create_page(shape=(1024,), dtype="float32", name="pos")
    typed.write(0, b"\x00" * 4)
    r1, r2 = repr(raw), repr(typed)
    assert r1.startswith("<mmsb.Page") and r2.startswith("<mmsb.Page")
    assert "1" in r1 and "4096" in r1 and "raw" in r1
    assert "pos" in r2 and "float32" in r2 and "1024" in r2 and "epoch=1" in r2
    assert len(r1) < 80 and len(r2) < 80
    rb = repr(bus)
    assert rb.startswith("<mmsb.Bus") and "pages=2" in rb and f"lsn={bus.lsn}" in rb
    assert len(rb) < 80
    d = mmsb.Delta.at(raw, 8, b"abcd")
    rd = repr(d)
    assert rd.startswith("<mmsb.Delta") and "page=1" in rd and len(rd) < 80
    bus.apply(d)
    assert f"lsn={d.lsn}" in repr(d)
    batch = mmsb.DeltaBatch([1, 1], [0, 4], [2, 2], b"abcd")
    assert repr(batch) == "<mmsb.DeltaBatch rows=2 bytes=4>"
    bus.delete_page(raw)
    assert "deleted" in repr(raw)
    bus.close()
    assert "closed" in repr(bus)
    assert "closed" in repr(typed)


# ---- build info and memory ------------------------------------------------------------------------

def test_build_info():
    info = mmsb.build_info()
    assert isinstance(info, dict)
    for key in ("version", "compiler", "cuda", "nccl", "tbb", "simd", "page_metadata_bytes"):
        assert key in info, key
    assert info["version"] == mmsb.__version__
    assert isinstance(info["version"], str) and info["version"].count(".") >= 1
    assert isinstance(info["compiler"], str) and info["compiler"]
    for key in ("cuda", "nccl", "tbb"):
        assert isinstance(info[key], bool), key
    assert isinstance(info["simd"], str) and info["simd"]
    assert info["page_metadata_bytes"] == 64
    info["version"] = "mutated"  # a fresh dict each call
    assert mmsb.build_info()["version"] == mmsb.__version__


def test_cuda_module_without_gpu():
    assert isinstance(mmsb.cuda.is_available(), bool)
    if mmsb.cuda.device_count() == 0:
        assert mmsb.cuda.is_available() is False


def test_memory_report_fields(bus):
    m = bus.memory()
    for key in ("pages", "data_bytes", "metadata_bytes", "total_bytes"):
        assert key in m and getattr(m, key) == m[key]
    assert m.pages == 0 and m.data_bytes == 0
    pages = [bus.create_page(100), bus.create_page(shape=(10,), dtype="float64"), bus.create_page(5000)]
    m = bus.memory()
    assert m.pages == 3
    assert m.data_bytes == 100 + 80 + 5000
    assert m.total_bytes >= m.data_bytes + m.metadata_bytes
    assert m.metadata_bytes >= 3 * 64
    with pytest.raises(AttributeError):
        m.no_such_field  # noqa: B018
    bus.delete_page(pages[0])
    m = bus.memory()
    assert m.pages == 2
    assert m.data_bytes == 100 + 80 + 5000  # real bytes: the handle still pins the deleted page
    pages[0] = None  # last pin dropped: the data is freed
    m = bus.memory()
    assert m.pages == 2 and m.data_bytes == 80 + 5000


def test_metadata_per_page_at_most_64_bytes_for_100k_raw_pages():
    bus = mmsb.Bus()
    n = 100_000
    for _ in range(n):
        bus.create_page(64)
    m = bus.memory()
    assert m.pages == n
    assert m.data_bytes == 64 * n
    assert m.page_metadata_bytes == 64
    # Records come in chunks of 4096: the last chunk's unused slots plus a small fixed index
    # are the only slack allowed beyond 64 bytes per page.
    chunk = 4096
    allowed = 64 * (-(-n // chunk) * chunk) + 4096
    assert m.metadata_bytes <= allowed, (m.metadata_bytes, m.metadata_bytes / n)
    assert m.metadata_bytes >= 64 * n
    bus.close()


def test_stats_counts(bus):
    p = bus.create_page(16)
    p.write(0, b"abcd")
    bus.apply_batch(mmsb.DeltaBatch([p.id] * 3, [0, 1, 2], [1, 1, 1], b"xyz"))
    s = bus.stats()
    assert s.deltas_applied == 4
    assert s.bytes_applied == 7
    assert s["pages_created"] == 1
    bus.reset_stats()
    assert bus.stats().deltas_applied == 0


# ---- bus lifetime ---------------------------------------------------------------------------------

def test_bus_threads_and_context_manager():
    with mmsb.Bus(threads=1) as b:
        assert b.threads == 1
        assert not b.closed
        b.create_page(8)
    assert b.closed
    with pytest.raises(mmsb.ClosedError):
        b.create_page(8)
    assert mmsb.Bus(threads=3).threads == 3


def test_close_is_idempotent(bus):
    bus.close()
    bus.close()
    assert bus.closed


def test_listing_pages_while_another_thread_deletes_them():
    """pages(), iter() and stale_pages() list the pages live when they are read; one another
    thread deletes meanwhile is left out instead of raising PageNotFoundError."""
    import threading

    bus = mmsb.Bus()
    keep = bus.create_page(8)
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            bus.delete_page(bus.create_page(8))
    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(1000):
            assert keep in bus.pages() and keep in list(bus)
            bus.stale_pages()
    finally:
        stop.set()
        t.join(30)
