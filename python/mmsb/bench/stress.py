"""Category `stress`: the latency of bus.tick() on a frame-sized workload, tick after tick.

The workload is validator 6's (mmsb.validation.v06_tick.run_ticks, which also checks every
tick's report and, at the end, every source page against a NumPy mirror of the stream and every
derived page against NumPy's reduce of its parents): 10,000 [quick: 1,000] source pages of 4 KiB,
1,000 [100] derived pages (mmsb.ops.reduce over 4 sources, four semirings), 100,000 [10,000]
8-byte deltas submitted per tick, 200 [20] timed ticks after 5 [3] warm-up ones, once on the
default bus (history on: the log kept in memory) and once with mmsb.Bus(history=False).

Figures: p50, p99 and max of the timed ticks' wall time (ms, lower is better), each history-on
figure anchored to its history-off counterpart. The per-tick latencies go into the series (for
the distribution plot), with the tick target of benchmarks_targets.json.
"""

from __future__ import annotations

import numpy as np

from ..validation._framework import load_targets
from ..validation.v06_tick import run_ticks
from ._measure import BenchContext, Figure

SEED = 20261128  # the validators' seed: the same stream `mmsb validate` checks
QUANTILES = {"p50": 50, "p99": 99, "max": 100}


def tick_target_ms() -> float:
    """The p99 tick target (ms) from the packaged benchmarks_targets.json."""
    checks = load_targets()["tick"]["checks"]
    return float(next(c["threshold"] for c in checks if c["metric"] == "tick_p99_ms"))


def run(ctx: BenchContext) -> None:
    """Fills ctx.section with tick latency quantiles (history on and off) and their samples."""
    args = dict(sources=ctx.size(10_000, 1_000), derived=ctx.size(1_000, 100),
                per_tick=ctx.size(100_000, 10_000), warmup=ctx.size(5, 3), ticks=ctx.size(200, 20))
    ctx.section.details.update(args)
    series: dict = {"target_ms": tick_target_ms()}
    for history in (False, True):
        label = "history on" if history else "history off"
        ctx.progress(f"{args['ticks']} ticks, {label}")
        result = run_ticks(SEED, history, **args)
        ms = result["own_ns"] / 1e6
        series[label] = ms.tolist()
        ctx.section.details[f"{label}: mean phase ms"] = result["phase_ms"]
        for q, pct in QUANTILES.items():
            # One figure per quantile of one run of many ticks: its single sample is that quantile.
            anchor = f"tick {q}, history off" if history else None
            ctx.section.add(Figure(f"tick {q}, {label}", "ms", [float(np.percentile(ms, pct))], False,
                                   ratio_to=anchor))
    ctx.section.series["tick_latency_ms"] = series
