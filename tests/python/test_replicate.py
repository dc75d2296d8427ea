"""Bus.replicate: a one-rank Replicator over the emulated device follows bus pages tick by tick.

The oracle is the bus itself: after every tick each replica equals its page byte for byte,
whatever changed the page (submissions, the wave, writes outside ticks). The C++ suite
(BusReplicateTest) randomizes this further; here the Python surface is checked.
"""

from __future__ import annotations

import numpy as np
import pytest

import mmsb


def replicator(sizes):
    return mmsb.cuda.Replicator(1, 0, bytes(128), 0, sizes)


def test_ticks_keep_replicas_equal_to_pages(devices):
    rng = np.random.default_rng(5)
    bus = mmsb.Bus()
    a = bus.create_page(data=rng.standard_normal(16), location="cuda:0")
    b = bus.create_page(data=rng.standard_normal(16))
    c = bus.create_page(shape=(16,), dtype="float64")
    bus.depend(c, [a, b], mmsb.ops.reduce("sum_product"))
    rep = replicator([a.size, b.size, c.size])
    bus.replicate(rep, [a, b, c])
    assert [rep.read(i) for i in range(3)] == [p.read(0, p.size) for p in (a, b, c)]
    for t in range(20):
        page = (a, b)[t % 2]
        bus.submit(mmsb.Delta.at(page, 8 * int(rng.integers(16)), rng.standard_normal(1).tobytes()))
        if t % 5 == 0:
            b.write(0, np.float64(t).tobytes())  # outside a tick: sent whole by the next one
        report = bus.tick()
        assert report["replication_error"] is None and report["replicated_rows"] >= 2
        assert [rep.read(i) for i in range(3)] == [p.read(0, p.size) for p in (a, b, c)], f"tick {t}"
    assert bus.tick()["replicated_rows"] == 0  # nothing changed: an empty broadcast, still one per tick


def test_refusals_and_detach(devices):
    bus = mmsb.Bus()
    a = bus.create_page(64)
    with pytest.raises(mmsb.InvalidArgumentError, match="bytes"):
        bus.replicate(replicator([32]), [a])
    with pytest.raises(mmsb.PageNotFoundError):
        bus.replicate(replicator([64]), [99])
    rep = replicator([64])
    bus.replicate(rep, [a])
    with pytest.raises(mmsb.InvalidArgumentError, match="replicated"):
        bus.delete_page(a)
    bus.replicate(None)
    bus.delete_page(a)
    assert bus.tick()["replicated_rows"] == 0
