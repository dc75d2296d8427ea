"""Validator 1, replay: the state at any lsn is a pure function of the log (DESIGN §1, §5).

Workload: a directory bus with 256 pages of mixed sizes and layouts (float64, float32, int32,
int64, raw bytes) takes 1,000 cycles of random deltas — Delta.at, Delta.runs with overlapping
runs, element and byte masks (dense, sparse, packed), DeltaBatch rows, transactions and
page.edit — with a checkpoint every 100 cycles. An independent NumPy model applies the same
changes byte by byte; after every cycle the live bus is compared with the model and the model's
hash (lsn, every page's id, epoch and bytes) is recorded under its lsn.

Then the recorded states are rebuilt and compared: bus.at(lsn) for every recorded lsn;
mmsb.replay(path, to=lsn) at each checkpoint, the cycles around it and random ones between; a
copy of the directory whose checkpoints are removed newest first, so the final state is
replayed from every checkpoint in turn and at last from empty (also at the sampled lsns); and
mmsb.open after close, of the directory and of the copy without checkpoints.

Metrics: hash_mismatches (compared states whose hash differs from the model's, plus replays
and reopens that did not start where asked: each replay of the copy must start at the newest
checkpoint left in it, the last one at lsn 0, and mmsb.open at the newest checkpoint of the
directory and at 0 for the copy, as their recovery["checkpoint_lsn"] says; a replay that ignored
the checkpoints would otherwise reach the same states from empty) and l2_divergence (sum over
compared states and float pages of the L2 norm of the difference from the recorded float
values). Both must be exactly 0. Quick: 100 cycles, 32 pages.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np

import mmsb

from ._framework import Context, validator

LAYOUTS = ["float64", "float32", "int32", "int64", None]  # None: a raw byte page
FLOATS = ("float64", "float32")


def state_hash(lsn: int, pages) -> str:
    """Hash of (lsn, [(page id, epoch, bytes)...]) in page id order."""
    h = hashlib.blake2b(digest_size=20)
    h.update(int(lsn).to_bytes(8, "little"))
    for pid, epoch, data in sorted(pages, key=lambda t: t[0]):
        h.update(np.array([pid, epoch, len(data)], np.uint64).tobytes())
        h.update(data)
    return h.hexdigest()


def bus_pages(bus):
    return [(p.id, p.epoch, np.ascontiguousarray(p.view()).view(np.uint8).reshape(-1)) for p in bus.pages()]


class Model:
    """The expected state: page id -> bytes (uint8 array), epochs, dtypes, lsn."""

    def __init__(self):
        self.data, self.epoch, self.dtype, self.lsn = {}, {}, {}, 0

    def create(self, pid, size, dtype, initial=None):
        self.data[pid] = np.zeros(size, np.uint8)
        self.epoch[pid], self.dtype[pid] = 0, dtype
        self.lsn += 1
        if initial is not None:
            self.write(pid, [(0, initial)])

    def write(self, pid, runs):  # runs in order: last writer wins
        for off, data in runs:
            self.data[pid][off:off + len(data)] = np.frombuffer(data, np.uint8)
        self.epoch[pid] += 1
        self.lsn += 1

    def pages(self):
        return [(pid, self.epoch[pid], arr) for pid, arr in self.data.items()]


class Workload:
    """Random explicit and diffed deltas, applied to the bus and to the model alike."""

    def __init__(self, bus, model, rng, n_pages):
        self.bus, self.model, self.rng, self.pages = bus, model, rng, []
        for i in range(n_pages):
            dtype = LAYOUTS[i % len(LAYOUTS)]
            size = int(rng.integers(1, 129)) * 64 if dtype else int(rng.integers(1, 8192))
            if dtype and i % 3 == 0:  # content given at creation: delta 1 of the page
                init = self.values(dtype, size // np.dtype(dtype).itemsize)
                p = bus.create_page(data=np.frombuffer(init, dtype), name=f"p{i}")
            else:
                init = None
                p = bus.create_page(size, name=f"p{i}") if dtype is None else \
                    bus.create_page(shape=(size // np.dtype(dtype).itemsize,), dtype=dtype, name=f"p{i}")
            model.create(p.id, size, dtype, init)
            self.pages.append(p)

    def values(self, dtype, n) -> bytes:
        r = self.rng
        if dtype in FLOATS:
            return (r.standard_normal(n) * 10.0 ** r.integers(-3, 4)).astype(dtype).tobytes()
        if dtype is None:
            return r.integers(0, 256, n, dtype=np.uint8).tobytes()
        return r.integers(-(2 ** 31), 2 ** 31, n).astype(dtype).tobytes()

    def runs(self, p, k):
        """k random (offset, bytes) runs inside p, element-aligned on typed pages."""
        item = np.dtype(self.model.dtype[p.id]).itemsize if self.model.dtype[p.id] else 1
        n = p.size // item
        out = []
        for _ in range(k):
            start = int(self.rng.integers(0, n))
            count = int(self.rng.integers(1, min(n - start, 64) + 1))
            out.append((start * item, self.values(self.model.dtype[p.id], count)))
        return out

    def pick(self):
        return self.pages[int(self.rng.integers(len(self.pages)))]

    def op_at(self):
        p = self.pick()
        [(off, data)] = self.runs(p, 1)
        if self.rng.random() < 0.5:
            self.bus.apply(mmsb.Delta.at(p, off, data))
        else:
            p.write(off, data)
        self.model.write(p.id, [(off, data)])

    def op_runs(self):  # the last run overwrites the start of the first: last writer wins
        p = self.pick()
        runs = self.runs(p, int(self.rng.integers(2, 6)))
        runs.append((runs[0][0], self.values(self.model.dtype[p.id], 1)))
        self.bus.apply(mmsb.Delta.runs(p, [o for o, _ in runs], [d for _, d in runs]))
        self.model.write(p.id, runs)

    def op_masked(self):
        p, r = self.pick(), self.rng
        dtype = self.model.dtype[p.id]
        item = np.dtype(dtype).itemsize if dtype else 1
        mask = r.random(p.size // item) < r.uniform(0.05, 0.6)
        mask[int(r.integers(mask.size))] = True
        dense = self.values(dtype, mask.size)
        sparse = r.random() < 0.5 and mask.sum() < mask.size
        data = np.frombuffer(dense, np.uint8).reshape(mask.size, item)[mask].tobytes() if sparse else dense
        if dtype is None and r.random() < 0.5:
            d = mmsb.Delta.masked(p, np.packbits(mask, bitorder="little"), data, packed=True)
        else:
            d = mmsb.Delta.masked(p, mask, data)
        self.bus.apply(d)
        idx = np.flatnonzero(mask)
        src = np.frombuffer(dense, np.uint8).reshape(mask.size, item)
        self.model.write(p.id, [(int(i) * item, src[i].tobytes()) for i in idx])

    def op_batch(self):
        rows = [(p, *self.runs(p, 1)[0]) for p in (self.pick() for _ in range(int(self.rng.integers(2, 65))))]
        self.bus.apply_batch(mmsb.DeltaBatch([p.id for p, _, _ in rows], [o for _, o, _ in rows],
                                             [len(d) for _, _, d in rows], b"".join(d for _, _, d in rows)))
        for p, off, data in rows:
            self.model.write(p.id, [(off, data)])

    def op_transaction(self):
        with self.bus.transaction():
            for _ in range(int(self.rng.integers(2, 6))):
                [self.op_at, self.op_runs, self.op_masked][int(self.rng.integers(3))]()

    def op_edit(self):  # diffed: commits (and bumps the epoch) only if the bytes change
        p = self.pick()
        [(off, data)] = self.runs(p, 1)
        if self.rng.random() < 0.3:
            data = self.model.data[p.id][off:off + len(data)].tobytes()  # same bytes: no delta
        with p.edit() as a:
            a.view(np.uint8).reshape(-1)[off:off + len(data)] = np.frombuffer(data, np.uint8)
        if data != self.model.data[p.id][off:off + len(data)].tobytes():
            self.model.write(p.id, [(off, data)])

    def cycle(self):
        ops = [self.op_at, self.op_runs, self.op_masked, self.op_batch, self.op_transaction, self.op_edit]
        for _ in range(int(self.rng.integers(1, 6))):
            ops[int(self.rng.integers(len(ops)))]()


def float_pages(model) -> dict:
    return {pid: arr.copy() for pid, arr in model.data.items() if model.dtype[pid] in FLOATS}


class Tally:
    """Compares buses with the recorded states: hash mismatches, L2 divergence, states compared."""

    def __init__(self, model):
        self.model, self.recorded, self.snaps = model, {}, {}  # lsn -> hash; lsn -> float pages
        self.mismatches, self.l2, self.compared = 0, 0.0, 0

    def record(self, snapshot: bool):
        m = self.model
        self.recorded[m.lsn] = state_hash(m.lsn, m.pages())
        if snapshot:
            self.snaps[m.lsn] = float_pages(m)

    def check(self, bus, lsn):
        got = bus_pages(bus)
        self.mismatches += int(state_hash(bus.lsn, got) != self.recorded[lsn])
        self.compared += 1
        have = {pid: arr for pid, _, arr in got}
        for pid, want in self.snaps.get(lsn, {}).items():
            dtype = self.model.dtype[pid]
            g = have[pid].view(dtype).astype(np.float64) if pid in have and have[pid].size == want.size else 0.0
            with np.errstate(all="ignore"):  # a wild difference may overflow: inf is the answer then
                self.l2 += float(np.linalg.norm(g - want.view(dtype).astype(np.float64)))


@validator(1, "replay", ("hash_mismatches", "l2_divergence"))
def run(ctx: Context) -> dict:
    cycles, n_pages = ctx.size((1000, 256), (100, 32))
    every = cycles // 10
    path = os.path.join(ctx.tmpdir, "replay.mmsb")
    bus, model = mmsb.Bus(path, durability="flush"), Model()
    tally = Tally(model)
    tally.recorded[0], tally.snaps[0] = state_hash(0, []), {}
    work = Workload(bus, model, np.random.default_rng(ctx.seed), n_pages)
    pick = np.random.default_rng(ctx.seed + 1)  # which lsns also get the L2 comparison
    tally.record(True)
    tally.check(bus, model.lsn)
    checkpoints = []
    for c in ctx.progress(range(1, cycles + 1), total=cycles, desc="replay: workload"):
        work.cycle()
        tally.record(c % every in (0, 1, every - 1) or pick.random() < 3 / every)
        tally.check(bus, model.lsn)  # the live bus equals the model
        if c % every == 0:
            checkpoints.append(bus.checkpoint())
    final, chosen = model.lsn, sorted(tally.snaps)
    for lsn in ctx.progress(sorted(tally.recorded), total=len(tally.recorded), desc="replay: bus.at"):
        with bus.at(lsn) as old:
            tally.check(old, lsn)
    for lsn in chosen:
        with mmsb.replay(path, to=lsn) as old:
            tally.check(old, lsn)
    bus.close()
    # replay the final state from every checkpoint in turn, newest first, and then from empty
    stripped = os.path.join(ctx.tmpdir, "stripped.mmsb")
    shutil.copytree(path, stripped)
    ckpts, starts = sorted(f for f in os.listdir(stripped) if f.startswith("ckpt-")), []
    if len(ckpts) != len(checkpoints):
        raise RuntimeError(f"{len(checkpoints)} checkpoints were taken but the directory holds {ckpts}")
    for k in range(len(ckpts), -1, -1):
        with mmsb.replay(stripped, to=final) as old:
            starts.append(old.recovery["checkpoint_lsn"])
            tally.check(old, final)
        tally.mismatches += int(starts[-1] != (sorted(checkpoints)[k - 1] if k else 0))
        if k:
            os.remove(os.path.join(stripped, ckpts[k - 1]))
    for lsn in chosen:  # no checkpoint left: every chosen lsn from empty
        with mmsb.replay(stripped, to=lsn) as old:
            tally.check(old, lsn)
    for where, start in ((path, max(checkpoints)), (stripped, 0)):  # recovery after close
        with mmsb.open(where) as reopened:
            tally.check(reopened, final)
            tally.mismatches += int(reopened.recovery["checkpoint_lsn"] != start)
    for key, value in [("cycles", cycles), ("pages", n_pages), ("final_lsn", final), ("checkpoint_lsns", checkpoints),
                       ("replay_start_lsns", starts), ("states_compared", tally.compared)]:
        ctx.note(key, value)
    return {"hash_mismatches": tally.mismatches, "l2_divergence": tally.l2}
