"""The built-in reduce kernels (DESIGN §1 "Semirings") for every supported dtype and semiring,
weighted or not, against NumPy: integer wrapping, the saturating infinities of min_plus and
max_plus, and the refusal of mismatched layouts."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import mmsb
from propagation_model import ELEMS, F64, SEMIRINGS, reduce_ref
from reference_model import capture_full_state

# ---- integer and boolean kernels against NumPy -----------------------------------------------
def random_values(rng, dtype, n):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    info = np.iinfo(dtype)
    v = rng.integers(-1000, 1000, n).astype(dtype)
    wide = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    pick = rng.random(n) < 0.3
    v[pick] = wide[pick]  # full-range values: wrapping and the saturating infinities
    v[:4] = [info.max, info.min, 0, -1]
    return v


def random_weights(rng, sname, dtype, k):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return [bool(rng.integers(0, 2)) for _ in range(k)]
    return [float(rng.choice([-3, -1, 0, 1, 2, 7, 1000])) for _ in range(k)]


COMBOS = [(dt, s) for dt in ("int32", "int64", "bool") for s in SEMIRINGS
          if getattr(mmsb.Semiring, s).supports(dt)]


def test_supported_integer_and_bool_combos():
    assert {s for dt, s in COMBOS if dt == "bool"} == {"boolean", "max_min"}
    assert {s for dt, s in COMBOS if dt == "int32"} == set(SEMIRINGS)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("dtype,sname", COMBOS)
def test_integer_and_bool_reduce_kernels_match_numpy(bus, dtype, sname, weighted):
    rng = np.random.default_rng(zlib.crc32(f"{dtype}/{sname}/{weighted}".encode()))
    n = 257  # an odd length: the kernel's tail is checked too
    parents = [bus.create_page(data=random_values(rng, dtype, n)) for _ in range(int(rng.integers(1, 5)))]
    child = bus.create_page(shape=(n,), dtype=dtype)
    weights = random_weights(rng, sname, dtype, len(parents)) if weighted else None
    bus.depend(child, on=parents, fn=mmsb.ops.reduce(sname), weights=weights)
    for step in range(6):
        want = reduce_ref(sname, [p.view() for p in parents], weights, dtype)
        assert child.view().dtype == np.dtype(dtype)
        assert child.view().tobytes() == want.tobytes(), (step, np.flatnonzero(child.view() != want)[:5])
        p = parents[int(rng.integers(len(parents)))]
        p.update(random_values(rng, dtype, n))


@pytest.mark.parametrize("sname", SEMIRINGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_reduce_kernels_match_numpy_with_infinities(bus, dtype, sname):
    rng = np.random.default_rng(5)
    n = 67
    vals = []
    for _ in range(3):
        v = (rng.normal(size=n) * 100).astype(dtype)
        v[:3] = [np.inf, -np.inf, 0.0]
        vals.append(v)
    parents = [bus.create_page(data=v) for v in vals]
    child = bus.create_page(shape=(n,), dtype=dtype)
    weights = [2.0, -0.5, 1.0]
    bus.depend(child, on=parents, fn=mmsb.ops.reduce(sname), weights=weights)
    with np.errstate(invalid="ignore"):
        want = reduce_ref(sname, vals, weights, dtype)
    got = child.view()
    assert np.array_equal(got, want, equal_nan=True), (np.flatnonzero(~((got == want) | (np.isnan(got) & np.isnan(want))))[:5])


def test_builtin_ops_refuse_mismatched_layouts(bus):
    a = bus.create_page(shape=(ELEMS,), dtype=F64)
    i = bus.create_page(shape=(ELEMS,), dtype="int64")
    short = bus.create_page(shape=(ELEMS - 1,), dtype=F64)
    raw = bus.create_page(ELEMS * 8)
    c = bus.create_page(shape=(ELEMS,), dtype=F64)
    before = capture_full_state(bus)
    for parents, fn in [([i], mmsb.ops.copy), ([short], mmsb.ops.copy), ([a, i], mmsb.ops.reduce("min_plus")),
                        ([a, short], mmsb.ops.reduce("max_min")), ([raw], mmsb.ops.reduce("boolean"))]:
        with pytest.raises(mmsb.InvalidArgumentError):
            bus.depend(c, on=parents, fn=fn)
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.ops.reduce("plus_times")
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.depend(c, on=[a], fn=mmsb.ops.reduce("min_plus"), weights=[float("nan")])
    assert capture_full_state(bus) == before
    # a callable may read parents of any layout
    bus.depend(c, on=[i, short], fn=lambda out, x, y: np.concatenate([y, x[:1].astype(F64)]))
    i.write(0, np.int64(5).tobytes())
    short.write(0, np.float64(2.5).tobytes())
    assert c.view()[-1] == 5.0 and c.view()[0] == 2.5
