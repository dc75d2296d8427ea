"""Validator 8 (invariants) at quick size: no invariant breaks under the random workload; the
validator notices an epoch that goes back and a cycle that is accepted. Also the engine bug the
validator found: a checkpoint restored a page's in-edges in another order, and verify() compared
ordered edge lists, so it reported a problem on a healthy bus (edge lists are now ordered by id)."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from mmsb.validation import validate


def run_invariants() -> dict:
    (result,) = validate(quick=True, only=["invariants"], progress=False)["results"]
    assert result["error"] is None, result["details"].get("traceback")
    return result


def test_no_invariant_is_violated():
    r = run_invariants()
    assert r["metrics"] == {"violations": 0}, r["details"]["first_violations"]
    assert r["passed"]


def test_the_workload_exercises_everything():
    r = run_invariants()
    d = r["details"]
    assert d["cycles"] == 500 and d["reopens"] == 5
    assert d["refusals_checked"]["GraphCycleError"] >= 10 and d["refusals_checked"]["GraphError"] >= 5
    assert d["derived_at_end"] >= 10 and d["edges_at_end"] >= 20


def test_an_epoch_that_goes_back_is_a_violation(monkeypatch):
    real = mmsb.Page.epoch
    reads = {"n": 0}

    def epoch(self):  # page 5 drops back to epoch 0 after a while
        reads["n"] += 1
        return 0 if self.id == 5 and reads["n"] > 20_000 else real.__get__(self)

    monkeypatch.setattr(mmsb.Page, "epoch", property(epoch))
    r = run_invariants()
    assert any("page 5 epoch went back" in v for v in r["details"]["first_violations"])
    assert not r["passed"]


def test_an_accepted_cycle_is_a_violation(monkeypatch):
    real = mmsb.Bus.add_edge

    def swallows_cycles(self, parent, child, kind="control"):
        try:
            real(self, parent, child, kind=kind)
        except mmsb.GraphCycleError:
            pass

    monkeypatch.setattr(mmsb.Bus, "add_edge", swallows_cycles)
    r = run_invariants()
    assert any("closing a cycle: accepted" in v for v in r["details"]["first_violations"])
    assert not r["passed"]


def test_checkpoint_keeps_in_edge_order_and_verify_passes(tmp_path):
    bus = mmsb.Bus(tmp_path / "b")
    a = bus.create_page(data=np.arange(4.0))
    b = bus.create_page(data=np.arange(4.0))
    c = bus.create_page(shape=(4,), dtype="float64")
    bus.add_edge(a, c, kind="control")  # the control parent first,
    bus.depend(c, on=[b], fn=mmsb.ops.copy)  # then the data parent
    order = list(bus.graph.in_edges(c))
    assert bus.verify().problems == []  # passes before the checkpoint
    bus.checkpoint()
    problems = bus.verify().problems
    bus.close()
    with mmsb.open(tmp_path / "b") as again:
        assert list(again.graph.in_edges(3)) == order
        assert again.verify().problems == []
    assert problems == []
