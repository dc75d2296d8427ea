"""Validator 5 (throughput) at quick size: it runs, the bytes and epochs it checks match its
oracle and the log was written; a wrong byte or a wrong epoch makes it fail. Rates are reported,
never asserted here."""

from __future__ import annotations

import numpy as np

import mmsb
from mmsb.validation import v05_throughput, validate


def run_throughput() -> dict:
    report = validate(quick=True, only=["throughput"], progress=False)
    (result,) = report["results"]
    return result


def test_runs_and_its_consistency_checks_pass():
    r = run_throughput()
    assert r["error"] is None, r["details"].get("traceback")
    m, d = r["metrics"], r["details"]
    assert set(m) == {"single_thread_deltas_per_s", "all_threads_deltas_per_s"}
    assert m["single_thread_deltas_per_s"] > 0 and m["all_threads_deltas_per_s"] > 0
    assert d["rows_per_run"] == 1 << 18 and d["batch_rows"] == 65_536
    assert d["single_thread_bus_threads"] == 1
    assert d["all_threads_bus_threads"] == d["cpu_count"]
    for label in ("single_thread", "all_threads"):
        assert d[f"{label}_log_bytes_per_delta"] >= 64  # every delta's payload reached the log on disk


def test_the_oracle_is_order_independent_and_right():
    rng = np.random.default_rng(7)
    page, slot, payload = v05_throughput._stream(5_000, rng)
    page[:] = rng.integers(0, 3, size=5_000)  # few pages and slots: many overwrites
    slot[:] = rng.integers(0, 4, size=5_000)
    want = np.zeros((v05_throughput.PAGES, v05_throughput.PAGE_SIZE), dtype=np.uint8)
    for p, s, row in zip(page, slot, payload):  # the plain sequential model
        want[p, s * 64:(s + 1) * 64] = row
    got, counts = v05_throughput._oracle(page, slot, payload)
    assert np.array_equal(got, want)
    assert counts[:3].sum() == 5_000 and np.array_equal(counts[:3], np.bincount(page, minlength=3))


def test_one_wrong_byte_fails(monkeypatch):
    real = v05_throughput._oracle

    def one_byte_off(page, slot, payload):
        expected, counts = real(page, slot, payload)
        expected[123, 456] ^= 1
        return expected, counts

    monkeypatch.setattr(v05_throughput, "_oracle", one_byte_off)
    r = run_throughput()
    assert r["error"] is not None and "differ from the NumPy oracle" in r["error"]
    assert "page index 123, byte 456" in r["error"]
    assert not r["passed"]


def test_one_extra_epoch_fails(monkeypatch):
    real = mmsb.Bus.apply_batch
    done = []

    def also_rewrites_a_byte(self, batch):
        n = real(self, batch)
        if not done:  # the same byte written again: content unchanged, one more epoch
            done.append(1)
            page = self.page(int(batch.page_ids[0]))
            page.write(0, page.read(0, 1))
        return n

    monkeypatch.setattr(mmsb.Bus, "apply_batch", also_rewrites_a_byte)
    r = run_throughput()
    assert r["error"] is not None and "epoch" in r["error"], r["error"]
    assert not r["passed"]
