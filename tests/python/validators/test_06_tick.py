"""Validator 6 (tick) at quick size: it runs and its consistency checks pass (every tick applied
what was submitted, recomputed every derived page, and the end state matches NumPy); a lost
submission, a wrong report or a stray write makes it fail. Latency is reported, never asserted
here."""

from __future__ import annotations

import math

import mmsb
from mmsb.validation import validate


def run_tick() -> dict:
    report = validate(quick=True, only=["tick"], progress=False)
    (result,) = report["results"]
    return result


def test_runs_and_its_consistency_checks_pass():
    r = run_tick()
    assert r["error"] is None, r["details"].get("traceback")
    m, d = r["metrics"], r["details"]
    assert set(m) == {"tick_p99_ms"} and math.isfinite(m["tick_p99_ms"])  # measured, not judged
    assert (d["sources"], d["derived"], d["per_tick"], d["ticks"]) == (1_000, 100, 10_000, 20)
    assert d["bus_latency_tick_count"] == 20  # the bus's own histogram covers the timed ticks
    assert set(d["phase_mean_ms"]) == {"drain", "apply", "propagate", "validate", "gc"}
    assert sorted([d["tick_p50_ms"], m["tick_p99_ms"], d["tick_max_ms"]]) == [d["tick_p50_ms"], m["tick_p99_ms"], d["tick_max_ms"]]  # quantiles of one sample are ordered
    assert math.isfinite(d["history_off_tick_p99_ms"])


def test_a_lost_submission_fails(monkeypatch):
    real = mmsb.Bus.submit
    seen = []

    def drops_the_seventh(self, item, block=True):
        seen.append(1)
        if len(seen) != 7:
            real(self, item, block)

    monkeypatch.setattr(mmsb.Bus, "submit", drops_the_seventh)
    r = run_tick()
    assert r["error"] is not None and "deltas_applied=9000 (want 10000)" in r["error"], r["error"]
    assert not r["passed"]


def test_a_tick_that_skips_a_recompute_fails(monkeypatch):
    real = mmsb.Bus.tick

    def under_reports(self):
        report = real(self)
        report["recomputes"] -= 1
        return report

    monkeypatch.setattr(mmsb.Bus, "tick", under_reports)
    r = run_tick()
    assert r["error"] is not None and "recomputes=99 (want 100)" in r["error"], r["error"]


def test_a_stray_write_to_a_source_page_fails(monkeypatch):
    real = mmsb.Bus.tick
    ticks = []

    def also_writes(self):
        report = real(self)
        ticks.append(1)
        if len(ticks) == 5:
            self.page(1).write(8, b"\x01\x02\x03")
        return report

    monkeypatch.setattr(mmsb.Bus, "tick", also_writes)
    r = run_tick()
    assert r["error"] is not None and "source" in r["error"], r["error"]


def test_a_derived_page_that_disagrees_with_its_parents_fails(monkeypatch):
    real = mmsb.Bus.tick
    ticks = []

    def then_overwrites_a_derived_page(self):
        report = real(self)
        ticks.append(1)
        if len(ticks) == 3 + 20:  # after the last tick of the primary bus: nothing recomputes it
            self.page(1_000 + 1).write(0, b"\x00" * 64)
        return report

    monkeypatch.setattr(mmsb.Bus, "tick", then_overwrites_a_derived_page)
    r = run_tick()
    assert r["error"] is not None and "derived pages [1001]" in r["error"], r["error"]
