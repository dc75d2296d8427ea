"""pytest-benchmark suites for the per-call costs of the Python API.

`make test` runs them with --benchmark-disable (each body once, untimed); `make bench` with
--benchmark-only. Each benchmark also checks its result, so the smoke run proves the benchmarked
path is correct, not only that it runs. They are collected only when benchmarks/ is named on the
command line: pyproject's testpaths point a plain `pytest` at tests/python. The bench_ops fixture
is in bench_fixtures.py, shared with test_bench_graph.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from bench_fixtures import bench_ops  # noqa: F401  (a fixture: pytest finds it by name)
from mmsb.bench import workloads as wl

# Operations per round for calls that take well under a microsecond to a few microseconds: enough
# to drown the timer's resolution, few enough that the untimed smoke run stays instant.
SMALL_OPS = 1000
EDIT_OPS = 100
CREATE_ROUNDS = 20
BATCH_ROWS = 65_536




@pytest.mark.parametrize("nbytes", [64, 8])
def test_page_write(bench_ops, nbytes):
    bus = mmsb.Bus()
    p = bus.create_page(wl.PAGE_SIZE)
    rng = np.random.default_rng(wl.SEED)
    offsets = rng.integers(0, wl.PAGE_SIZE // nbytes, size=SMALL_OPS) * nbytes
    work = [(int(o), rng.bytes(nbytes)) for o in offsets]
    write = p.write

    def writes():
        for off, data in work:
            write(off, data)

    bench_ops(writes, SMALL_OPS)
    off, data = work[-1]
    assert p.read(off, nbytes) == data
    assert p.epoch % SMALL_OPS == 0 and p.epoch > 0  # every call committed exactly one delta


def test_page_edit_typed(bench_ops):
    bus = mmsb.Bus()
    p = bus.create_page(shape=(1024,), dtype="float32")
    starts = np.random.default_rng(wl.SEED).integers(0, 1024 - 4, size=EDIT_OPS).tolist()

    def edits():
        for i in starts:
            with p.edit() as a:
                a[i:i + 4] += 1.0  # a few elements: the diff finds one small run

    bench_ops(edits, EDIT_OPS)
    rounds = p.epoch // EDIT_OPS
    assert p.epoch == rounds * EDIT_OPS and rounds > 0
    expected = np.zeros(1024, dtype=np.float32)
    for i in starts:
        expected[i:i + 4] += 1.0
    np.testing.assert_array_equal(p.view(), expected * rounds)


@pytest.mark.parametrize(
    ("nbytes", "changes", "ops"),
    [(4096, 8, SMALL_OPS), (1 << 20, 256, 1)],
    ids=["4KiB", "1MiB"],
)
def test_delta_diff(bench_ops, nbytes, changes, ops):
    old, new = wl.sparse_change(nbytes, changes, np.random.default_rng(wl.SEED))

    def diffs():
        for _ in range(ops):
            d = mmsb.Delta.diff(1, old, new)
        return d

    d = bench_ops(diffs, ops)
    # Applying the runs to `old` must give `new`, and no changed byte may be left out.
    rebuilt = old.copy()
    payload = np.frombuffer(d.payload, dtype=np.uint8)
    pos = 0
    for off, length in d.run_list:
        rebuilt[off:off + length] = payload[pos:pos + length]
        pos += length
    np.testing.assert_array_equal(rebuilt, new)
    assert 0 < len(d) <= changes


@pytest.mark.parametrize(
    "spec",
    [{"size": wl.PAGE_SIZE}, {"shape": (1024,), "dtype": "float32"}],
    ids=["raw4096", "float32x1024"],
)
def test_create_page(bench_ops, spec):
    # A fresh bus per round (built untimed in setup) keeps memory bounded however many rounds run.
    def create(bus):
        for _ in range(SMALL_OPS):
            p = bus.create_page(**spec)
        return bus, p

    bus, p = bench_ops(create, SMALL_OPS, setup=lambda: ((mmsb.Bus(),), {}), rounds=CREATE_ROUNDS)
    assert len(bus) == SMALL_OPS
    assert p.size == wl.PAGE_SIZE and p.epoch == 0
    assert not p.view().any()


@pytest.mark.parametrize("rows", [1, 64, 4096])
def test_delta_batch_build(bench_ops, rows):
    # Building a batch from the uint64 columns a caller keeps: per batch, before any row applies;
    # a third of a 64-row flush commit when each column went through numpy.asarray.
    ids = np.arange(1, rows + 1, dtype=np.uint64)
    offsets = np.zeros(rows, np.uint64)
    lengths = np.full(rows, wl.DELTA_BYTES, np.uint64)
    payload = np.zeros(rows * wl.DELTA_BYTES, np.uint8)

    def build():
        for _ in range(SMALL_OPS):
            batch = mmsb.DeltaBatch(ids, offsets, lengths, payload)
        return batch

    batch = bench_ops(build, SMALL_OPS)
    assert len(batch) == rows and batch.nbytes == payload.nbytes
    for column, given in ((batch.page_ids, ids), (batch.offsets, offsets), (batch.lengths, lengths)):
        assert np.shares_memory(column, given), "a uint64 column must be taken without a copy"


@pytest.fixture(scope="module")
def batch_workload():
    (rows,) = wl.make_batches(BATCH_ROWS)
    return rows, wl.expected_state([rows]), wl.epoch_counts([rows])


@pytest.mark.parametrize("threads", [1, 2])
def test_apply_batch(bench_ops, batch_workload, threads):
    rows, expected, counts = batch_workload
    bus = mmsb.Bus(threads=threads)
    pages = wl.create_pages(bus)
    batch = mmsb.DeltaBatch(*rows.mmsb_columns(pages[0].id))

    bench_ops(lambda: bus.apply_batch(batch), len(rows))
    # Re-applying the same batch leaves the same bytes; each application adds `counts` to epochs.
    np.testing.assert_array_equal(wl.page_bytes(pages), expected)
    epochs = wl.page_epochs(pages)
    applications = int(epochs.sum()) // len(rows)
    assert applications > 0
    np.testing.assert_array_equal(epochs, counts * applications)
    assert bus.lsn == len(pages) + applications * len(rows)
