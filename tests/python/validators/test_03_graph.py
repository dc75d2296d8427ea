"""Validator 3 (graph) at quick size: every cycle-closing edge is refused and changes nothing,
and the validator notices when add_edge accepts a cycle or changes the bus while refusing one.
Speed figures are reported, never asserted here."""

from __future__ import annotations

import math

import mmsb
from mmsb.validation import validate


def run_graph() -> dict:
    report = validate(quick=True, only=["graph"], progress=False)
    (result,) = report["results"]
    return result


def test_every_cycle_is_rejected_and_the_graph_is_as_built():
    r = run_graph()
    assert r["error"] is None, r["details"].get("traceback")
    m, d = r["metrics"], r["details"]
    assert set(m) == {"validate_ms_per_10k_pages", "page_op_ms_p99", "cycles_accepted"}
    assert m["cycles_accepted"] == 0
    assert next(c for c in r["checks"] if c["metric"] == "cycles_accepted")["passed"]
    assert d["pages"] == 1_000 and 3_000 <= d["edges"] <= 5_000  # ~4 edges a page
    assert d["cycle_attempts"] == 300
    assert d["cycle_path_length_max"] >= 5  # not only self-loops and single edges
    assert math.isfinite(m["validate_ms_per_10k_pages"]) and math.isfinite(m["page_op_ms_p99"])  # measured, not judged


def test_an_add_edge_that_accepts_cycles_is_counted(monkeypatch):
    real = mmsb.Bus.add_edge

    def accepts_cycles(self, parent, child, kind="control"):
        try:
            real(self, parent, child, kind=kind)
        except mmsb.GraphCycleError:
            pass  # silently "accepted"

    monkeypatch.setattr(mmsb.Bus, "add_edge", accepts_cycles)
    r = run_graph()
    assert r["error"] is None, r["details"].get("traceback")
    assert r["metrics"]["cycles_accepted"] == r["details"]["cycle_attempts"] == 300
    assert not r["passed"]


def test_a_refusal_that_changes_the_bus_is_counted(monkeypatch):
    real = mmsb.Bus.add_edge
    refusals = []

    def refuses_but_touches(self, parent, child, kind="control"):
        try:
            real(self, parent, child, kind=kind)
        except mmsb.GraphCycleError:
            refusals.append(1)
            if len(refusals) % 3 == 0:
                self.create_page(8)  # a change (lsn moves) before the error reaches the caller
            raise

    monkeypatch.setattr(mmsb.Bus, "add_edge", refuses_but_touches)
    r = run_graph()
    assert r["error"] is None, r["details"].get("traceback")
    assert len(refusals) == 300
    assert r["metrics"]["cycles_accepted"] == 100
    assert not r["passed"]
