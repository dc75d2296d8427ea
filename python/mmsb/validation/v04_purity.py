"""Validator 4, purity: the semiring laws hold for every semiring × dtype, and every recompute
(built-in kernels and user callables) is deterministic and leaves its inputs alone (DESIGN §1
"Semirings", §5 row 4).

Workload (full; quick in brackets), all through the public API:
- mmsb.validate_purity() samples the laws on the engine's scalar operations, 100,000 [5,000]
  random triples per supported semiring × dtype (int32/int64/float32/float64/bool).
- The same laws through the reduce kernel on a bus: for each supported combination, source pages
  p, q, r (1,024 [129] elements) and a page of ⊕-zeros, and derived pages checking
  commutativity (p⊕q = q⊕p), the ⊕ identity (p⊕0 = p), associativity ((p⊕q)⊕r = p⊕(q⊕r)),
  annihilation (weight 0: 0⊗p = 0), the ⊗ identity (weight 1), distributivity
  (w⊗(p⊕q) = w⊗p ⊕ w⊗q) and the definition child = ⊕_i (w_i ⊗ parent_i) against NumPy.
  Exact, except float sum_product (rounding order) within a tolerance.
- mmsb.ops.copy for every dtype and the pure sample callables of SAMPLE_CALLABLES, each checked
  against the callable run by hand on copies of its parents.
- 25 [4] rounds of fresh random content in every source page (eager waves recompute everything);
  after each, every source must hold exactly what was written (else a side effect), and the same
  stream on a second bus with another thread count must give identical derived bytes (else
  nondeterministic). Finally mmsb.validate_purity(bus, runs=3) re-runs each recompute without
  committing and reports nondeterministic ones and ones that mutate their inputs.

Metrics: law_failures (engine law violations + failed law/definition comparisons, once per
combination and law), side_effects and nondeterministic (recomputes). A recompute that raises
makes the validator raise.
"""

from __future__ import annotations

import os
import re

import numpy as np

import mmsb

from ._framework import Context, validator

DTYPES = ("int32", "int64", "float32", "float64", "bool")


def _scaled_sum(out, x, y):
    out[:] = 2.0 * x + y


def _clipped(out, x):
    np.clip(x, -1.0, 1.0, out=out)


def _sorted(out, x):
    out[:] = np.sort(x)


def _returns_max(out, x, y):
    return np.maximum(x, y)


def _mixed_bits(out, x):
    out[:] = x ^ (x >> 3)


def _either(out, a, b):
    np.logical_or(a, b, out=out)


# (name, dtype, number of parents, fn): the user callables the validator checks. Tests add
# impure ones here to show that the validator catches them.
SAMPLE_CALLABLES = [
    ("scaled_sum", "float64", 2, _scaled_sum),
    ("clipped", "float32", 1, _clipped),
    ("sorted", "float64", 1, _sorted),
    ("returns_max", "int64", 2, _returns_max),
    ("mixed_bits", "int32", 1, _mixed_bits),
    ("either", "bool", 2, _either),
]


def _random(dtype: str, n: int, rng: np.random.Generator) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    if dt.kind == "i":
        return rng.integers(-10_000, 10_000, n).astype(dt)  # far from the integer "infinities"
    return (rng.normal(size=n) * 50).astype(dt)


def _weight(value, dt: np.dtype) -> float:
    """A semiring constant as a depend() weight (integer infinities are given as ±inf)."""
    if dt.kind == "i" and int(value) in (np.iinfo(dt).max, np.iinfo(dt).min):
        return float("inf") if int(value) == np.iinfo(dt).max else float("-inf")
    return float(value)


def _expected(sr: mmsb.Semiring, dt: np.dtype, parents: list, weights: list) -> np.ndarray:
    """⊕_i (w_i ⊗ parent_i) in NumPy (boolean lifts to 0/1)."""
    terms = []
    for p, w in zip(parents, weights):
        if sr.name == "boolean":
            terms.append((p != 0) & (w != 0))
        else:
            terms.append(np.asarray(sr.mul(np.asarray(w).astype(dt), p)).astype(dt))
    acc = terms[0]
    for t in terms[1:]:
        acc = np.asarray(sr.add(acc, t))
    return acc.astype(dt)


class _Graph:
    """One bus carrying every recompute of the workload, and the comparisons to make on it."""

    def __init__(self, bus: mmsb.Bus, n: int, rng: np.random.Generator) -> None:
        self.bus, self.n = bus, n
        self.sources: list = []  # pages rewritten each round
        self.laws: list = []     # (key, lhs page, rhs page or ndarray-producing callable, tolerant)
        self.results: list = []  # the same for copy and callables: their output run by hand
        for sname in mmsb.Semiring.NAMES:
            sr = getattr(mmsb.Semiring, sname)
            for dtype in (d for d in DTYPES if sr.supports(d)):
                self._semiring(sr, np.dtype(dtype), rng)
        for dtype in DTYPES:
            src = self._source(dtype, rng)
            out = self._derived(dtype, [src], mmsb.ops.copy)
            self.results.append((f"copy/{dtype}", out, lambda s=src: s.view(), False))
        for name, dtype, k, fn in SAMPLE_CALLABLES:
            parents = [self._source(dtype, rng) for _ in range(k)]
            out = self._derived(dtype, parents, fn)
            self.results.append((f"callable {name}", out, lambda f=fn, ps=parents, o=out: _by_hand(f, o, ps), False))

    def _source(self, dtype, rng):
        page = self.bus.create_page(data=_random(dtype, self.n, rng))
        self.sources.append(page)
        return page

    def _derived(self, dtype, parents, fn, weights=None):
        out = self.bus.create_page(shape=(self.n,), dtype=dtype)
        self.bus.depend(out, on=parents, fn=fn, weights=weights)
        return out

    def _semiring(self, sr, dt, rng):
        key = f"{sr.name}/{dt.name}"
        tol = sr.name == "sum_product" and dt.kind == "f"
        red = lambda ps, w=None: self._derived(dt.name, ps, mmsb.ops.reduce(sr), w)  # noqa: E731
        p, q, r = (self._source(dt.name, rng) for _ in range(3))
        zero = self.bus.create_page(data=np.full(self.n, sr.zero(dt), dtype=dt))
        z, o = _weight(sr.zero(dt), dt), _weight(sr.one(dt), dt)
        w = 1.0 if dt.kind == "b" else float(rng.integers(-5, 6))
        ws = [1.0, 0.0, 1.0] if dt.kind == "b" else [float(x) for x in rng.integers(-5, 6, 3)]
        lifted = red([p])
        pq = red([p, q])
        self.laws += [
            (f"{key} commutativity", pq, red([q, p]), tol),
            (f"{key} additive identity", red([p, zero]), lifted, tol),
            (f"{key} associativity", red([pq, r]), red([p, red([q, r])]), tol),
            (f"{key} annihilation", red([p], [z]), lambda: np.full(self.n, sr.zero(dt), dtype=dt), False),
            (f"{key} multiplicative identity", red([p], [o]), lifted, False),
            (f"{key} distributivity", red([pq], [w]), red([p, q], [w, w]), tol),
            (f"{key} definition", red([p, q, r], ws),
             lambda: _expected(sr, dt, [p.view(), q.view(), r.view()], ws), tol),
        ]

    def keys(self) -> dict:
        """Derived page id -> the comparison it is the left side of."""
        return {lhs.id: key for key, lhs, _, _ in self.laws + self.results}

    @staticmethod
    def failed(comparisons: list, same_bytes: bool) -> set:
        """Keys whose two sides differ: bytes (recompute results), or values (laws: IEEE equality,
        so 0 ⊗ -x = -0.0 equals 0.0), with a tolerance where rounding order matters."""
        bad = set()
        for key, lhs, rhs, tol in comparisons:
            a = lhs.view()
            b = rhs() if callable(rhs) else rhs.view()
            if tol:
                rtol, atol = (1e-4, 1e-2) if a.dtype == np.float32 else (1e-12, 1e-9)
                ok = a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=atol)
            elif same_bytes:
                ok = a.tobytes() == np.ascontiguousarray(b, dtype=a.dtype).tobytes()
            else:
                ok = a.shape == b.shape and np.array_equal(a, b)
            if not ok:
                bad.add(key)
        return bad


def _by_hand(fn, out_page, parents) -> np.ndarray:
    out = np.zeros_like(out_page.view())
    got = fn(out, *(p.view().copy() for p in parents))
    if got is not None:
        out[...] = got
    return out


@validator(4, "purity", ("law_failures", "side_effects", "nondeterministic"))
def run(ctx: Context) -> dict:
    n = ctx.size(1024, 129)
    samples = ctx.size(100_000, 5_000)
    rounds = ctx.size(25, 4)
    laws = mmsb.validate_purity(samples=samples, seed=ctx.seed)
    ctx.note("engine_law_checks", laws.law_checks)
    ctx.note("engine_law_violations", laws.law_violations[:10])
    buses = [mmsb.Bus(threads=1), mmsb.Bus(threads=os.cpu_count() or 1)]
    graphs = [_Graph(b, n, np.random.default_rng(ctx.seed)) for b in buses]
    g0 = graphs[0]
    failed, nondet, side = g0.failed(g0.laws, False), g0.failed(g0.results, True), set()
    data_rng = np.random.default_rng(ctx.seed + 1)
    for _ in ctx.progress(range(rounds), total=rounds, desc="purity: rounds"):
        fresh = [_random(p.dtype.name, n, data_rng) for p in graphs[0].sources]
        for g in graphs:
            with g.bus.transaction():  # one commit, one wave over every derived page
                for page, new in zip(g.sources, fresh):
                    page.update(new)
            side |= {f"source page {p.id}" for p, new in zip(g.sources, fresh) if p.view().tobytes() != new.tobytes()}
        failed |= g0.failed(g0.laws, False)
        nondet |= g0.failed(g0.results, True)
        for (key, lhs, _, _), (_, other, _, _) in zip(g0.laws + g0.results, graphs[1].laws + graphs[1].results):
            if lhs.view().tobytes() != other.view().tobytes():
                nondet.add(key)
    report = mmsb.validate_purity(buses[0], samples=100, seed=ctx.seed, runs=3)
    if report.failures:
        raise RuntimeError(f"recomputes raised while probed: {report.failures[:3]}")
    derived = sum(1 for p in buses[0].pages() if buses[0].graph.derivation(p) is not None)
    ctx.note("derived_pages", derived)
    ctx.note("recomputes_run", buses[0].stats()["recomputes"])
    ctx.note("recomputes_probed", report.recomputes_checked)
    keys = g0.keys()
    nondet |= {keys.get(pid, f"page {pid}") for pid in report.nondeterministic}
    side |= {keys.get(int(m.group(1)), m.group(0)) for m in (re.match(r"page (\d+)", s) for s in report.side_effects) if m}
    side |= {s for s in report.side_effects if not re.match(r"page \d+", s)}
    ctx.note("law_comparisons", len(g0.laws))
    ctx.note("result_comparisons", len(g0.results))
    ctx.note("failed_laws", sorted(failed)[:20])
    ctx.note("purity_side_effects", report.side_effects[:10])
    ctx.note("purity_nondeterministic", report.nondeterministic[:10])
    ctx.note("nondeterministic_recomputes", sorted(nondet)[:10])
    ctx.note("side_effect_recomputes", sorted(side)[:10])
    for b in buses:
        b.close()
    return {
        "law_failures": len(laws.law_violations) + len(failed),
        "side_effects": len(side),
        "nondeterministic": len(nondet),
    }
