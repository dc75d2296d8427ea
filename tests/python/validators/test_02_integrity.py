"""Validator 2 (integrity) at quick size: every injected bad delta is refused with its error
class before anything is logged, verify() finds nothing, epochs never go back and count the
deltas; and the validator notices an accepted bad delta, a verify() problem, an epoch that goes
back and one that stays monotone but miscounts."""

from __future__ import annotations

import mmsb
from mmsb.validation import v02_integrity, validate


def run_integrity() -> dict:
    (result,) = validate(quick=True, only=["integrity"], progress=False)["results"]
    assert result["error"] is None, result["details"].get("traceback")
    return result


def test_bad_deltas_are_refused_unlogged_and_the_log_verifies():
    r = run_integrity()
    m, d = r["metrics"], r["details"]
    assert m == {"bad_deltas_accepted": 0, "bad_deltas_logged": 0, "verify_problems": 0, "epoch_regressions": 0,
                 "epoch_count_mismatches": 0}
    assert r["passed"]
    assert d["deltas"] == 20_000 and d["injections"] >= 30 and d["injection_failures"] == []
    assert d["verify_records_checked"] > 0


def test_a_bad_delta_that_goes_through_is_counted_as_accepted_and_logged(monkeypatch):
    real = v02_integrity.injections

    def with_a_valid_write_posing_as_bad(bus, path, rng):
        cases, other = real(bus, path, rng)
        page = bus.pages()[0]
        cases.append(("a valid write", mmsb.InvalidDeltaError, lambda: page.write(0, b"ok")))
        return cases, other

    monkeypatch.setattr(v02_integrity, "injections", with_a_valid_write_posing_as_bad)
    r = run_integrity()
    assert r["metrics"]["bad_deltas_accepted"] == 1
    assert r["metrics"]["bad_deltas_logged"] == 1
    assert not r["passed"]


def test_a_verify_problem_is_counted(monkeypatch):
    real = mmsb.Bus.verify

    def finds_one(self):
        report = real(self)
        report["problems"] = list(report["problems"]) + ["injected problem"]
        report["ok"] = False
        return report

    monkeypatch.setattr(mmsb.Bus, "verify", finds_one)
    r = run_integrity()
    assert r["metrics"]["verify_problems"] == 2  # after the run, and after close + open
    assert not r["passed"]


def test_an_epoch_that_goes_back_is_counted(monkeypatch):
    real = mmsb.Page.epoch

    def epoch(self):  # page 3 reports an epoch that shrinks as its real one grows
        e = real.__get__(self)
        return 10 ** 6 - e if self.id == 3 else e

    monkeypatch.setattr(mmsb.Page, "epoch", property(epoch))
    r = run_integrity()
    assert r["metrics"]["epoch_regressions"] == 1
    assert not r["passed"]


def test_a_monotone_epoch_that_miscounts_the_deltas_is_counted(monkeypatch):
    real = mmsb.Page.epoch
    monkeypatch.setattr(mmsb.Page, "epoch", property(lambda self: real.__get__(self) // 2))
    r = run_integrity()
    assert r["metrics"]["epoch_regressions"] == 0  # never goes back: only the count can tell
    assert r["metrics"]["epoch_count_mismatches"] > 0
    assert not r["passed"]
