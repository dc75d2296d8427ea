"""pytest-benchmark suites for the Jupyter reprs: what a notebook pays to display a big bus, a big
page and a validation report (the target is < 50 ms for the bus of 100k pages; measured here, not
asserted). Each benchmark also checks that what it timed is the cut-down repr it should be."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from mmsb import _html

BUS_PAGES = 100_000
PAGE_ELEMENTS = 1_000_000


@pytest.fixture(scope="module")
def big_bus():
    bus = mmsb.Bus()
    for i in range(BUS_PAGES):
        bus.create_page(64, name=f"p{i}" if i % 2 else None)
    yield bus
    bus.close()


def test_repr_html_bus_100k_pages(benchmark, big_bus):
    markup = benchmark(big_bus._repr_html_)
    assert markup.count("<tr>") < 2 * _html.MAX_ROWS  # facts and 20 page rows, not 100k
    assert f"… {BUS_PAGES - _html.MAX_ROWS:,} more pages" in markup


@pytest.mark.parametrize("shape", [(PAGE_ELEMENTS,), (1000, 1000)], ids=["1d", "2d"])
def test_repr_html_float_page_1m(benchmark, shape):
    bus = mmsb.Bus()
    page = bus.create_page(data=np.random.default_rng(7).random(shape))
    markup = benchmark(page._repr_html_)
    assert 0 < markup.count("<rect ") <= _html.HEAT_CELLS ** 2


@pytest.fixture(scope="module")
def validation_report():
    return mmsb.validate(quick=True, only=["purity", "tick"], progress=False)


def test_repr_html_validation_report(benchmark, validation_report):
    markup = benchmark(validation_report._repr_html_)
    assert markup.count("✓") + markup.count("✗") >= len(validation_report.results)
