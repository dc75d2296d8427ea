"""Validator 4 (purity) at quick size: the laws hold, recomputes are deterministic and have no
side effects; and each metric counts what it claims when the workload is given an impure
callable, a nondeterministic one, or a law that does not hold."""

from __future__ import annotations

import itertools

import numpy as np

import mmsb
from mmsb.validation import v04_purity, validate


def run_purity() -> dict:
    report = validate(quick=True, only=["purity"], progress=False)
    (result,) = report["results"]
    return result


def test_laws_hold_and_recomputes_are_pure():
    r = run_purity()
    assert r["error"] is None, r["details"].get("traceback")
    m, d = r["metrics"], r["details"]
    assert m == {"law_failures": 0, "side_effects": 0, "nondeterministic": 0}
    assert r["passed"]
    assert d["engine_law_checks"] > 0 and d["engine_law_violations"] == []
    combos = [(s, dt) for s in mmsb.Semiring.NAMES for dt in v04_purity.DTYPES if getattr(mmsb.Semiring, s).supports(dt)]
    assert len(combos) == 22
    # 7 comparisons per semiring x dtype; copy for 5 dtypes; every sample callable
    assert d["law_comparisons"] == 7 * len(combos)
    assert d["result_comparisons"] == 5 + len(v04_purity.SAMPLE_CALLABLES)
    assert d["recomputes_probed"] == d["derived_pages"] > 7 * len(combos)
    assert d["recomputes_run"] >= 4 * d["derived_pages"]  # every round recomputed everything


def sneaky(out, x):
    """Mutates its input whenever it is handed a writable one (the purity probe's copies)."""
    out[:] = x * 2
    if x.flags.writeable:
        x[0] += 1.0


def test_a_callable_that_mutates_its_input_is_a_side_effect(monkeypatch):
    monkeypatch.setattr(v04_purity, "SAMPLE_CALLABLES", v04_purity.SAMPLE_CALLABLES + [("sneaky", "float64", 1, sneaky)])
    r = run_purity()
    assert r["error"] is None, r["details"].get("traceback")
    assert r["metrics"] == {"law_failures": 0, "side_effects": 1, "nondeterministic": 0}
    assert r["details"]["side_effect_recomputes"] == ["callable sneaky"]
    assert not r["passed"]


def test_a_nondeterministic_callable_is_counted(monkeypatch):
    counter = itertools.count()

    def flaky(out, x):
        out[:] = x + next(counter)

    monkeypatch.setattr(v04_purity, "SAMPLE_CALLABLES", v04_purity.SAMPLE_CALLABLES + [("flaky", "float64", 1, flaky)])
    r = run_purity()
    assert r["error"] is None, r["details"].get("traceback")
    assert r["metrics"] == {"law_failures": 0, "side_effects": 0, "nondeterministic": 1}
    assert r["details"]["nondeterministic_recomputes"] == ["callable flaky"]
    assert not r["passed"]


def test_a_broken_law_is_counted(monkeypatch):
    real = mmsb.Semiring.check_laws

    def one_violation(self, dtype, samples=1000, seed=0):
        checks, bad = real(self, dtype, samples, seed)
        if self.name == "max_min" and np.dtype(dtype) == np.int64:
            bad = bad + ["associativity of ⊕ failed on (1, 2, 3)"]
        return checks, bad

    monkeypatch.setattr(mmsb.Semiring, "check_laws", one_violation)
    r = run_purity()
    assert r["metrics"]["law_failures"] == 1
    assert not r["passed"]


def test_a_kernel_that_disagrees_with_the_definition_is_counted(monkeypatch):
    real = v04_purity._expected

    def off_by_one_for_min_plus(sr, dt, parents, weights):
        want = real(sr, dt, parents, weights)
        return want + 1 if sr.name == "min_plus" else want  # as if the kernel were wrong

    monkeypatch.setattr(v04_purity, "_expected", off_by_one_for_min_plus)
    r = run_purity()
    assert r["error"] is None
    assert r["metrics"]["law_failures"] == 4  # min_plus over int32, int64, float32, float64
    assert r["details"]["failed_laws"] == [f"min_plus/{dt} definition" for dt in ("float32", "float64", "int32", "int64")]
    assert not r["passed"]
