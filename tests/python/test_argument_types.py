"""Arguments of the wrong type, and text UTF-8 cannot hold: each is an mmsb error naming the
argument (docs/api.md, Conventions: every error is a subclass of mmsb.MmsbError), never a bare
TypeError or RuntimeError from the binding layer, and nothing changes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import mmsb
from error_checks import fails
from mmsb.inspect_cmd import inspect_dir

E = mmsb.errors
LONE = "\ud800"  # a lone surrogate: a valid str that UTF-8 cannot encode


def test_lone_surrogate_keys_name_no_page(pop):
    bus, raw, *_ = pop
    assert LONE not in bus
    assert ("raw" + LONE) not in bus
    err = fails(bus, E.PageNotFoundError, lambda: bus.page(LONE), KeyError)
    assert "\\ud800" in str(err)
    fails(bus, E.PageNotFoundError, lambda: bus.delete_page(LONE), KeyError)
    fails(bus, E.PageNotFoundError, lambda: bus.depend(raw, on=[LONE], fn=mmsb.ops.copy), KeyError)


def test_lone_surrogate_names_and_metadata_are_refused(pop):
    bus, raw, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, name=LONE), ValueError, contains=["name"])
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, metadata={LONE: "v"}), ValueError,
          contains=["metadata key"])
    fails(bus, E.InvalidArgumentError, lambda: bus.create_page(8, metadata={"k": "\udcff"}), ValueError,
          contains=["metadata value for 'k'"])
    fails(bus, E.InvalidArgumentError, lambda: raw.set_metadata("k", "\udcff"), ValueError,
          contains=["metadata value for 'k'"])
    fails(bus, E.InvalidArgumentError, lambda: raw.set_metadata(LONE, "v"), ValueError, contains=["metadata key"])
    assert raw.metadata == {}
    assert bus.create_page(8, name="ok").id == 5  # nothing was consumed by the refused calls


@pytest.mark.parametrize("call,names", [
    (lambda bus, raw, d: bus.create_page(8, location=None), ["location", "NoneType"]),
    (lambda bus, raw, d: raw.to(None), ["location", "NoneType"]),
    (lambda bus, raw, d: bus.add_edge(raw, "typed", kind=None), ["kind", "NoneType"]),
    (lambda bus, raw, d: setattr(bus, "propagation", None), ["propagation", "NoneType"]),
    (lambda bus, raw, d: setattr(d, "source", None), ["source", "NoneType"]),
    (lambda bus, raw, d: mmsb.Delta.at(raw, 0, b"x", source=1), ["source", "int"]),
    (lambda bus, raw, d: mmsb.Delta.runs(raw, [0], [b"x"], source=b"user"), ["source", "bytes"]),
    (lambda bus, raw, d: mmsb.Delta.masked(raw, np.ones(64, bool), bytes(64), source=None), ["source"]),
    (lambda bus, raw, d: mmsb.Delta.masked(raw, np.ones(64, bool), bytes(64), packed="yes"), ["packed", "str"]),
    (lambda bus, raw, d: mmsb.Delta.masked(raw, np.ones(64, bool), bytes(64), packed=None), ["packed", "NoneType"]),
    (lambda bus, raw, d: mmsb.Delta.runs(raw, (o for o in [0]), [b"x"]), ["offsets", "generator"]),
    (lambda bus, raw, d: mmsb.Delta.runs(raw, 0, b"x"), ["offsets", "int"]),
    (lambda bus, raw, d: mmsb.Delta.runs(raw, [0], b"x"), ["datas", "bytes"]),
    (lambda bus, raw, d: mmsb.Delta.merge(d, 2), ["second", "int"]),
    (lambda bus, raw, d: bus.replicate("x", [raw]), ["replicator", "str"]),
    (lambda bus, raw, d: bus.depend(raw, on=b"\x01", fn=mmsb.ops.copy), ["bytes"]),
    (lambda bus, raw, d: bus.depend(raw, on=bytearray(b"\x01"), fn=mmsb.ops.copy), ["bytearray"]),
    (lambda bus, raw, d: bus.depend(raw, on=["typed"], fn=mmsb.ops.reduce("sum_product"), weights="ab"),
     ["weights", "str"]),
    (lambda bus, raw, d: bus.depend(raw, on=["typed"], fn=mmsb.ops.reduce("sum_product"), weights=2),
     ["weights", "int"]),
    (lambda bus, raw, d: bus.depend(raw, on=["typed"], fn=mmsb.ops.reduce("sum_product"), weights=["x"]),
     ["weight", "str"]),
    (lambda bus, raw, d: bus.depend(raw, on=["typed"], fn=mmsb.ops.reduce("sum_product"), weights=[10**400]),
     ["weight", "float64"]),
    (lambda bus, raw, d: raw.edit(device="yes").__enter__(), ["device", "str"]),
    (lambda bus, raw, d: bus.configure_tick(total="x"), ["total", "str"]),
    (lambda bus, raw, d: bus.configure_tick(drain=True), ["drain", "bool"]),
    (lambda bus, raw, d: bus.configure_tick(validate_sample=10**20), ["validate_sample", "64 bits"]),
    (lambda bus, raw, d: bus.configure_tick(validate_sample=2.5), ["validate_sample", "float"]),
    (lambda bus, raw, d: bus.configure_tick(memory_budget=-1), ["memory_budget", "negative"]),
    (lambda bus, raw, d: bus.create_page(data=[[1, 2], [3]]), ["data", "list"]),
    (lambda bus, raw, d: bus.apply(b"x"), ["apply() takes an mmsb.Delta", "bytes"]),
    (lambda bus, raw, d: bus.apply(mmsb.DeltaBatch([raw.id], [0], [1], b"x")), ["apply_batch()"]),
    (lambda bus, raw, d: bus.apply_batch(d), ["apply_batch() takes an mmsb.DeltaBatch", "apply()"]),
    (lambda bus, raw, d: bus.submit(b"x"), ["submit() takes an mmsb.Delta or mmsb.DeltaBatch", "bytes"]),
    (lambda bus, raw, d: bus.submit(d, block="no"), ["block", "str"]),
    (lambda bus, raw, d: bus.submit(d, block=None), ["block", "NoneType"]),
])
def test_wrong_types_are_invalid_argument_errors(pop, call, names):
    bus, raw, *_ = pop
    delta = mmsb.Delta.at(raw, 0, b"x")
    fails(bus, E.InvalidArgumentError, lambda: call(bus, raw, delta), ValueError, contains=names)
    assert delta.source == "user" and bus.propagation == "eager"
    assert bus.stats()["submits"] == 0


def test_bus_options_of_the_wrong_type(tmp_path):
    for kwargs, names in [({"durability": None}, ["durability"]), ({"history": "no"}, ["history", "str"]),
                          ({"durability": "\ud800"}, ["durability", "surrogate"]),
                          ({"path": 3.5}, ["path", "str, bytes or os.PathLike", "float"])]:
        with pytest.raises(E.InvalidArgumentError) as info:
            mmsb.Bus(**kwargs)
        for part in names:
            assert part in str(info.value)
    with pytest.raises(E.InvalidArgumentError, match="durability"):
        mmsb.open(tmp_path, durability=1)
    assert list(tmp_path.iterdir()) == []


def test_numpy_scalars_are_accepted_where_numbers_are(pop):
    bus, raw, typed, *_ = pop
    child = bus.create_page(shape=(3, 4), dtype="float32")
    bus.depend(child, on=[typed], fn=mmsb.ops.reduce("sum_product"), weights=np.array([np.float32(2)]))
    assert (child.view() == 2 * typed.view()).all()
    bus.configure_tick(total=np.float64(0.5), validate_sample=np.int64(3), memory_budget=np.uint32(10))
    assert raw.edit(device=np.bool_(False)).__enter__() is not None
    assert (raw.at(np.int64(1)) == raw.view()).all()


def test_huge_max_depth_is_no_limit(bus):
    a = bus.create_page(shape=(2,), dtype="int64")
    b = bus.create_page(shape=(2,), dtype="int64")
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    a.write(0, np.int64(5).tobytes())
    prov = bus.provenance(b, max_depth=10**20)
    assert len(prov) == 2 and prov.max_depth == 10**20


def test_subscribe_checks_its_pages_and_the_bus(pop):
    bus, raw, typed, anon, gone = pop
    fails(bus, E.PageNotFoundError, lambda: bus.subscribe("delta_applied", print, pages=["nope"]), KeyError,
          contains=["nope"])
    fails(bus, E.PageNotFoundError, lambda: bus.subscribe("delta_applied", print, pages=[gone]), KeyError)
    for bad in ([-1], [0], [2**64], [True], 2.5):
        fails(bus, E.InvalidArgumentError, lambda: bus.subscribe("delta_applied", print, pages=bad), ValueError)
    seen, named, one = [], [], []
    bus.subscribe("delta_applied", seen.append, pages=[raw.id, "typed"])
    bus.subscribe("delta_applied", named.append, pages="raw")  # one name, not the names r, a, w
    bus.subscribe("delta_applied", one.append, pages=anon)
    raw.write(0, b"z")
    anon.write(0, b"z")
    assert [e.page for e in seen] == [e.page for e in named] == [raw.id]
    assert [e.page for e in one] == [anon.id]
    bus.close()
    with pytest.raises(E.ClosedError):
        bus.subscribe("delta_applied", print)


def test_thread_counts_are_checked_before_they_narrow():
    for threads in (2**32, 2**32 + 4, 2**40):
        with pytest.raises(E.InvalidArgumentError, match=f"between 1 and 1024; got {threads}"):
            mmsb.Bus(threads=threads)


def test_progress_of_an_in_memory_bus_is_checked_too():
    for bad in ("bad", 3, [1]):
        with pytest.raises(E.InvalidArgumentError, match="progress must be None, True, False or a callable"):
            mmsb.Bus(progress=bad)
    for good in (None, True, False, lambda phase, done, total: None):
        mmsb.Bus(progress=good).close()


def test_paths_are_the_bytes_the_os_names(tmp_path):
    """A bytes path is that path (it was read as its repr, "b'...'"), and a str path with bytes
    UTF-8 cannot decode (os.fsdecode's surrogate escapes) reaches the same directory; bus.path
    and mmsb inspect give it back as os.fsdecode does, with a stray non-UTF-8 file beside it."""
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.mmsb"
    with mmsb.Bus(raw) as bus:
        bus.create_page(8, name="x")
        assert bus.path == os.fsdecode(raw)
    assert os.listdir(tmp_path) == ["caf\udce9.mmsb"]
    open(raw + b"/junk\xff.txt", "wb").close()
    with mmsb.open(os.fsdecode(raw)) as bus:
        assert bus.lsn == 1
    info = inspect_dir(os.fsdecode(raw))
    assert info["path"] == os.fsdecode(raw) and info["other_files"] == ["junk\udcff.txt"]
