"""Randomized differential test: the engine against the pure-Python reference model.

10,000+ seeded random operations mixing raw and typed pages, every delta form (write, Delta.at,
Delta.runs with overlaps, masked dense/sparse/packed/element, update, edit, merges, small and
parallel-sized batches), page creation and deletion, and rejected operations. Cheap checks after
every operation (lsn, touched pages' epochs and bytes); a full comparison every 500 operations and
at the end. Runs on Bus(threads=1) and Bus(threads=2).
"""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from reference_model import RefBus, RefError, canonical_runs, mask_runs

N_OPS = 10_000
FULL_CHECK_EVERY = 500
MAX_PAGES = 48
DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint16", "uint64", "float16", "float32",
          "float64", "complex64"]


class Driver:
    def __init__(self, threads, rng):
        self.bus = mmsb.Bus(threads=threads)
        self.ref = RefBus()
        self.rng = rng
        self.handles = {}  # id -> Page
        self.deleted = []  # ids of deleted pages (and their stale handles)
        self.used_names = []
        self.counts = {}

    # ---- helpers ------------------------------------------------------------------------------
    def rand_bytes(self, n):
        return self.rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    def pick(self):
        ids = sorted(self.handles)
        return ids[int(self.rng.integers(len(ids)))]

    def span(self, size, max_len=64):
        """A random in-bounds (offset, length), length possibly 0."""
        length = int(self.rng.integers(0, min(size, max_len) + 1))
        offset = int(self.rng.integers(0, size - length + 1))
        return offset, length

    def check_page(self, pid):
        p = self.handles[pid]
        assert p.epoch == self.ref.epochs[pid], (pid, p.epoch, self.ref.epochs[pid])
        assert p.view().tobytes() == bytes(self.ref.pages[pid]), pid

    def check_cheap(self, touched):
        assert self.bus.lsn == self.ref.lsn, (self.bus.lsn, self.ref.lsn)
        for pid in touched:
            self.check_page(pid)

    def check_full(self):
        bus, ref = self.bus, self.ref
        assert bus.lsn == ref.lsn
        assert len(bus) == len(ref.pages)
        pages = bus.pages()
        assert [p.id for p in pages] == sorted(ref.pages)
        for p in pages:
            data, epoch = p.snapshot()
            assert epoch == ref.epochs[p.id], p.id
            assert data.tobytes() == bytes(ref.pages[p.id]), p.id
            assert p.size == len(ref.pages[p.id])
            assert p.metadata == ref.metadata[p.id], p.id
            want_dtype = ref.dtypes[p.id]
            if want_dtype is None:
                assert p.dtype is None and p.shape is None
            else:
                assert p.dtype == want_dtype and p.shape == ref.shapes[p.id]
        for name, pid in ref.names.items():
            assert bus.page(name).id == pid
        for pid in self.deleted[-10:]:
            assert pid not in bus
        m = bus.memory()
        assert m.pages == len(ref.pages)

    # ---- operations: each returns the ids whose epoch/bytes should be checked ------------------
    def op_create_raw(self):
        size = int(self.rng.choice([1, 7, 64, 100, 255, 512, 1000, 2048, 4096]))
        name = self.new_name()
        p = self.bus.create_page(size, name=name)
        pid = self.ref.create_page(size, name=name)
        assert p.id == pid
        self.handles[pid] = p
        return [pid]

    def op_create_typed(self):
        dtype = DTYPES[int(self.rng.integers(len(DTYPES)))]
        shape = tuple(int(x) for x in self.rng.integers(1, 9, int(self.rng.integers(1, 4))))
        name = self.new_name()
        if self.rng.random() < 0.5:
            data = self.rng.integers(0, 256, int(np.prod(shape)) * np.dtype(dtype).itemsize,
                                     dtype=np.uint8).view(dtype).reshape(shape)
            p = self.bus.create_page(data=data, name=name)
            pid = self.ref.create_page(data=data, name=name)
        else:
            p = self.bus.create_page(shape=shape, dtype=dtype, name=name)
            pid = self.ref.create_page(shape=shape, dtype=dtype, name=name)
        assert p.id == pid
        self.handles[pid] = p
        return [pid]

    def new_name(self):
        """None half of the time; sometimes the freed name of a deleted page; else a new one."""
        if self.rng.random() < 0.5:
            return None
        free = [n for n in self.used_names if n not in self.ref.names]
        if free and self.rng.random() < 0.3:
            return free[int(self.rng.integers(len(free)))]
        name = f"n{len(self.used_names)}"
        self.used_names.append(name)
        return name

    def op_delete(self):
        pid = self.pick()
        key = [pid, self.handles[pid]][int(self.rng.integers(2))]
        self.bus.delete_page(key)
        self.ref.delete(pid)
        del self.handles[pid]
        self.deleted.append(pid)
        return []

    def op_write(self):
        pid = self.pick()
        size = len(self.ref.pages[pid])
        off, ln = self.span(size)
        data = self.rand_bytes(ln)
        if self.rng.random() < 0.2:
            data = bytes(self.ref.pages[pid][off:off + ln])  # identical bytes still commit
        expect = self.ref.epochs[pid] if self.rng.random() < 0.3 else None
        epoch = self.handles[pid].write(off, data, expect_epoch=expect)
        assert epoch == self.ref.write(pid, off, data)
        return [pid]

    def op_delta_at(self):
        pid = self.pick()
        off, ln = self.span(len(self.ref.pages[pid]))
        data = self.rand_bytes(ln)
        d = mmsb.Delta.at(self.handles[pid] if self.rng.random() < 0.5 else pid, off, data)
        lsn = self.bus.apply(d)
        epoch = self.ref.write(pid, off, data)
        assert d.lsn == lsn == self.ref.lsn and d.epoch == epoch
        return [pid]

    def op_delta_runs(self):
        pid = self.pick()
        size = len(self.ref.pages[pid])
        runs = [self.span(size, 40) for _ in range(int(self.rng.integers(0, 8)))]
        runs = [(off, self.rand_bytes(ln)) for off, ln in runs]
        d = mmsb.Delta.runs(self.handles[pid], [r[0] for r in runs], [r[1] for r in runs])
        self.bus.apply(d)
        epoch = self.ref.apply(pid, runs)
        assert d.epoch == epoch
        return [pid]

    def op_merge(self):
        pid = self.pick()
        size = len(self.ref.pages[pid])
        pieces = [self.span(size, 32) for _ in range(int(self.rng.integers(2, 6)))]
        pieces = [(off, self.rand_bytes(ln)) for off, ln in pieces]
        d = mmsb.Delta.at(pid, *pieces[0])
        for off, data in pieces[1:]:
            d = mmsb.Delta.merge(d, mmsb.Delta.at(pid, off, data))
        self.bus.apply(d)
        self.ref.apply(pid, pieces)
        return [pid]

    def op_masked(self):
        pid = self.pick()
        p = self.handles[pid]
        size = len(self.ref.pages[pid])
        dtype = self.ref.dtypes[pid]
        form = int(self.rng.integers(4))
        if form == 3 and dtype is not None and dtype.itemsize > 1:
            # element mask over a typed page, dense or sparse payload
            shape = self.ref.shapes[pid]
            emask = self.rng.random(shape) < 0.3
            item = dtype.itemsize
            if self.rng.random() < 0.5:
                payload = self.rand_bytes(size)
            else:
                payload = self.rand_bytes(int(emask.sum()) * item)
            d = mmsb.Delta.masked(p, emask, np.frombuffer(payload, np.uint8))
            bmask = np.repeat(emask.reshape(-1), item)
        else:
            bmask = self.rng.random(size) < float(self.rng.choice([0.05, 0.3, 0.9]))
            dense = self.rng.random() < 0.5
            payload = self.rand_bytes(size if dense else int(bmask.sum()))
            if form == 2:
                bits = np.packbits(bmask, bitorder="little")
                d = mmsb.Delta.masked(p, bits, payload, packed=True)
            else:
                mask = bmask if form == 0 else bmask.astype(np.uint8) * np.uint8(self.rng.integers(1, 256))
                d = mmsb.Delta.masked(p, mask, payload)
        self.bus.apply(d)
        self.ref.masked(pid, bmask, payload)
        return [pid]

    def _mutated_copy(self, arr):
        """arr with a few random bytes changed (maybe none), same dtype and shape."""
        flat = arr.view(np.uint8).reshape(-1)
        k = int(self.rng.choice([0, 1, 3, 20]))
        if k and flat.size:
            idx = self.rng.integers(0, flat.size, k)
            flat[idx] = self.rng.integers(0, 256, k, dtype=np.uint8)
        return arr

    def op_update(self):
        pid = self.pick()
        p = self.handles[pid]
        new = self._mutated_copy(p.view().copy())
        expect = self.ref.epochs[pid] if self.rng.random() < 0.3 else None
        changed = p.update(new, expect_epoch=expect)
        assert changed == self.ref.update(pid, new.tobytes())
        return [pid]

    def op_edit(self):
        pid = self.pick()
        p = self.handles[pid]
        with p.edit() as a:
            assert a.tobytes() == bytes(self.ref.pages[pid])
            self._mutated_copy(a)
            want = a.tobytes()
        self.ref.update(pid, want)
        return [pid]

    def op_batch(self, rows=None):
        if rows is None:
            rows = int(self.rng.integers(1, 60))
        ids = sorted(self.handles)
        pick = self.rng.integers(0, len(ids), rows)
        page_ids, offsets, lengths, chunks, ref_rows = [], [], [], [], []
        for i in pick:
            pid = ids[int(i)]
            off, ln = self.span(len(self.ref.pages[pid]), 24)
            data = self.rand_bytes(ln)
            page_ids.append(pid)
            offsets.append(off)
            lengths.append(ln)
            chunks.append(data)
            ref_rows.append((pid, off, data))
        payload = b"".join(chunks)
        cols = [page_ids, offsets, lengths]
        if self.rng.random() < 0.5:
            cols = [np.asarray(c, dtype=self.rng.choice([np.int64, np.uint64])) for c in cols]
        last = self.bus.apply_batch(mmsb.DeltaBatch(*cols, payload))
        assert last == self.ref.batch(ref_rows)
        return sorted(set(page_ids))

    def op_big_batch(self):
        return self.op_batch(int(self.rng.integers(17_000, 25_000)))

    def op_metadata(self):
        """Sets a key (str or bytes value), overwrites one, or removes one (absent or not)."""
        pid = self.pick()
        key = f"k{int(self.rng.integers(3))}"
        value = [None, "v" + str(int(self.rng.integers(100))), self.rand_bytes(3)][int(self.rng.integers(3))]
        self.handles[pid].set_metadata(key, value)
        self.ref.set_metadata(pid, key, value)
        assert self.handles[pid].metadata == self.ref.metadata[pid]
        return [pid]

    def op_invalid(self):
        """A rejected operation: nothing may change."""
        pid = self.pick()
        size = len(self.ref.pages[pid])
        kind = int(self.rng.integers(5))
        if kind == 0:
            with pytest.raises(mmsb.InvalidDeltaError):
                self.handles[pid].write(size - 1 if size > 0 else 0, b"xy")
        elif kind == 1:
            with pytest.raises(mmsb.EpochConflictError):
                self.handles[pid].write(0, b"", expect_epoch=self.ref.epochs[pid] + 1)
        elif kind == 2:
            bad = self.deleted[-1] if self.deleted else 10**9
            with pytest.raises(mmsb.PageNotFoundError):
                self.bus.apply(mmsb.Delta.at(bad, 0, b"x"))
        elif kind == 3:
            ids = [pid] * 10
            offs = [0] * 10
            lens = [1] * 10
            offs[int(self.rng.integers(10))] = size  # one bad row somewhere in the batch
            with pytest.raises(mmsb.InvalidDeltaError):
                self.bus.apply_batch(mmsb.DeltaBatch(ids, offs, lens, self.rand_bytes(10)))
        else:
            with pytest.raises(mmsb.InvalidArgumentError):
                self.handles[pid].update(bytes(size + 1))
        return [pid]

    OPS = [
        ("create_raw", 3), ("create_typed", 3), ("delete", 3), ("write", 14), ("delta_at", 8),
        ("delta_runs", 8), ("merge", 5), ("masked", 10), ("update", 8), ("edit", 8),
        ("batch", 8), ("metadata", 3), ("invalid", 4),
    ]

    def run(self, n_ops):
        names = [n for n, _ in self.OPS]
        weights = np.array([w for _, w in self.OPS], dtype=float)
        weights /= weights.sum()
        choices = self.rng.choice(len(names), n_ops, p=weights)
        for step, c in enumerate(choices, 1):
            name = names[int(c)]
            if not self.handles or (name == "create_raw" and len(self.handles) < 4):
                name = "create_raw" if self.rng.random() < 0.5 else "create_typed"
            if name.startswith("create") and len(self.handles) >= MAX_PAGES:
                name = "delete"
            if name == "delete" and len(self.handles) <= 2:
                name = "write"
            if step % 2000 == 1000:
                name = "big_batch"
            touched = getattr(self, "op_" + name)()
            self.counts[name] = self.counts.get(name, 0) + 1
            self.check_cheap(touched)
            if step % FULL_CHECK_EVERY == 0:
                self.check_full()
        self.check_full()


def test_reference_model_itself():
    # hand-checked examples: the oracle must be right before it judges the engine
    assert canonical_runs([(5, b"XYZ"), (0, b"abcd"), (2, b"Q")]) == ([(0, 4), (5, 3)], b"abQdXYZ")
    assert canonical_runs([(0, b"ab"), (2, b"cd"), (9, b"")]) == ([(0, 4)], b"abcd")
    assert mask_runs([1, 0, 1], b"xyz") == [(0, b"x"), (2, b"z")]
    assert mask_runs([1, 0, 1], b"xz") == [(0, b"x"), (2, b"z")]
    ref = RefBus()
    a = ref.create_page(4)
    b = ref.create_page(data=np.arange(2, dtype=np.int16), name="b")
    assert (a, b, ref.lsn, ref.epochs[b]) == (1, 2, 3, 1)
    assert ref.write(a, 1, b"zz") == 1 and ref.pages[a] == bytearray(b"\x00zz\x00")
    assert ref.update(a, b"\x00zz\x00") is False and ref.lsn == 4
    assert ref.update(a, b"\x01zz\x00") is True and ref.epochs[a] == 2 and ref.lsn == 5
    with pytest.raises(RefError):
        ref.batch([(a, 0, b"ok"), (a, 3, b"no")])
    assert ref.lsn == 5 and ref.pages[a] == bytearray(b"\x01zz\x00")
    assert ref.batch([(a, 0, b"k"), (b, 0, b"\x07")]) == 7
    ref.delete(b)
    assert ref.lsn == 8 and "b" not in ref.names
    assert ref.create_page(1, name="b") == 3


@pytest.mark.parametrize("threads", [1, 2])
def test_differential_against_reference(threads, rng):
    drv = Driver(threads, rng)
    drv.run(N_OPS)
    assert sum(drv.counts.values()) == N_OPS
    # every operation kind really ran
    for name, _ in Driver.OPS:
        assert drv.counts.get(name, 0) > 0, name
    assert drv.counts["big_batch"] >= 4
    assert drv.bus.lsn > N_OPS
    drv.bus.close()
