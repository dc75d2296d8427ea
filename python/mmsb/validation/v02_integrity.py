"""Validator 2, integrity: bad deltas are refused before anything is logged or applied, the log
agrees with memory after a million deltas, and epochs never go backwards (DESIGN §1, §5).

Workload: a directory bus (durability "flush", so every commit reaches the segment files at
once) with 1,024 raw pages of 256 B .. 8 KiB takes 1M random deltas: DeltaBatch rows of 1..64
bytes, plus single Delta.at / Delta.runs / Delta.masked / page.write deltas between batches,
with a checkpoint halfway. Every page's epoch is sampled after each batch.

Then bad changes of every kind are injected into the loaded bus: unknown and deleted pages, out
of bounds runs, 64-bit offset overflow, a wrong expect_epoch, batches whose columns or payload
disagree, a bad row inside an otherwise good batch, wrong dtype / shape / layout updates,
deltas built from another bus's page, a transaction that fails half way, a write through a
read-only time-travel bus, and submit() + tick() of bad submissions. Each must raise the
expected error class (or, for tick, be reported in TickReport.rejected) and leave the lsn, every
page's bytes and epoch, and the log (total segment bytes and files) exactly as before.
bus.verify() runs after the injections, and again after close + mmsb.open.

Metrics: bad_deltas_accepted (injections not refused with the right error, or after which lsn
or state changed), bad_deltas_logged (injections after which the log on disk changed),
verify_problems (problems of both verify() reports), epoch_regressions (pages whose epoch was
ever lower than at the previous sample), epoch_count_mismatches (page samples, every page
after each batch of the workload, whose epoch did not advance by exactly the deltas applied to
the page since the previous sample: an epoch counts deltas, so one that stays monotone while
skipping or repeating counts fails here). Quick: 20k deltas.
"""

from __future__ import annotations

import os

import numpy as np

import mmsb
from mmsb import errors as E

from ._framework import Context, validator

BATCH = 5000


def log_footprint(path: str) -> tuple:
    segs = sorted(f for f in os.listdir(path) if f.startswith("seg-"))
    return len(segs), sum(os.path.getsize(os.path.join(path, f)) for f in segs)


def capture(bus) -> tuple:
    return bus.lsn, {p.id: (p.epoch, p.read(0, p.size)) for p in bus.pages()}


def random_batch(rng, ids, sizes, n):
    pick = rng.integers(0, len(ids), n)
    lengths = rng.integers(1, 65, n).astype(np.uint64)
    offsets = (rng.random(n) * (sizes[pick] - lengths + 1)).astype(np.uint64)
    payload = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    return mmsb.DeltaBatch(ids[pick], offsets, lengths, payload), pick


def single_deltas(bus, rng, pages, k) -> list:
    """k single deltas of the four kinds; returns the touched page indexes."""
    touched = []
    for _ in range(k):
        i = int(rng.integers(len(pages)))
        p, kind = pages[i], int(rng.integers(4))
        off = int(rng.integers(0, p.size - 16))
        if kind == 0:
            bus.apply(mmsb.Delta.at(p, off, rng.bytes(16)))
        elif kind == 1:
            bus.apply(mmsb.Delta.runs(p, [off, max(0, off - 4)], [rng.bytes(8), rng.bytes(8)]))
        elif kind == 2:
            mask = rng.random(p.size) < 0.1
            bus.apply(mmsb.Delta.masked(p, mask, rng.bytes(int(mask.sum()))))
        else:
            p.write(off, rng.bytes(16))
        touched.append(i)
    return touched


def injections(bus, path, rng):
    """(name, expected error classes, action) for every kind of bad change. An action returns
    None, or a TickReport whose `rejected` must equal the number of bad submissions (1)."""
    pages = bus.pages()
    p, q = pages[0], pages[1]
    typed = bus.create_page(shape=(16,), dtype="float64", name="typed")
    gone = bus.create_page(64, name="gone")
    bus.delete_page(gone)
    other = mmsb.Bus()
    alien = other.create_page(p.size)
    unknown = max(x.id for x in pages) + 1000
    good_rows = 999
    ids = np.array([x.id for x in pages[:8]] * 125, np.uint64)[:good_rows + 1]
    offs, lens = np.zeros(good_rows + 1, np.uint64), np.full(good_rows + 1, 8, np.uint64)
    payload = rng.integers(0, 256, 8 * (good_rows + 1), dtype=np.uint8)
    bad_id, bad_off = ids.copy(), offs.copy()
    bad_id[500], bad_off[700] = unknown, pages[700 % 8].size  # one row just past its page's end

    def txn():
        with bus.transaction():
            p.write(0, b"good")
            q.write(0, b"good too")
            bus.apply(mmsb.Delta.at(unknown, 0, b"bad"))

    def ticked(d):
        bus.submit(d)
        return bus.tick()

    def read_only():
        with bus.at(bus.lsn) as old:
            old.page(p.id).write(0, b"x")

    INV, NF, ARG = E.InvalidDeltaError, E.PageNotFoundError, E.InvalidArgumentError
    return [
        ("unknown page", NF, lambda: bus.apply(mmsb.Delta.at(unknown, 0, b"x"))),
        ("deleted page (Page)", NF, lambda: gone.write(0, b"x")),
        ("deleted page (id)", NF, lambda: bus.apply(mmsb.Delta.at(gone.id, 0, b"x"))),
        ("out of bounds (Page)", INV, lambda: bus.apply(mmsb.Delta.at(p, p.size - 2, b"xxxx"))),
        ("out of bounds (id)", INV, lambda: bus.apply(mmsb.Delta.at(p.id, p.size - 2, b"xxxx"))),
        ("out of bounds run", INV, lambda: bus.apply(mmsb.Delta.runs(p.id, [0, p.size], [b"ok", b"x"]))),
        ("out of bounds write", INV, lambda: p.write(p.size, b"x")),
        ("offset overflow", INV, lambda: bus.apply(mmsb.Delta.at(p.id, 2 ** 64 - 2, b"xxxx"))),
        ("offset overflow in runs", INV, lambda: bus.apply(mmsb.Delta.runs(p.id, [0, 2 ** 64 - 1], [b"a", b"bc"]))),
        ("wrong expect_epoch (ahead)", E.EpochConflictError,
         lambda: bus.apply(mmsb.Delta.at(p, 0, b"x", expect_epoch=p.epoch + 1))),
        ("wrong expect_epoch (behind)", E.EpochConflictError, lambda: p.write(0, b"x", expect_epoch=p.epoch - 1)),
        ("batch columns disagree", INV, lambda: bus.apply_batch(mmsb.DeltaBatch(ids, offs[:-1], lens, payload))),
        ("batch payload too long", INV,
         lambda: bus.apply_batch(mmsb.DeltaBatch(ids, offs, lens, payload.tobytes() + b"x"))),
        ("unknown page inside a batch", NF, lambda: bus.apply_batch(mmsb.DeltaBatch(bad_id, offs, lens, payload))),
        ("out of bounds row inside a batch", INV,
         lambda: bus.apply_batch(mmsb.DeltaBatch(ids, bad_off, lens, payload))),
        ("overflowing row inside a batch", INV, lambda: bus.apply_batch(mmsb.DeltaBatch(
            ids, np.where(np.arange(ids.size) == 3, np.uint64(2 ** 64 - 4), offs), lens, payload))),
        ("runs without data", INV, lambda: bus.apply(mmsb.Delta.runs(p, [0, 8], [b"x"]))),
        ("masked payload fits no mask", INV, lambda: bus.apply(mmsb.Delta.masked(p, np.ones(p.size, bool), b"x" * 3))),
        ("mask of the wrong length", INV, lambda: bus.apply(mmsb.Delta.masked(p, np.ones(p.size - 1, bool), b"x"))),
        ("update of the wrong shape", ARG, lambda: typed.update(np.zeros(15))),
        ("update of the wrong dtype", ARG, lambda: typed.update(np.zeros(32, np.float32))),
        ("non-contiguous write", ARG, lambda: typed.write(0, np.zeros(8)[::2])),
        ("delta from another bus's page", NF, lambda: bus.apply(mmsb.Delta.at(alien, 0, b"x"))),
        ("masked delta from another bus's page", NF,
         lambda: bus.apply(mmsb.Delta.masked(alien, np.ones(alien.size, bool), b"y" * alien.size))),
        ("submit of another bus's delta", NF, lambda: bus.submit(mmsb.Delta.at(alien, 0, b"x"))),
        ("transaction failing half way", NF, txn),
        ("write through a read-only bus", E.ReadOnlyError, read_only),
        ("tick: unknown page", None, lambda: ticked(mmsb.Delta.at(unknown, 0, b"x"))),
        ("tick: out of bounds", None, lambda: ticked(mmsb.Delta.at(p.id, p.size - 1, b"xy"))),
        ("tick: wrong expect_epoch", None, lambda: ticked(mmsb.Delta.at(p, 0, b"x", expect_epoch=p.epoch + 5))),
        ("tick: bad row in a batch", None, lambda: ticked(mmsb.DeltaBatch(bad_id, offs, lens, payload))),
    ], other


@validator(2, "integrity", ("bad_deltas_accepted", "bad_deltas_logged", "verify_problems", "epoch_regressions",
                                 "epoch_count_mismatches"))
def run(ctx: Context) -> dict:
    total = ctx.size(1_000_000, 20_000)
    rng = np.random.default_rng(ctx.seed)
    path = os.path.join(ctx.tmpdir, "integrity.mmsb")
    bus = mmsb.Bus(path, durability="flush")
    pages = [bus.create_page(int(rng.integers(256, 8193)), name=f"p{i}") for i in range(1024)]
    ids = np.array([p.id for p in pages], np.uint64)
    sizes = np.array([p.size for p in pages], np.uint64)
    epochs = np.array([p.epoch for p in pages], np.int64)
    regressed, miscounted, done = set(), 0, 0

    def sample(expected=None):
        nonlocal epochs, miscounted
        now = np.array([p.epoch for p in pages], np.int64)
        regressed.update(int(i) for i in np.flatnonzero(now < epochs))
        if expected is not None:
            miscounted += int(np.count_nonzero(now != expected))
        epochs = now

    bar = ctx.progress(range(0, total, BATCH), total=-(-total // BATCH), desc="integrity: deltas")
    for _ in bar:
        n = min(BATCH, total - done)
        singles = min(20, n // 10)
        batch, pick = random_batch(rng, ids, sizes, n - singles)
        bus.apply_batch(batch)
        touched = single_deltas(bus, rng, pages, singles)
        sample(epochs + np.bincount(np.concatenate([pick, touched]).astype(np.int64), minlength=len(pages)))
        done += n
        if done >= total // 2 > done - n:
            bus.checkpoint()
    ctx.note("deltas", done)
    accepted, logged, failures = 0, 0, []
    cases, other = injections(bus, path, rng)
    for name, errors, action in cases:
        before, log_before = capture(bus), log_footprint(path)
        why = None
        try:
            report = action()
        except Exception as e:  # noqa: BLE001  (the class is what is checked)
            if errors is None or not isinstance(e, errors):
                why = f"raised {type(e).__name__}: {e}"
        else:
            if errors is not None:
                why = "no error"
            elif report["rejected"] != 1 or report["deltas_applied"] != 0:
                why = f"tick rejected {report['rejected']}, applied {report['deltas_applied']}"
        if capture(bus) != before:
            why = (why + "; " if why else "") + "state or lsn changed"
        if why:
            accepted += 1
            failures.append(f"{name}: {why}")
        if log_footprint(path) != log_before:
            logged += 1
            failures.append(f"{name}: the log changed {log_before} -> {log_footprint(path)}")
        sample()
    other.close()
    ctx.note("injections", len(cases))
    ctx.note("injection_failures", failures[:10])
    report = bus.verify()
    problems = list(report.problems)
    ctx.note("lsn", bus.lsn)
    ctx.note("log_segments_and_bytes", log_footprint(path))
    ctx.note("verify_records_checked", report.records_checked)
    final = capture(bus)
    bus.close()
    with mmsb.open(path) as reopened:
        if capture(reopened) != final:
            problems.append("mmsb.open recovered a different state than the bus had at close")
        problems += list(reopened.verify().problems)
    ctx.note("verify_problems_first", problems[:5])
    return {"bad_deltas_accepted": accepted, "bad_deltas_logged": logged, "verify_problems": len(problems),
            "epoch_regressions": len(regressed), "epoch_count_mismatches": miscounted}
