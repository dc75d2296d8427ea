"""Child process of the kill -9 tests (test_crash.py), and the op stream both sides share.

    python crash_child.py DIR DURABILITY SEED [MAX_OPS]

opens mmsb.Bus(DIR, durability=DURABILITY), prints ``READY``, then runs the seeded op stream:
after each operation returns it writes ``<step> <lsn>\\n`` to stdout (one unbuffered write, so
each line the parent reads is an acknowledged commit). It stops after MAX_OPS operations (or 60 s)
by closing the bus and printing ``DONE``; normally the parent SIGKILLs it long before.

The op stream is a deterministic function of (seed, step): ``OpStream(seed)`` keeps its own
reference model (RefBus), picks each operation from a NumPy generator seeded with ``seed`` and the
reference state, applies it to the reference as it is generated, and knows how many lsns it took.
The parent regenerates the same stream to rebuild the reference state at any recovered lsn.
Every operation is one log record (or none): it is either wholly present after a crash or absent.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference_model import RefBus  # noqa: E402

BIG_NAME = "big"
BIG_SIZE = 2 << 20       # one page big enough that its writes take a while (torn writes)
BIG_WRITE = 1 << 20      # bytes of one big write
# A big batch: its payload (128 KiB) is over the 64 KiB from which a flush or none log writes the
# record on its writer thread while the batch applies, so a kill also lands in such a write.
BIG_BATCH_ROWS, BIG_ROW = 64, 2048
MAX_PAGES = 40
DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint16", "uint64", "float16", "float32",
          "float64", "complex64"]

# (kind, weight). "checkpoint" takes no lsn; update/edit/metadata removal may take none.
WEIGHTS = [
    ("create_raw", 3), ("create_typed", 2), ("create_data", 3), ("delete", 2),
    ("set_meta", 3), ("del_meta", 1), ("write", 10), ("runs", 6), ("masked", 4),
    ("update", 4), ("edit", 3), ("batch", 6), ("big_write", 1), ("big_batch", 1), ("checkpoint", 0.3),
]
KINDS = [k for k, _ in WEIGHTS]
PROBS = np.array([w for _, w in WEIGHTS], dtype=float) / sum(w for _, w in WEIGHTS)


class OpStream:
    """Deterministic stream of valid operations; ``next()`` returns (step, op) after applying op
    to ``self.ref``. An op is a tuple whose first item is its kind."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.ref = RefBus()
        self.step = 0
        self.names_used = []

    # ---- helpers ------------------------------------------------------------------------------
    def _small_ids(self):
        big = self.ref.names.get(BIG_NAME)
        return [pid for pid in sorted(self.ref.pages) if pid != big]

    def _pick(self, ids):
        return ids[int(self.rng.integers(len(ids)))]

    def _span(self, size, max_len=48):
        length = int(self.rng.integers(0, min(size, max_len) + 1))
        return int(self.rng.integers(0, size - length + 1)), length

    def _name(self):
        if self.rng.random() < 0.5:
            return None
        free = [n for n in self.names_used if n not in self.ref.names]
        if free and self.rng.random() < 0.3:
            return free[int(self.rng.integers(len(free)))]
        name = f"p{len(self.names_used)}"
        self.names_used.append(name)
        return name

    def _meta_value(self):
        if self.rng.random() < 0.5:
            return "v" + str(int(self.rng.integers(1000))) + "é"
        return self.rng.bytes(int(self.rng.integers(0, 12)))  # any bytes, NULs included

    def _metadata(self):
        if self.rng.random() < 0.6:
            return None
        return {f"k{i}": self._meta_value() for i in range(int(self.rng.integers(1, 4)))}

    def _mutated(self, pid):
        new = bytearray(self.ref.pages[pid])
        k = int(self.rng.choice([0, 1, 4, 16]))
        for _ in range(k):
            new[int(self.rng.integers(len(new)))] = int(self.rng.integers(256))
        return bytes(new)

    # ---- the stream -------------------------------------------------------------------------
    def next(self):
        self.step += 1
        ref = self.ref
        if self.step == 1:
            ref.create_page(BIG_SIZE, name=BIG_NAME)
            return self.step, ("create", dict(size=BIG_SIZE, name=BIG_NAME))
        small = self._small_ids()
        kind = KINDS[int(self.rng.choice(len(KINDS), p=PROBS))]
        if len(small) < 3 and kind != "checkpoint":
            kind = ["create_raw", "create_typed", "create_data"][int(self.rng.integers(3))]
        if kind.startswith("create") and len(small) >= MAX_PAGES:
            kind = "delete"

        if kind == "create_raw":
            kw = dict(size=int(self.rng.choice([1, 8, 63, 100, 256, 1000])), name=self._name(),
                      metadata=self._metadata())
            ref.create_page(kw["size"], name=kw["name"], metadata=kw["metadata"])
            return self.step, ("create", kw)
        if kind == "create_typed":
            dtype = DTYPES[int(self.rng.integers(len(DTYPES)))]
            shape = tuple(int(x) for x in self.rng.integers(1, 7, int(self.rng.integers(1, 4))))
            kw = dict(shape=shape, dtype=dtype, name=self._name(), metadata=self._metadata())
            ref.create_page(**kw)
            return self.step, ("create", kw)
        if kind == "create_data":  # creation + content: 2 lsns, one record
            if self.rng.random() < 0.3:
                data = self.rng.bytes(int(self.rng.integers(1, 300)))
            else:
                dtype = DTYPES[int(self.rng.integers(len(DTYPES)))]
                shape = tuple(int(x) for x in self.rng.integers(1, 6, int(self.rng.integers(1, 3))))
                n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                data = np.frombuffer(self.rng.bytes(n), dtype=dtype).reshape(shape)
            kw = dict(data=data, name=self._name(), metadata=self._metadata())
            ref.create_page(**kw)
            return self.step, ("create", kw)
        if kind == "delete":
            pid = self._pick(small)
            ref.delete(pid)
            return self.step, ("delete", pid)
        if kind == "set_meta":
            pid = self._pick(sorted(ref.pages))
            key, value = f"k{int(self.rng.integers(5))}", self._meta_value()
            ref.set_metadata(pid, key, value)
            return self.step, ("set_meta", pid, key, value)
        if kind == "del_meta":
            pid = self._pick(sorted(ref.pages))
            key = f"k{int(self.rng.integers(5))}"
            ref.set_metadata(pid, key, None)
            return self.step, ("set_meta", pid, key, None)
        if kind == "write":
            pid = self._pick(sorted(ref.pages))
            off, ln = self._span(len(ref.pages[pid]))
            data = self.rng.bytes(ln)
            ref.write(pid, off, data)
            return self.step, ("write", pid, off, data)
        if kind == "runs":
            pid = self._pick(sorted(ref.pages))
            size = len(ref.pages[pid])
            runs = []
            for _ in range(int(self.rng.integers(1, 7))):
                off, ln = self._span(size, 32)
                runs.append((off, self.rng.bytes(ln)))
            ref.apply(pid, runs)
            return self.step, ("runs", pid, runs)
        if kind == "masked":
            pid = self._pick(small)
            size = len(ref.pages[pid])
            mask = self.rng.random(size) < float(self.rng.choice([0.05, 0.3, 0.9]))
            dense = bool(self.rng.random() < 0.5)
            payload = self.rng.bytes(size if dense else int(mask.sum()))
            ref.masked(pid, mask, payload)
            return self.step, ("masked", pid, mask, payload)
        if kind in ("update", "edit"):
            pid = self._pick(small)
            new = self._mutated(pid)
            ref.update(pid, new)
            return self.step, (kind, pid, new)
        if kind == "batch":
            ids = sorted(ref.pages)
            rows = []
            for _ in range(int(self.rng.integers(1, 41))):
                pid = self._pick(ids)
                off, ln = self._span(len(ref.pages[pid]), 24)
                rows.append((pid, off, self.rng.bytes(ln)))
            ref.batch(rows)
            return self.step, ("batch", rows)
        if kind == "big_batch":
            pid = ref.names[BIG_NAME]
            rows = [(pid, int(self.rng.integers(0, BIG_SIZE - BIG_ROW + 1)), self.rng.bytes(BIG_ROW))
                    for _ in range(BIG_BATCH_ROWS)]
            for row in rows:  # in row order, each a delta: what the batch commits
                ref.write_block(*row)
            return self.step, ("batch", rows)
        if kind == "big_write":
            pid = ref.names[BIG_NAME]
            off = int(self.rng.integers(0, BIG_SIZE - BIG_WRITE + 1))
            data = self.rng.bytes(BIG_WRITE)
            ref.write_block(pid, off, data)
            return self.step, ("write", pid, off, data)
        assert kind == "checkpoint", kind
        return self.step, ("checkpoint",)


def run_op(bus, op):
    """Performs `op` (from OpStream.next) on a real bus."""
    import mmsb

    kind = op[0]
    if kind == "create":
        bus.create_page(**op[1])
    elif kind == "delete":
        bus.delete_page(op[1])
    elif kind == "set_meta":
        bus.page(op[1]).set_metadata(op[2], op[3])
    elif kind == "write":
        bus.page(op[1]).write(op[2], op[3])
    elif kind == "runs":
        runs = op[2]
        bus.apply(mmsb.Delta.runs(bus.page(op[1]), [r[0] for r in runs], [r[1] for r in runs]))
    elif kind == "masked":
        bus.apply(mmsb.Delta.masked(bus.page(op[1]), op[2], op[3]))
    elif kind == "update":
        p = bus.page(op[1])
        view = p.view()
        p.update(np.frombuffer(op[2], dtype=view.dtype).reshape(view.shape))
    elif kind == "edit":
        with bus.page(op[1]).edit() as a:
            a.reshape(-1).view(np.uint8)[:] = np.frombuffer(op[2], dtype=np.uint8)
    elif kind == "batch":
        rows = op[1]
        bus.apply_batch(mmsb.DeltaBatch(np.array([r[0] for r in rows], dtype=np.uint64),
                                        np.array([r[1] for r in rows], dtype=np.uint64),
                                        np.array([len(r[2]) for r in rows], dtype=np.uint64),
                                        b"".join(r[2] for r in rows)))
    elif kind == "checkpoint":
        bus.checkpoint()
    else:
        raise AssertionError(f"unknown op {kind}")


def main(argv):
    import mmsb

    path, durability, seed = argv[1], argv[2], int(argv[3])
    max_ops = int(argv[4]) if len(argv) > 4 else 1_000_000
    bus = mmsb.Bus(path, durability=durability)
    stream = OpStream(seed)
    os.write(1, b"READY\n")
    deadline = time.monotonic() + 60
    for _ in range(max_ops):
        step, op = stream.next()
        run_op(bus, op)
        lsn = bus.lsn
        if lsn != stream.ref.lsn:  # the engine disagrees with the model: report, stop
            os.write(2, f"lsn {lsn} after step {step} ({op[0]}) but the model says "
                        f"{stream.ref.lsn}\n".encode())
            return 3
        os.write(1, f"{step} {lsn}\n".encode())
        if time.monotonic() > deadline:
            break
    bus.close()
    os.write(1, b"DONE\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
