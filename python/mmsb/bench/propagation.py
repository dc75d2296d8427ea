"""Category `propagation`: a write and the eager wave it starts (DESIGN §1 Propagation).

  C++      benchmarks/cpp/bench_propagation (its header says what each row does and how fair the
           comparison is): the mmsb wave against tbb::flow::graph (1 and 2 threads) and a plain
           topological loop (with and without change detection), on a hop (root -> 1 copy), a
           chain of 10 copies and a 10,000-page DAG of sum reductions; the same mmsb wave with
           history off (no record encoded or kept: what keeping the wave's record costs); and the
           mmsb wave's scheduling alone (Wave batches, no recompute), set against the whole mmsb
           wave on the same DAG (how many times faster than the wave it is: the inverse is the
           share of a wave spent scheduling). It has no oneTBB ratio: every oneTBB row runs its
           nodes' work, and no row times oneTBB's scheduling with empty bodies. Run with
           --benchmark_format=json when the binary is built (else skipped, with the reason); it
           checks its own results and reports an error row if a wave was wrong, which fails the
           run here. Figures: waves/s (one write + its whole wave per iteration).
  Python   in this process: the same hop and chain, each child a Python callable
           fn(out, x): np.copyto(out, x) or the built-in mmsb.ops.copy, against a plain Python
           topological recompute written as tightly as NumPy allows (np.copyto over precomputed
           (destination, source) pairs in topological order): the floor for Python callables.
           Checked: every write started one wave that recomputed every derived page once
           (stats), and every page ends holding the last value written.
"""

from __future__ import annotations

import re
import warnings

import numpy as np

import mmsb

from . import _cpp
from ._measure import BenchContext, Figure, rate, timed, verify

UNIT = "waves/s"
CPP_FILTER = "^(Mmsb/wave|MmsbNoHistory/wave|MmsbWriteOnly|MmsbSchedule/wave|Tbb/wave|Plain/wave|PlainDiff/wave)"
PAGE_SHAPE = (8,)  # 64 bytes of float64, as in the C++ benchmark


# ---- C++: mmsb vs oneTBB flow graph vs plain loops ---------------------------------------------

def _cpp_name(run: dict) -> str:
    fam, label = _cpp.family(run), run.get("label", "")
    if fam.startswith("MmsbWriteOnly"):
        return "mmsb write without dependents (C++)"
    if fam.startswith("MmsbSchedule/"):
        return f"{label}: mmsb wave, scheduling alone (C++)"
    if fam.startswith("MmsbNoHistory/"):
        return f"{label}: mmsb wave, history off (C++)"
    if fam.startswith("Mmsb/"):
        return f"{label}: mmsb wave (C++)"
    if fam.startswith("Tbb/"):
        threads = int(re.search(r"threads:(\d+)", fam).group(1))
        return f"{label}: oneTBB flow graph, {threads} thread{'s' if threads > 1 else ''}"
    if fam.startswith("PlainDiff/"):
        return f"{label}: plain loop + change detection"
    return f"{label}: plain topological loop"


def _cpp_figure(run: dict, samples: list[float], names: list[str]) -> Figure:
    """The figure of one C++ benchmark, anchored by what the benchmark does (never by a match on
    its name): a whole mmsb wave (history on or off) to oneTBB and the plain loop with change
    detection, which do the same work per node; the scheduling alone to the whole mmsb wave, as
    no oneTBB row runs without node bodies; oneTBB and the plain loops are references."""
    fam, label, name = _cpp.family(run), run.get("label", ""), _cpp_name(run)
    if fam.startswith("MmsbWriteOnly"):
        return Figure(name, "writes/s", samples)
    if fam.startswith("MmsbSchedule/"):
        return Figure(name, UNIT, samples, ratio_to=f"{label}: mmsb wave (C++)")
    if fam.startswith(("Mmsb/", "MmsbNoHistory/")):
        tbb = sorted(n for n in names if n.startswith(f"{label}: oneTBB"))
        return Figure(name, UNIT, samples, ratio_to=tbb[0] if tbb else None,
                      also=(*tbb[1:], f"{label}: plain loop + change detection"))
    return Figure(name, UNIT, samples, reference=True)


def _cpp_part(ctx: BenchContext) -> None:
    what = "mmsb vs oneTBB flow graph (bench_propagation)"
    ctx.progress(what)
    try:
        runs, path, context = _cpp.run_gbench("bench_propagation", CPP_FILTER, ctx.size(0.2, 0.02), ctx.size(3, 1))
    except _cpp.BinaryUnavailable as e:
        ctx.section.skip(what, str(e))
        return
    _cpp.note_version(ctx.versions, context)
    figures: dict[str, tuple[dict, list[float]]] = {}
    for reps in _cpp.group_runs(runs).values():
        figures.setdefault(_cpp_name(reps[0]), (reps[0], []))[1].extend(1e9 / _cpp.real_time_ns(r) for r in reps)
    for run, samples in figures.values():
        ctx.section.add(_cpp_figure(run, samples, list(figures)))
    ctx.section.details["cpp"] = _cpp.describe(path)
    if ctx.section.details["cpp"]["predates_extension"]:
        warnings.warn(f"{path} was built before the mmsb extension in use: its mmsb figures may measure an "
                      "older engine (make bench rebuilds it)", RuntimeWarning, stacklevel=2)


# ---- Python: callables vs a plain Python topological recompute ----------------------------------

def _copy(out: np.ndarray, x: np.ndarray) -> None:
    np.copyto(out, x)


def _values(ops: int, repeats: int) -> list[list[float]]:
    """The values written in each run (warm-up first). Consecutive writes always differ, also
    across runs, so every recompute changes its page: no cutoff, no memo skip."""
    return [[float(k * ops + i) for i in range(ops)] for k in range(1, 2 + repeats)]


def _mmsb_chain(ops: int, repeats: int, hops: int, fn) -> list[float]:
    """Seconds per run of `ops` writes into the root of a chain of `hops` derived pages."""
    bus = mmsb.Bus(threads=1)
    try:
        pages = [bus.create_page(shape=PAGE_SHAPE, dtype="float64") for _ in range(hops + 1)]
        if fn is not None:
            for parent, child in zip(pages, pages[1:]):
                bus.depend(child, on=[parent], fn=fn)
        root = pages[0]
        bus.reset_stats()
        values = _values(ops, repeats)
        runs = iter([[np.float64(v).tobytes() for v in run] for run in values])
        write = root.write

        def writes() -> None:
            for data in next(runs):
                write(0, data)

        seconds = timed(writes, repeats)
        s, last = bus.stats(), values[-1][-1]
        derived = hops if fn is not None else 0
        total = ops * (1 + repeats)
        verify(root.epoch == total, f"chain of {hops}: root epoch {root.epoch}, expected {total}")
        verify(s["waves"] == (total if derived else 0) and s["recomputes"] == total * derived
               and s["cutoffs"] == 0 and s["memo_skips"] == 0,
               f"chain of {hops}: stats {dict(s)} do not show one wave recomputing every page per write")
        want = np.zeros(8)
        want[0] = last
        for p in pages[:1 + derived]:
            verify(np.array_equal(p.view(), want), f"chain of {hops}: page {p.id} does not hold the last value")
        return seconds
    finally:
        bus.close()


def _plain_chain(ops: int, repeats: int, hops: int) -> list[float]:
    """The same waves as NumPy arrays, as a NumPy user would write them: a write into the root,
    then np.copyto over (destination, source) pairs fixed beforehand in topological order, with
    nothing else (no lookup, no diff, epochs or undo)."""
    arrays = [np.zeros(PAGE_SHAPE) for _ in range(hops + 1)]
    pairs = list(zip(arrays[1:], arrays[:-1]))
    root, copyto = arrays[0], np.copyto
    values = _values(ops, repeats)
    runs = iter(values)

    def waves() -> None:
        for value in next(runs):
            root[0] = value
            for dst, src in pairs:
                copyto(dst, src)

    seconds = timed(waves, repeats)
    want = np.zeros(8)
    want[0] = values[-1][-1]
    verify(all(np.array_equal(a, want) for a in arrays), f"plain chain of {hops}: a page misses the last value")
    return seconds


def _python_part(ctx: BenchContext) -> None:
    ops, repeats = ctx.size(20_000, 2_000), ctx.size(5, 3)
    ctx.section.details.update(python_writes_per_run=ops, python_timed_runs=repeats)
    ctx.progress("Python callables vs a plain Python loop")
    ctx.section.add(rate("python: mmsb write without dependents", "writes/s", ops,
                         _mmsb_chain(ops, repeats, 0, None)))
    for hops, label in ((1, "hop"), (10, "chain10")):
        plain = f"python {label}: plain NumPy topological loop"
        for fn, what in ((_copy, "callable np.copyto"), (mmsb.ops.copy, "ops.copy")):
            ctx.section.add(rate(f"python {label}: mmsb {what}", UNIT, ops, _mmsb_chain(ops, repeats, hops, fn),
                                 ratio_to=plain))
        ctx.section.add(rate(plain, UNIT, ops, _plain_chain(ops, repeats, hops), reference=True))


def run(ctx: BenchContext) -> None:
    """Fills ctx.section with the C++ comparison (when built) and the Python-callable figures."""
    _cpp_part(ctx)
    _python_part(ctx)
