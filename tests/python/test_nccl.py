"""mmsb.cuda.nccl_available / nccl_version / Replicator.

The oracle is a NumPy model: one zero-filled array per replica page, each tick's rows written in
order (later rows win where they overlap), and the documented hash (FNV-1a 64 over each page's
size and CRC32C) computed here independently. The batch logic runs everywhere on emulated devices
(`_core.cuda_emulate_devices`, no NCCL: one rank, or groups of ranks as threads of this process);
the `nccl` tests run it over NCCL on a real GPU and skip elsewhere. Argument errors need no device
and run everywhere.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

import mmsb
from checksums import crc32c
from mmsb import _core

Replicator = mmsb.cuda.Replicator
needs_nccl = pytest.mark.skipif(not mmsb.cuda.nccl_available(), reason="needs NCCL and a CUDA device")
SIZES = [64, 1, 4096, 20000, 333]


def _nccl_library():
    """libnccl loaded by ctypes, independently of mmsb's loader, or None."""
    for name in ("libnccl.so.2", "libnccl.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "ncclGetVersion"):
            return lib
    return None


def reference_hash(pages) -> int:
    h = 0xCBF29CE484222325
    for p in pages:
        for value, width in ((p.size, 8), (crc32c(p.tobytes()), 4)):
            for byte in value.to_bytes(width, "little"):
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def random_batch(rng, sizes):
    """Rows of every kind (random, overlapping an earlier row, empty, whole page) and their payload."""
    pages, offsets, lengths = [], [], []
    for _ in range(int(rng.integers(0, 25))):
        kind = int(rng.integers(0, 5))
        if kind == 0 and pages:
            j = int(rng.integers(0, len(pages)))
            page = pages[j]
            off = min(sizes[page], max(0, offsets[j] + int(rng.integers(-4, 5))))
            length = int(rng.integers(0, min(sizes[page] - off, lengths[j] + 16) + 1))
        else:
            page = int(rng.integers(0, len(sizes)))
            off = int(rng.integers(0, sizes[page] + 1))
            if kind == 1:
                length = 0
            elif kind == 2:
                off, length = 0, sizes[page]
            else:
                length = int(rng.integers(0, min(sizes[page] - off, 200) + 1))
        pages.append(page)
        offsets.append(off)
        lengths.append(length)
    payload = rng.integers(0, 256, size=sum(lengths), dtype=np.uint8)
    return np.array(pages, np.int64), np.array(offsets, np.uint64), np.array(lengths, np.int32), payload


def apply_model(model, pages, offsets, lengths, payload):
    at = 0
    for page, off, length in zip(pages.tolist(), offsets.tolist(), lengths.tolist()):
        model[page][off:off + length] = payload[at:at + length]
        at += length


def run_against_model(rep, rng, ticks):
    model = [np.zeros(s, np.uint8) for s in rep.page_sizes]
    for t in range(1, ticks + 1):
        batch = random_batch(rng, rep.page_sizes)
        rep.broadcast(*batch)
        apply_model(model, *batch)
        for i, page in enumerate(model):
            assert rep.read(i) == page.tobytes(), f"page {i} after tick {t}"
        assert rep.ticks == t
        if t % 20 == 0 or t == ticks:
            assert rep.hash() == reference_hash(model), f"hash after tick {t}"
    assert rep.check()
    return model


@pytest.fixture
def emulated():
    _core.cuda_emulate_devices(1)
    try:
        yield
    finally:
        _core.cuda_emulate_devices(0)


# ---- loader ---------------------------------------------------------------------------------------

def test_nccl_available_iff_built_in_library_loads_and_device_usable():
    lib = _nccl_library()
    assert mmsb.cuda.nccl_available() == (mmsb.build_info()["nccl"] and lib is not None and mmsb.cuda.is_available())
    assert (mmsb.cuda.nccl_version() == "") == (lib is None)


def test_nccl_version_is_the_librarys():
    lib = _nccl_library()
    if lib is None:
        pytest.skip("libnccl is not installed")
    code = ctypes.c_int()
    assert lib.ncclGetVersion(ctypes.byref(code)) == 0
    major, minor, patch = (int(x) for x in mmsb.cuda.nccl_version().split("."))
    assert code.value in (major * 10000 + minor * 100 + patch, major * 1000 + minor * 100 + patch)


def test_unique_ids_are_fresh_128_byte_ids():
    if _nccl_library() is None:
        with pytest.raises(mmsb.DeviceUnavailableError):
            Replicator.unique_id()
        return
    a, b = Replicator.unique_id(), Replicator.unique_id()
    assert isinstance(a, bytes) and len(a) == 128 and a != b


# ---- arguments (no device needed) -----------------------------------------------------------------

@pytest.mark.parametrize("args,says", [
    ((0, 0, 0, [64]), "nranks must be at least 1"),
    ((2, 2, 0, [64]), r"rank 2 is outside \[0, 2\)"),
    ((1, -1, 0, [64]), r"rank -1 is outside \[0, 1\)"),
    ((1, 0, -1, [64]), "ordinal must be >= 0"),
    ((1, 0, 0, []), "at least one page"),
    ((1, 0, 0, [64, 0]), "page 1 has 0 bytes"),
    ((1, 0, 0, [64, 2**64 - 1]), "page 1 has 18446744073709551615 bytes, more than a page may"),
    ((1, 0, 0, [2**40 + 1]), "page 0 has 1099511627777 bytes, more than a page may"),
    ((1, 0, 0, [64, -1]), r"page_sizes\[1\] is negative"),
    ((1, 0, 0, [1.5]), r"page_sizes\[0\] is not an integer \(1.5\)"),
    ((1, 0, 0, np.array([1.5])), "page_sizes must hold integers"),
    ((1, 0, 0, [[8, 8]]), "page_sizes must be one-dimensional"),
    ((2**31, 0, 0, [64]), "nranks 2147483648 is out of range"),
    ((1, 2**64, 0, [64]), "rank 18446744073709551616 is out of range"),
    ((1, 0, True, [64]), "ordinal must be an integer; got bool"),
])
def test_bad_constructor_arguments(args, says):
    nranks, rank, ordinal, sizes = args
    with pytest.raises(mmsb.InvalidArgumentError, match=says):
        Replicator(nranks, rank, bytes(128), ordinal, sizes)


def test_unique_id_must_be_128_bytes():
    with pytest.raises(mmsb.InvalidArgumentError, match="unique_id must be the 128 bytes"):
        Replicator(1, 0, b"short", 0, [64])


@pytest.mark.skipif(mmsb.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_without_a_device_construction_raises_device_unavailable():
    assert _core.cuda_emulated_devices() == 0
    with pytest.raises(mmsb.DeviceUnavailableError):
        Replicator(1, 0, bytes(128), 0, [64])


# ---- batch logic on an emulated device ------------------------------------------------------------

def test_random_batches_match_numpy_model(emulated, rng):
    rep = Replicator(1, 0, bytes(128), 0, SIZES)
    run_against_model(rep, rng, 60)


def test_later_rows_win(emulated):
    rep = Replicator(1, 0, bytes(128), 0, [16])
    rep.broadcast([0, 0, 0, 0], [0, 4, 6, 0], [8, 8, 2, 1], b"AAAAAAAABBBBBBBBCCD")
    assert rep.read(0) == b"DAAABBCCBBBB" + bytes(4)


@pytest.mark.parametrize("rows,payload,says", [
    (([2], [0], [4]), b"xxxx", "row 0 names page 2 but there are 2 pages"),
    (([1], [97], [4]), b"xxxx", r"row 0 \(4 bytes at offset 97\) runs past the end of page 1 \(100 bytes\)"),
    (([0], [0], [4]), b"xxxxx", "the rows need 4 payload bytes but 5 were given"),
    (([0, 1], [0, 0], [4, 4]), b"xxxx", r"rows 0..1 need more than the 4 payload bytes given"),
    (([0], [0], [4, 4]), b"xxxxxxxx", "must be equally long"),
    (([0], [-1], [4]), b"xxxx", r"offsets\[0\] is negative"),
    (([0], [0.5], [4]), b"xxxx", r"offsets\[0\] is not an integer \(0.5\)"),
])
def test_bad_rows_change_nothing(emulated, rng, rows, payload, says):
    rep = Replicator(1, 0, bytes(128), 0, [64, 100])
    rep.broadcast(*random_batch(rng, rep.page_sizes))
    before = (rep.read(0), rep.read(1), rep.hash(), rep.ticks)
    with pytest.raises(mmsb.InvalidArgumentError, match=says):
        rep.broadcast(*rows, payload)
    assert (rep.read(0), rep.read(1), rep.hash(), rep.ticks) == before


def test_receive_on_rank_0_and_bad_page_are_refused(emulated):
    rep = Replicator(1, 0, bytes(128), 0, [8, 8])
    with pytest.raises(mmsb.InvalidArgumentError, match="rank 0 is the sender"):
        rep.receive()
    with pytest.raises(mmsb.InvalidArgumentError, match="page 2 is out of range"):
        rep.read(2)
    assert rep.ticks == 0


def test_attributes_and_repr(emulated):
    rep = Replicator(1, 0, bytes(128), 0, np.array([8, 24], np.uint32))
    assert (rep.nranks, rep.rank, rep.ordinal, rep.page_sizes, rep.ticks) == (1, 0, 0, [8, 24], 0)
    assert repr(rep) == "<mmsb.cuda.Replicator rank 0 of 1 on cuda:0: 2 pages, 32 B, tick 0>"


def join_in_threads(uid, ordinals, sizes):
    """Replicators of one group, each constructed on its own thread (construction is a collective)."""
    reps, errors = [None] * len(ordinals), []

    def join(rank):
        try:
            reps[rank] = Replicator(len(ordinals), rank, uid, ordinals[rank], sizes)
        except Exception as e:  # noqa: BLE001 - reported to the caller
            errors.append(e)

    threads = [threading.Thread(target=join, args=(r,)) for r in range(len(ordinals))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return reps, errors


def replicate_in_threads(rng, ordinals, ticks):
    """Rank 0 broadcasts random batches while every other rank receives on its own thread; every
    rank ends with the NumPy model's bytes and hash, and check() agrees on all of them."""
    reps, errors = join_in_threads(Replicator.unique_id(), ordinals, SIZES)
    assert not errors, errors
    root, peers = reps[0], reps[1:]
    model = [np.zeros(s, np.uint8) for s in SIZES]
    receivers = [threading.Thread(target=lambda p=p: [p.receive() for _ in range(ticks)]) for p in peers]
    for t in receivers:
        t.start()
    for _ in range(ticks):
        batch = random_batch(rng, root.page_sizes)
        root.broadcast(*batch)
        apply_model(model, *batch)
    for t in receivers:
        t.join()
    for rep in reps:
        assert [rep.read(i) for i in range(len(SIZES))] == [page.tobytes() for page in model], f"rank {rep.rank}"
        assert (rep.ticks, rep.hash()) == (ticks, reference_hash(model)), f"rank {rep.rank}"
    agreed = []
    checkers = [threading.Thread(target=lambda p=p: agreed.append(p.check())) for p in peers]
    for t in checkers:
        t.start()
    agreed.append(root.check())
    for t in checkers:
        t.join()
    assert agreed == [True] * len(reps)


def test_emulated_ranks_in_threads_replicate_like_the_model(rng):
    _core.cuda_emulate_devices(2)
    try:
        assert len(Replicator.unique_id()) == 128 and Replicator.unique_id() != Replicator.unique_id()
        replicate_in_threads(rng, ordinals=[0, 1, 1], ticks=30)
    finally:
        _core.cuda_emulate_devices(0)


def test_emulated_ranks_with_other_page_sizes_all_refuse(emulated):
    uid = Replicator.unique_id()
    reps, errors = [], []

    def join(rank, sizes):
        try:
            reps.append(Replicator(2, rank, uid, 0, sizes))
        except mmsb.InvalidArgumentError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=join, args=(0, [8, 8])), threading.Thread(target=join, args=(1, [8, 9]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reps == [] and len(errors) == 2
    assert all("rank 1 has other page sizes than rank 0" in e for e in errors), errors


# ---- over NCCL on a real device -------------------------------------------------------------------

@pytest.mark.nccl
@needs_nccl
def test_one_rank_over_nccl_matches_numpy_model(rng):
    rep = Replicator(1, 0, Replicator.unique_id(), 0, SIZES)
    run_against_model(rep, rng, 60)


@pytest.mark.nccl
@needs_nccl
def test_two_one_rank_groups_agree_on_hashes(rng):
    a = Replicator(1, 0, Replicator.unique_id(), 0, [4096, 77])
    b = Replicator(1, 0, Replicator.unique_id(), 0, [4096, 77])
    for _ in range(20):
        batch = random_batch(rng, a.page_sizes)
        a.broadcast(*batch)
        b.broadcast(*batch)
        assert a.hash() == b.hash()
    assert a.check() and b.check()


@pytest.mark.nccl
@needs_nccl
@pytest.mark.skipif(mmsb.cuda.device_count() < 2, reason="needs two CUDA devices (one rank per GPU)")
def test_two_ranks_on_two_gpus_replicate(rng):
    replicate_in_threads(rng, ordinals=[0, 1], ticks=20)
