"""PNG plots of `mmsb bench` results (matplotlib, Agg backend when writing files).

  throughput vs threads   mmsb apply rate at each thread count of the sweep (history on and
                          off), with the fastest NumPy scatter and the memcpy floors as
                          horizontal anchors (category delta)
  tick latency            the distribution of per-tick wall times (history on and off) as a
                          CDF, with p50 and p99 marked and the tick target line (stress)
  growth curves           drawn by mmsb.bench.growth.plot_growth, when the results hold them

The figure builders take a results dict (from mmsb.bench.run or a JSON file), so plots can be
redrawn from any saved run; they return None when the results lack the category.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

DPI = 100  # keeps each PNG well under 100 KB


def _series(results: Mapping, category: str, key: str) -> Optional[dict]:
    cat = results.get("categories", {}).get(category)
    return cat.get("series", {}).get(key) if cat else None


def throughput_figure(results: Mapping) -> Any:
    """Deltas/s against threads, anchors as horizontal lines; None without delta results."""
    s = _series(results, "delta", "throughput_vs_threads")
    if not s:
        return None
    fig, ax = _axes()
    for label, marker in (("history on", "o"), ("history off", "s")):
        if s.get(label):
            ax.plot(s["threads"], s[label], marker=marker, label=f"mmsb apply_batch, {label}")
    styles = iter(("--", ":", "-."))
    for name, value in s.get("anchors", {}).items():
        ax.axhline(value, linestyle=next(styles, "--"), color="gray", linewidth=1)
        ax.annotate(name, (s["threads"][0], value), textcoords="offset points", xytext=(2, 3), fontsize=7,
                    color="dimgray")
    ax.set_xlabel("threads (mmsb.Bus(threads=N))")
    ax.set_ylabel("deltas/s (64-byte deltas)")
    ax.set_yscale("log")
    ax.set_xticks(s["threads"])
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, ax, f"Batch apply throughput vs threads ({_when(results)})", "best")


def tick_latency_figure(results: Mapping) -> Any:
    """CDF of per-tick latencies with p50/p99 and the target; None without stress results."""
    s = _series(results, "stress", "tick_latency_ms")
    if not s:
        return None
    fig, ax = _axes()
    for label, color in (("history on", "tab:blue"), ("history off", "tab:orange")):
        ms = np.sort(np.asarray(s.get(label, []), dtype=float))
        if not ms.size:
            continue
        ax.step(ms, np.arange(1, ms.size + 1) / ms.size, where="post", color=color, label=f"{label} ({ms.size} ticks)")
        for q, style in ((50, ":"), (99, "--")):
            v = float(np.percentile(ms, q))
            ax.axvline(v, color=color, linestyle=style, linewidth=1)
            ax.annotate(f"p{q} {v:.1f}", (v, 0.05 if q == 50 else 0.15), fontsize=7, color=color,
                        textcoords="offset points", xytext=(2, 0))
    if s.get("target_ms") is not None:
        ax.axvline(s["target_ms"], color="red", linewidth=1.5, label=f"target p99 < {s['target_ms']:g} ms")
    ax.set_xlabel("bus.tick() wall time (ms)")
    ax.set_ylabel("fraction of ticks ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    return _finish(fig, ax, f"Tick latency distribution ({_when(results)})", "lower right")


def _axes() -> tuple[Any, Any]:
    """A figure of the plots' common size and its one axes (no pyplot: no global state)."""
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=(7, 4.2), dpi=DPI)
    return fig, fig.add_subplot()


def _finish(fig: Any, ax: Any, title: str, legend_at: str) -> Any:
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc=legend_at)
    fig.tight_layout()
    return fig


def _when(results: Mapping) -> str:
    size = "quick" if results.get("settings", {}).get("quick") else "full"
    return f"{results.get('host', '?')}, {str(results.get('date', '?'))[:10]}, {size}"


def write_plots(results: Mapping, out_dir: str, prefix: str = "") -> list[str]:
    """Writes every plot the results allow into out_dir as PNG; returns the paths. Raises
    ImportError when matplotlib is not installed (pip install 'mmsb[bench]')."""
    # An Agg canvas per figure, not matplotlib.use(): the process's own backend (a notebook's
    # inline one) stays as it was.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, build in (("throughput-vs-threads", throughput_figure), ("tick-latency", tick_latency_figure)):
        fig = build(results)
        if fig is not None:
            path = os.path.join(out_dir, f"{prefix}{name}.png")
            FigureCanvasAgg(fig).print_png(path)
            paths.append(path)
    if results.get("growth"):
        from .growth import plot_growth

        paths += plot_growth(results["growth"], out_dir)
    return paths
