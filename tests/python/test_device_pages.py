"""Device pages (location="cuda:N"), run on any machine through the host emulation of devices.

`mmsb._core.cuda_emulate_devices(n)` serves "cuda:0".."cuda:n-1" from host memory that stores every
byte inverted, so engine code that touched device memory without going through the device backend
would read or write wrong bytes here. The oracle is the same workload on an all-CPU bus: bytes,
epochs, lsns, history and time travel must be identical. Tests taking `any_devices` run a second
time on the CUDA backends themselves (marked gpu: two GPUs, or the tests' stand-in runtime under
`scripts/gpu-check.sh --fake`); those taking `devices` use the emulation's own hooks (injected
failures, devices removed). tests/python/test_gpu.py has the checks that need one real GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from device_waves import compare_waves
from mmsb import _core


class Twin:
    """The same operations on a bus with device pages and on an all-CPU bus."""

    def __init__(self, rng, dev_bus, cpu_bus):
        self.rng = rng
        self.dev = dev_bus
        self.cpu = cpu_bus
        self.pages = []  # (device page, cpu page)

    def create(self, location, dtype="float64", n=64, data=None):
        kw = dict(shape=(n,), dtype=dtype) if data is None else dict(data=data)
        d = self.dev.create_page(location=location, **kw)
        c = self.cpu.create_page(**kw)
        self.pages.append((d, c))
        return d, c

    def both(self, fn):
        """fn(bus, page_map) on both buses; the same exception class (or none) from both."""
        out = []
        for k, bus in ((0, self.dev), (1, self.cpu)):
            try:
                out.append(("ok", fn(bus, [p[k] for p in self.pages])))
            except mmsb.MmsbError as e:
                out.append(("err", type(e)))
        assert out[0] == out[1], out
        return out[0]

    def check(self):
        assert self.dev.lsn == self.cpu.lsn
        for d, c in self.pages:
            if d.id not in self.dev:
                continue
            assert d.epoch == c.epoch, d
            assert np.asarray(d).tobytes() == np.asarray(c).tobytes(), d  # bytes: random floats hold NaNs
            assert d.read(0, d.size) == c.read(0, c.size)
            snap_d, e_d = d.snapshot()
            snap_c, e_c = c.snapshot()
            assert e_d == e_c and snap_d.tobytes() == snap_c.tobytes()

    def random_op(self):
        rng = self.rng
        k = int(rng.integers(len(self.pages)))
        size = self.pages[k][0].size
        op = int(rng.integers(7))
        if op == 0:  # one write
            off = int(rng.integers(size))
            data = rng.integers(0, 256, int(rng.integers(1, size - off + 1)), dtype=np.uint8).tobytes()
            self.both(lambda bus, ps: ps[k].write(off, data))
        elif op == 1:  # a multi-run delta, runs overlapping
            offs = [int(x) for x in rng.integers(0, size - 8, 4)]
            datas = [rng.integers(0, 256, 8, dtype=np.uint8).tobytes() for _ in offs]
            self.both(lambda bus, ps: bus.apply(mmsb.Delta.runs(ps[k], offs, datas)))
        elif op == 2:  # a batch over several pages, rows overlapping, device and host rows mixed
            rows = int(rng.integers(1, 40))
            which = rng.integers(0, len(self.pages), rows)
            lengths = rng.integers(0, 24, rows)
            offsets = [int(rng.integers(0, self.pages[w][0].size - ln + 1)) for w, ln in zip(which, lengths)]
            payload = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
            self.both(lambda bus, ps: bus.apply_batch(
                mmsb.DeltaBatch([ps[w].id for w in which], offsets, lengths, payload)))
        elif op == 3:  # whole-content update (diff against the device page's bytes)
            new = np.asarray(self.pages[k][1]).copy().view(np.uint8)
            new[int(rng.integers(new.size))] ^= 0x5A
            self.both(lambda bus, ps: ps[k].update(new.view(ps[k].view().dtype)))
        elif op == 4:  # a transaction that commits
            def txn(bus, ps):
                with bus.transaction():
                    ps[k].write(0, b"\x01\x02\x03\x04")
                    bus.apply_batch(mmsb.DeltaBatch([ps[k].id, ps[k].id], [2, 8], [4, 4], b"abcdefgh"))
            self.both(txn)
        elif op == 5:  # a transaction rolled back by an exception: no trace on the device either
            def rolled_back(bus, ps):
                try:
                    with bus.transaction():
                        ps[k].write(0, b"\xff" * 16)
                        bus.apply_batch(mmsb.DeltaBatch([ps[k].id] * 3, [0, 4, 1], [8, 8, 8], bytes(range(24))))
                        raise KeyError("abort")
                except KeyError:
                    pass
            self.both(rolled_back)
        else:  # a rejected batch: the last row is out of bounds, nothing applies
            self.both(lambda bus, ps: bus.apply_batch(
                mmsb.DeltaBatch([ps[k].id, ps[k].id], [0, size], [4, 4], b"12345678")))


def build_graph(t):
    """Derived pages of every kind, on devices and on the host, fed by device and host parents."""
    (a, a_c), (b, b_c), (h, h_c) = t.pages[0], t.pages[1], t.pages[2]
    kinds = [("cuda:0", [0, 1], mmsb.ops.reduce("sum_product")), ("cpu", [0], mmsb.ops.copy),
             ("cuda:1", [2], mmsb.ops.copy), ("cuda:0", [1, 2], "callable")]

    def scaled(out, x, y):
        with np.errstate(all="ignore"):  # random bytes make NaNs and infinities
            out[:] = 0.5 * x - y

    for location, parents, fn in kinds:
        t.create(location)
        f = scaled if fn == "callable" else fn
        t.both(lambda bus, ps: bus.depend(ps[-1], on=[ps[i] for i in parents], fn=f))


def test_random_workload_matches_a_cpu_bus(any_devices):
    rng = np.random.default_rng(7)
    t = Twin(rng, mmsb.Bus(threads=2), mmsb.Bus(threads=2))
    t.create("cuda:0")
    t.create("cuda:1")
    t.create("cpu")
    build_graph(t)
    for i in range(400):
        t.random_op()
        if i % 25 == 0:
            t.check()
    t.check()
    assert t.dev.verify().ok
    # Time travel replays device pages onto the host, byte for byte.
    for lsn in (5, t.dev.lsn // 2, t.dev.lsn):
        past_d, past_c = t.dev.at(lsn), t.cpu.at(lsn)
        assert len(past_d) == len(past_c)
        for d, c in t.pages:
            if d.id not in past_d:
                continue
            assert np.asarray(past_d.page(d.id)).tobytes() == np.asarray(past_c.page(c.id)).tobytes()
            assert past_d.page(d.id).location == d.location
    assert [r.lsn for r in t.dev.history(t.pages[0][0])] == [r.lsn for r in t.cpu.history(t.pages[0][1])]


def test_directory_bus_checkpoints_and_reopens_device_pages(any_devices, tmp_path):
    rng = np.random.default_rng(11)
    dev_path, cpu_path = tmp_path / "dev", tmp_path / "cpu"
    t = Twin(rng, mmsb.Bus(dev_path), mmsb.Bus(cpu_path))
    t.create("cuda:1", dtype="int32", n=256)
    t.create("cuda:0")
    t.create("cpu")
    build_graph(t)
    for _ in range(150):
        t.random_op()
    t.dev.checkpoint()
    t.cpu.checkpoint()
    for _ in range(150):
        t.random_op()
    t.check()
    ids = [d.id for d, _ in t.pages]
    t.dev.close()
    t.cpu.close()
    with mmsb.open(dev_path) as dev, mmsb.open(cpu_path) as cpu:
        assert dev.lsn == cpu.lsn
        for i in ids:
            assert dev.page(i).epoch == cpu.page(i).epoch
            assert np.asarray(dev.page(i)).tobytes() == np.asarray(cpu.page(i)).tobytes()
        assert dev.page(ids[0]).location == "cuda:1"
        assert dev.page(ids[0]).__dlpack_device__() == (2, 1)
        report = dev.verify()
        assert report.ok, report.problems


def test_mirror_moves_only_the_runs_written_since_its_last_refresh(any_devices):
    bus = mmsb.Bus()
    p = bus.create_page(1 << 20, location="cuda:0")
    assert bus._device_traffic()["mirror_bytes_synced"] == 0  # nothing read yet
    assert not np.asarray(p).any()
    first = bus._device_traffic()
    assert (first["mirror_syncs"], first["mirror_bytes_synced"]) == (1, 1 << 20)
    offsets = [4096 * i + 7 for i in range(10)]
    for off in offsets:
        p.write(off, b"\x11" * 64)
    p.write(offsets[0] + 32, b"\x22" * 64)  # overlaps the first run: 32 more bytes, not 64
    view = np.asarray(p)
    after = bus._device_traffic()
    assert after["mirror_bytes_synced"] - first["mirror_bytes_synced"] == 10 * 64 + 32
    assert after["bytes_written"] == 11 * 64
    assert view[offsets[3]] == 0x11 and view[offsets[0] + 95] == 0x22
    np.asarray(p)  # nothing written since: no transfer
    assert bus._device_traffic()["mirror_syncs"] == after["mirror_syncs"]
    m = bus.memory()
    assert m["mirror_bytes"] == 1 << 20 and m["device_bytes"] == 1 << 20


def test_a_mirror_with_too_many_stale_runs_to_track_rereads_the_whole_page(any_devices, rng):
    """Past 4096 separate stale runs a refresh reads the whole page in one transfer, with the
    same bytes as run by run."""
    bus = mmsb.Bus()
    size = 1 << 20
    p = bus.create_page(size, location="cuda:0")
    np.asarray(p)  # the mirror is now whole and valid
    rows = 5000
    offsets = np.sort(rng.choice(size // 128, rows, replace=False)) * 128
    payload = rng.integers(0, 256, rows * 8, dtype=np.uint8)
    bus.apply_batch(mmsb.DeltaBatch([p.id] * rows, offsets, [8] * rows, payload))
    before = bus._device_traffic()
    view = np.asarray(p)
    after = bus._device_traffic()
    assert after["mirror_syncs"] - before["mirror_syncs"] == 1
    assert after["mirror_bytes_synced"] - before["mirror_bytes_synced"] == size
    want = np.zeros(size, np.uint8)
    want[(offsets[:, None] + np.arange(8)).ravel()] = payload
    assert np.array_equal(view, want)


def test_views_of_a_device_page_are_refreshed_by_each_call(any_devices):
    bus = mmsb.Bus()
    p = bus.create_page(data=np.arange(8, dtype=np.int64), location="cuda:0")
    old = p.view()
    p.write(0, np.int64(100).tobytes())
    assert p.view()[0] == 100 and p.view()[7] == 7
    assert old[0] == 100  # the same mirror memory, refreshed
    assert memoryview(p).tobytes() == p.read(0, 64)


def test_unknown_or_missing_devices_are_refused_with_nothing_created(any_devices):
    bus = mmsb.Bus()
    before = bus.lsn
    with pytest.raises(mmsb.DeviceUnavailableError, match="cuda:2"):
        bus.create_page(64, location="cuda:2")
    with pytest.raises(mmsb.InvalidArgumentError, match="gpu:0"):
        bus.create_page(64, location="gpu:0")
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.create_page(64, location="cuda:-1")
    assert bus.lsn == before and len(bus) == 0


def test_without_devices_a_device_location_raises_device_unavailable():
    assert _core.cuda_emulated_devices() == 0
    if mmsb.cuda.is_available():
        pytest.skip("a real CUDA device is present")
    bus = mmsb.Bus()
    for location in ("cuda:0", "unified"):
        with pytest.raises(mmsb.DeviceUnavailableError):
            bus.create_page(64, location=location)
    assert bus.lsn == 0


def test_reopening_device_pages_without_the_device_is_refused(devices, tmp_path):
    with mmsb.Bus(tmp_path / "b") as bus:
        bus.create_page(data=np.ones(4), location="cuda:1")
    _core.cuda_emulate_devices(1)  # cuda:1 is gone
    with pytest.raises(mmsb.DeviceUnavailableError, match="cuda:1"):
        mmsb.open(tmp_path / "b")
    # A read-only view of history needs no device: pages come back on the host.
    past = mmsb.replay(tmp_path / "b")
    assert past.page(1).location == "cuda:1" and past.page(1).view().tolist() == [1.0] * 4


@pytest.mark.parametrize("durability", ["flush", "none"])
@pytest.mark.parametrize("batch", [False, True], ids=["write", "batch"])
def test_a_device_write_failing_after_its_record_stops_writes_until_reopened(devices, tmp_path, durability, batch):
    # flush and none log a change before applying it: a device error in the apply leaves the log
    # ahead of memory, so the bus must refuse to log anything more (lsns would be reused).
    bus = mmsb.Bus(tmp_path / "b", durability=durability)
    dev = bus.create_page(data=np.zeros(8), location="cuda:0")
    host = bus.create_page(8)
    host.write(0, b"before!!")
    lsn = bus.lsn
    _core.cuda_fail_emulated_write(1)
    try:
        with pytest.raises(mmsb.DeviceUnavailableError, match="injected"):
            if batch:
                bus.apply_batch(mmsb.DeltaBatch([dev.id], [0], [8], np.float64(7.0).tobytes()))
            else:
                dev.write(0, np.float64(7.0).tobytes())
    finally:
        _core.cuda_fail_emulated_write(0)
    assert dev.view().tolist() == [0.0] * 8 and dev.epoch == 1
    # verify() names how memory fell behind its log: a batch took its lsn, a write did not.
    problems = bus.verify().problems
    if batch:
        assert bus.lsn == lsn + 1 and f"log replayed from lsn 1: page {dev.id} bytes differ" in problems, problems
    else:
        assert bus.lsn == lsn
        assert problems == [f"the log holds lsns {lsn + 1}..{lsn + 1} past the bus lsn {lsn}, not applied in memory"]
    with pytest.raises(mmsb.DurabilityError, match="reopen the bus"):
        host.write(0, b"refused!")
    assert bytes(host.view()) == b"before!!"
    try:
        bus.close()
    except mmsb.DurabilityError:
        pass
    with mmsb.open(tmp_path / "b") as again:
        # The failed change whole (its record reached the file) or not at all; the refused write never.
        assert again.lsn in (lsn, lsn + 1)
        assert again.page(dev.id).view()[0] == (7.0 if again.lsn == lsn + 1 else 0.0)
        assert bytes(again.page(host.id).view()) == b"before!!"
        recovered = again.lsn
        again.page(host.id).write(0, b"after!!!")
        assert again.lsn == recovered + 1


def test_an_in_memory_bus_whose_device_write_fails_after_logging_stays_readable_and_says_why(devices):
    # Its history (the in-memory log) holds the change memory lacks: no more writes, reads go on,
    # and verify() names the lsn the log holds past memory.
    bus = mmsb.Bus()
    dev = bus.create_page(data=np.zeros(8), location="cuda:0")
    host = bus.create_page(data=b"before!!")
    lsn = bus.lsn
    _core.cuda_fail_emulated_write(1)
    try:
        with pytest.raises(mmsb.DeviceUnavailableError, match="injected"):
            dev.write(0, np.float64(7.0).tobytes())
    finally:
        _core.cuda_fail_emulated_write(0)
    with pytest.raises(mmsb.DurabilityError, match="in-memory bus's history holds a change"):
        host.write(0, b"refused!")
    assert bus.lsn == lsn and bytes(host.view()) == b"before!!" and dev.view().tolist() == [0.0] * 8
    assert bus.verify().problems == [f"the log holds lsns {lsn + 1}..{lsn + 1} past the bus lsn {lsn}, not applied in memory"]


@pytest.mark.parametrize("where", ["memory", "none", "flush", "fsync"])
def test_a_batch_whose_second_device_fails_leaves_the_first_as_it_was(tmp_path, where):
    """One transfer per device: cuda:0's went through when cuda:1's failed. It is undone, so
    reads show the state before the batch whatever the mode (a log-first mode's log holds the
    batch, and the bus takes no more writes until reopened, as for one device)."""
    _core.cuda_emulate_devices(2)
    try:
        bus = mmsb.Bus() if where == "memory" else mmsb.Bus(tmp_path / "b", durability=where)
        host = bus.create_page(8)
        a = bus.create_page(8, location="cuda:0")
        b = bus.create_page(8, location="cuda:1")
        _core.cuda_fail_emulated_write(2)  # the first device's transfer succeeds, the second's fails
        try:
            with pytest.raises(mmsb.DeviceUnavailableError, match="injected"):
                bus.apply_batch(mmsb.DeltaBatch([host.id, a.id, b.id], [0] * 3, [8] * 3, b"H" * 8 + b"A" * 8 + b"B" * 8))
        finally:
            _core.cuda_fail_emulated_write(0)
        for p in (host, a, b):
            assert p.read(0, 8) == bytes(8) and p.epoch == 0, p.location
        bus.close()
    finally:
        _core.cuda_emulate_devices(0)


@pytest.mark.parametrize("how", ["transaction", "wave"])
def test_a_device_transfer_failing_while_a_change_is_undone_stops_writes_not_the_process(devices, tmp_path, how):
    """The undo of a device write has nothing to fall back on: the device keeps bytes the log
    never held. The process went on to std::terminate; now the call raises what made it roll back,
    the bus takes no more writes, and a reopen shows the log's state."""
    bus = mmsb.Bus(tmp_path / "b")
    p = bus.create_page(64, location="cuda:0")
    p.write(0, b"kept")
    lsn = bus.lsn
    if how == "transaction":
        with pytest.raises(KeyError):
            with bus.transaction():
                p.write(0, b"lost")
                _core.cuda_fail_emulated_write(1)  # the undo's transfer
                raise KeyError("roll back")
    else:
        c = bus.create_page(8)

        def refuse(out, x):
            raise ValueError("no")

        bus.propagation = "deferred"
        bus.depend(c, on=[p], fn=refuse)
        bus.propagation = "eager"
        lsn = bus.lsn
        _core.cuda_fail_emulated_write(2)  # the write's transfer passes, its undo's fails
        with pytest.raises(mmsb.PropagationError, match="no"):
            p.write(0, b"lost")
    _core.cuda_fail_emulated_write(0)
    assert bus.lsn == lsn
    with pytest.raises(mmsb.DurabilityError, match="could not undo a change on its device.*injected"):
        p.write(8, b"refused")
    bus.close()
    with mmsb.open(tmp_path / "b") as again:
        assert again.lsn == lsn and again.page(p.id).read(0, 4) == b"kept"


@pytest.mark.parametrize("where", ["memory", "none", "flush", "fsync", "transaction"])
def test_a_device_page_whose_initial_content_fails_to_transfer_is_not_created(devices, tmp_path, where):
    # The content goes to the device before the creation is logged: a failed transfer leaves no
    # page, no lsn, no log record, and a bus that goes on writing (not one that must be reopened).
    bus = mmsb.Bus() if where in ("memory", "transaction") else mmsb.Bus(tmp_path / "b", durability=where)
    host = bus.create_page(data=b"before!!")
    lsn, ids, created = bus.lsn, [p.id for p in bus.pages()], bus.stats()["pages_created"]

    def create():
        _core.cuda_fail_emulated_write(1)
        try:
            with pytest.raises(mmsb.DeviceUnavailableError, match="injected"):
                bus.create_page(data=np.arange(8.0), location="cuda:0", name="dev")
        finally:
            _core.cuda_fail_emulated_write(0)

    if where == "transaction":
        with bus.transaction():
            host.write(0, b"inside!!")
            create()
            assert bytes(host.view()) == b"inside!!"  # the rest of the transaction stands
        lsn += 1
    else:
        create()
    assert bus.lsn == lsn and [p.id for p in bus.pages()] == ids and "dev" not in bus
    assert bus.stats()["pages_created"] == created and bus.verify().ok, bus.verify().problems
    # Not stopped: later changes commit, a device page included, under the id the failed one had.
    host.write(0, b"after!!!")
    dev = bus.create_page(data=np.arange(8.0), location="cuda:0", name="dev")
    assert dev.id == max(ids) + 1 and dev.view().tolist() == list(range(8)) and bus.lsn == lsn + 3
    assert bus.verify().ok, bus.verify().problems
    if where in ("memory", "transaction"):
        return
    bus.close()
    with mmsb.open(tmp_path / "b") as again:
        assert again.lsn == lsn + 3 and bytes(again.page(host.id).view()) == b"after!!!"
        assert again.page("dev").view().tolist() == list(range(8))


def test_a_batch_failing_on_its_device_rows_inside_a_transaction_leaves_the_rest_of_it(devices, tmp_path):
    # The batch's host row is applied before its device transfer fails: the failed call is undone
    # to where it began (the host row's earlier bytes back), and the transaction commits the rest.
    bus = mmsb.Bus(tmp_path / "b")
    dev = bus.create_page(data=np.zeros(8), location="cuda:0")
    host = bus.create_page(8)
    host.write(0, b"before!!")
    with bus.transaction():
        host.write(0, b"inside!!")
        _core.cuda_fail_emulated_write(1)
        try:
            with pytest.raises(mmsb.DeviceUnavailableError, match="injected"):
                bus.apply_batch(mmsb.DeltaBatch([host.id, dev.id], [0, 0], [8, 8],
                                                b"batched!" + np.float64(7.0).tobytes()))
        finally:
            _core.cuda_fail_emulated_write(0)
        assert bytes(host.view()) == b"inside!!" and host.epoch == 2
    assert bytes(host.view()) == b"inside!!" and host.epoch == 2
    assert dev.view().tolist() == [0.0] * 8 and dev.epoch == 1
    lsn = bus.lsn
    bus.close()
    with mmsb.open(tmp_path / "b") as again:
        assert again.lsn == lsn
        assert bytes(again.page(host.id).view()) == b"inside!!" and again.page(host.id).epoch == 2
        assert again.page(dev.id).view().tolist() == [0.0] * 8


def test_dlpack_of_a_device_page(devices):
    bus = mmsb.Bus()
    p = bus.create_page(data=np.arange(4.0), location="cuda:1")
    assert p.__dlpack_device__() == (2, 1)
    with pytest.raises(BufferError, match="emulated"):
        p.__dlpack__()
    with pytest.raises(BufferError, match="dl_device"):
        p.__dlpack__(dl_device=(1, 0), copy=False)  # the host gets a copy or nothing
    host = np.from_dlpack(_HostCopy(p))
    assert host.tolist() == [0.0, 1.0, 2.0, 3.0]
    # DLPack: copy=None reuses the memory where it can and copies otherwise
    assert np.from_dlpack(p, device="cpu").tolist() == [0.0, 1.0, 2.0, 3.0]


class _HostCopy:
    """Asks a device page for a host copy through DLPack (dl_device=(kDLCPU, 0), copy=True)."""

    def __init__(self, page):
        self.page = page

    def __dlpack_device__(self):
        return (1, 0)

    def __dlpack__(self, **kw):
        return self.page.__dlpack__(dl_device=(1, 0), copy=True, max_version=kw.get("max_version"))


def test_unified_pages_are_host_addressable(any_devices):
    bus = mmsb.Bus()
    u = bus.create_page(data=np.arange(6, dtype=np.int32), location="unified")
    u.write(0, np.int32(9).tobytes())
    assert u.view().tolist() == [9, 1, 2, 3, 4, 5]
    assert u.__dlpack_device__() == (13, 0)  # kDLCUDAManaged
    assert bus._device_traffic()["bytes_written"] == 0  # no transfers: the host writes it
    assert bus.memory()["device_bytes"] == 24


def test_group_commit_ticks_and_events_on_device_pages(any_devices, tmp_path):
    """fsync mode (every commit a parked transaction with its undo), submissions drained by ticks
    with the sampled validation re-deriving device pages, and the event stream: all as on the CPU."""
    rng = np.random.default_rng(3)
    t = Twin(rng, mmsb.Bus(tmp_path / "d", durability="fsync"), mmsb.Bus(tmp_path / "c", durability="fsync"))
    t.create("cuda:0")
    t.create("cuda:1")
    t.create("cpu")
    build_graph(t)
    events = ([], [])
    for k, bus in enumerate((t.dev, t.cpu)):
        bus.subscribe("delta_applied", events[k].append)
        bus.subscribe("page_changed", events[k].append)
        bus.configure_tick(validate_sample=4)
    for _ in range(30):
        t.random_op()
    for _ in range(5):
        rows = [(int(rng.integers(3)), int(rng.integers(0, 64 * 8 - 8))) for _ in range(20)]
        data = rng.integers(0, 256, 8 * len(rows), dtype=np.uint8).tobytes()

        def tick(bus, ps):
            for i, (k, off) in enumerate(rows):
                bus.submit(mmsb.Delta.at(ps[k], off, data[8 * i:8 * i + 8]))
            report = bus.tick()
            return report.deltas_applied, report.validated, list(report.validation_failures)

        outcome = t.both(tick)
        assert outcome[1][1] > 0 and outcome[1][2] == []  # validated, and every derived page matched
    t.check()
    assert events[0] == events[1] and len(events[0]) > 0
    assert t.dev.verify().ok


# Page shapes: smaller than a mask word, one 8 KiB mask chunk, and several.
WAVE_SHAPES = [("float64", 5), ("float32", 3000), ("int32", 700), ("int64", 2500), ("bool", 20000)]


@pytest.mark.parametrize("dtype,n", WAVE_SHAPES)
def test_a_wave_over_one_device_runs_there_and_equals_the_cpu_wave(any_devices, rng, dtype, n):
    traffic = compare_waves(rng, dtype, n, ["cuda:0"])
    assert traffic["device_recomputes"] > 0
    assert traffic["mirror_syncs"] == 0  # the waves read nothing back through a mirror


@pytest.mark.parametrize("dtype,n", WAVE_SHAPES)
def test_a_wave_over_mixed_locations_equals_the_cpu_wave(any_devices, rng, dtype, n):
    compare_waves(rng, dtype, n, ["cuda:0", "cuda:1", "cpu", "cuda:0", "unified"])



def test_an_edit_of_a_device_page_is_made_and_diffed_on_the_device(any_devices):
    bus = mmsb.Bus()
    p = bus.create_page(shape=(5000,), dtype="int32", location="cuda:0")
    want = np.arange(5000, dtype=np.int32)
    p.write(0, want)
    syncs = bus._device_traffic()["mirror_syncs"]
    deltas = len(bus.history(p))
    with p.edit() as s:  # no CuPy for emulated memory: the copy itself, fed here through the device
        assert isinstance(s, _core.DeviceStaging)
        assert (s.page, s.shape, s.dtype, s.nbytes, s.epoch) == (p.id, (5000,), np.dtype("int32"), 20000, p.epoch)
        assert s.__dlpack_device__() == p.__dlpack_device__()  # the copy lives where the page does
        assert s._read() == want.tobytes()
        s._write(40, np.int32([-1, -2]).tobytes())
        s._write(16000, np.int32([7]).tobytes())
    want[10:12] = [-1, -2]
    want[4000] = 7
    assert bus._device_traffic()["mirror_syncs"] == syncs  # diffed on the device
    assert len(bus.history(p)) == deltas + 1  # one delta
    assert np.array_equal(np.asarray(p), want)
    with p.edit():
        pass  # nothing changed: nothing committed
    assert len(bus.history(p)) == deltas + 1


def test_an_edit_on_the_device_commits_nothing_when_refused(any_devices):
    bus = mmsb.Bus()
    p = bus.create_page(shape=(64,), dtype="float64", location="cuda:0")
    cpu = bus.create_page(shape=(8,), dtype="float64")
    lsn = bus.lsn
    with pytest.raises(ZeroDivisionError):
        with p.edit() as s:
            s._write(0, b"\x01" * 8)
            raise ZeroDivisionError  # an exception inside the block commits nothing
    assert bus.lsn == lsn and not np.asarray(p).any()
    with pytest.raises(mmsb.EpochConflictError):
        with p.edit() as s:
            s._write(0, b"\x01" * 8)
            p.write(8, np.float64([2.0]))  # another commit first
    assert bus.lsn == lsn + 1 and np.asarray(p)[0] == 0 and np.asarray(p)[1] == 2.0
    with pytest.raises(mmsb.InvalidArgumentError, match="outside"):
        with p.edit() as s:
            s._write(510, b"\x00" * 8)
    with pytest.raises(mmsb.InvalidArgumentError, match="not in device memory"):
        with cpu.edit(device=True):
            pass
    with p.edit() as s:
        with pytest.raises(BufferError, match="exported only on its own device"):
            s.__dlpack__(dl_device=(1, 0))
        if any_devices == "emulated":  # emulated device memory has no consumer to hand it to
            with pytest.raises(BufferError, match="emulated"):
                s.__dlpack__()
    assert bus.lsn == lsn + 1


def test_an_edit_of_a_device_page_on_the_host_is_a_numpy_copy(any_devices):
    bus = mmsb.Bus()
    p = bus.create_page(shape=(16,), dtype="float32", location="cuda:1")
    with p.edit(device=False) as a:
        assert isinstance(a, np.ndarray)
        a[3] = 1.5
    assert np.asarray(p)[3] == 1.5 and p.epoch == 1
