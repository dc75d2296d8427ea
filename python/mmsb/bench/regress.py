"""Regression tracking: `mmsb bench --compare OLD.json` compares this run with an earlier one.

Absolute figures move with the machine (another CPU, a busier host, a slower disk), so a figure of
mmsb is judged the way the README reads it: by its ratio to its anchor measured in the same run.
Figures are matched by (category, name), and each one is judged on one basis:

  ratio      an mmsb figure with an anchor (its `ratio_to`, present in both runs): the change of
             its ratio to the anchor, from their values (best repeats, as the table's ratios: on
             a shared machine noise only slows a repeat down, so the best is the least
             disturbed), oriented so that > 1 means better (a higher rate or a lower latency)
  machine    an mmsb figure with no anchor (or whose anchor one run lacks): its own change,
             divided by the machine drift of its category
  reference  a figure that measures something else (NumPy, SQLite, LMDB, oneTBB, a floor:
             `reference` in the JSON): its change is the machine's drift, reported, never judged

The machine drift of a category is the median change of its reference figures (of every
reference figure in the run when the category has none). The noise band of a judged figure
comes from the old run's samples, robustly: the relative spread of a figure is
1.4826 * MAD / median (one wild repeat does not move it; for normally distributed noise it is the
standard deviation), and

    band       = BAND_SIGMAS x sqrt(spread(figure)^2 + spread(anchor or drift)^2),
                 no less than the noise floor (10%) and no more than BAND_CAP (100%: a change by
                 more than a factor of 2 is always flagged)
    unmeasured = UNMEASURED_BAND (50%) when a side of the ratio has fewer than two samples in the
                 old run (a tick quantile, a quick run of one repeat): no spread to measure
    regression = the judged quantity is worse by a factor of more than 1 + band

An improvement beyond the band is marked as such. A figure is left unjudged (and counted) only
when nothing judges it: no anchor and no reference figure to measure the machine by, a zero
value, or a changed unit. A quick run and a full one measure different workloads: comparing
them is refused (InvalidArgumentError). Figures present in only one run are listed, never
errors; categories the new run did not include are not compared. Runs from different machines
(CPU model, core count or memory) are compared all the same, with a warning.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from numbers import Real
from typing import Iterable, Mapping, Optional, Union

from .._reports import Report
from ..errors import InvalidArgumentError

NOISE_FLOOR = 0.10
BAND_SIGMAS = 3.0
BAND_CAP = 1.0
UNMEASURED_BAND = 0.5
MAD_TO_SIGMA = 1.4826  # MAD of normally distributed values x this = their standard deviation


def load_results(path: Union[str, "os.PathLike[str]"]) -> dict:
    """A results JSON written by `mmsb bench`, checked for the fields comparison and reports
    need; InvalidArgumentError names the file and what is wrong."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(f"cannot read bench results {os.fspath(path)!r}: {e}") from None

    def bad(what: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{os.fspath(path)!r} is not an mmsb bench result: {what}")

    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("mmsb-bench/"):
        raise bad("no 'schema': 'mmsb-bench/N' field")
    if not isinstance(data.get("settings", {}), dict):
        raise bad("'settings' is not an object")
    cats = data.get("categories")
    if not isinstance(cats, dict):
        raise bad("'categories' is not an object")
    for cname, c in cats.items():
        figs = c.get("figures") if isinstance(c, dict) else None
        if not isinstance(figs, list):
            raise bad(f"category {cname!r} has no 'figures' list")
        for i, f in enumerate(figs):
            ok = (isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("unit"), str)
                  and isinstance(f.get("value"), Real) and isinstance(f.get("higher_is_better"), bool)
                  and isinstance(f.get("samples", []), list)
                  and all(isinstance(s, Real) for s in f.get("samples", [])))
            if not ok:
                raise bad(f"figure {i} of category {cname!r} lacks name, unit, a numeric value, "
                          f"higher_is_better or a list of numeric samples: {json.dumps(f)[:120]}")
    return data


def require_same_size(old: Mapping, new_quick: Optional[bool]) -> None:
    """InvalidArgumentError when one run is --quick and the other full (both stated): their
    figures measure different workloads, so no change between them means anything."""
    old_quick = old.get("settings", {}).get("quick")
    if isinstance(old_quick, bool) and isinstance(new_quick, bool) and old_quick != new_quick:
        size = {True: "a --quick run", False: "a full run"}
        raise InvalidArgumentError(f"cannot compare {size[new_quick]} with {size[old_quick]}: they measure "
                                   "different workloads (compare runs of the same size)")


def relative_spread(values: Iterable[float]) -> Optional[float]:
    """1.4826 x MAD / median of `values`; None for fewer than two (no spread measured)."""
    values = list(values)
    if len(values) < 2:
        return None
    med = statistics.median(values)
    if not med:
        return None
    return MAD_TO_SIGMA * statistics.median(abs(v - med) for v in values) / abs(med)


def _goodness(fig: Mapping) -> Optional[float]:
    """The figure's value oriented so that larger is better; None for a zero value."""
    v = fig["value"]
    if not v:
        return None
    return v if fig["higher_is_better"] else 1.0 / v


def _band(spreads: Iterable[Optional[float]], floor: float) -> float:
    spreads = list(spreads)
    if any(s is None for s in spreads):
        return max(floor, UNMEASURED_BAND)
    return min(max(floor, BAND_SIGMAS * math.sqrt(sum(s * s for s in spreads))), max(floor, BAND_CAP))


def _same_kind(a: Mapping, b: Mapping) -> bool:
    return a["unit"] == b["unit"] and a["higher_is_better"] == b["higher_is_better"]


def _machine_drift(old_cats: Mapping, new_cats: Mapping) -> dict[str, list[float]]:
    """category -> the change factors (> 1: faster) of its reference figures found in both runs."""
    drift: dict[str, list[float]] = {}
    for cat, c in new_cats.items():
        old_figs = {f["name"]: f for f in old_cats.get(cat, {}).get("figures", [])}
        for nf in c["figures"]:
            of = old_figs.get(nf["name"])
            if nf.get("reference") and of is not None and _same_kind(of, nf):
                g_old, g_new = _goodness(of), _goodness(nf)
                if g_old and g_new:
                    drift.setdefault(cat, []).append(g_new / g_old)
    return drift


def _machine_changes(old: Mapping, new: Mapping) -> list[str]:
    """'cpu: A vs B' for each of CPU model, core count and memory (GiB) the runs state and differ in."""
    om, nm = old.get("machine", {}), new.get("machine", {})

    def gib(m: Mapping) -> Optional[int]:
        return round(m["memory_bytes"] / 2**30) if m.get("memory_bytes") else None

    pairs = (("cpu", om.get("cpu"), nm.get("cpu")), ("cores", om.get("cores"), nm.get("cores")),
             ("memory GiB", gib(om), gib(nm)))
    return [f"{what}: {a} vs {b}" for what, a, b in pairs if a is not None and b is not None and a != b]


class Comparison(Report):
    """compare(): rows ({category, name, unit, old, new, basis, anchor, factor, change_pct,
    band_pct, verdict}; factor > 1 and change_pct > 0 mean better: the change of what the basis
    judges, or the figure's own for a reference or an unjudged figure; None for a changed unit
    or a zero value), regressions (the rows flagged), machine_drift ({category: median change %
    of its reference figures}), only_old, only_new ((category, name) lists), not_run (categories
    of the old run this one skipped), warnings, noise_floor_pct."""

    def __bool__(self) -> bool:
        """True when nothing regressed."""
        return not self["regressions"]


def compare(old: Mapping, new: Mapping, noise_floor: float = NOISE_FLOOR) -> Comparison:
    """Matches the figures of two results by (category, name) and judges each mmsb figure by its
    in-run ratio to its anchor, or against the machine's drift (see the module docstring).
    InvalidArgumentError when one run is --quick and the other is not."""
    require_same_size(old, new.get("settings", {}).get("quick"))
    rows, only_old, only_new = [], [], []
    new_cats, old_cats = new["categories"], old["categories"]
    drift = _machine_drift(old_cats, new_cats)
    everywhere = [q for qs in drift.values() for q in qs]
    for cat, c in new_cats.items():
        old_figs = {f["name"]: f for f in old_cats.get(cat, {}).get("figures", [])}
        new_figs = {f["name"]: f for f in c["figures"]}
        only_old += [(cat, n) for n in old_figs if n not in new_figs]
        only_new += [(cat, n) for n in new_figs if n not in old_figs]
        machine = drift.get(cat) or everywhere
        for name, nf in new_figs.items():
            of = old_figs.get(name)
            if of is not None:
                rows.append({"category": cat, "name": name, "unit": nf["unit"], "old": of["value"],
                             "new": nf["value"], **_judge(of, nf, old_figs, new_figs, machine, noise_floor)})
    warnings = []
    if changed := _machine_changes(old, new):
        warnings.append(f"the runs are from different machines ({'; '.join(changed)}): absolute values are "
                        "not comparable; mmsb figures are judged by their in-run ratios and the machine drift")
    return Comparison(rows=rows, regressions=[r for r in rows if r["verdict"] == "regression"],
                      machine_drift={cat: 100 * (statistics.median(qs) - 1) for cat, qs in drift.items()},
                      only_old=only_old, only_new=only_new, not_run=[c for c in old_cats if c not in new_cats],
                      warnings=warnings, noise_floor_pct=100 * noise_floor)


def _judge(of: Mapping, nf: Mapping, old_figs: Mapping, new_figs: Mapping, machine: list[float],
           floor: float) -> dict:
    """basis, anchor, factor (> 1: better), change_pct, band_pct and verdict of one matched figure."""
    out = {"basis": None, "anchor": None, "factor": None, "change_pct": None, "band_pct": None}
    if not _same_kind(of, nf):
        return {**out, "verdict": "incomparable"}
    g_old, g_new = _goodness(of), _goodness(nf)
    if not (g_old and g_new):
        return {**out, "verdict": "unjudged"}
    q = g_new / g_old
    if nf.get("reference"):
        return {**out, "basis": "reference", "factor": q, "change_pct": 100 * (q - 1), "verdict": "drift"}
    anchor = nf.get("ratio_to")
    oa, na = old_figs.get(anchor), new_figs.get(anchor)
    if oa is not None and na is not None and _same_kind(oa, nf) and _same_kind(na, nf) \
            and _goodness(oa) and _goodness(na):
        basis, q = "ratio", q / (_goodness(na) / _goodness(oa))
        band = _band((relative_spread(of.get("samples") or []), relative_spread(oa.get("samples") or [])), floor)
    elif machine:
        basis, anchor, q = "machine", None, q / statistics.median(machine)
        band = _band((relative_spread(of.get("samples") or []), relative_spread(machine)), floor)
    else:  # no anchor, and no reference figure in either run to tell the machine's drift by
        return {**out, "factor": q, "change_pct": 100 * (q - 1), "verdict": "unjudged"}
    verdict = "regression" if q * (1 + band) < 1 else "improvement" if q > 1 + band else "same"
    return {"basis": basis, "anchor": anchor, "factor": q, "change_pct": 100 * (q - 1), "band_pct": 100 * band,
            "verdict": verdict}


_FLAGS = {"regression": "REGRESSION", "improvement": "better", "same": "~", "drift": "machine drift",
          "incomparable": "unit changed: not judged", "unjudged": "nothing to judge it by: not judged"}


def format_comparison(cmp: Comparison) -> str:
    """A legend, one line per matched figure (old, new, basis, change factor, band, verdict),
    the machine drift, then the unmatched figures and warnings."""
    from .report import fmt_value

    rows = cmp["rows"]
    w = max([len(f"{r['category']}: {r['name']}") for r in rows] + [6])
    lines = ["change: of the ratio to the in-run anchor (basis 'ratio'), or of the figure over its category's "
             "machine drift ('machine'); > 1x is better. 'reference' rows (NumPy, SQLite, LMDB, oneTBB, floors) "
             "measure the machine: shown, not judged.",
             f"{'figure':<{w}}  {'old':>8}  {'new':>8}  {'basis':<9}  {'change':>7}  {'band':>5}  verdict  (unit)"]
    lines.append("-" * len(lines[-1]))
    for r in rows:
        change = f"{r['factor']:.2f}x" if r["factor"] is not None else "-"
        band = f"{r['band_pct']:.0f}%" if r["band_pct"] is not None else "-"
        lines.append(f"{r['category'] + ': ' + r['name']:<{w}}  {fmt_value(r['old']):>8}  {fmt_value(r['new']):>8}  "
                     f"{r['basis'] or '-':<9}  {change:>7}  {band:>5}  {_FLAGS[r['verdict']]}  ({r['unit']})")
    judged = sum(r["verdict"] in ("regression", "improvement", "same") for r in rows)
    lines.append(f"{len(cmp['regressions'])} regression(s) of {judged} mmsb figure(s) judged, each beyond its noise "
                 f"band (from the old run's median and MAD; floor {cmp['noise_floor_pct']:.0f}%)")
    unjudged = sum(r["verdict"] in ("unjudged", "incomparable") for r in rows)
    if unjudged:  # said in the summary, so that a clean result is not read as all figures checked
        lines.append(f"{unjudged} figure(s) not judged: no anchor and no reference figure to measure the machine "
                     "by, a zero value, or a changed unit")
    if cmp["machine_drift"]:
        lines.append("machine drift (median change of the reference figures; + faster), not counted as "
                     "regressions: " + ", ".join(f"{c} {p:+.0f}%" for c, p in cmp["machine_drift"].items()))
    for label, key in (("only in the old run", "only_old"), ("new in this run", "only_new")):
        if cmp[key]:
            lines.append(f"{label}: " + "; ".join(f"{c}: {n}" for c, n in cmp[key]))
    if cmp["not_run"]:
        lines.append(f"not compared (not run this time): {', '.join(cmp['not_run'])}")
    lines += [f"warning: {w_}" for w_ in cmp["warnings"]]
    return "\n".join(lines)
