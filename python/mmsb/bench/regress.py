"""Regression tracking: `mmsb bench --compare OLD.json` compares this run with an earlier one.

Figures are matched by (category, name). For each pair the change is that of the best value,
relative to the old one, and a regression is flagged when it is worse than the noise band:

    spread(run) = (max(samples) - min(samples)) / best      (0 for a single sample)
    band        = max(noise_floor, spread(old), spread(new))           noise_floor: 10 %
    regression  = the new value is worse than the old by more than `band` (worse: a lower rate
                  or a higher latency, as the figure's higher_is_better says)

so a figure whose repeats scatter widely, in either run, needs a larger change to be flagged,
and none is flagged for less than the floor. An improvement beyond the band is marked as such.
A figure with fewer than two samples in either run (a tick quantile, a quick run of one repeat,
a file that lists none) has no measure of its own noise: it is shown, but not judged, and the
summary counts such figures.
Figures present in only one run are listed, never errors; categories the new run did not
include are not compared.
"""

from __future__ import annotations

import json
import os
from numbers import Real
from typing import Mapping, Union

from .._reports import Report
from ..errors import InvalidArgumentError

NOISE_FLOOR = 0.10


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


def spread(fig: Mapping) -> float:
    """(max - min) / best of the figure's samples: how much its repeats disagreed."""
    samples = fig.get("samples") or [fig["value"]]
    return (max(samples) - min(samples)) / abs(fig["value"]) if fig["value"] else 0.0


class Comparison(Report):
    """compare(): rows ({category, name, unit, old, new, change_pct, band_pct, verdict}),
    regressions (the rows flagged), only_old, only_new ((category, name) lists), not_run
    (categories of the old run this one skipped), warnings."""

    def __bool__(self) -> bool:
        """True when nothing regressed."""
        return not self["regressions"]


def compare(old: Mapping, new: Mapping, noise_floor: float = NOISE_FLOOR) -> Comparison:
    """Matches the figures of two results by (category, name) and flags each change worse than
    its noise band (see the module docstring)."""
    rows, only_old, only_new = [], [], []
    new_cats, old_cats = new["categories"], old["categories"]
    for cat, c in new_cats.items():
        old_figs = {f["name"]: f for f in old_cats.get(cat, {}).get("figures", [])}
        new_figs = {f["name"]: f for f in c["figures"]}
        only_old += [(cat, n) for n in old_figs if n not in new_figs]
        only_new += [(cat, n) for n in new_figs if n not in old_figs]
        for name, nf in new_figs.items():
            of = old_figs.get(name)
            if of is None:
                continue
            change = (nf["value"] - of["value"]) / of["value"] if of["value"] else 0.0
            worse = -change if nf["higher_is_better"] else change
            band = max(noise_floor, spread(of), spread(nf))
            verdict = "regression" if worse > band else "improvement" if -worse > band else "same"
            if min(len(of.get("samples") or []), len(nf.get("samples") or [])) < 2:
                verdict = "unjudged"  # no spread measured (one sample or none): the band would be the floor
            if of["unit"] != nf["unit"] or of["higher_is_better"] != nf["higher_is_better"]:
                verdict = "incomparable"
            rows.append({"category": cat, "name": name, "unit": nf["unit"], "old": of["value"], "new": nf["value"],
                         "change_pct": 100 * change, "band_pct": 100 * band, "verdict": verdict})
    warnings = []
    old_s, new_s = old.get("settings", {}), new.get("settings", {})
    if old_s.get("quick") != new_s.get("quick"):
        warnings.append(f"the runs differ in size (old quick={old_s.get('quick')}, new quick={new_s.get('quick')}): "
                        "their figures measure different workloads")
    if old.get("host") != new.get("host"):
        warnings.append(f"the runs are from different hosts ({old.get('host')} vs {new.get('host')})")
    return Comparison(rows=rows, regressions=[r for r in rows if r["verdict"] == "regression"],
                      only_old=only_old, only_new=only_new, not_run=[c for c in old_cats if c not in new_cats],
                      warnings=warnings, noise_floor_pct=100 * noise_floor)


def format_comparison(cmp: Comparison) -> str:
    """One line per matched figure (old, new, change, band, verdict), then the unmatched ones."""
    from .report import fmt_value

    rows = cmp["rows"]
    w = max([len(f"{r['category']}: {r['name']}") for r in rows] + [6])
    lines = [f"{'figure':<{w}}  {'old':>8}  {'new':>8}  {'change':>8}  {'band':>6}  verdict  (unit)"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        flag = {"regression": "REGRESSION", "improvement": "better", "same": "~", "incomparable": "unit changed",
                "unjudged": "too few samples: not judged"}
        lines.append(f"{r['category'] + ': ' + r['name']:<{w}}  {fmt_value(r['old']):>8}  {fmt_value(r['new']):>8}  "
                     f"{r['change_pct']:>+7.1f}%  {r['band_pct']:>5.0f}%  {flag[r['verdict']]}  ({r['unit']})")
    lines.append(f"{len(cmp['regressions'])} regression(s) beyond the noise band (floor "
                 f"{cmp['noise_floor_pct']:.0f}%, or the repeats' spread in either run when larger)")
    unjudged = sum(r["verdict"] == "unjudged" for r in rows)
    if unjudged:  # said in the summary, so that a clean result is not read as all figures checked
        lines.append(f"{unjudged} of {len(rows)} figure(s) not judged: fewer than 2 samples in a run")
    for label, key in (("only in the old run", "only_old"), ("new in this run", "only_new")):
        if cmp[key]:
            lines.append(f"{label}: " + "; ".join(f"{c}: {n}" for c, n in cmp[key]))
    if cmp["not_run"]:
        lines.append(f"not compared (not run this time): {', '.join(cmp['not_run'])}")
    lines += [f"warning: {w_}" for w_ in cmp["warnings"]]
    return "\n".join(lines)
