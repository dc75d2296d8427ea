"""Semirings and the purity validator (DESIGN §1 "Semirings"): the laws hold for every supported
semiring × dtype (sampled by the engine, and checked independently through the reduce kernel),
and validate_purity catches recomputes that mutate their inputs or are nondeterministic while a
pure one passes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import mmsb
from reference_model import capture_full_state

S = mmsb.Semiring
DTYPES = ("int32", "int64", "float32", "float64", "bool")
COMBOS = [(s, dt) for s in S.NAMES for dt in DTYPES if getattr(S, s).supports(dt)]


def test_supported_combinations():
    want = {(s, dt) for s in S.NAMES for dt in DTYPES
            if dt != "bool" or s in ("boolean", "max_min")}
    assert set(COMBOS) == want
    for s in S.NAMES:
        sr = getattr(S, s)
        assert sr.name == s and sr == S(s) and hash(sr) == hash(S(s)) and repr(sr) == f"mmsb.Semiring.{s}"
        assert not sr.supports("uint8") and not sr.supports("float16") and not sr.supports("complex128")
    with pytest.raises(ValueError):
        S("plus_times")


@pytest.mark.parametrize("sname,dtype", COMBOS)
def test_engine_law_check_finds_no_violation(sname, dtype):
    sr = getattr(S, sname)
    checks, violations = sr.check_laws(dtype, samples=300, seed=11)
    assert violations == [], violations[:3]
    assert checks > 0
    checks2, _ = sr.check_laws(dtype, samples=600, seed=11)
    assert checks2 == 2 * checks  # every sample checks the same laws
    assert sr.check_laws(dtype, samples=300, seed=11) == (checks, violations)  # seeded: reproducible


@pytest.mark.parametrize("sname", ["sum_product", "min_plus", "max_plus"])
def test_law_check_refuses_unsupported_dtypes(sname):
    with pytest.raises(mmsb.InvalidArgumentError) as ei:
        getattr(S, sname).check_laws("bool", samples=10, seed=0)
    assert sname in str(ei.value) and "bool" in str(ei.value)


def samples(dtype, n, rng):
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    if dt.kind == "i":
        return rng.integers(-10_000, 10_000, n).astype(dt)  # no wrap-around: the laws are exact
    return (rng.normal(size=n) * 50).astype(dt)


@pytest.mark.parametrize("sname,dtype", COMBOS)
def test_numpy_side_of_the_semiring_obeys_the_laws(sname, dtype, rng):
    """Semiring.add/mul/zero/one as NumPy: identities, commutativity, associativity, annihilation
    and distributivity on finite samples (exact but where floating + or × rounds)."""
    sr = getattr(S, sname)
    dt = np.dtype(dtype)
    a, b, c = (samples(dtype, 500, rng) for _ in range(3))
    z, o = sr.zero(dt), sr.one(dt)
    assert np.asarray(z).dtype == dt and np.asarray(o).dtype == dt

    def cast(x):
        return np.asarray(x).astype(dt)

    add = lambda x, y: cast(sr.add(x, y))  # noqa: E731
    mul = lambda x, y: cast(sr.mul(x, y))  # noqa: E731
    lift = (lambda x: cast(x != 0)) if sname == "boolean" else (lambda x: x)  # noqa: E731
    tolerant = sname in ("sum_product", "min_plus", "max_plus") and dt.kind == "f"  # floating +, × round

    def same(x, y):
        if tolerant:
            return np.allclose(x, y, rtol=1e-4 if dt == np.float32 else 1e-12, atol=1e-2 if dt == np.float32 else 1e-9)
        return np.array_equal(x, y)
    assert np.array_equal(add(a, z), lift(a)) and np.array_equal(add(z, a), lift(a))
    assert np.array_equal(mul(a, o), lift(a)) and np.array_equal(mul(o, a), lift(a))
    if not (dt.kind == "i" and sname in ("min_plus", "max_plus")):  # NumPy + wraps at the integer "infinity"
        assert np.array_equal(mul(a, z), np.full_like(a, z)) and np.array_equal(mul(z, a), np.full_like(a, z))
    assert np.array_equal(add(a, b), add(b, a))
    assert same(add(add(a, b), c), add(a, add(b, c)))
    assert same(mul(mul(a, b), c), mul(a, mul(b, c)))
    assert same(mul(a, add(b, c)), add(mul(a, b), mul(a, c)))
    assert same(mul(add(b, c), a), add(mul(b, a), mul(c, a)))
    if sname in ("sum_product", "max_plus", "min_plus"):
        assert sr.mul(np.asarray(2, dt), np.asarray(3, dt)) == (6 if sname == "sum_product" else 5)


def reduce_page(bus, parents, sname, weights=None):
    dt = parents[0].dtype
    out = bus.create_page(shape=parents[0].shape, dtype=dt)
    bus.depend(out, on=parents, fn=mmsb.ops.reduce(sname), weights=weights)
    return out


def as_weight(value, dtype):
    """A semiring constant as a depend() weight (integer infinities are given as ±inf)."""
    dt = np.dtype(dtype)
    if dt.kind == "i":
        info = np.iinfo(dt)
        if int(value) == info.max:
            return float("inf")
        if int(value) == info.min:
            return float("-inf")
    return float(value)


@pytest.mark.parametrize("sname,dtype", COMBOS)
def test_the_reduce_kernel_obeys_the_laws(bus, rng, sname, dtype):
    """The same laws through the C++ kernel: reductions built from pages, compared bit for bit
    (with a tolerance for float sum_product)."""
    sr = getattr(S, sname)
    dt = np.dtype(dtype)
    n = 129
    p, q, r = (bus.create_page(data=samples(dtype, n, rng)) for _ in range(3))
    zero_page = bus.create_page(data=np.full(n, sr.zero(dt), dtype=dt))
    tolerant = sname == "sum_product" and dt.kind == "f"

    def same(x, y):
        x, y = x.view(), y.view()
        if tolerant:
            return np.allclose(x, y, rtol=1e-4 if dt == np.float32 else 1e-12, atol=1e-2 if dt == np.float32 else 1e-9)
        return x.tobytes() == y.tobytes()

    lifted_p = reduce_page(bus, [p], sname)  # ⊕ over one parent with weight 1: p (0/1 for boolean)
    want = (p.view() != 0).astype(dt) if sname == "boolean" else p.view()
    assert lifted_p.view().tobytes() == want.tobytes()
    assert same(reduce_page(bus, [p, q], sname), reduce_page(bus, [q, p], sname))              # commutative
    assert same(reduce_page(bus, [p, zero_page], sname), lifted_p)                              # 0 is ⊕-neutral
    assert same(reduce_page(bus, [reduce_page(bus, [p, q], sname), r], sname),
                reduce_page(bus, [p, reduce_page(bus, [q, r], sname)], sname))                  # associative
    assert same(reduce_page(bus, [p, q, r], sname), reduce_page(bus, [reduce_page(bus, [p, q], sname), r], sname))
    # annihilation and identity of the weights
    z = as_weight(sr.zero(dt), dt)
    o = as_weight(sr.one(dt), dt)
    assert np.array_equal(reduce_page(bus, [p], sname, [z]).view(), np.full(n, sr.zero(dt), dtype=dt))
    assert same(reduce_page(bus, [p], sname, [o]), lifted_p)
    # distributivity: w ⊗ (p ⊕ q) == (w ⊗ p) ⊕ (w ⊗ q)
    w = True if dt.kind == "b" else float(rng.integers(-5, 6))
    pq = reduce_page(bus, [p, q], sname)
    assert same(reduce_page(bus, [pq], sname, [w]), reduce_page(bus, [p, q], sname, [w, w]))


# ---- the purity validator --------------------------------------------------------------------
def small_graph(bus):
    a = bus.create_page(data=np.arange(8, dtype=np.float64), name="a")
    b = bus.create_page(data=np.ones(8), name="b")
    c = bus.create_page(shape=(8,), dtype="float64", name="c")
    d = bus.create_page(shape=(8,), dtype="float64", name="d")
    bus.depend(c, on=[a, b], fn=mmsb.ops.reduce("max_plus"), weights=[1.0, 2.0])
    bus.depend(d, on=[c], fn=mmsb.ops.copy)
    return a, b, c, d


def test_laws_only_without_a_bus():
    r = mmsb.validate_purity(samples=200, seed=3)
    assert r.ok and bool(r)
    assert r.law_violations == [] and r.law_checks > 0
    assert r.recomputes_checked == 0
    assert r.nondeterministic == [] and r.side_effects == [] and r.failures == []
    assert r.law_checks == sum(getattr(S, s).check_laws(dt, 200, 3)[0] for s, dt in COMBOS)


def test_a_pure_callable_passes_and_nothing_changes(bus):
    a, b, c, d = small_graph(bus)
    calls = []

    def pure(out, x, y):
        calls.append(1)
        out[:] = np.sqrt(np.abs(x)) + y

    e = bus.create_page(shape=(8,), dtype="float64", name="e")
    bus.depend(e, on=[a, c], fn=pure)
    before = capture_full_state(bus)
    stats = bus.stats()
    calls.clear()
    r = mmsb.validate_purity(bus, samples=50)
    assert r.ok, r
    assert r.recomputes_checked == 3  # c, d, e
    assert calls == [1, 1]  # run twice, committing nothing
    assert capture_full_state(bus) == before
    assert {k: v for k, v in bus.stats().items() if k != "events"} == {k: v for k, v in stats.items() if k != "events"}


def test_a_callable_that_mutates_its_input_is_caught(bus):
    a, b, c, d = small_graph(bus)

    def sneaky(out, x):
        out[:] = x * 2
        if x.flags.writeable:  # the live wave hands read-only views; the probe hands copies
            x[0] += 1.0

    e = bus.create_page(shape=(8,), dtype="float64", name="e")
    bus.depend(e, on=[a], fn=sneaky)
    honest = bus.create_page(shape=(8,), dtype="float64", name="honest")
    bus.depend(honest, on=[b], fn=lambda out, x: x + 1)
    before = capture_full_state(bus)
    r = mmsb.validate_purity(bus, samples=20)
    assert not r.ok and not bool(r)
    assert r.recomputes_checked == 4
    assert len(r.side_effects) == 1, r.side_effects
    msg = r.side_effects[0]
    assert f"page {e.id}" in msg and "modified its input" in msg and f"page {a.id}" in msg
    assert r.nondeterministic == [] and r.failures == []
    assert capture_full_state(bus) == before  # the real parent was never touched


def test_a_callable_that_writes_a_read_only_parent_fails_at_depend(bus):
    a = bus.create_page(data=np.arange(4, dtype=np.float64))
    b = bus.create_page(shape=(4,), dtype="float64")
    before = capture_full_state(bus)

    def writes_parent(out, x):
        x[0] = 99.0
        out[:] = x
    with pytest.raises(mmsb.PropagationError) as ei:
        bus.depend(b, on=[a], fn=writes_parent)
    assert f"page {b.id}" in str(ei.value)
    assert capture_full_state(bus) == before


@pytest.mark.parametrize("how", ["counter", "random"])
def test_a_nondeterministic_callable_is_caught(bus, how):
    a, b, c, d = small_graph(bus)
    counter = itertools.count()
    noise = np.random.default_rng(5)

    def flaky(out, x):
        bump = next(counter) if how == "counter" else noise.random()
        out[:] = x + bump

    e = bus.create_page(shape=(8,), dtype="float64", name="e")
    bus.depend(e, on=[a], fn=flaky)
    before = capture_full_state(bus)
    r = mmsb.validate_purity(bus, samples=20)
    assert not r.ok
    assert r.nondeterministic == [e.id]
    assert r.side_effects == [] and r.failures == []
    assert capture_full_state(bus) == before
    # more runs do not change the verdict
    assert mmsb.validate_purity(bus, samples=20, runs=3).nondeterministic == [e.id]


@pytest.mark.parametrize("how", ["accumulates", "global"])
def test_a_callable_that_is_no_function_of_its_parents_is_caught(bus, how):
    """Each probe starts from the child's content, so an accumulator (out += x) repeats itself
    and a changed global gives the same bytes twice: both differ from what was committed for the
    same parent epochs."""
    a, b, c, d = small_graph(bus)
    scale = [1.0]

    def accumulates(out, x):
        out += x

    def scaled(out, x):
        out[:] = x * scale[0]

    e = bus.create_page(shape=(8,), dtype="float64", name="e")
    bus.depend(e, on=[a], fn=accumulates if how == "accumulates" else scaled)
    a.write(0, np.float64(3).tobytes())
    scale[0] = 2.0
    before = capture_full_state(bus)
    r = mmsb.validate_purity(bus, samples=20)
    assert not r.ok and r.nondeterministic == [e.id], r
    assert capture_full_state(bus) == before
    # Written directly, it holds no recompute's bytes: nothing to compare with, and the probes
    # alone (each from the same content) cannot tell.
    e.write(0, bytes(8))
    assert mmsb.validate_purity(bus, samples=20).nondeterministic == []


def test_a_callable_that_raises_in_the_probe_is_a_failure(bus):
    a, b, c, d = small_graph(bus)
    armed = []

    def moody(out, x):
        if armed:
            raise RuntimeError("not today")
        out[:] = -x
    e = bus.create_page(shape=(8,), dtype="float64", name="e")
    bus.depend(e, on=[a], fn=moody)
    armed.append(1)
    r = mmsb.validate_purity(bus, samples=20)
    assert not r.ok
    assert len(r.failures) == 1 and f"page {e.id}" in r.failures[0] and "not today" in r.failures[0]
    assert r.nondeterministic == [] and r.side_effects == []


def test_unregistered_callables_are_skipped_after_reopen(tmp_path):
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        a, b, c, d = small_graph(bus)
        e = bus.create_page(shape=(8,), dtype="float64", name="e")
        bus.depend(e, on=[a], fn=lambda out, x: x * 3)
    with mmsb.open(path) as bus:
        r = mmsb.validate_purity(bus, samples=10)
        assert r.ok and r.recomputes_checked == 2  # c and d; e has no function yet
        bus.depend("e", on=["a"], fn=lambda out, x: x * 3)
        r = mmsb.validate_purity(bus, samples=10)
        assert r.ok and r.recomputes_checked == 3
