"""Reading: zero-copy live views, buffer protocol, DLPack (legacy and versioned), snapshot, read."""

from __future__ import annotations

import ctypes
import gc

import numpy as np
import pytest

import mmsb

_is_valid = ctypes.pythonapi.PyCapsule_IsValid
_is_valid.restype = ctypes.c_int
_is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]


def capsule_is(capsule, name: bytes) -> bool:
    return bool(_is_valid(capsule, name))


# ---- view() ---------------------------------------------------------------------------------------

def test_view_is_read_only(bus):
    p = bus.create_page(64)
    v = p.view()
    assert not v.flags.writeable
    with pytest.raises(ValueError):
        v[0] = 1
    with pytest.raises(ValueError):
        v.setflags(write=True)  # not even by force: the base exports a read-only buffer
    assert p.epoch == 0 and bytes(p.view()) == bytes(64)


def test_view_is_zero_copy_and_aligned(bus):
    p = bus.create_page(shape=(4, 4), dtype="float64")
    a, b = p.view(), p.view()
    assert np.shares_memory(a, b)
    assert a.ctypes.data == b.ctypes.data
    assert a.ctypes.data % 64 == 0
    assert a.flags.c_contiguous


def test_view_is_live(bus):
    p = bus.create_page(shape=(8,), dtype="int32")
    v = p.view()
    p.write(4, np.int32(7).tobytes())
    assert v[1] == 7
    p.update(np.arange(8, dtype=np.int32))
    np.testing.assert_array_equal(v, np.arange(8))
    with p.edit() as a:
        a[:] = -a
    np.testing.assert_array_equal(v, -np.arange(8))
    bus.apply_batch(mmsb.DeltaBatch([p.id], [0], [4], np.int32([42]).tobytes()))
    assert v[0] == 42


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint64", "float16", "float32", "complex128"])
def test_view_typed_shape_and_dtype(bus, dtype):
    p = bus.create_page(shape=(2, 3, 4), dtype=dtype)
    v = p.view()
    assert v.dtype == np.dtype(dtype)
    assert v.shape == (2, 3, 4)
    assert v.nbytes == p.size


def test_raw_view_is_uint8_bytes(bus):
    p = bus.create_page(data=b"\x01\x02\x03")
    v = p.view()
    assert v.dtype == np.uint8 and v.shape == (3,)
    assert v.tolist() == [1, 2, 3]


def test_view_outlives_page_and_bus_objects():
    bus = mmsb.Bus()
    p = bus.create_page(data=np.arange(1000, dtype=np.float64))
    v = p.view()
    del p
    del bus
    gc.collect()
    # fill the heap a bit so freed memory would likely be reused
    junk = [np.full(1000, -1.0) for _ in range(50)]
    np.testing.assert_array_equal(v, np.arange(1000, dtype=np.float64))
    del junk


def test_view_survives_delete_page(bus):
    p = bus.create_page(data=np.arange(256, dtype=np.uint8))
    v = p.view()
    a = np.asarray(p)
    m = memoryview(p)
    before = bus.memory().data_bytes
    bus.delete_page(p)
    del p
    gc.collect()
    # new pages of the same size class must not take over the pinned memory
    others = [bus.create_page(data=np.full(256, 0xEE, np.uint8)) for _ in range(8)]
    assert v.tolist() == list(range(256))
    assert a.tolist() == list(range(256))
    assert m.tolist() == list(range(256))
    for o in others:
        assert not np.shares_memory(o.view(), v)
    # memory is only released once the last view is gone
    assert bus.memory().data_bytes == before + 8 * 256
    del v, a, m
    gc.collect()
    assert bus.memory().data_bytes == 8 * 256


def test_view_survives_close(bus):
    p = bus.create_page(data=b"abcdef")
    v = p.view()
    bus.close()
    assert bytes(v) == b"abcdef"
    with pytest.raises(mmsb.ClosedError):
        p.view()


# ---- buffer protocol ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "dtype,fmt", [("float32", "f"), ("float64", "d"), ("int16", "h"), ("uint32", "I"), ("bool", "?")]
)
def test_buffer_protocol_typed(bus, dtype, fmt):
    p = bus.create_page(shape=(2, 3), dtype=dtype)
    m = memoryview(p)
    assert m.readonly
    assert m.format == fmt
    assert m.shape == (2, 3)
    assert m.itemsize == np.dtype(dtype).itemsize
    assert m.c_contiguous
    a = np.asarray(p)
    assert not a.flags.writeable
    assert a.dtype == np.dtype(dtype) and a.shape == (2, 3)
    assert np.shares_memory(a, p.view())
    with pytest.raises(TypeError):
        m[0, 0] = 1


def test_buffer_protocol_raw(bus):
    p = bus.create_page(data=b"hello")
    m = memoryview(p)
    assert m.readonly and m.format == "B" and m.shape == (5,)
    assert m.tobytes() == b"hello"
    assert bytes(p) == b"hello"
    with pytest.raises(TypeError):
        m[0] = 1
    with pytest.raises((BufferError, TypeError)):
        # a writable export is refused
        (ctypes.c_char * 5).from_buffer(p)


def test_asarray_is_live(bus):
    p = bus.create_page(shape=(4,), dtype="float32")
    a = np.asarray(p)
    p.write(0, np.float32(1.5).tobytes())
    assert a[0] == 1.5


def test_asarray_with_dtype_or_copy(bus):
    """__array__(dtype, copy): the live read-only view when neither asks for more; otherwise an
    independent writable array; a conversion refused with copy=False changes nothing."""
    p = bus.create_page(data=np.arange(3, dtype=np.float32))
    same = np.asarray(p, dtype=np.float32)
    assert not same.flags.writeable and np.shares_memory(same, p.view())
    for converted in (np.asarray(p, dtype=np.float64), np.array(p), np.array(p, copy=True)):
        assert converted.flags.writeable and not np.shares_memory(converted, p.view())
        converted[0] = 7
    assert np.asarray(p, dtype=np.float64).dtype == np.float64
    assert np.array_equal(p.view(), [0, 1, 2]) and p.epoch == 1
    # NumPy refuses np.asarray(p, dtype=..., copy=False) itself; the page says why when asked directly.
    with pytest.raises(mmsb.InvalidArgumentError, match="page 1 to .*float64.* needs a copy"):
        p.__array__(np.float64, copy=False)
    assert np.shares_memory(p.__array__(np.float32, copy=False), p.view())
    with pytest.raises(mmsb.InvalidArgumentError, match="dtype 'nope' is no NumPy dtype"):
        p.__array__("nope")


# ---- DLPack ---------------------------------------------------------------------------------------

def test_from_dlpack_read_only_and_shared(bus):
    p = bus.create_page(data=np.arange(12, dtype=np.float32).reshape(3, 4))
    a = np.from_dlpack(p)
    assert a.shape == (3, 4) and a.dtype == np.float32
    assert not a.flags.writeable
    assert np.shares_memory(a, p.view())
    with pytest.raises(ValueError):
        a[0, 0] = 1
    p.write(0, np.float32(99).tobytes())
    assert a[0, 0] == 99  # live


@pytest.mark.parametrize("dtype", ["bool", "int8", "int64", "uint16", "float16", "float64", "complex64"])
def test_from_dlpack_dtypes(bus, dtype):
    data = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    p = bus.create_page(data=data)
    a = np.from_dlpack(p)
    assert a.dtype == np.dtype(dtype) and a.shape == (2, 3)
    np.testing.assert_array_equal(a, data)


def test_from_dlpack_raw_page_is_bytes(bus):
    p = bus.create_page(data=b"xyz")
    a = np.from_dlpack(p)
    assert a.dtype == np.uint8 and a.tolist() == list(b"xyz")


def test_dlpack_capsule_names(bus):
    p = bus.create_page(16)
    legacy = p.__dlpack__()
    assert capsule_is(legacy, b"dltensor")
    assert not capsule_is(legacy, b"dltensor_versioned")
    versioned = p.__dlpack__(max_version=(1, 0))
    assert capsule_is(versioned, b"dltensor_versioned")
    assert not capsule_is(versioned, b"dltensor")
    newer = p.__dlpack__(max_version=(1, 3))
    assert capsule_is(newer, b"dltensor_versioned")
    old = p.__dlpack__(max_version=(0, 8))
    assert capsule_is(old, b"dltensor")


def test_from_dlpack_uses_the_versioned_protocol(bus):
    p = bus.create_page(data=np.arange(4, dtype=np.int16))
    seen = {}

    class Spy:
        def __dlpack__(self, **kwargs):
            seen.update(kwargs)
            cap = p.__dlpack__(**kwargs)
            seen["versioned"] = capsule_is(cap, b"dltensor_versioned")
            return cap

        def __dlpack_device__(self):
            return p.__dlpack_device__()

    a = np.from_dlpack(Spy())
    assert seen["versioned"] and tuple(seen["max_version"]) >= (1, 0)
    assert not a.flags.writeable  # the read-only flag of the versioned tensor is honoured
    assert np.shares_memory(a, p.view())
    np.testing.assert_array_equal(a, np.arange(4))


def test_legacy_dlpack_consumer(bus):
    p = bus.create_page(data=np.arange(5, dtype=np.int32))

    class LegacyOnly:  # a producer that only knows the pre-1.0 protocol
        def __dlpack__(self, stream=None):
            return p.__dlpack__()

        def __dlpack_device__(self):
            return p.__dlpack_device__()

    a = np.from_dlpack(LegacyOnly())
    np.testing.assert_array_equal(a, np.arange(5))
    # An unversioned capsule cannot say read-only: the consumer gets a copy of its own, so that a
    # consumer writing through its tensor cannot change the page without a delta.
    assert not np.shares_memory(a, p.view())
    with pytest.raises(BufferError, match="max_version=\\(1, 0\\)"):
        p.__dlpack__(copy=False)


@pytest.mark.parametrize("kwargs,says", [
    ({"max_version": "1.0"}, "max_version must be a tuple of two ints"),
    ({"max_version": (1.0, 0)}, "max_version must be a tuple of two ints"),
    ({"max_version": ()}, "max_version must be a tuple of two ints"),
    ({"dl_device": "cpu"}, "dl_device must be a tuple of two ints"),
    ({"dl_device": (1,)}, "dl_device must be a tuple of two ints"),
    ({"dl_device": (1.0, 0)}, "dl_device must be a tuple of two ints"),
    ({"max_version": (2**70, 0)}, f"max_version ({2**70}, 0) is out of range"),
    ({"dl_device": (1, 2**64)}, f"dl_device (1, {2**64}) is out of range"),
    ({"copy": "yes"}, "copy must be None, True or False"),
    ({"stream": "x"}, "stream must be None or an int"),
])
def test_malformed_dlpack_arguments_are_invalid_arguments(bus, kwargs, says):
    """A bad argument is a ValueError (mmsb's InvalidArgumentError), not a failed export
    (BufferError) nor pybind's RuntimeError."""
    p = bus.create_page(8)
    with pytest.raises(mmsb.InvalidArgumentError, match=says.replace("(", "\\(").replace(")", "\\)")):
        p.__dlpack__(**kwargs)


def test_cpu_has_only_device_zero(bus):
    p = bus.create_page(8)
    for device in ((1, 1), (1, -1), (1, 7)):
        with pytest.raises(BufferError, match="cannot be exported to device"):
            p.__dlpack__(dl_device=device, copy=True, max_version=(1, 0))


def test_dlpack_device(bus):
    p = bus.create_page(8)
    assert p.__dlpack_device__() == (1, 0)
    assert p.__dlpack__(dl_device=(1, 0)) is not None


def test_dlpack_foreign_device_raises_buffer_error(bus):
    p = bus.create_page(8)
    with pytest.raises(BufferError):
        p.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError):
        p.__dlpack__(stream=1)


def test_dlpack_copy_is_independent_and_writable(bus):
    p = bus.create_page(data=np.arange(4, dtype=np.float64))
    c = np.from_dlpack(p, copy=True)
    assert c.flags.writeable
    assert not np.shares_memory(c, p.view())
    c[0] = 100.0
    assert p.view()[0] == 0.0 and p.epoch == 1
    p.write(8, np.float64(-1).tobytes())
    assert c[1] == 1.0
    # the raw capsule path too
    cap = p.__dlpack__(max_version=(1, 0), copy=True)
    assert capsule_is(cap, b"dltensor_versioned")


def _data_bytes(bus):
    return bus.memory().data_bytes


def test_dropping_unconsumed_capsules_releases_pins():
    bus = mmsb.Bus()
    p = bus.create_page(4096)
    for i in range(10_000):
        cap = p.__dlpack__(max_version=(1, 0)) if i % 2 else p.__dlpack__()
        copied = p.__dlpack__(max_version=(1, 0), copy=True) if i % 100 == 0 else None
        del cap, copied
    keep_legacy = p.__dlpack__()
    keep_versioned = p.__dlpack__(max_version=(1, 0))
    assert _data_bytes(bus) == 4096
    bus.delete_page(p)
    del p
    gc.collect()
    assert _data_bytes(bus) == 4096  # still pinned by the two live capsules
    del keep_legacy
    gc.collect()
    assert _data_bytes(bus) == 4096
    del keep_versioned
    gc.collect()
    assert _data_bytes(bus) == 0
    assert bus.memory().pages == 0


def test_consumed_capsules_release_pins_when_arrays_die():
    bus = mmsb.Bus()
    p = bus.create_page(shape=(128,), dtype="float32")
    class LegacyOnly:
        def __dlpack__(self, stream=None):
            return p.__dlpack__()

        def __dlpack_device__(self):
            return (1, 0)

    arrays = [np.from_dlpack(p) for _ in range(100)]
    arrays += [np.from_dlpack(LegacyOnly()) for _ in range(100)]
    arrays.append(np.from_dlpack(p, copy=True))
    del LegacyOnly
    bus.delete_page(p)
    del p
    gc.collect()
    assert _data_bytes(bus) == 512
    assert all(a.shape == (128,) and not a.any() for a in arrays)
    del arrays
    gc.collect()
    assert _data_bytes(bus) == 0


def test_dlpack_of_deleted_or_closed_page(bus):
    p = bus.create_page(8)
    q = bus.create_page(8)
    bus.delete_page(p)
    with pytest.raises(mmsb.PageNotFoundError):
        p.__dlpack__()
    bus.close()
    with pytest.raises(mmsb.ClosedError):
        q.__dlpack__(max_version=(1, 0))


# ---- snapshot and read ----------------------------------------------------------------------------

def test_snapshot_is_an_independent_copy(bus):
    p = bus.create_page(data=np.arange(6, dtype=np.int64).reshape(2, 3))
    snap, epoch = p.snapshot()
    assert epoch == 1
    assert snap.shape == (2, 3) and snap.dtype == np.int64
    assert not np.shares_memory(snap, p.view())
    p.write(0, np.int64(50).tobytes())
    assert snap[0, 0] == 0 and p.view()[0, 0] == 50
    snap[1, 1] = -7  # the copy is the caller's
    assert p.view()[1, 1] == 4
    snap2, epoch2 = p.snapshot()
    assert epoch2 == 2 and snap2[0, 0] == 50


def test_snapshot_raw(bus):
    p = bus.create_page(data=b"abc")
    snap, epoch = p.snapshot()
    assert snap.dtype == np.uint8 and snap.tobytes() == b"abc" and epoch == 1


def test_read(bus):
    p = bus.create_page(data=bytes(range(100)))
    assert p.read(0, 100) == bytes(range(100))
    assert p.read(10, 5) == bytes(range(10, 15))
    assert p.read(99, 1) == b"\x63"
    assert p.read(100, 0) == b""
    assert p.read(0, 0) == b""
    out = p.read(np.int64(3), np.uint32(2))
    assert out == b"\x03\x04" and isinstance(out, bytes)
