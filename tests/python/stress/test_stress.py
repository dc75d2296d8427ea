"""Soaks at full size (make test-slow): the validators' full workloads, asserting their
correctness figures (speed is measured by `mmsb validate`, not asserted here).

- throughput: 4 rounds of 4.2M 64-byte deltas into each of two logged buses (33.5M) over 16k x
  4 KiB pages, final bytes and epochs checked against the NumPy oracle (the validator raises on
  a mismatch: a lost or repeated delta shows in the epochs);
- invariants: 10k cycles of deltas, edge changes with attempted cycles, deletes, checkpoints and
  reopens, 0 violations;
- stability: 1,000 steps of the 256 x 256 wave simulation, no NaN/Inf, exact replay;
- memory: 1M pages x 960 B, memory() within 10% of RSS (the validator raises otherwise).
"""

from __future__ import annotations

import pytest

import mmsb

pytestmark = pytest.mark.slow


def run_full(name: str) -> dict:
    report = mmsb.validate(only=[name], progress=False)
    result = report["results"][0]
    assert result["error"] is None, result["error"]
    return result["metrics"]


def test_throughput_33m_deltas_match_the_oracle():
    m = run_full("throughput")
    assert m["single_thread_deltas_per_s"] > 0 and m["all_threads_deltas_per_s"] > 0


def test_invariants_10k_cycles():
    assert run_full("invariants")["violations"] == 0


def test_stability_full_run():
    m = run_full("stability")
    assert m["nonfinite_values"] == 0 and m["replay_divergence"] == 0
    assert m["max_relative_error"] <= 0.05 and 1 <= m["error_vs_shocks"] <= 3


def test_memory_1m_pages():
    m = run_full("memory")
    assert m["metadata_bytes_per_page"] <= 64.0 + 1e-9
