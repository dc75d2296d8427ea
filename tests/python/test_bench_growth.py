"""The growth curves of `mmsb bench` (mmsb.bench.growth): shape of what run_growth returns, the
PNGs plot_growth writes, and that a wrong result at any curve fails the run instead of being
plotted. Quick mode only: speed is measured by the bench, never asserted here."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mmsb
from mmsb.bench import growth
from mmsb.bench._measure import VerificationError

CURVES = ("apply_vs_pageset", "apply_vs_delta_size", "apply_gbps_vs_delta_size", "replay_vs_log_length",
          "replay_per_delta_vs_log_length", "wave_vs_graph_size", "graph_build_vs_graph_size", "memory_vs_pages",
          "memory_per_page_vs_pages")
QUICK = growth.PROFILES["quick"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    return growth.run_growth(quick=True, workdir=str(tmp_path_factory.mktemp("growth")), progress=False)


def test_every_curve_is_returned_once_in_order(curves):
    assert [c["name"] for c in curves] == list(CURVES)


@pytest.mark.parametrize("name", CURVES)
def test_curve_has_consistent_lengths_and_finite_positive_values(curves, name):
    c = next(c for c in curves if c["name"] == name)
    assert set(c) == set(growth.CURVE_KEYS)
    assert 2 <= len(c["x"]) <= 3
    assert all(a < b for a, b in zip(c["x"], c["x"][1:])), "x must grow"
    assert len(c["series"]) >= 2, "mmsb and at least one anchor"
    for label, ys in c["series"].items():
        assert len(ys) == len(c["x"]), label
        assert all(y is not None and math.isfinite(y) and y > 0 for y in ys), (label, ys)
    assert c["notes"] and c["x_unit"] and c["y_unit"]


def test_memory_floor_series_is_pages_times_page_size(curves):
    c = next(c for c in curves if c["name"] == "memory_vs_pages")
    assert c["series"]["raw data floor"] == [n * growth.MEM_PAGE for n in c["x"]]
    assert all(t >= f for t, f in zip(c["series"]["mmsb memory().total_bytes"], c["series"]["raw data floor"]))


def test_plot_growth_writes_one_png_per_curve(curves, tmp_path):
    paths = growth.plot_growth(curves, str(tmp_path / "plots"))
    assert len(paths) == len(curves) == len(set(paths))
    for path, c in zip(paths, curves):
        assert c["name"] in path
        with open(path, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE, path


def test_plot_growth_skips_unmeasured_points(curves, tmp_path):
    c = dict(curves[0], series={k: [None] + v[1:] for k, v in curves[0]["series"].items()})
    (path,) = growth.plot_growth([c], str(tmp_path))
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE


def test_plot_growth_rejects_a_series_of_the_wrong_length(curves, tmp_path):
    c = dict(curves[0], series={"short": [1.0]})
    with pytest.raises(mmsb.InvalidArgumentError, match="'short' has 1 values"):
        growth.plot_growth([c], str(tmp_path))


def test_run_growth_rejects_bad_arguments(tmp_path):
    with pytest.raises(mmsb.InvalidArgumentError, match="bools"):
        growth.run_growth(quick="yes", workdir=str(tmp_path), progress=False)
    with pytest.raises(mmsb.InvalidArgumentError, match="workdir"):
        growth.run_growth(quick=True, workdir=None, progress=False)


# ---- a wrong result anywhere fails the run ----------------------------------------------------

def test_a_numpy_floor_that_skips_its_writes_fails_the_apply_curve(monkeypatch, tmp_path):
    monkeypatch.setattr(growth, "scatter_slots", lambda state, slot, payload: None)
    with pytest.raises(VerificationError, match="apply_vs_pageset: .*NumPy state"):
        growth.run_growth(quick=True, workdir=str(tmp_path), progress=False)


def test_an_apply_that_loses_batches_fails_the_apply_curve(monkeypatch):
    real = mmsb.Bus.apply_batch
    seen = []

    def every_other(bus, batch):  # drops every second batch, as a lost write would
        seen.append(1)
        return real(bus, batch) if len(seen) % 2 else bus.lsn

    monkeypatch.setattr(mmsb.Bus, "apply_batch", every_other)
    with pytest.raises(VerificationError, match="apply_vs_pageset: mmsb apply_batch, 1 thread"):
        growth._apply_curves(QUICK, progress=False)


def test_a_recovery_that_differs_from_the_written_state_fails_the_replay_curve(monkeypatch, tmp_path):
    real = mmsb.open

    def tampered(path, **kw):
        bus = real(path, **kw)
        bus.pages()[0].write(0, b"\xff")
        return bus

    monkeypatch.setattr(mmsb, "open", tampered)
    with pytest.raises(VerificationError, match="replay_vs_log_length: .*mmsb.open does not hold the written state"):
        growth._replay_curves(QUICK, str(tmp_path), progress=False)


def test_a_wave_result_that_differs_from_numpy_fails_the_wave_curve(monkeypatch):
    real = growth.numpy_wave

    def off_by_one(values, plan):
        real(values, plan)
        values[-1, 0] += np.float32(1)

    monkeypatch.setattr(growth, "numpy_wave", off_by_one)
    with pytest.raises(VerificationError, match="wave_vs_graph_size: .*differs from the NumPy recompute"):
        growth._wave_curves(QUICK, progress=False)
