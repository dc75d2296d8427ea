"""Validator 10 (provenance) at quick size: every answer is the expected DAG and respects the
depth limit; and the validator notices answers that go one hop too deep or stop one hop short,
and a default limit other than 32 (in the timed queries and on a chain deeper than 32).
Resolve time is reported, never asserted here."""

from __future__ import annotations

import math

import pytest

import mmsb
from mmsb.validation import validate


def run_provenance() -> dict:
    (result,) = validate(quick=True, only=["provenance"], progress=False)["results"]
    assert result["error"] is None, result["details"].get("traceback")
    return result


def test_answers_are_right_and_within_the_depth_limit():
    r = run_provenance()
    m, d = r["metrics"], r["details"]
    assert set(m) == {"resolve_ms_p99", "depth_limit_violations", "wrong_answers"}
    assert m["depth_limit_violations"] == 0
    assert m["wrong_answers"] == 0
    assert d["first_failures"] == [] and d["log_disagreements"] == []
    assert d["queries_checked"] > 100
    assert d["nodes_in_deepest_fan_in_answer"] > 32  # a real fan-in DAG, not a chain
    assert d["default_limit_chain_depth"] == 32
    assert math.isfinite(m["resolve_ms_p99"])  # measured; speed is not asserted in tests


@pytest.mark.parametrize("shift", [1, -1])
def test_an_answer_off_by_one_hop_is_counted(monkeypatch, shift):
    real = mmsb.Bus.provenance

    def off_by_one(self, page, epoch=None, max_depth=32):
        return real(self, page, epoch, max(0, max_depth + shift))

    monkeypatch.setattr(mmsb.Bus, "provenance", off_by_one)
    r = run_provenance()
    assert r["metrics"]["depth_limit_violations"] > 0
    assert r["metrics"]["wrong_answers"] > 0
    assert not r["passed"]


@pytest.mark.parametrize("default", [0, 10**9])
def test_a_default_limit_other_than_32_is_counted(monkeypatch, default):
    real = mmsb.Bus.provenance
    unset = object()

    def other_default(self, page, epoch=None, max_depth=unset):
        return real(self, page, epoch, default if max_depth is unset else max_depth)

    monkeypatch.setattr(mmsb.Bus, "provenance", other_default)
    r = run_provenance()
    assert r["metrics"]["depth_limit_violations"] > 0
    assert r["metrics"]["wrong_answers"] > 0
    assert not r["passed"]
