"""Bad arguments to the functions written in Python (latency, Semiring, validate_purity, validate,
PageAges.cold, subscribe, provenance): each is an InvalidArgumentError naming the argument and
the value (docs/api.md, Conventions), never NumPy's errors or a binding TypeError naming an
internal function; and a NumPy integer is taken wherever an int is."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from error_checks import fails

E = mmsb.errors
S = mmsb.Semiring


@pytest.mark.parametrize("call,names", [
    (lambda bus, raw: bus.latency(None), ["kind", "None"]),
    (lambda bus, raw: bus.latency(5), ["kind", "5"]),
    (lambda bus, raw: bus.latency(b"commit"), ["kind", "b'commit'"]),
    (lambda bus, raw: bus.latency("\ud800"), ["kind", "\\ud800"]),
    (lambda bus, raw: bus.page_ages().cold("x"), ["min_age", "'x'"]),
    (lambda bus, raw: bus.page_ages().cold(-1), ["min_age", "-1"]),
    (lambda bus, raw: raw.at(np.array([1, 2])), ["epoch", "array"]),
    (lambda bus, raw: bus.provenance(raw, max_depth=np.float64(2)), ["max_depth", "2.0"]),
    (lambda bus, raw: bus.subscribe("page_created", print, pages=np.int64(0)), ["page id", "0"]),
    (lambda bus, raw: bus.subscribe("page_created", print, pages=[np.uint64(0)]), ["page id", "0"]),
    (lambda bus, raw: mmsb.validate_purity("x"), ["bus", "str"]),
    (lambda bus, raw: mmsb.validate_purity(samples=-1), ["samples", "-1"]),
    (lambda bus, raw: mmsb.validate_purity(bus, runs=0), ["runs", "0"]),
    (lambda bus, raw: mmsb.validate(only=5), ["only", "5"]),
    (lambda bus, raw: mmsb.validate(only=[5]), ["only", "[5]"]),
    (lambda bus, raw: mmsb.validate(targets=5), ["targets", "int"]),
])
def test_bus_and_validation_arguments(pop, call, names):
    bus, raw, *_ = pop
    fails(bus, E.InvalidArgumentError, lambda: call(bus, raw), ValueError, contains=names)
    assert mmsb._graph._hub(bus, create=False) is None  # no subscription was left registered


@pytest.mark.parametrize("call,names", [
    (lambda: S("x"), ["semiring", "'x'"]),
    (lambda: S.min_plus.zero("complex64"), ["min_plus", "zero", "complex64"]),
    (lambda: S.max_min.one("complex128"), ["max_min", "one", "complex128"]),
    (lambda: S.sum_product.zero("U3"), ["sum_product", "zero", "dtype"]),
    (lambda: S.min_plus.zero("nope"), ["dtype", "'nope'"]),
    (lambda: S.min_plus.supports("nope"), ["dtype", "'nope'"]),
    (lambda: S.sum_product.check_laws("nope"), ["dtype", "'nope'"]),
    (lambda: S.sum_product.check_laws("float64", samples=-1), ["samples", "-1"]),
    (lambda: S.sum_product.check_laws("float64", samples=1.5), ["samples", "1.5"]),
    (lambda: S.sum_product.check_laws("float64", samples=True), ["samples", "True"]),
    (lambda: S.sum_product.check_laws("float64", seed=-1), ["seed", "-1"]),
    (lambda: S.sum_product.check_laws("float64", seed=2**64), ["seed", str(2**64)]),
])
def test_semiring_arguments(call, names):
    with pytest.raises(E.InvalidArgumentError) as info:
        call()
    assert type(info.value) is E.InvalidArgumentError and isinstance(info.value, ValueError)
    for part in names:
        assert part in str(info.value), (part, str(info.value))


def test_integer_arguments_take_numpy_integers(pop):
    bus, raw, *_ = pop
    assert bus.latency("tick").count == 0
    assert S.min_plus.check_laws("float64", samples=np.int64(5), seed=np.uint32(2)) == \
        S.min_plus.check_laws("float64", samples=5, seed=2)
    assert mmsb.validate_purity(bus, samples=np.int16(3), runs=np.int8(1))
    ages = bus.page_ages()
    assert ages.cold(np.uint64(2)).tolist() == ages.cold(2).tolist()
    assert bus.provenance(raw, max_depth=np.int64(0)).max_depth == 0


def test_subscribe_takes_numpy_integer_ids_as_ints(pop):
    """A NumPy integer is an int id: one key on its own (it was "got int64"), and one not created
    yet is taken as it is (it was looked up, PageNotFoundError) for page_created."""
    bus, raw, *_ = pop
    seen, created = [], []
    bus.subscribe("delta_applied", seen.append, pages=np.int64(raw.id))
    bus.subscribe("page_created", created.append, pages=[np.int64(50), np.uint8(5)])
    raw.write(0, b"z")
    new = bus.create_page(8)
    assert new.id == 5
    assert [e.page for e in seen] == [raw.id] and [e.page for e in created] == [5]
