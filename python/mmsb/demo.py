"""`mmsb demo`: a narrated tour for a newcomer (pages, deltas, batches, propagation, crash and
recovery, provenance). Every value printed is read back from a bus, and every claim is checked as
the tour goes (against NumPy recomputations, or against what a killed process acknowledged): a ✗
line says what differed, and run_demo returns 1."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from typing import Any, Dict, Optional, TextIO

import numpy as np

from . import Bus, Delta, DeltaBatch, GraphCycleError, InvalidDeltaError, build_info, ops
from . import _demo_steps as steps
from .inspect_cmd import inspect_dir

RECORD_HEADER_BYTES = 24  # docs/format.md, "Record framing"
from . import open as open_bus
from ._demo_steps import Sizes, Tour
from .errors import InvalidArgumentError


def positive_int(text: str) -> int:
    """argparse type for `--rows`: an int that run_demo takes (positive, and not more rows than
    this machine's memory holds), else ArgumentTypeError, whose message argparse prints (its
    message for a ValueError would only say the value is invalid)."""
    value = int(text)  # not an int at all: argparse's "invalid positive_int value" says enough
    try:
        steps.sizes(value, quick=False)
    except InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def run_demo(rows: Optional[int] = None, out: Optional[TextIO] = None, quick: bool = False) -> int:
    """Run the tour, writing to `out` (default stdout). `quick` shrinks every step; `rows` sets
    the number of deltas in the batch step (default 1,000,000, or 50,000 with `quick`). Returns
    0 when every check held, 1 when one failed (each failure is printed where it happened)."""
    size = steps.sizes(rows, quick)
    tour = Tour(out or sys.stdout)
    start = time.perf_counter()
    info = build_info()
    tour.show(f"mmsb {info['version']} ({info['compiler']}, simd={info['simd']}, parallel={info['parallel_backend']}, "
              f"{info['hardware_threads']} hardware threads, cuda devices={info['cuda_devices']})")
    tour.say("   Every value below is read back from a bus; every ✓ is a claim this run has just checked.")
    with Bus() as bus:
        _pages(tour, bus)
        _deltas(tour, bus)
    _batches(tour, size, info["hardware_threads"])
    with Bus() as weather:
        derived = _propagation(tour, weather)
        _crash(tour, size)
        _provenance(tour, weather, derived)
    tour.heading("Where next")
    for cmd, what in (("mmsb validate --quick", "the ten validators (replay, integrity, graph, ...) at CI size"),
                      ("mmsb bench", "mmsb side by side with NumPy, memcpy, SQLite, LMDB and oneTBB"),
                      ("notebooks/", "quickstart, replay and time travel, propagation, performance"),
                      ("docs/api.md", "the whole Python API, with examples that run")):
        tour.show(f"{cmd:<23} {what}")
    return tour.summary(time.perf_counter() - start)


def _pages(tour: Tour, bus: Bus) -> None:
    tour.heading("1. Pages and zero-copy views")
    tour.say("A page is a fixed-size byte buffer, 64-byte aligned, that never moves while it lives. It may\n"
             "be typed (dtype, shape) and named. Views read the page's memory directly: nothing is copied.")
    bus.create_page(shape=(8,), dtype="float32", name="pos")
    bus.create_page(64, name="raw")
    w = bus.create_page(data=np.arange(4.0), name="weights")
    addresses = {p.name: p.view().ctypes.data for p in bus.pages()}
    for p in bus.pages():
        tour.show(f"{p!r}  address % 64 = {addresses[p.name] % 64}")
    tour.check("every page starts on a 64-byte boundary", all(a % 64 == 0 for a in addresses.values()))
    tour.check(f"bus.lsn = {bus.lsn}: one record per page created, plus delta 1 for the data= content "
               f"(weights.epoch = {w.epoch})", bus.lsn == len(bus) + 1 and w.epoch == 1)
    pos = bus.page("pos")
    view, shared = pos.view(), np.from_dlpack(pos)
    tour.show(f"pos.view() -> {view.dtype}{view.shape}, writeable={view.flags.writeable}; "
              f"np.from_dlpack(pos) writeable={shared.flags.writeable}")
    tour.check("the view and the DLPack array share the page's memory",
               np.shares_memory(view, shared) and view.ctypes.data == addresses["pos"])
    mem = bus.memory()
    tour.show(f"bus.memory(): {mem.pages} pages, {mem.data_bytes} data bytes, {mem.total_bytes} bytes in all")
    tour.check("data_bytes is the sum of the page sizes", mem.data_bytes == sum(p.size for p in bus.pages()))


def _deltas(tour: Tour, bus: Bus) -> None:
    tour.heading("2. Deltas and epochs")
    tour.say("Every change is a delta: byte runs and their payload, logged before they touch the page.\n"
             "A page's epoch counts its deltas; the bus lsn counts every record.")
    pos, raw, w = bus.page("pos"), bus.page("raw"), bus.page("weights")
    view, model, lsn0 = pos.view(), np.zeros(8, np.float32), bus.lsn
    pos.write(4, np.float32(1.5).tobytes())
    model[1] = 1.5
    after_first = model.copy()
    with pos.edit() as a:  # a writable staging copy; on exit it is diffed into a delta
        a[5:7] = [2.0, 3.0]
    model[5:7] = [2.0, 3.0]
    mask = np.array([1, 0, 0, 0, 0, 0, 0, 1], bool)
    d = Delta.masked(pos, mask, np.full(8, 9.0, np.float32))
    bus.apply(d)
    model[mask] = 9.0
    tour.show(f"write, edit, masked delta; the view taken before them now reads {view.tolist()}")
    tour.same("the live view equals the same three writes made to a NumPy array", view, model)
    for r in bus.history(pos):
        tour.show(f"history: lsn {r.lsn}  epoch {r.epoch}  {r.source}  runs (offset, length) {r.runs}")
    tour.check(f"three deltas: pos.epoch = {pos.epoch}, bus.lsn {lsn0} -> {bus.lsn}",
               pos.epoch == 3 and bus.lsn == lsn0 + 3)
    tour.same("pos.at(1), the page after its first delta, equals the first write alone", pos.at(1), after_first)
    committed = w.update(np.arange(4.0))
    tour.check(f"update() with identical content commits nothing (returned {committed}, epoch stays {w.epoch})",
               not committed and w.epoch == 1)
    before = (raw.read(0, 64), raw.epoch, bus.lsn)
    try:
        raw.write(60, b"12345678")
        rejected = "not rejected"
    except InvalidDeltaError as e:
        rejected = f"InvalidDeltaError: {e}"
    tour.show(rejected)
    same = before == (raw.read(0, 64), raw.epoch, bus.lsn)
    tour.check(f"an out-of-bounds write is refused; bytes, epoch and lsn unchanged: {same}",
               same and rejected.startswith("InvalidDeltaError"))


def _batches(tour: Tour, size: Sizes, hardware_threads: int) -> None:
    rows, n_pages = size.rows, size.batch_pages
    tour.heading(f"3. Batches: {rows:,} deltas of 64 bytes over {n_pages:,} pages of 4 KiB")
    tour.say("A DeltaBatch is columnar (NumPy arrays of page ids, offsets, lengths, one payload): one log\n"
             "record group, applied in parallel by page with the GIL released. Rates are measured now.")
    rng = np.random.default_rng(7)
    page_index, slots = rng.integers(0, n_pages, rows), rng.integers(0, 64, rows)
    payload = rng.integers(0, 256, (rows, 64), dtype=np.uint8)
    want = steps.batch_reference(n_pages, page_index, slots, payload)
    aimed = np.bincount(page_index, minlength=n_pages)
    for threads in sorted({1, hardware_threads}):
        with Bus(threads=threads) as big:
            pages = [big.create_page(4096) for _ in range(n_pages)]
            ids = np.array([p.id for p in pages], np.uint64)
            batch = DeltaBatch(ids[page_index], slots.astype(np.uint64) * 64, np.full(rows, 64, np.uint64),
                               payload.reshape(-1))
            big.apply_batch(batch)  # the first pass pays the page faults of fresh memory
            t0 = time.perf_counter()
            big.apply_batch(batch)
            dt = time.perf_counter() - t0
            tour.show(f"threads={threads}: {rows / dt / 1e6:6.2f} M deltas/s on the second pass "
                      f"({dt * 1e3:.1f} ms; lsn {big.lsn:,}, {big.stats()['bytes_applied'] / 2**20:.0f} MiB applied)")
            tour.same(f"threads={threads}: every page equals a NumPy last-writer-wins model of the batch",
                      np.stack([p.view() for p in pages]), want)
            tour.same(f"threads={threads}: every epoch = 2 x the deltas aimed at that page (two passes)",
                      [p.epoch for p in pages], 2 * aimed)


_CORRECTION = [0.0, 1.5]  # min_plus weights: added to harbour and valley before taking the minimum
_MEAN = [0.5, 0.5]  # sum_product weights: valley and ridge


def _propagation(tour: Tour, bus: Bus) -> Dict[str, Any]:
    tour.heading("4. Propagation: derived pages, waves, cutoff, cycles")
    tour.say("Derived pages are recomputed from their parents when a parent changes, in topological order,\n"
             "each at most once per wave: semiring kernels in C++, or any Python callable fn(out, *parents).")
    hours = 24
    rng = np.random.default_rng(3)
    base = 2.0 + 3.0 * np.sin(np.linspace(0, 2 * np.pi, hours, endpoint=False))
    harbour, valley, ridge = (bus.create_page(data=base + shift + rng.normal(0, 1, hours), name=n)
                              for n, shift in (("harbour", 1.0), ("valley", 0.0), ("ridge", -0.5)))
    coldest, mean = (bus.create_page(shape=(hours,), dtype="float64", name=n) for n in ("coldest", "mean"))
    frost = bus.create_page(shape=(hours,), dtype="bool", name="frost")
    calls = []

    def below_zero(out: np.ndarray, low: np.ndarray) -> None:
        calls.append(1)
        out[:] = low < 0.0

    bus.depend(coldest, on=[harbour, valley], fn=ops.reduce("min_plus"), weights=_CORRECTION)
    bus.depend(mean, on=[valley, ridge], fn=ops.reduce("sum_product"), weights=_MEAN)
    bus.depend(frost, on=[coldest], fn=below_zero)
    tour.show("coldest = min_plus(harbour + 0.0, valley + 1.5)   mean = sum_product(0.5 valley, 0.5 ridge)")
    tour.show("frost = below_zero(coldest), a Python function")
    tour.show(f"topological order: {[bus.page(i).name for i in bus.graph.topological_order()]}")
    pages = {p.name: p for p in (harbour, valley, ridge, coldest, mean, frost)}

    def recheck() -> None:
        lows = steps.min_plus_reference([harbour.view(), valley.view()], _CORRECTION)
        tour.same("coldest equals NumPy's min(harbour + 0.0, valley + 1.5)", coldest.view(), lows)
        tour.same("mean equals NumPy's 0.5 valley + 0.5 ridge", mean.view(),
                  steps.sum_product_reference([valley.view(), ridge.view()], _MEAN), rtol=1e-12)
        tour.same("frost equals NumPy's coldest < 0", frost.view(), lows < 0.0)

    recheck()

    def wave(what: str, page: Any, hour: int, value: float) -> Dict[str, int]:
        epochs = {n: p.epoch for n, p in pages.items()}
        bus.reset_stats()
        del calls[:]
        page.write(8 * hour, np.float64(value).tobytes())
        st = bus.stats()
        moved = {n: (epochs[n], p.epoch) for n, p in pages.items() if p.epoch != epochs[n]}
        tour.say(f"   {what}: {page.name}[{hour}] = {value:.2f}")
        tour.show("epochs changed: " + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in moved.items()))
        tour.show(f"stats: {', '.join(f'{k}={st[k]}' for k in ('waves', 'recomputes', 'cutoffs', 'derived_deltas'))}, "
                  f"below_zero ran {len(calls)}x")
        return {**{k: st[k] for k in ("recomputes", "cutoffs")}, "moved": sorted(moved)}

    hot = int(np.argmax(coldest.view()))
    w1 = wave("a frost at the warmest hour", harbour, hot, -4.0)
    tour.check("only harbour's descendants were recomputed (coldest, frost); mean and its epoch untouched",
               w1["moved"] == ["coldest", "frost", "harbour"] and w1["recomputes"] == 2, repr(w1))
    recheck()
    slack = harbour.view() - (valley.view() + _CORRECTION[1])
    h = int(np.argmax(slack))  # where harbour is furthest above the corrected valley: not the minimum
    w2 = wave("warmer harbour where valley is the minimum", harbour, h, float(harbour.view()[h]) + 5.0)
    tour.check("cutoff: coldest recomputed to the same bytes, so no delta and frost was not recomputed",
               w2["moved"] == ["harbour"] and w2["recomputes"] == 1 and w2["cutoffs"] == 1, repr(w2))
    edges = bus.graph.validate()["edges"]
    try:
        bus.depend(harbour, on=[frost], fn=lambda out, f: None)
        refused = "not refused"
    except GraphCycleError as e:
        refused = f"GraphCycleError: {e}"
    tour.show(refused)
    after = bus.graph.validate()
    tour.check(f"the cycle was refused and the graph is unchanged ({after['edges']} edges, valid={after['ok']})",
               refused.startswith("GraphCycleError") and after["ok"] and after["edges"] == edges)
    return pages


def _crash(tour: Tour, size: Sizes) -> None:
    tour.heading("5. Crash and recovery, time travel, diff")
    tour.say("A bus with a directory writes every delta to a checksummed log before applying it. A child\n"
             "process commits one delta at a time, printing each acknowledged lsn; it is SIGKILLed mid-run.")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "crash.mmsb")
        run = steps.crash_child(path, size.acks, size.checkpoint_at)
        last = run.acked[-1] if run.acked else 0
        tour.show(f"child pid {run.pid}: {len(run.acked)} commits acknowledged (lsn {run.base_lsn + 1} .. {last}), "
                  f"then SIGKILL; exit status {run.returncode}")
        if not tour.check("the child was killed mid-run, after its acknowledgements",
                          run.returncode == -signal.SIGKILL and len(run.acked) >= size.acks,
                          run.stderr[-500:] or "too few acknowledgements"):
            return
        with open_bus(path) as bus:
            r, counter = bus.recovery, bus.page("counter")
            recovered = bus.lsn
            tour.show(f"mmsb.open: lsn {recovered} = checkpoint at lsn {r['checkpoint_lsn']} "
                      f"+ {r['records_replayed']} log records replayed")
            tour.check(f"recovered lsn {recovered} >= last acknowledged lsn {last}", recovered >= last)
            tour.same(f"recovered state = the child's first {recovered - run.base_lsn} deltas (NumPy model)",
                      counter.view(), steps.counter_reference(recovered - run.base_lsn))
            mid = run.acked[len(run.acked) // 2]
            with bus.at(last) as at_last, bus.at(mid) as at_mid:
                now, then = at_last.page("counter").view(), at_mid.page("counter").view()
                tour.same(f"bus.at({last}) is exactly the state the child acknowledged last", now,
                          steps.counter_reference(last - run.base_lsn))
                tour.show(f"time travel: bus.at({mid}) counter[:4] = {then[:4].tolist()}, "
                          f"bus.at({last}) counter[:4] = {now[:4].tolist()}")
                changed = np.frombuffer(then.tobytes(), np.uint8) != np.frombuffer(now.tobytes(), np.uint8)
            runs = bus.diff(mid, last).get(counter.id, [])
            covered = np.zeros(counter.size, bool)
            for offset, length in runs:
                covered[offset:offset + length] = True
            tour.show(f"bus.diff({mid}, {last}) = {{{counter.id}: {runs[:3]}{' ...' if len(runs) > 3 else ''}}} "
                      f"({int(covered.sum())} of {counter.size} bytes)")
            tour.check(f"the diff covers every one of the {int(changed.sum())} bytes that differ between the two",
                       bool(np.all(covered[changed])))
        tour.say("   A crash can also cut the last write short: cut 5 bytes off the last record and reopen.")
        newest = inspect_dir(path, records=True)["segments"][-1]
        last_record = newest["dump"][-1]  # the record, not the sync mark closing the bus added
        os.truncate(newest["file"], last_record["offset"] + RECORD_HEADER_BYTES + last_record["body_bytes"] - 5)
        with open_bus(path) as torn:
            rec = dict(torn.recovery, tail_reason=torn.recovery["tail_reason"].replace(tmp, "$TMP"))
            tour.show(f"recovery: {rec}")
            tour.check(f"only the torn record is lost: lsn {recovered} -> {torn.lsn}", torn.lsn == recovered - 1)
            tour.same(f"and the state is the child's first {torn.lsn - run.base_lsn} deltas",
                      torn.page("counter").view(), steps.counter_reference(torn.lsn - run.base_lsn))


def _provenance(tour: Tour, bus: Bus, pages: Dict[str, Any]) -> None:
    tour.heading("6. Provenance: where a value came from")
    tour.say("For any (page, epoch) the bus names the delta that produced it and, for a recompute, the\n"
             "parents and the epochs they had, recursively: an index lookup, not a log scan.")
    frost, coldest = pages["frost"], pages["coldest"]
    prov = bus.provenance(frost)
    for line in steps.provenance_tree(prov, lambda pid: bus.page(pid).name):
        tour.show(line)
    root = prov.nodes.get(prov.root)
    tour.check(f"the root is frost at its current epoch {frost.epoch}, made by its last logged delta",
               root is not None and prov.root == (frost.id, frost.epoch) and root.lsn == bus.history(frost)[-1].lsn)
    sensors = {pages[n].id for n in ("harbour", "valley", "ridge")}
    tour.check("every leaf is a user delta to a sensor page",
               all(n.source == "user" and n.page in sensors for n in prov.sources()) and bool(prov.sources()))
    node = next((n for n in prov if n.page == coldest.id), None)
    if tour.check("coldest appears in frost's provenance", node is not None):
        inputs = [bus.page(p).at(e) for p, e in node.inputs]
        tour.same(f"coldest @ epoch {node.epoch} = min_plus of its parents at the epochs provenance names "
                  f"{list(node.inputs)}", coldest.at(node.epoch), steps.min_plus_reference(inputs, _CORRECTION))
    dot = prov.to_dot().splitlines()
    tour.show("prov.to_dot():")
    for line in dot[:5]:
        tour.show("  " + line)
    tour.show(f"  ... {len(dot) - 5} more lines (render with Graphviz: dot -Tsvg)")
