"""Tables of `mmsb bench` results: the terminal table, and the Markdown table of the README.

    python -m mmsb.bench.report --markdown RESULTS.json     # the README's performance table
    python -m mmsb.bench.report RESULTS.json                # the terminal table again
"""

from __future__ import annotations

import argparse
import sys
from typing import Mapping, Optional, Sequence

_SUFFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"))


def fmt_value(v: float) -> str:
    """Three significant digits, with k/M/G for large values: 5.21M, 160k, 49.8, 0.0123."""
    for scale, suffix in _SUFFIXES:
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def fmt_ratio(fig: Mapping) -> str:
    """'0.94× numpy slot rows; 0.10× C++ floor' (> 1: better than that anchor), or ''."""
    if fig.get("ratio_to") is None:
        return ""
    parts = [(fig["ratio_to"], fig["ratio"])] + [(a["ratio_to"], a["ratio"]) for a in fig.get("also", [])]
    return "; ".join(f"{r:.3g}× {name}" for name, r in parts)


def _rows(results: Mapping) -> list[tuple[str, str, str, str, str]]:
    return [(cat, f["name"], fmt_value(f["value"]), f["unit"], fmt_ratio(f))
            for cat, c in results["categories"].items() for f in c["figures"]]


def _notes(results: Mapping) -> list[str]:
    out = []
    for cat, c in results["categories"].items():
        for s in c.get("skipped", []):
            out.append(f"{cat}: skipped {s['what']}: {s['reason']}")
        if c.get("curves"):
            out.append(f"{cat}: {len(c['curves'])} curves ({', '.join(c['curves'])}), in the JSON and as PNG plots")
        if c.get("status") == "failed":
            error = str(c.get("error") or "no error recorded").splitlines() or [""]
            out.append(f"{cat}: FAILED: {error[0]}")
    return out


def format_table(results: Mapping) -> str:
    """Category, figure, value (best repeat), unit and ratio against the anchor(s), one row per
    figure, then what was skipped or failed. Ratios > 1 mean better than the anchor."""
    rows = _rows(results)
    head = ("category", "figure", "value", "unit", "ratio vs anchor (> 1: better)")
    w = [max([len(head[i])] + [len(r[i]) for r in rows]) for i in range(4)]
    lines = [f"{head[0]:<{w[0]}}  {head[1]:<{w[1]}}  {head[2]:>{w[2]}}  {head[3]:<{w[3]}}  {head[4]}"]
    lines.append("-" * len(lines[0]))
    lines += [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {r[3]:<{w[3]}}  {r[4]}" for r in rows]
    return "\n".join(lines + _notes(results))


def _machine_line(results: Mapping) -> str:
    m, b = results.get("machine", {}), results.get("build_info", {})
    mem = m.get("memory_bytes")
    parts = [m.get("cpu", "?"), f"{m.get('cores', '?')} cores"]
    if mem:
        parts.append(f"{mem / 2**30:.0f} GiB")
    parts.append(m.get("platform", "?"))
    build = ", ".join(f"{k} {b[k]}" for k in ("version", "simd", "parallel_backend") if b.get(k) is not None)
    load = m.get("load_average_start")
    loadtxt = f"; load average at start {load[0]:.2f}" if load else ""
    return f"{'; '.join(parts)}; mmsb {build}{loadtxt}"


def _versions_line(results: Mapping) -> str:
    """'commit abc1234; NumPy 2.4.6, oneTBB 2021.8, ...' from what the results recorded."""
    names = {"numpy": "NumPy", "onetbb": "oneTBB", "pybind11": "pybind11", "google_benchmark": "Google Benchmark",
             "sqlite": "SQLite", "lmdb": "LMDB"}
    v = results.get("versions", {})
    known = ", ".join(f"{label} {v[k]}" for k, label in names.items() if v.get(k))
    commit = results.get("git_commit")
    return "; ".join(p for p in (f"commit {commit[:12]}" if commit else "", known) if p)


def markdown(results: Mapping) -> str:
    """The README performance table: date, machine, versions, settings, then one row per figure."""
    s = results.get("settings", {})
    versions = _versions_line(results)
    lines = [
        f"Measured {results.get('date', '?')} on `{results.get('host', '?')}`: {_machine_line(results)}"
        + (f"; {versions}." if versions else "."),
        f"{'Quick' if s.get('quick') else 'Full'} run, thread sweep {s.get('threads')}; value = best of the "
        f"repeats; ratio > 1 means better than the anchor named (a higher rate or a lower latency).",
        "",
        "| category | figure | value | unit | vs anchor |",
        "|---|---|---:|---|---|",
    ]
    lines += [f"| {r[0]} | {r[1].replace('|', '/')} | {r[2]} | {r[3]} | {r[4].replace('|', '/')} |"
              for r in _rows(results)]
    notes = _notes(results)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmsb.bench.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a JSON file written by `mmsb bench`")
    ap.add_argument("--markdown", action="store_true", help="the README's Markdown table")
    args = ap.parse_args(argv)
    from ..errors import MmsbError
    from .regress import load_results

    try:
        results = load_results(args.results)
    except MmsbError as e:
        print(f"mmsb bench report: {e}", file=sys.stderr)
        return 2
    print(markdown(results) if args.markdown else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
