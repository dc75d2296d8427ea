"""Validator 7 (memory) at quick size: memory() agrees with the RSS growth within 10%, its total
is the sum of its parts, every page's metadata is accounted, and churn + gc keep every page; a
memory() that under-reports, or that drops metadata, makes it fail. Sizes against the targets
and GC pauses are reported, never asserted here."""

from __future__ import annotations

import math

import mmsb
from mmsb.validation import validate


def run_memory() -> dict:
    report = validate(quick=True, only=["memory"], progress=False)
    (result,) = report["results"]
    return result


def test_memory_is_accounted_and_matches_rss():
    r = run_memory()
    assert r["error"] is None, r["details"].get("traceback")
    m, d = r["metrics"], r["details"]
    assert set(m) == {"total_bytes", "metadata_bytes_per_page", "gc_pause_p99_ms"}
    assert d["pages"] == 50_000
    assert 0.9 <= d["memory_over_rss"] <= 1.1
    assert abs(m["total_bytes"] - d["rss_growth_bytes"]) <= 0.1 * d["rss_growth_bytes"]
    assert d["data_bytes"] == 50_000 * 960
    assert m["total_bytes"] >= 50_000 * (960 + 64)
    assert m["metadata_bytes_per_page"] >= 64  # PageRecord is 64 bytes: at least that is accounted
    assert math.isfinite(m["gc_pause_p99_ms"])  # measured, not judged
    assert 0.9 <= d["history_on_50k_total_bytes"] / d["history_on_50k_rss_growth"] <= 1.1
    assert d["history_on_50k_log_bytes"] >= 50_000 * 960


def test_an_under_reporting_memory_fails(monkeypatch):
    real = mmsb.Bus.memory

    def under_reports(self):
        report = real(self)
        report["data_bytes"] //= 2
        report["total_bytes"] -= report["data_bytes"]
        return report

    monkeypatch.setattr(mmsb.Bus, "memory", under_reports)
    r = run_memory()
    assert r["error"] is not None and "RSS grew" in r["error"] and "more than 10% apart" in r["error"], r["error"]
    assert not r["passed"]


def test_unaccounted_metadata_fails(monkeypatch):
    real = mmsb.Bus.memory

    def drops_metadata(self):
        # Half the metadata counted as cache instead: the total (and so the RSS cross-check, which
        # is tested above and can sit close to its 10% edge on a fragmented heap) stays right, so
        # only the per-page metadata check can catch it.
        report = real(self)
        hidden = report["metadata_bytes"] // 2
        report["metadata_bytes"] -= hidden
        report["cache_bytes"] += hidden
        return report

    monkeypatch.setattr(mmsb.Bus, "memory", drops_metadata)
    r = run_memory()
    assert r["error"] is not None and "metadata bytes" in r["error"], r["error"]


def test_a_total_that_is_not_its_parts_fails(monkeypatch):
    real = mmsb.Bus.memory

    def inconsistent(self):
        report = real(self)
        report["cache_bytes"] += 4096
        return report

    monkeypatch.setattr(mmsb.Bus, "memory", inconsistent)
    r = run_memory()
    assert r["error"] is not None and "not the sum of its parts" in r["error"], r["error"]
