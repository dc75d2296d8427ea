"""pytest-benchmark suites for bus.history(page) on a log of a million deltas: 16 batches of
62,500 rows over 16,384 pages, with one page also written 100 times between them. history is a
lookup (the provenance index names the page's lsns, the log's record index the records holding
them), so it reads those records only: its cost follows the page's history, not the log's size.
The full log scan it replaced took 20-40 ms per call on this log, growing with the log. Each
benchmark also checks the history it timed."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb

PAGES = 16_384
ROWS = 1_000_000
BATCHES = 16
HOT_WRITES = 100


@pytest.fixture(scope="module", params=["memory", "directory"])
def million_delta_bus(request, tmp_path_factory):
    """(bus, hot page, cold page): the hot page has 100 single writes and its batch rows, the cold
    one only batch rows."""
    path = tmp_path_factory.mktemp("history") / "bus" if request.param == "directory" else None
    bus = mmsb.Bus(path) if path else mmsb.Bus()
    pages = [bus.create_page(64) for _ in range(PAGES)]
    rng = np.random.default_rng(7)
    hot, cold = pages[123], pages[124]
    per = ROWS // BATCHES
    for b in range(BATCHES):
        ids = rng.integers(0, PAGES, per) + pages[0].id
        bus.apply_batch(mmsb.DeltaBatch(ids, rng.integers(0, 8, per) * 8, np.full(per, 8), rng.bytes(8 * per)))
        for k in range(b * HOT_WRITES // BATCHES, (b + 1) * HOT_WRITES // BATCHES):
            hot.write(8 * (k % 8), bytes([k]) * 8)
    assert bus.lsn == PAGES + ROWS + HOT_WRITES
    yield bus, hot, cold
    bus.close()


@pytest.mark.parametrize("which", ["hot", "cold"])
def test_history_of_one_page_in_a_million_delta_log(benchmark, million_delta_bus, which):
    bus, hot, cold = million_delta_bus
    page = hot if which == "hot" else cold
    hist = benchmark(bus.history, page)
    assert [h.epoch for h in hist] == list(range(1, page.epoch + 1))
    assert hist[-1].lsn == page.last_lsn
    assert all(h.source == "user" and len(h.runs) == 1 and h.runs[0][1] == 8 for h in hist)
    assert page.epoch > (HOT_WRITES if which == "hot" else 0)
