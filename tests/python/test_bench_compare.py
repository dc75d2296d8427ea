"""`mmsb bench --compare` (mmsb.bench.regress) on synthetic results: a real regression is flagged
even where the old run had a wild repeat or a single sample, a uniformly slower machine is
machine drift and no mmsb regression, the band comes from the old run's median and MAD within
its floor and cap, a quick run is never compared with a full one, and machines are told apart by
CPU, cores and memory rather than by host name. Pure Python: nothing is measured here."""

from __future__ import annotations

import copy

import pytest

import mmsb
from mmsb.bench import compare, regress

MACHINE = {"cpu": "AMD EPYC", "cores": 2, "memory_bytes": 25 * 2**30}


def fig(name, samples, *, unit="x/s", higher=True, ratio_to=None, reference=False):
    return {"name": name, "unit": unit, "value": max(samples) if higher else min(samples), "samples": list(samples),
            "higher_is_better": higher, "ratio_to": ratio_to, "reference": reference}


def results(quick=False, machine=MACHINE, host="vm"):
    """A run shaped like `mmsb bench`'s: mmsb figures against references, one wild repeat in
    the old replay figure, single-sample tick quantiles, figures with no anchor."""
    return {"schema": "mmsb-bench/1", "host": host, "settings": {"quick": quick}, "machine": dict(machine),
            "categories": {
                "delta": {"figures": [
                    fig("mmsb apply_batch, 1 thread", [15.3e6, 9.1e6, 14.8e6], ratio_to="numpy slot rows"),
                    fig("numpy slot rows", [19.5e6, 19.0e6, 18.9e6], reference=True),
                    fig("memmove floor", [242e6, 230e6, 236e6], reference=True)]},
                "replay": {"figures": [
                    # one repeat of three 3x slower than the others: a (max - min) spread of 227%
                    fig("mmsb.open: replay the whole log", [72.7, 75.1, 238.0], unit="ms", higher=False,
                        ratio_to="SQLite: read all rows"),
                    fig("bus.checkpoint() of all pages", [84.9, 86.0, 90.2], unit="ms", higher=False),
                    fig("SQLite: read all rows", [1290.0, 1310.0, 1350.0], unit="ms", higher=False, reference=True),
                    fig("LMDB: read all rows", [451.0, 460.0, 470.0], unit="ms", higher=False, reference=True)]},
                "stress": {"figures": [
                    fig("tick p99, history off", [8.53], unit="ms", higher=False),
                    fig("tick p99, history on", [11.4], unit="ms", higher=False, ratio_to="tick p99, history off")]},
            }}


def scaled(run, factor, names=None):
    """`run` with the named figures (all by default) `factor` times faster (< 1: slower)."""
    out = copy.deepcopy(run)
    for c in out["categories"].values():
        for f in c["figures"]:
            if names is None or f["name"] in names:
                k = factor if f["higher_is_better"] else 1 / factor
                f["samples"] = [s * k for s in f["samples"]]
                f["value"] *= k
    return out


def row(cmp, name):
    return next(r for r in cmp["rows"] if r["name"] == name)


def test_threefold_and_tenfold_regressions_are_flagged_despite_a_wild_old_repeat_or_one_sample():
    old = results()
    new = scaled(old, 1 / 3, {"mmsb apply_batch, 1 thread", "mmsb.open: replay the whole log",
                              "bus.checkpoint() of all pages"})
    new = scaled(new, 1 / 10, {"tick p99, history on"})
    cmp = compare(old, new)
    assert {r["name"] for r in cmp["regressions"]} == {
        "mmsb apply_batch, 1 thread", "mmsb.open: replay the whole log", "bus.checkpoint() of all pages",
        "tick p99, history on"}
    assert not cmp
    replay = row(cmp, "mmsb.open: replay the whole log")
    assert replay["basis"] == "ratio" and replay["anchor"] == "SQLite: read all rows"
    assert replay["factor"] == pytest.approx(1 / 3) and replay["band_pct"] < 100
    tick = row(cmp, "tick p99, history on")  # one sample a run: judged by its ratio, with the wide band
    assert tick["basis"] == "ratio" and tick["band_pct"] == pytest.approx(100 * regress.UNMEASURED_BAND)
    assert row(cmp, "bus.checkpoint() of all pages")["basis"] == "machine"  # no anchor: against the drift
    assert "4 regression(s)" in regress.format_comparison(cmp)


def test_a_uniformly_slower_machine_is_machine_drift_not_an_mmsb_regression():
    old = results()
    new = scaled(old, 0.65)  # every figure, references included: every in-run ratio unchanged
    cmp = compare(old, new, noise_floor=0.05)
    assert cmp and cmp["regressions"] == []
    for r in cmp["rows"]:
        if r["basis"] == "reference":
            assert r["verdict"] == "drift" and r["factor"] == pytest.approx(0.65)
        else:
            assert r["verdict"] == "same" and r["factor"] == pytest.approx(1.0), r
    assert cmp["machine_drift"] == pytest.approx({"delta": -35.0, "replay": -35.0})
    text = regress.format_comparison(cmp)
    assert "0 regression(s)" in text and "machine drift" in text and "delta -35%" in text


def test_band_is_three_robust_sigmas_of_the_old_run_within_floor_and_cap():
    def pair(old_samples, new_value, floor=regress.NOISE_FLOOR):
        old = {"settings": {}, "categories": {"c": {"figures": [fig("mmsb f", old_samples, ratio_to="ref"),
                                                               fig("ref", [100.0, 100.0], reference=True)]}}}
        new = {"settings": {}, "categories": {"c": {"figures": [fig("mmsb f", [new_value] * 3, ratio_to="ref"),
                                                               fig("ref", [100.0, 100.0], reference=True)]}}}
        return row(compare(old, new, floor), "mmsb f")

    assert pair([100, 100, 100], 85)["verdict"] == "regression"          # no spread: the 10% floor
    assert pair([100, 100, 100], 85)["band_pct"] == pytest.approx(10)
    assert pair([100, 100, 100], 95)["verdict"] == "same"
    assert pair([100, 100, 100], 95, floor=0.01)["verdict"] == "regression"
    # One wild repeat leaves the median and the MAD alone: the band stays at the floor.
    assert pair([100, 100, 30], 70)["band_pct"] == pytest.approx(10)
    assert pair([100, 100, 30], 70)["verdict"] == "regression"
    # Repeats that really scatter (MAD 20 around 100): 3 x 1.4826 x 0.2 = 89%.
    noisy = pair([100, 80, 120], 70)
    assert noisy["band_pct"] == pytest.approx(300 * regress.MAD_TO_SIGMA * 0.2) and noisy["verdict"] == "same"
    # However noisy, a change by a factor of more than 2 is flagged.
    wild = pair([100, 20, 300], 30)
    assert wild["band_pct"] == pytest.approx(100 * regress.BAND_CAP) and wild["verdict"] == "regression"
    assert pair([100, 100, 100], 130)["verdict"] == "improvement"


def test_a_figure_with_nothing_to_judge_it_by_is_counted_as_unjudged():
    old = {"settings": {}, "categories": {"stress": {"figures": [fig("tick p99, history off", [8.5], unit="ms",
                                                                     higher=False)]}}}
    cmp = compare(old, scaled(old, 1 / 3))  # no anchor, and no reference to measure the machine by
    (r,) = cmp["rows"]
    assert r["verdict"] == "unjudged" and r["basis"] is None and r["factor"] == pytest.approx(1 / 3)
    assert cmp  # not counted as a regression, but said:
    assert "1 figure(s) not judged" in regress.format_comparison(cmp)


def test_a_changed_unit_is_not_judged():
    old = results()
    new = copy.deepcopy(old)
    new["categories"]["delta"]["figures"][0]["unit"] = "rows/s"
    r = row(compare(old, new), "mmsb apply_batch, 1 thread")
    assert r["verdict"] == "incomparable" and r["factor"] is None


@pytest.mark.parametrize("old_quick,new_quick", [(True, False), (False, True)])
def test_quick_and_full_runs_are_not_compared(old_quick, new_quick):
    with pytest.raises(mmsb.InvalidArgumentError, match="cannot compare a .* run with a .* run"):
        compare(results(quick=old_quick), results(quick=new_quick))


def test_machines_are_told_apart_by_cpu_cores_and_memory_not_host_name():
    old = results()
    assert compare(old, results(host="elsewhere"))["warnings"] == []
    (warning,) = compare(old, results(machine=dict(MACHINE, cpu="Intel(R) Xeon(R) Processor")))["warnings"]
    assert "different machines (cpu: AMD EPYC vs Intel(R) Xeon(R) Processor)" in warning
    (warning,) = compare(old, results(machine=dict(MACHINE, cores=16, memory_bytes=128 * 2**30)))["warnings"]
    assert "cores: 2 vs 16" in warning and "memory GiB: 25 vs 128" in warning
