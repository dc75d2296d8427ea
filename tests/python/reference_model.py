"""Pure-Python reference model of an in-memory mmsb.Bus: the oracle of the differential tests.

Deliberately naive: a dict of bytearrays, byte-by-byte loops, no cleverness. If this file and the
engine disagree, read this file first: it should be obviously right (DESIGN §1).

Rules modelled:
- page ids are assigned from 1 upward and never reused; names are unique among live pages;
- lsn +1 per committed record: page creation, page deletion, metadata change, each delta
  (a batch of N rows takes N);
- epoch 0 at creation, +1 per committed delta on the page; initial `data=` content is delta 1;
- explicit deltas (write, apply, batch rows) always commit, even with identical bytes;
- derived deltas (update / edit) commit only when the content changed;
- metadata (str -> str/bytes) given at creation is part of the creation record (no extra lsn);
  set_metadata takes one lsn, except removing a key that is not there (no record, no lsn);
- overlapping runs resolve per byte to the last run given (last writer wins);
- a rejected call changes nothing.
"""

from __future__ import annotations

import numpy as np


class RefError(Exception):
    """The reference model refused an operation (the engine must refuse it too)."""


def paint(size_limit, runs):
    """Per-byte last-writer-wins of runs [(offset, bytes)] -> dict offset -> byte value."""
    painted = {}
    for offset, data in runs:
        for i, b in enumerate(bytes(data)):
            if size_limit is not None and offset + i >= size_limit:
                raise RefError(f"byte {offset + i} outside page of {size_limit} bytes")
            painted[offset + i] = b
    return painted


def canonical_runs(runs):
    """Canonical form of runs [(offset, bytes)]: sorted, non-overlapping, touching runs merged.

    Returns (list of (offset, length), payload bytes)."""
    painted = paint(None, runs)
    out = []
    payload = bytearray()
    for off in sorted(painted):
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((off, 1))
        payload.append(painted[off])
    return out, bytes(payload)


def mask_runs(mask, data):
    """Runs of a byte mask (sequence of truthy values) with a dense or sparse payload."""
    mask = [bool(m) for m in mask]
    data = bytes(data)
    marked = sum(mask)
    if len(data) == len(mask):
        dense = True
    elif len(data) == marked:
        dense = False
    else:
        raise RefError(f"payload of {len(data)} bytes fits neither {len(mask)} nor {marked}")
    runs = []
    k = 0
    for i, m in enumerate(mask):
        if m:
            runs.append((i, data[i:i + 1] if dense else data[k:k + 1]))
            k += 1
    return runs


class RefBus:
    """dict page_id -> bytearray, epochs, lsn, names. Mirrors the in-memory Bus."""

    def __init__(self):
        self.pages = {}       # id -> bytearray
        self.epochs = {}      # id -> int
        self.dtypes = {}      # id -> numpy dtype or None (raw)
        self.shapes = {}      # id -> tuple or None (raw)
        self.metadata = {}    # id -> dict
        self.names = {}       # name -> id
        self.lsn = 0
        self.next_id = 1

    # ---- pages ------------------------------------------------------------------------------
    def create_page(self, size=None, *, shape=None, dtype=None, data=None, name=None,
                    metadata=None):
        """Returns the new id. Exactly like Bus.create_page for the forms the tests use."""
        if name is not None and name in self.names:
            raise RefError(f"duplicate name {name!r}")
        content = None
        if data is not None:
            if isinstance(data, (bytes, bytearray)):
                content = bytes(data)
                dt = None if dtype is None else np.dtype(dtype)
                shp = None if dt is None else (len(content) // dt.itemsize,)
            else:
                arr = np.asarray(data)
                content = arr.tobytes()
                dt = arr.dtype
                shp = tuple(arr.shape)
            if shape is not None:
                shp = tuple(shape)
            size = len(content)
        elif shape is not None:
            dt = np.dtype(dtype)
            shp = (shape,) if isinstance(shape, int) else tuple(shape)
            size = dt.itemsize
            for d in shp:
                size *= d
        else:
            dt = None if dtype is None else np.dtype(dtype)
            shp = None if dt is None else (size // dt.itemsize,)
        if size is None or size <= 0:
            raise RefError("bad size")
        pid = self.next_id
        self.next_id += 1
        self.pages[pid] = bytearray(size)
        self.epochs[pid] = 0
        self.dtypes[pid] = dt
        self.shapes[pid] = shp
        self.metadata[pid] = dict(metadata or {})
        if name is not None:
            self.names[name] = pid
        self.lsn += 1
        if content:
            self.write(pid, 0, content)
        return pid

    def delete(self, pid):
        self._check(pid)
        del self.pages[pid]
        del self.epochs[pid]
        del self.dtypes[pid]
        del self.shapes[pid]
        del self.metadata[pid]
        for name, owner in list(self.names.items()):
            if owner == pid:
                del self.names[name]
        self.lsn += 1

    def set_metadata(self, pid, key, value):
        self._check(pid)
        if value is None:
            if key not in self.metadata[pid]:
                return
            del self.metadata[pid][key]
        else:
            self.metadata[pid][key] = value
        self.lsn += 1

    def _check(self, pid):
        if pid not in self.pages:
            raise RefError(f"no live page {pid}")

    # ---- deltas -----------------------------------------------------------------------------
    def apply(self, pid, runs, expect_epoch=None):
        """One explicit delta: runs [(offset, bytes)] in order, last writer wins. Returns epoch."""
        self._check(pid)
        page = self.pages[pid]
        painted = paint(len(page), runs)  # validates every byte before changing anything
        if expect_epoch is not None and expect_epoch != self.epochs[pid]:
            raise RefError("epoch conflict")
        for off, b in painted.items():
            page[off] = b
        self.epochs[pid] += 1
        self.lsn += 1
        return self.epochs[pid]

    def write(self, pid, offset, data, expect_epoch=None):
        return self.apply(pid, [(offset, bytes(data))], expect_epoch)

    def write_block(self, pid, offset, data):
        """write() of one large run by slice assignment (the per-byte paint is too slow for MiBs);
        same rules: bounds checked first, epoch +1, lsn +1, identical bytes still commit."""
        self._check(pid)
        data = bytes(data)
        page = self.pages[pid]
        if offset < 0 or offset + len(data) > len(page):
            raise RefError(f"bytes [{offset}, {offset + len(data)}) outside page of {len(page)}")
        page[offset:offset + len(data)] = data
        self.epochs[pid] += 1
        self.lsn += 1
        return self.epochs[pid]

    def masked(self, pid, byte_mask, data):
        """Byte mask over the page start; dense (len(mask)) or sparse (popcount) payload."""
        return self.apply(pid, mask_runs(byte_mask, data))

    def batch(self, rows):
        """rows: [(pid, offset, bytes)], each one delta. Validated whole before applying any."""
        for pid, off, data in rows:
            self._check(pid)
            if off + len(data) > len(self.pages[pid]):
                raise RefError("row out of bounds")
        for pid, off, data in rows:
            self.write(pid, off, data)
        return self.lsn

    def update(self, pid, new_content, expect_epoch=None):
        """Diff-derived delta: commits only if the content changed. Returns True if it did."""
        self._check(pid)
        new_content = bytes(new_content)
        if len(new_content) != len(self.pages[pid]):
            raise RefError("wrong length")
        if expect_epoch is not None and expect_epoch != self.epochs[pid]:
            raise RefError("epoch conflict")
        if bytes(self.pages[pid]) == new_content:
            return False
        changed = [(i, new_content[i:i + 1]) for i in range(len(new_content))
                   if self.pages[pid][i] != new_content[i]]
        self.apply(pid, changed)
        return True

    # ---- comparison -------------------------------------------------------------------------
    def state(self):
        """Same shape as capture_state(bus)."""
        return {
            "lsn": self.lsn,
            "pages": {pid: (bytes(b), self.epochs[pid]) for pid, b in self.pages.items()},
            "names": dict(self.names),
        }


    def full_state(self):
        """state() plus every page's layout (size, dtype string, shape) and metadata: the same
        shape as capture_full_state(bus)."""
        st = self.state()
        st["layout"] = {
            pid: (len(b), None if self.dtypes[pid] is None else np.dtype(self.dtypes[pid]).str,
                  None if self.shapes[pid] is None else tuple(self.shapes[pid]))
            for pid, b in self.pages.items()
        }
        st["metadata"] = {pid: dict(md) for pid, md in self.metadata.items()}
        return st


def capture_state(bus):
    """Every live page's bytes and epoch, the names and the bus lsn (for before/after checks)."""
    pages = {}
    names = {}
    for p in bus.pages():
        data, epoch = p.snapshot()
        pages[p.id] = (data.tobytes(), epoch)
        if p.name is not None:
            names[p.name] = p.id
    return {"lsn": bus.lsn, "pages": pages, "names": names}


def capture_full_state(bus):
    """capture_state(bus) plus each page's layout (size, dtype string, shape) and metadata."""
    st = capture_state(bus)
    st["layout"] = {}
    st["metadata"] = {}
    for p in bus.pages():
        st["layout"][p.id] = (p.size, None if p.dtype is None else p.dtype.str,
                              None if p.shape is None else tuple(p.shape))
        st["metadata"][p.id] = dict(p.metadata)
    return st
