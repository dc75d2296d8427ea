"""Bus.replicate: a Replicator over emulated devices follows bus pages tick by tick, and so does
a peer rank of its group, receiving on another thread.

The oracle is the bus itself: after every tick each replica equals its page byte for byte,
whatever changed the page (submissions, the wave, writes outside ticks). The C++ suite
(BusReplicateTest) randomizes this further; here the Python surface is checked.
"""

from __future__ import annotations

import threading

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
    with pytest.raises(mmsb.InvalidArgumentError, match="a bus feeds this replicator"):
        rep.broadcast([0], [0], [4], b"abcd")  # the replica would no longer be its page
    assert rep.read(0) == a.read(0, 64) and rep.ticks == 1
    bus.replicate(None)
    rep.broadcast([0], [0], [4], b"abcd")  # its own again
    assert rep.read(0)[:4] == b"abcd"
    bus.delete_page(a)
    assert bus.tick()["replicated_rows"] == 0


def test_a_replicator_follows_one_bus_at_a_time(devices):
    """A second bus attaching the same replicator would overwrite its replicas with its own pages'
    rows at every tick: refused until the first bus lets go (detach, or close)."""
    first, second = mmsb.Bus(), mmsb.Bus()
    a, b = first.create_page(data=np.arange(8.0)), second.create_page(data=np.ones(8))
    rep = replicator([64])
    first.replicate(rep, [a])
    first.replicate(rep, [a])  # again on the same bus: still attached once it is replaced
    with pytest.raises(mmsb.InvalidArgumentError, match="another bus"):
        second.replicate(rep, [b])
    assert rep.read(0) == a.read(0, 64)  # nothing of b's was sent
    first.replicate(None)
    second.replicate(rep, [b])
    assert rep.read(0) == b.read(0, 64)
    with pytest.raises(mmsb.InvalidArgumentError, match="another bus"):
        first.replicate(rep, [a])
    second.close()
    first.replicate(rep, [a])
    assert rep.read(0) == a.read(0, 64)


def test_a_failed_broadcast_detaches_the_replicator_and_the_tick_still_commits(devices):
    """A replica write that fails during a tick's broadcast: the tick's commit stands, its report
    says why replication stopped, the replicator is unusable and detached; attaching it again is
    refused and keeps the replicator attached instead, which then follows every tick."""
    bus = mmsb.Bus()
    a = bus.create_page(64)
    broken = replicator([64])
    bus.replicate(broken, [a])
    bus.submit(mmsb.Delta.at(a, 0, b"x"))
    mmsb._core.cuda_fail_emulated_write(1)
    try:
        report = bus.tick()
    finally:
        mmsb._core.cuda_fail_emulated_write(0)
    assert "injected failure" in report["replication_error"]
    assert report["deltas_applied"] == 1 and a.read(0, 1) == b"x"
    with pytest.raises(mmsb.DeviceUnavailableError, match="unusable after an earlier failure"):
        broken.read(0)
    bus.submit(mmsb.Delta.at(a, 1, b"y"))
    assert bus.tick()["replicated_rows"] == 0  # detached: nothing is broadcast
    good = replicator([64])
    bus.replicate(good, [a])  # sent whole
    with pytest.raises(mmsb.DeviceUnavailableError):
        bus.replicate(broken, [a])
    bus.submit(mmsb.Delta.at(a, 2, b"z"))
    report = bus.tick()
    assert report["replication_error"] is None and report["replicated_rows"] == 1
    assert good.read(0) == a.read(0, 64)


def test_a_peer_rank_follows_the_bus_tick_by_tick(devices):
    """Rank 0 is driven by the bus; rank 1, on its own thread as it would be in its own process,
    receives the attach broadcast and then one batch per tick, and ends equal to the pages."""
    rng = np.random.default_rng(9)
    bus = mmsb.Bus()
    pages = [bus.create_page(data=rng.standard_normal(32)), bus.create_page(256, location="cuda:0")]
    sizes = [p.size for p in pages]
    uid = mmsb.cuda.Replicator.unique_id()
    reps = {}
    joiner = threading.Thread(target=lambda: reps.setdefault(1, mmsb.cuda.Replicator(2, 1, uid, 0, sizes)))
    joiner.start()
    root = mmsb.cuda.Replicator(2, 0, uid, 0, sizes)
    joiner.join()
    peer, ticks = reps[1], 15
    follower = threading.Thread(target=lambda: [peer.receive() for _ in range(ticks + 1)])
    follower.start()
    bus.replicate(root, pages)  # the attach broadcast: the pages whole
    for t in range(ticks):
        bus.submit(mmsb.Delta.at(pages[t % 2], 8 * int(rng.integers(32)), rng.bytes(8)))
        assert bus.tick()["replication_error"] is None
    follower.join()
    assert peer.ticks == root.ticks == ticks + 1
    assert [peer.read(i) for i in range(2)] == [p.read(0, p.size) for p in pages]
    # Only rank 0 sends: the peer can neither drive a bus nor broadcast itself.
    with pytest.raises(mmsb.InvalidArgumentError, match="rank 0 of the replication group"):
        bus.replicate(peer, pages)
    with pytest.raises(mmsb.InvalidArgumentError, match="only rank 0 broadcasts"):
        peer.broadcast([0], [0], [1], b"x")
    assert peer.ticks == ticks + 1 and [peer.read(i) for i in range(2)] == [p.read(0, p.size) for p in pages]
