"""Validator 9 (stability) at quick size: the simulation stays finite, shocks stay small and the
perturbed run replays exactly; and the validator notices an unstable scheme, shocks that are lost
or amplified, a NaN and a replay that stops one lsn short."""

from __future__ import annotations

import numpy as np

import mmsb
from mmsb.validation import v09_stability, validate


def run_stability() -> dict:
    (result,) = validate(quick=True, only=["stability"], progress=False)["results"]
    assert result["error"] is None, result["details"].get("traceback")
    return result


def test_finite_bounded_and_replayed_exactly():
    r = run_stability()
    m, d = r["metrics"], r["details"]
    assert set(m) == {"nonfinite_values", "max_relative_error", "error_vs_shocks", "replay_divergence"}
    assert m["nonfinite_values"] == 0
    assert 0 < m["max_relative_error"] <= 0.05  # the shocks do show, and stay small
    assert 1 <= m["error_vs_shocks"] <= 3  # carried as they came: neither lost nor grown
    assert m["replay_divergence"] == 0.0
    assert r["passed"]
    assert d["steps"] == 100 and len(d["replayed_lsns"]) == 11


def test_an_unstable_scheme_fails_the_error_bound(monkeypatch):
    monkeypatch.setattr(v09_stability, "COURANT", 0.9)  # beyond the 1/sqrt(2) limit
    r = run_stability()
    assert r["metrics"]["max_relative_error"] > 0.05 and r["metrics"]["error_vs_shocks"] > 3
    assert not r["passed"]


def test_shock_rows_lost_from_the_batch_fail_the_lower_bound(monkeypatch):
    # Each step's batch keeps only its first row (u_next into u): the shocks never reach the state.
    real = mmsb.DeltaBatch

    def first_row_only(ids, offsets, lengths, payload):
        return real(ids[:1], offsets[:1], lengths[:1], payload[:lengths[0]])

    monkeypatch.setattr(mmsb, "DeltaBatch", first_row_only)
    r = run_stability()
    assert r["metrics"]["error_vs_shocks"] < 1 and r["metrics"]["max_relative_error"] <= 0.05
    assert not r["passed"]


def test_shocks_landing_amplified_fail_the_upper_bound(monkeypatch):
    # Kicks four times the size the run means to add (as a row applied twice over would): still
    # far inside max_relative_error's coarse bound, outside error_vs_shocks'.
    real = v09_stability.Run.__init__

    def louder(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.sigma *= 4

    monkeypatch.setattr(v09_stability.Run, "__init__", louder)
    r = run_stability()
    assert r["metrics"]["error_vs_shocks"] > 3 and r["metrics"]["max_relative_error"] <= 0.05
    assert not r["passed"]


def test_a_nan_in_a_derived_page_is_counted(monkeypatch):
    real = v09_stability.laplacian

    def with_a_nan(out, u):
        real(out, u)
        out[3, 4] = np.nan

    monkeypatch.setattr(v09_stability, "laplacian", with_a_nan)
    r = run_stability()
    assert r["metrics"]["nonfinite_values"] > 0
    assert not r["passed"]


def test_a_replay_that_stops_one_lsn_short_is_a_divergence(monkeypatch):
    real = mmsb.replay
    monkeypatch.setattr(mmsb, "replay", lambda path, to=None, **kw: real(path, to=to - 1, **kw))
    r = run_stability()
    assert r["metrics"]["replay_divergence"] > 0
    assert not r["passed"]
