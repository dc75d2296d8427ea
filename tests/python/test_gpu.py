"""Device pages on a real GPU (`pytest -m gpu`; scripts/gpu-check.sh runs them on a GPU machine).

The core property: the same random batches (overlapping rows included: the last row wins)
applied to CPU pages and to device pages leave the same bytes, epochs and lsn, and both equal a
NumPy reference applied row by row. Then the host mirror, and DLPack exports consumed in place by
CuPy and PyTorch on a non-default stream. Skipped without a CUDA device.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import mmsb
from device_waves import compare_waves

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not mmsb.cuda.is_available(), reason="no CUDA device")]

KDLCUDA = 2
# Page sizes (bytes): not all multiples of 16, so runs meet every alignment the kernel handles.
SIZES = (64, 1000, 4096, 65536, 100_003, 1 << 20)


def make_pages(bus, location):
    return [bus.create_page(size, dtype="uint8", location=location) for size in SIZES]


def random_batch(rng, pages, rows):
    """Rows over random pages: short unaligned runs, 64-byte aligned runs, long runs, and rows
    that rewrite earlier rows' bytes (same page and offset)."""
    idx = rng.integers(0, len(pages), rows)
    sizes = np.array([p.size for p in pages])[idx]
    kind = rng.integers(0, 10, rows)
    lengths = np.where(kind < 6, rng.integers(1, 65, rows),
                       np.where(kind < 9, 64, rng.integers(1, 40_000, rows)))
    lengths = np.minimum(lengths, sizes)
    offsets = (rng.random(rows) * (sizes - lengths + 1)).astype(np.int64)
    aligned = kind == 6
    offsets[aligned] = offsets[aligned] // 64 * 64
    repeat = rng.random(rows) < 0.2  # copy an earlier row's target: guaranteed overlaps
    for i in np.nonzero(repeat)[0]:
        if i > 0:
            j = rng.integers(0, i)
            idx[i], offsets[i], lengths[i] = idx[j], offsets[j], lengths[j]
    payload = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    ids = [pages[i].id for i in idx]
    return ids, idx, offsets, lengths, payload


def apply_reference(model, idx, offsets, lengths, payload):
    pos = 0
    for i, off, n in zip(idx.tolist(), offsets.tolist(), lengths.tolist()):
        model[i][off:off + n] = payload[pos:pos + n]
        pos += n


@pytest.mark.parametrize("location", ["cuda:0", "unified"])
def test_gpu_apply_equals_cpu_apply(rng, location):
    cpu_bus, dev_bus = mmsb.Bus(), mmsb.Bus()
    try:
        cpu, dev = make_pages(cpu_bus, "cpu"), make_pages(dev_bus, location)
        assert [p.id for p in cpu] == [p.id for p in dev]
        assert all(p.location == location for p in dev)
        model = [np.zeros(s, dtype=np.uint8) for s in SIZES]
        for step in range(40):
            ids, idx, offsets, lengths, payload = random_batch(rng, cpu, int(rng.integers(1, 3000)))
            batch = mmsb.DeltaBatch(ids, offsets, lengths, payload)
            assert cpu_bus.apply_batch(batch) == dev_bus.apply_batch(batch)
            apply_reference(model, idx, offsets, lengths, payload)
            if step % 5 == 4:  # single writes between batches too
                k = int(rng.integers(0, len(SIZES)))
                off = int(rng.integers(0, SIZES[k]))
                data = rng.integers(0, 256, int(rng.integers(1, SIZES[k] - off + 1)), dtype=np.uint8)
                cpu[k].write(off, data)
                dev[k].write(off, data)
                model[k][off:off + data.size] = data
            for c, d, m in zip(cpu, dev, model):
                assert d.epoch == c.epoch
                assert d.read(0, d.size) == c.read(0, c.size) == m.tobytes(), f"page {d.id}, step {step}"
                assert np.array_equal(np.asarray(d), m)
        assert dev_bus.lsn == cpu_bus.lsn
    finally:
        cpu_bus.close()
        dev_bus.close()


def test_large_batch_of_64_byte_runs_equals_cpu(rng):
    """A million 64-byte rows into 64 MiB of device pages: the staging path at scale."""
    cpu_bus, dev_bus = mmsb.Bus(), mmsb.Bus()
    try:
        cpu = [cpu_bus.create_page(1 << 16) for _ in range(1024)]
        dev = [dev_bus.create_page(1 << 16, location="cuda:0") for _ in range(1024)]
        rows = 1 << 20
        idx = rng.integers(0, 1024, rows)
        offsets = rng.integers(0, 1024, rows) * 64
        payload = rng.integers(0, 256, rows * 64, dtype=np.uint8)
        ids = np.array([p.id for p in cpu], dtype=np.uint64)[idx]
        batch = mmsb.DeltaBatch(ids, offsets, np.full(rows, 64), payload)
        cpu_bus.apply_batch(batch)
        dev_bus.apply_batch(batch)
        for c, d in zip(cpu, dev):
            assert d.epoch == c.epoch
            assert np.array_equal(np.asarray(d), np.asarray(c)), f"page {d.id}"
    finally:
        cpu_bus.close()
        dev_bus.close()


def test_device_page_describes_itself(bus):
    p = bus.create_page(4096, dtype="float32", shape=(1024,), location="cuda:0")
    assert p.location == "cuda:0"
    assert p.__dlpack_device__() == (KDLCUDA, 0)
    a = np.asarray(p)
    assert a.dtype == np.float32 and a.shape == (1024,) and not a.any()
    # A copy is made only for the host: on the device the page itself is exported.
    with pytest.raises(BufferError, match="only available to the host"):
        p.__dlpack__(dl_device=(KDLCUDA, 0), copy=True)


def test_host_mirror_follows_commits(bus):
    p = bus.create_page(4096, dtype="float32", shape=(1024,), location="cuda:0")
    values = np.arange(1024, dtype=np.float32)
    p.write(0, values)
    assert np.array_equal(np.asarray(p), values)
    p.write(8, np.float32([-1, -2]))
    values[2:4] = [-1, -2]
    assert np.array_equal(np.asarray(p), values)
    bus.apply_batch(mmsb.DeltaBatch([p.id, p.id], [0, 0], [4, 4], np.float32([5, 6]).view(np.uint8)))
    values[0] = 6  # the later row wins
    assert np.array_equal(np.asarray(p), values)
    assert p.epoch == 4


def test_host_mirror_reads_back_only_the_runs_written_since_its_last_refresh(bus, rng):
    p = bus.create_page(1 << 24, location="cuda:0")
    model = np.zeros(1 << 24, dtype=np.uint8)
    assert np.array_equal(np.asarray(p), model)
    for rows in (1, 100, 3000):
        slots = rng.choice((1 << 24) // 64, size=rows, replace=False)
        payload = rng.integers(0, 256, size=(rows, 64), dtype=np.uint8)
        model.reshape(-1, 64)[slots] = payload
        bus.apply_batch(mmsb.DeltaBatch(np.full(rows, p.id, dtype=np.uint64), slots * 64, np.full(rows, 64), payload))
        before = bus._device_traffic()["mirror_bytes_synced"]
        assert np.array_equal(np.asarray(p), model)
        assert bus._device_traffic()["mirror_bytes_synced"] - before == rows * 64


def test_cupy_consumes_a_device_page_in_place_on_a_non_default_stream(bus):
    cupy = pytest.importorskip("cupy")
    p = bus.create_page(4096, dtype="float32", shape=(1024,), location="cuda:0")
    values = np.arange(1024, dtype=np.float32)
    p.write(0, values)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        a = cupy.from_dlpack(p)
        assert a.shape == (1024,) and a.dtype == cupy.float32
        assert np.array_equal(cupy.asnumpy(a), values)
        b = cupy.from_dlpack(p)
        assert a.data.ptr == b.data.ptr, "two exports, one device buffer: no copy"
        p.write(0, np.float32([42]))  # a later commit is visible through the same export
        assert float(a[0]) == 42.0
        assert float((a * 2).sum()) == float(2 * (values[1:].sum() + 42))
    stream.synchronize()


def test_torch_consumes_a_device_page_in_place_on_a_non_default_stream(bus):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch has no CUDA")
    p = bus.create_page(4096, dtype="float32", shape=(1024,), location="cuda:0")
    values = np.arange(1024, dtype=np.float32)
    p.write(0, values)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        t = torch.from_dlpack(p)
        assert t.device == torch.device("cuda", 0) and t.dtype == torch.float32
        assert np.array_equal(t.cpu().numpy(), values)
        assert torch.from_dlpack(p).data_ptr() == t.data_ptr(), "no copy"
        p.write(4, np.float32([7]))
        assert t[1].item() == 7.0
    stream.synchronize()


def test_unknown_device_is_unavailable(bus):
    with pytest.raises(mmsb.DeviceUnavailableError):
        bus.create_page(64, location=f"cuda:{mmsb.cuda.device_count() + 7}")


@pytest.mark.parametrize("route", [["cuda:0", "cpu"], ["unified", "cuda:0", "cpu"]])
def test_a_page_moves_between_host_and_device_with_its_bytes(bus, rng, route):
    data = rng.standard_normal(1 << 16)
    p = bus.create_page(data=data)
    for to in route:
        lsn, epoch = bus.lsn, p.epoch
        assert p.to(to).location == to and bus.lsn == lsn + 1 and p.epoch == epoch
        assert np.array_equal(np.asarray(p), data), f"after the move to {to}"
        p.write(0, np.float64(len(to)).tobytes())  # commits land in the new memory
        data[0] = len(to)
        assert np.array_equal(np.asarray(p), data)
    assert bus.verify().ok


def test_a_live_cupy_export_refuses_the_move(bus):
    cupy = pytest.importorskip("cupy")
    p = bus.create_page(data=np.arange(8.0), location="cuda:0")
    a = cupy.from_dlpack(p)
    with pytest.raises(mmsb.InvalidArgumentError, match="view"):
        p.to("cpu")
    del a
    gc.collect()
    assert p.to("cpu").location == "cpu"


@pytest.mark.nccl
@pytest.mark.skipif(not mmsb.cuda.nccl_available(), reason="needs NCCL")
def test_ticks_drive_a_one_rank_nccl_replicator(bus, rng):
    pages = [bus.create_page(data=rng.standard_normal(512), location="cuda:0") for _ in range(3)]
    rep = mmsb.cuda.Replicator(1, 0, mmsb.cuda.Replicator.unique_id(), 0, [p.size for p in pages])
    bus.replicate(rep, pages)
    for t in range(30):
        page = pages[t % 3]
        bus.submit(mmsb.Delta.at(page, 8 * int(rng.integers(512)), rng.standard_normal(1).tobytes()))
        report = bus.tick()
        assert report["replication_error"] is None
        assert all(rep.read(i) == p.read(0, p.size) for i, p in enumerate(pages)), f"tick {t}"
    bus.replicate(None)


@pytest.mark.parametrize("dtype,n", [("float64", 5), ("float32", 3000), ("int32", 70_000),
                                     ("int64", 2500), ("bool", 20000), ("float64", 1 << 17)])
def test_device_waves_compute_on_the_gpu_exactly_as_the_host(rng, dtype, n):
    """Copies and semiring reduces (every semiring the dtype supports, weighted or not) computed
    by the device kernels, diffed on the device: the same bytes, epochs and derived deltas as the
    host's wave, with no page read back through a mirror."""
    traffic = compare_waves(rng, dtype, n, ["cuda:0"])
    assert traffic["device_recomputes"] > 0
    assert traffic["mirror_syncs"] == 0


def test_device_waves_over_mixed_locations_equal_the_host(rng):
    compare_waves(rng, "float32", 10_000, ["cuda:0", "cpu", "unified", "cuda:0"])



def test_an_edit_of_a_device_page_runs_on_the_gpu_with_cupy(bus):
    """`with p.edit() as a` on a cuda:0 page yields a CuPy array over a device copy; the exit diffs
    it against the page on the device (after CuPy's stream has finished) and commits one delta."""
    cupy = pytest.importorskip("cupy")
    n = 1 << 20
    p = bus.create_page(shape=(n,), dtype="float32", location="cuda:0")
    want = np.arange(n, dtype=np.float32)
    p.write(0, want)
    syncs = bus._device_traffic()["mirror_syncs"]
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        with p.edit() as a:
            assert isinstance(a, cupy.ndarray) and a.shape == (n,)
            assert np.array_equal(cupy.asnumpy(a), want)
            a[1::4096] *= -1
    want[1::4096] *= -1
    assert bus._device_traffic()["mirror_syncs"] == syncs  # diffed on the device
    assert len(bus.history(p)[-1].runs) == n // 4096
    assert np.array_equal(np.asarray(p), want)


def test_an_edit_of_a_device_page_is_writable_through_torch(bus):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch has no CUDA")
    p = bus.create_page(shape=(1000,), dtype="int64", location="cuda:0")
    with p.edit() as s:
        t = torch.from_dlpack(s)
        t[5] = 42
    assert np.asarray(p)[5] == 42 and p.epoch == 1


def test_a_unified_page_lent_to_cupy_on_a_stream_reads_back_on_the_host(bus):
    """Exported to CuPy on a non-default stream, a unified page is prefetched to the GPU ahead of
    CuPy's kernels and back before the bus next touches it on the host; the bytes stay exact."""
    cupy = pytest.importorskip("cupy")
    n = 1 << 20
    p = bus.create_page(shape=(n,), dtype="float64", location="unified")
    values = np.arange(n, dtype=np.float64)
    p.write(0, values)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        a = cupy.from_dlpack(p)
        assert float(a.sum()) == float(values.sum())
    stream.synchronize()
    del a
    p.write(8, np.float64([-1.0]))
    values[1] = -1.0
    assert np.array_equal(np.asarray(p), values)
