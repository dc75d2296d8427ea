"""Validator 7 (memory) at quick size: memory() agrees with the RSS growth within 10%, its total
is the sum of its parts, every page's metadata is accounted, and churn + gc keep every page; a
memory() that under-reports, or that drops metadata, makes it fail; so do a gc() that frees
nothing and one that blocks its caller. The total judged is the fill's (the larger of memory()
and the RSS growth); the churn's, which holds the deleted pages' records, is reported.
Sizes against the packaged targets and GC pauses are reported, never asserted here."""

from __future__ import annotations

import math
import time

import mmsb
from mmsb.validation import v07_memory, validate


def run_memory(targets=None) -> dict:
    report = validate(targets, quick=True, only=["memory"], progress=False)
    (result,) = report["results"]
    return result


def test_memory_is_accounted_and_matches_rss():
    r = run_memory()
    assert r["error"] is None, r["details"].get("traceback")
    m, d = r["metrics"], r["details"]
    assert set(m) == {"total_bytes", "metadata_bytes_per_page", "gc_pause_p99_ms"}
    assert d["pages"] == 50_000
    assert 0.9 <= d["memory_over_rss"] <= 1.1
    assert abs(d["memory_total_bytes"] - d["rss_growth_bytes"]) <= 0.1 * d["rss_growth_bytes"]
    assert d["data_bytes"] == 50_000 * 960
    assert m["total_bytes"] >= 50_000 * (960 + 64)
    assert m["metadata_bytes_per_page"] >= 64  # PageRecord is 64 bytes: at least that is accounted
    assert math.isfinite(m["gc_pause_p99_ms"])  # measured, not judged
    assert 0.9 <= d["history_on_50k_total_bytes"] / d["history_on_50k_rss_growth"] <= 1.1
    assert d["history_on_50k_log_bytes"] >= 50_000 * 960


def test_the_total_is_the_fills_and_the_churn_is_reported():
    r = run_memory()
    assert r["error"] is None, r["details"].get("traceback")
    m, d = r["metrics"], r["details"]
    assert m["total_bytes"] == max(d["memory_total_bytes"], d["rss_growth_bytes"])
    assert d["after_churn_total_bytes_max"] == max(d["after_churn_total_bytes"], d["after_churn_rss_growth_bytes"])
    assert d["memory_total_bytes"] == sum(d[k] for k in v07_memory.PARTS)
    # 20 rounds, each deleting 250 random pages and the cohort of temporary pages
    assert d["after_churn_deleted_pages"] == 20 * (250 + v07_memory.COHORT)
    assert d["after_churn_metadata_bytes_per_live_page"] * 50_000 == (
        d["after_churn_deleted_record_bytes"] + 64 * 50_000)
    assert d["gc_bytes_freed"] >= 20 * v07_memory.SLAB  # every gc() unmapped at least one slab


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


def test_a_gc_that_blocks_its_caller_fails(monkeypatch):
    real = mmsb.Bus.gc

    def slow(self):  # the engine's pause_ns does not see this: only the caller's clock does
        time.sleep(0.010)
        return real(self)

    monkeypatch.setattr(mmsb.Bus, "gc", slow)
    r = run_memory()
    assert r["error"] is None, r["details"].get("traceback")
    assert r["metrics"]["gc_pause_p99_ms"] >= 10
    assert not r["passed"]


def test_a_gc_that_frees_nothing_fails(monkeypatch):
    real = mmsb.Bus.gc

    def idle(self):  # the report of a gc() that found no wholly free slab to unmap
        report = real(self)
        report["bytes_freed"] -= report["arena_bytes_released"]
        report["arena_bytes_released"] = 0
        return report

    monkeypatch.setattr(mmsb.Bus, "gc", idle)
    r = run_memory()
    assert r["error"] is not None and "released no arena bytes" in r["error"], r["error"]
    assert not r["passed"]
