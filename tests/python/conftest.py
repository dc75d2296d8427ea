"""Shared fixtures for the mmsb Python API tests."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import mmsb  # noqa: E402
from reference_model import RefBus, capture_state  # noqa: E402

SEED = 20240611


@pytest.fixture
def bus():
    """A fresh in-memory bus, closed after the test."""
    b = mmsb.Bus()
    yield b
    b.close()


@pytest.fixture
def pop():
    """A bus with a few pages of every kind, all with non-zero content and epochs: (bus, raw,
    typed, anon, gone), `gone` deleted."""
    b = mmsb.Bus()
    raw = b.create_page(data=bytes(range(64)), name="raw")
    typed = b.create_page(data=np.arange(12, dtype=np.float32).reshape(3, 4), name="typed")
    anon = b.create_page(100)
    anon.write(10, b"hello")
    gone = b.create_page(8, name="gone")
    b.delete_page(gone)
    yield b, raw, typed, anon, gone
    b.close()


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed: every randomized test is reproducible."""
    return np.random.default_rng(SEED)


@pytest.fixture
def devices():
    """Two emulated devices, "cuda:0" and "cuda:1", for the test: host memory that stores every
    byte inverted, so engine code that touched device memory without the device backend would
    read or write wrong bytes. The real devices (if any) come back afterwards."""
    mmsb._core.cuda_emulate_devices(2)
    try:
        yield
    finally:
        mmsb._core.cuda_emulate_devices(0)


@pytest.fixture(params=["emulated", pytest.param("cuda", marks=pytest.mark.gpu)])
def any_devices(request):
    """"cuda:0", "cuda:1" and "unified" for the test, twice: emulated (as `devices`), and the CUDA
    backends themselves, on a machine with two GPUs or in a build against the tests' stand-in
    runtime (MMSB_FAKE_CUDA, which `scripts/gpu-check.sh --fake` runs these with). Returns which."""
    if request.param == "emulated":
        mmsb._core.cuda_emulate_devices(2)
        try:
            yield request.param
        finally:
            mmsb._core.cuda_emulate_devices(0)
    else:
        if mmsb.cuda.device_count() < 2:
            pytest.skip("needs two CUDA devices")
        yield request.param


@pytest.fixture
def ref():
    """An empty reference model (the oracle)."""
    return RefBus()


@pytest.fixture
def state():
    """capture_state(bus): bytes and epoch of every live page, names and lsn."""
    return capture_state


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (long soaks) run only when asked for: `-m slow` (make test-slow)."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow soak: run with -m slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
