"""Propagation (DESIGN §1 "Propagation", "Semirings"): after every commit every derived page equals
a from-scratch NumPy recomputation in topological order; each page is recomputed at most once per
wave and exactly when one of its parents got a new epoch; cutoff; deferred mode; PropagationError
rolls the whole commit back; a directory run replays bit-exactly without running callables.

The oracle (`Oracle`) keeps its own copy of every page and epoch and predicts, for each commit,
which pages are recomputed, which change, and the resulting bytes, epochs, lsn and counters."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import mmsb
from reference_model import capture_full_state, capture_state

ELEMS = 16
F64 = np.dtype("float64")
SEMIRINGS = mmsb.Semiring.NAMES


# ---- reference computations ----------------------------------------------------------------
def int_mul(sname, w, p):
    """⊗ of the integer tropical semirings: + that wraps, but saturates at the absorbing zero."""
    info = np.iinfo(p.dtype)
    with np.errstate(over="ignore"):
        s = np.add(w, p, dtype=p.dtype)
    if sname == "min_plus":
        return np.where((w == info.max) | (p == info.max), p.dtype.type(info.max), s)
    return np.where((w == info.min) | (p == info.min), p.dtype.type(info.min), s)


def reduce_ref(sname, parents, weights, dtype):
    """child = ⊕_i (w_i ⊗ parent_i), left to right, in dtype. Without weights the engine reduces
    the parents themselves (⊗ by the identity is skipped; only the boolean semiring maps values to
    0/1): the same numbers, but 0.0 + -0.0 would turn a -0.0 parent into +0.0."""
    dtype = np.dtype(dtype)
    s = getattr(mmsb.Semiring, sname)
    acc = None
    for i, p in enumerate(parents):
        with np.errstate(over="ignore"):
            if weights is None:
                t = (p != 0).astype(dtype) if sname == "boolean" else p.copy()
            else:
                w = dtype.type(np.asarray(weights[i]).astype(dtype))
                if dtype.kind == "i" and sname in ("min_plus", "max_plus"):
                    t = int_mul(sname, w, p)
                else:
                    t = np.asarray(s.mul(w, p)).astype(dtype)
            acc = t if acc is None else np.asarray(s.add(acc, t)).astype(dtype)
    return acc


# Python recomputes: pure NumPy, deterministic. `out` starts as the child's current content.
def k_affine(out, *ps):
    out[:] = 0.5 * sum(ps) + 1.0


def k_sign(out, *ps):
    out[:] = np.sign(sum(ps))


def k_clip(out, *ps):
    out[:] = np.clip(ps[-1], -1.0, 1.0)


def k_floor(out, *ps):
    out[:] = np.floor(ps[0])


def k_partial(out, *ps):  # writes only the first half: the rest keeps the child's content
    out[: ELEMS // 2] = ps[0][: ELEMS // 2] * 2.0


def k_return(out, *ps):  # returns its result instead of filling `out`
    return np.maximum.reduce(ps) if len(ps) > 1 else -ps[0]


KERNELS = {f.__name__: f for f in (k_affine, k_sign, k_clip, k_floor, k_partial, k_return)}


class Counted:
    """A bus callable around a kernel: counts its calls and checks the calling convention."""

    def __init__(self, kernel, child_view, calls, pid):
        self.kernel, self.child_view, self.calls, self.pid = kernel, child_view, calls, pid
        self.__qualname__ = kernel.__name__
        self.__module__ = __name__

    def __call__(self, out, *ps):
        self.calls[self.pid] = self.calls.get(self.pid, 0) + 1
        assert out.dtype == F64 and out.shape == (ELEMS,) and out.flags.writeable
        assert out.tobytes() == self.child_view.tobytes(), "out must start as the child's content"
        for p in ps:
            assert not p.flags.writeable, "parents must be read-only views"
        return self.kernel(out, *ps)


def run_kernel(kernel, prev, parents):
    out = prev.copy()
    r = kernel(out, *parents)
    if r is not None:
        out[:] = r
    return out


# ---- the oracle -----------------------------------------------------------------------------
class Oracle:
    """A random DAG on `bus` and a model of it. spec[pid] = ("copy"|"reduce"|"py", parents,
    semiring-or-kernel-name, weights)."""

    def __init__(self, bus, rng, n=None, n_sources=None, callables=True):
        self.bus, self.rng = bus, rng
        n = int(rng.integers(20, 41)) if n is None else n
        n_sources = int(rng.integers(5, 9)) if n_sources is None else n_sources
        self.pages = {}
        for _ in range(n):
            p = bus.create_page(shape=(ELEMS,), dtype=F64)
            self.pages[p.id] = p
        ids = list(self.pages)
        # a topological position unrelated to the ids: ties by id really matter
        self.order = [ids[i] for i in rng.permutation(n)]
        self.sources = self.order[:n_sources]
        self.spec = {}
        self.calls = {}
        for k in range(n_sources, n):
            child = self.order[k]
            m = int(rng.choice([1, 1, 2, 2, 3, 4]))
            parents = [self.order[int(i)] for i in rng.choice(k, min(m, k), replace=False)]
            kinds = ["copy", "reduce", "reduce", "py", "py"] if callables else ["copy", "reduce", "reduce"]
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind == "copy" and len(parents) != 1:
                kind = "reduce"
            if kind == "reduce":
                sname = SEMIRINGS[int(rng.integers(len(SEMIRINGS)))]
                weights = None
                if rng.random() < 0.5:
                    choices = [-1.5, -0.5, 0.5, 1.0, 2.0] if sname == "sum_product" else [-1.5, -0.5, 0.0, 0.5, 2.0, 3.0]
                    weights = [float(rng.choice(choices)) for _ in parents]
                self.spec[child] = ("reduce", parents, sname, weights)
            elif kind == "py":
                name = list(KERNELS)[int(rng.integers(len(KERNELS)))]
                self.spec[child] = ("py", parents, name, None)
            else:
                self.spec[child] = ("copy", parents, None, None)
        # the model starts from the bus as created (all zeros, epoch 0)
        self.vals = {pid: np.zeros(ELEMS) for pid in ids}
        self.epochs = {pid: 0 for pid in ids}
        self.lsn = bus.lsn

    def fn_for(self, child):
        kind, parents, arg, weights = self.spec[child]
        if kind == "copy":
            return mmsb.ops.copy
        if kind == "reduce":
            return mmsb.ops.reduce(arg)
        return Counted(KERNELS[arg], self.pages[child].view(), self.calls, child)

    def compute(self, child, vals):
        kind, parents, arg, weights = self.spec[child]
        ins = [vals[p] for p in parents]
        if kind == "copy":
            return ins[0].copy()
        if kind == "reduce":
            return reduce_ref(arg, ins, weights, F64)
        return run_kernel(KERNELS[arg], vals[child], ins)

    def register_all(self, shuffle=True):
        """bus.depend for every derived page (in a random order when shuffle), then set the model
        to the from-scratch values and the bus's epochs."""
        todo = list(self.spec)
        if shuffle:
            todo = [todo[int(i)] for i in self.rng.permutation(len(todo))]
        for child in todo:
            kind, parents, arg, weights = self.spec[child]
            self.bus.depend(self.pages[child], on=[self.pages[p] for p in parents], fn=self.fn_for(child),
                            weights=weights)
        self.vals = self.from_scratch()
        self.epochs = {pid: p.epoch for pid, p in self.pages.items()}
        self.lsn = self.bus.lsn

    def from_scratch(self):
        """Every derived page recomputed in topological order from the sources' current bytes."""
        vals = {pid: self.bus.page(pid).snapshot()[0] for pid in self.sources}
        for pid in self.order:
            if pid in self.spec:
                vals[pid] = self.bus.page(pid).snapshot()[0]  # `out` starts from the child (k_partial)
                vals[pid] = self.compute(pid, vals)
        return vals

    def predict(self, bumped):
        """The wave after a commit whose user deltas bumped the epochs of `bumped` (page ids; the
        model's source values are already updated). Returns (recomputed, changed derived)."""
        changed = set(bumped)
        for pid in bumped:
            self.epochs[pid] += 1
        recomputed, derived = [], []
        for pid in self.order:
            if pid not in self.spec or not (set(self.spec[pid][1]) & changed):
                continue
            recomputed.append(pid)
            new = self.compute(pid, self.vals)
            if new.tobytes() != self.vals[pid].tobytes():
                self.vals[pid] = new
                self.epochs[pid] += 1
                changed.add(pid)
                derived.append(pid)
        return recomputed, derived

    def settle(self, memo):
        """propagate() in deferred mode, by the memo rule: in topological order, a derived page
        whose parents' epochs differ from its memo (their epochs at its last recompute) is
        recomputed once. Returns (recomputed, changed derived); updates memo."""
        recomputed, derived = [], []
        for pid in self.order:
            if pid not in self.spec:
                continue
            sig = [self.epochs[q] for q in self.spec[pid][1]]
            if sig == memo[pid]:
                continue
            memo[pid] = sig
            recomputed.append(pid)
            new = self.compute(pid, self.vals)
            if new.tobytes() != self.vals[pid].tobytes():
                self.vals[pid] = new
                self.epochs[pid] += 1
                derived.append(pid)
        return recomputed, derived

    def closure(self, seeds):
        """seeds and every page below them (data edges)."""
        out, todo = set(seeds), list(seeds)
        while todo:
            q = todo.pop()
            for c, spec in self.spec.items():
                if q in spec[1] and c not in out:
                    out.add(c)
                    todo.append(c)
        return out

    def check(self, what=""):
        """The bus equals the model (bytes and epochs of every page) and the from-scratch values."""
        for pid, p in self.pages.items():
            got, epoch = p.snapshot()
            assert got.tobytes() == self.vals[pid].tobytes(), (what, pid, self.spec.get(pid), got, self.vals[pid])
            assert epoch == self.epochs[pid], (what, pid, epoch, self.epochs[pid])
        scratch = self.from_scratch()
        for pid in self.spec:
            assert scratch[pid].tobytes() == self.pages[pid].view().tobytes(), (what, pid, self.spec[pid])
        assert self.bus.lsn == self.lsn, what

    # ---- user changes on sources (each one commit) ------------------------------------------
    def values(self, k):
        if self.rng.random() < 0.5:  # coarse values: sign/floor/clip/max often do not move
            return self.rng.integers(-3, 4, k) * 0.5
        return self.rng.normal(size=k) * 2.0

    def op(self, name):
        """Runs one committing op; returns the ids whose epoch the user deltas bumped."""
        rng, bus = self.rng, self.bus
        pid = self.sources[int(rng.integers(len(self.sources)))]
        page = self.pages[pid]
        k = int(rng.integers(1, ELEMS + 1))
        off = int(rng.integers(0, ELEMS - k + 1))
        if name in ("write", "apply", "same"):
            vals = self.vals[pid][off:off + k].copy() if name == "same" else self.values(k)
            if name == "apply":
                bus.apply(mmsb.Delta.at(page, off * 8, vals.tobytes()))
            else:
                page.write(off * 8, vals.tobytes())
            self.vals[pid][off:off + k] = vals
            self.lsn += 1
            return [pid]
        if name in ("update", "edit"):
            new = self.vals[pid].copy()
            if rng.random() < 0.8:
                new[off:off + k] = self.values(k)
            if name == "update":
                page.update(new)
            else:
                with page.edit() as a:
                    a[:] = new
            if new.tobytes() == self.vals[pid].tobytes():
                return []
            self.vals[pid] = new
            self.lsn += 1
            return [pid]
        if name == "batch":
            rows = int(rng.integers(1, 7))
            ids, offs, lens, chunks, bumped = [], [], [], [], []
            for _ in range(rows):
                q = self.sources[int(rng.integers(len(self.sources)))]
                k = int(rng.integers(1, 5))
                o = int(rng.integers(0, ELEMS - k + 1))
                v = self.values(k)
                self.vals[q][o:o + k] = v
                ids.append(q)
                offs.append(o * 8)
                lens.append(k * 8)
                chunks.append(v.tobytes())
                bumped.append(q)  # a page twice in a batch: two deltas, two epochs
            last = bus.apply_batch(mmsb.DeltaBatch(ids, offs, lens, b"".join(chunks)))
            self.lsn += rows
            assert last == self.lsn
            return bumped
        raise AssertionError(name)

    def commit_and_check(self, name):
        stats0 = self.bus.stats()
        self.calls.clear()
        bumped = self.op(name)
        sources_with_children = {q for q in bumped if any(q in s[1] for s in self.spec.values())}
        recomputed, derived = self.predict(bumped)
        self.lsn += len(derived)
        self.check(name)
        # each Python recompute ran exactly when predicted, at most once in the wave
        want_calls = {pid: 1 for pid in recomputed if self.spec[pid][0] == "py"}
        assert self.calls == want_calls, (name, self.calls, want_calls)
        d = {k: self.bus.stats()[k] - stats0[k] for k in stats0}
        assert d["recomputes"] == len(recomputed), (name, d)
        assert d["cutoffs"] == len(recomputed) - len(derived), (name, d)
        assert d["derived_deltas"] == len(derived), (name, d)
        assert d["waves"] == (1 if sources_with_children else 0), (name, d)
        return recomputed, derived


OPS = ["write", "write", "apply", "same", "update", "edit", "batch", "batch"]


@pytest.mark.parametrize("seed", range(8))
def test_random_dags_match_a_from_scratch_recompute(seed):
    rng = np.random.default_rng(1000 + seed)
    bus = mmsb.Bus()
    orc = Oracle(bus, rng)
    # sources get content before or after the graph exists (eager depend computes at once)
    for pid in orc.sources[: len(orc.sources) // 2]:
        orc.pages[pid].update(orc.values(ELEMS))
    orc.register_all()
    orc.check("after depend")
    totals = {"recomputed": 0, "derived": 0, "cut": 0}
    for step in range(60):
        name = OPS[int(rng.integers(len(OPS)))]
        recomputed, derived = orc.commit_and_check(name)
        totals["recomputed"] += len(recomputed)
        totals["derived"] += len(derived)
        totals["cut"] += len(recomputed) - len(derived)
    # the run really exercised waves and cutoffs
    assert totals["derived"] > 30 and totals["cut"] > 5, totals
    assert bus.verify().ok
    bus.close()


@pytest.mark.parametrize("seed", range(3))
def test_random_dags_in_deferred_mode(seed):
    """Deferred: commits change only the sources and mark the children of what they touched
    stale (stale_pages() = those and everything below); propagate() recomputes each page whose
    parents moved since its last recompute exactly once, and returns the number of derived
    deltas; switching back to eager catches up in the next wave."""
    rng = np.random.default_rng(2000 + seed)
    bus = mmsb.Bus()
    orc = Oracle(bus, rng)
    orc.register_all()
    memo = {pid: [orc.epochs[q] for q in orc.spec[pid][1]] for pid in orc.spec}
    assert memo == {pid: list(bus.graph.derivation(pid)["memo"]) for pid in orc.spec}
    bus.propagation = "deferred"
    marked = set()
    for step in range(48):  # ends with stale pages pending
        orc.calls.clear()
        stats0 = bus.stats()
        derived_before = {pid: (orc.pages[pid].view().tobytes(), orc.pages[pid].epoch) for pid in orc.spec}
        bumped = orc.op(OPS[int(rng.integers(len(OPS)))])
        for q in bumped:
            orc.epochs[q] += 1
            marked |= {c for c, spec in orc.spec.items() if q in spec[1]}
        assert orc.calls == {}, step
        assert {pid: (orc.pages[pid].view().tobytes(), orc.pages[pid].epoch) for pid in orc.spec} == derived_before
        assert {p.id for p in bus.stale_pages()} == orc.closure(marked), step
        assert all(orc.pages[pid].stale == (pid in orc.closure(marked)) for pid in orc.pages)
        d = {k: bus.stats()[k] - stats0[k] for k in stats0}
        assert d["recomputes"] == 0 and d["derived_deltas"] == 0, (step, d)
        for pid in orc.sources:
            assert orc.pages[pid].view().tobytes() == orc.vals[pid].tobytes()
            assert orc.pages[pid].epoch == orc.epochs[pid]
        assert bus.lsn == orc.lsn
        if step % 5 == 4:
            recomputed, derived = orc.settle(memo)
            assert bus.propagate() == len(derived), step
            orc.lsn += len(derived)
            marked.clear()
            assert bus.stale_pages() == []
            assert orc.calls == {pid: 1 for pid in recomputed if orc.spec[pid][0] == "py"}, step
            orc.check(f"propagate at {step}")
            assert bus.propagate() == 0
    # back to eager with pending stale pages: the next wave catches everything up
    assert marked and bus.stale_pages()
    bus.propagation = "eager"
    src = next(q for q in orc.sources if any(q in spec[1] for spec in orc.spec.values()))
    orc.pages[src].write(0, orc.vals[src][:1].tobytes())
    orc.lsn += 1
    orc.epochs[src] += 1
    recomputed, derived = orc.settle(memo)
    orc.lsn += len(derived)
    orc.check("eager again")
    assert bus.stale_pages() == []


def test_random_dag_inside_transactions(rng):
    """Each op in a transaction runs its own wave at once (the owner sees derived pages follow);
    the commit keeps them all, a rollback drops every user and derived delta."""
    bus = mmsb.Bus()
    orc = Oracle(bus, rng, n=24)
    orc.register_all()
    for trial in range(6):
        saved = (capture_state(bus), {k: v.copy() for k, v in orc.vals.items()}, dict(orc.epochs), orc.lsn)
        abort = trial % 2 == 1
        try:
            with bus.transaction():
                for _ in range(4):
                    orc.commit_and_check(OPS[int(rng.integers(len(OPS)))])
                if abort:
                    raise KeyError("abort")
        except KeyError:
            pass
        if abort:
            assert capture_state(bus) == saved[0]
            orc.vals, orc.epochs, orc.lsn = saved[1], saved[2], saved[3]
        orc.check(f"after transaction {trial}")
    bus.close()


# ---- at most once per wave: diamonds and fan-in ----------------------------------------------
def test_diamond_and_fan_in_recompute_each_page_once(bus):
    calls = {}

    def counted(name, kernel):
        def fn(out, *ps):
            calls[name] = calls.get(name, 0) + 1
            out[:] = kernel(*ps)
        fn.__qualname__ = name
        return fn

    a = bus.create_page(data=np.arange(ELEMS, dtype=F64), name="a")
    pages = {n: bus.create_page(shape=(ELEMS,), dtype=F64, name=n) for n in "bcdefg"}
    b, c, d, e, f, g = (pages[n] for n in "bcdefg")
    #      a
    #    /   \
    #   b     c        d = b + c (diamond), e = fan-in of a, b, c, d; f, g hang below e and d
    #    \   /
    #      d
    bus.depend(b, on=[a], fn=counted("b", lambda x: x + 1))
    bus.depend(c, on=[a], fn=counted("c", lambda x: x * 2))
    bus.depend(d, on=[b, c], fn=counted("d", lambda x, y: x + y))
    bus.depend(e, on=[a, b, c, d], fn=counted("e", lambda *xs: sum(xs)))
    bus.depend(f, on=[e, d], fn=counted("f", lambda x, y: x - y))
    bus.depend(g, on=[f, a, e], fn=mmsb.ops.reduce("max_plus"))
    calls.clear()
    bus.reset_stats()
    for i in range(5):
        a.write(8 * i, np.float64(100 + i).tobytes())
        assert calls == {n: 1 for n in "bcdef"}, (i, calls)
        calls.clear()
        av = a.view()
        bv, cv = av + 1, av * 2
        dv = bv + cv
        ev = av + bv + cv + dv
        fv = ev - dv
        assert np.array_equal(f.view(), fv)
        assert np.array_equal(g.view(), np.maximum.reduce([fv, av, ev]))
    s = bus.stats()
    assert s["waves"] == 5 and s["recomputes"] == 30 and s["derived_deltas"] == 30 and s["cutoffs"] == 0
    # a batch that writes a and b's parent twice still runs one wave, each page once
    bus.apply_batch(mmsb.DeltaBatch([a.id, a.id, a.id], [0, 8, 0], [8, 8, 8],
                                    np.array([7.0, 8.0, 9.0]).tobytes()))
    assert calls == {n: 1 for n in "bcdef"}
    assert a.view()[0] == 9.0 and b.view()[0] == 10.0
    assert bus.stats()["waves"] == 6


def test_wave_visits_pages_in_canonical_topological_order(bus):
    """Parents before children, ties by smaller id: the log order of derived deltas shows it."""
    order = []
    src = bus.create_page(shape=(ELEMS,), dtype=F64)
    kids = [bus.create_page(shape=(ELEMS,), dtype=F64) for _ in range(6)]
    k1, k2, k3, k4, k5, k6 = kids

    def rec(out, *ps):
        out[:] = sum(ps) + 1

    def tracking(page):
        def fn(out, *ps):
            order.append(page.id)
            rec(out, *ps)
        return fn

    bus.depend(k6, on=[src], fn=tracking(k6))
    bus.depend(k3, on=[src], fn=tracking(k3))
    bus.depend(k5, on=[k6], fn=tracking(k5))
    bus.depend(k1, on=[k5, k3], fn=tracking(k1))
    bus.depend(k4, on=[src], fn=tracking(k4))
    bus.depend(k2, on=[k4], fn=tracking(k2))
    order.clear()
    src.write(0, np.float64(5.0).tobytes())
    edges = {(k6.id, src.id), (k3.id, src.id), (k5.id, k6.id), (k1.id, k5.id), (k1.id, k3.id), (k4.id, src.id),
             (k2.id, k4.id)}
    want = [p for p in bus.graph.topological_order() if p != src.id]
    assert order == want
    # the lexicographically smallest order of this graph, worked out by hand
    assert [bus.page(p) for p in want] == [k3, k4, k2, k6, k5, k1]
    assert all(order.index(c) > order.index(p) for c, p in edges if p != src.id)


# ---- cutoff ----------------------------------------------------------------------------------
def test_cutoff_stops_the_branch_and_never_skips_changed_inputs(bus):
    calls = []

    def track(name, kernel):
        def fn(out, *ps):
            calls.append(name)
            out[:] = kernel(*ps)
        return fn

    a = bus.create_page(data=np.full(ELEMS, 0.25))
    x = bus.create_page(data=np.zeros(ELEMS))
    s = bus.create_page(shape=(ELEMS,), dtype=F64)  # sign(a): cut off while a stays positive
    t = bus.create_page(shape=(ELEMS,), dtype=F64)  # below s only
    u = bus.create_page(shape=(ELEMS,), dtype=F64)  # below s and x
    bus.depend(s, on=[a], fn=track("s", np.sign))
    bus.depend(t, on=[s], fn=track("t", lambda v: v * 10))
    bus.depend(u, on=[s, x], fn=mmsb.ops.reduce("sum_product"))
    v = bus.create_page(shape=(ELEMS,), dtype=F64)
    bus.depend(v, on=[u], fn=track("v", lambda w: w + 1))
    calls.clear()
    bus.reset_stats()
    epochs = {p.id: p.epoch for p in (s, t, u, v)}
    lsn = bus.lsn
    # a changes but sign(a) does not: s recomputes, commits nothing, t/u/v are not recomputed
    a.write(0, np.float64(3.0).tobytes())
    assert calls == ["s"]
    assert {p.id: p.epoch for p in (s, t, u, v)} == epochs
    assert bus.lsn == lsn + 1  # the user delta only
    st = bus.stats()
    assert st["recomputes"] == 1 and st["cutoffs"] == 1 and st["derived_deltas"] == 0
    # the same bytes again, explicitly: still a commit (epoch +1), still a cutoff
    a.write(0, np.float64(3.0).tobytes())
    assert calls == ["s", "s"] and s.epoch == epochs[s.id]
    # s cut off, but x changed in the same batch: u (and v) must be recomputed
    calls.clear()
    bus.reset_stats()
    bus.apply_batch(mmsb.DeltaBatch([a.id, x.id], [8, 0], [8, 8], np.array([4.0, 2.0]).tobytes()))
    assert calls == ["s", "v"]
    assert u.view()[0] == 1.0 + 2.0 and v.view()[0] == 4.0
    assert u.epoch == epochs[u.id] + 1 and t.epoch == epochs[t.id]
    st = bus.stats()
    assert st["recomputes"] == 3 and st["cutoffs"] == 1 and st["derived_deltas"] == 2
    # sign flips: the whole branch follows
    calls.clear()
    a.write(0, np.float64(-1.0).tobytes())
    assert calls == ["s", "t", "v"]
    assert t.view()[0] == -10.0 and u.view()[0] == 1.0 and v.view()[0] == 2.0


def test_memo_is_the_parents_epochs_of_the_last_recompute(bus):
    calls = []
    a = bus.create_page(data=np.ones(ELEMS))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    c = bus.create_page(shape=(ELEMS,), dtype=F64)

    def fn(out, x):
        calls.append(1)
        out[:] = x * 2
    bus.depend(b, on=[a], fn=fn)
    bus.depend(c, on=[b], fn=mmsb.ops.copy)
    assert bus.graph.derivation(b)["memo"] == [a.epoch]
    assert bus.graph.derivation(c)["memo"] == [b.epoch]
    calls.clear()
    a.write(0, np.float64(1.0).tobytes())  # epoch +1, same bytes: recompute, cutoff
    assert calls == [1]
    assert bus.graph.derivation(b)["memo"] == [a.epoch]  # the memo follows the inputs' epochs
    assert bus.graph.derivation(c)["memo"] == [b.epoch]


# ---- deferred mode ---------------------------------------------------------------------------
def deferred_chain(bus):
    calls = []
    a = bus.create_page(data=np.arange(ELEMS, dtype=F64), name="a")
    b = bus.create_page(shape=(ELEMS,), dtype=F64, name="b")
    c = bus.create_page(shape=(ELEMS,), dtype=F64, name="c")
    d = bus.create_page(shape=(ELEMS,), dtype=F64, name="d")

    def dbl(out, x):
        calls.append("b")
        out[:] = 2 * x
    bus.depend(b, on=[a], fn=dbl)
    bus.depend(c, on=[b], fn=mmsb.ops.copy)
    bus.depend(d, on=[a, c], fn=mmsb.ops.reduce("max_plus"), weights=[1.0, -1.0])
    calls.clear()
    return calls, a, b, c, d


def expected_chain(a):
    av = a.view()
    return 2 * av, 2 * av, np.maximum(av + 1.0, 2 * av - 1.0)


def test_deferred_depend_marks_stale_and_propagate_computes(bus):
    bus.propagation = "deferred"
    assert bus.propagation == "deferred"
    calls = []
    a = bus.create_page(data=np.arange(ELEMS, dtype=F64))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    c = bus.create_page(shape=(ELEMS,), dtype=F64)

    def dbl(out, x):
        calls.append(1)
        out[:] = 2 * x
    lsn = bus.lsn
    bus.depend(b, on=[a], fn=dbl)
    bus.depend(c, on=[b], fn=mmsb.ops.copy)
    assert calls == [] and bus.lsn == lsn + 2  # two graph records, no derived delta yet
    assert b.stale and c.stale and not a.stale
    assert [p.id for p in bus.stale_pages()] == [b.id, c.id]
    assert not b.view().any()
    assert bus.propagate() == 2
    assert calls == [1]
    assert np.array_equal(c.view(), 2 * a.view())
    assert bus.stale_pages() == [] and not b.stale
    assert bus.propagate() == 0 and calls == [1]


def test_deferred_batch_marks_stale_and_propagate_recomputes_once(bus):
    calls, a, b, c, d = deferred_chain(bus)
    bus.propagation = "deferred"
    bus.reset_stats()
    epochs, lsn = {p.id: p.epoch for p in (b, c, d)}, bus.lsn
    for i in range(3):
        bus.apply_batch(mmsb.DeltaBatch([a.id], [8 * i], [8], np.float64(50 + i).tobytes()))
    assert calls == []
    assert {p.id: p.epoch for p in (b, c, d)} == epochs and bus.lsn == lsn + 3
    assert {p.id for p in bus.stale_pages()} == {b.id, c.id, d.id}
    assert b.stale and c.stale and d.stale and not a.stale
    assert bus.stats()["recomputes"] == 0
    assert bus.propagate() == 3
    assert calls == ["b"]  # once, however many commits marked it
    for page, want in zip((b, c, d), expected_chain(a)):
        assert np.array_equal(page.view(), want)
    assert bus.stale_pages() == []
    assert bus.lsn == lsn + 3 + 3
    # back to eager: commits propagate at once again
    bus.propagation = "eager"
    a.write(0, np.float64(-9.0).tobytes())
    assert calls == ["b", "b"] and b.view()[0] == -18.0 and bus.stale_pages() == []


@pytest.mark.parametrize("how", ["write", "apply", "update", "edit"])
def test_deferred_single_delta_commits_only_mark_stale(bus, how):
    calls, a, b, c, d = deferred_chain(bus)
    bus.propagation = "deferred"
    before = {p.id: (p.view().tobytes(), p.epoch) for p in (b, c, d)}
    new = a.snapshot()[0]
    new[3] = 77.0
    if how == "write":
        a.write(24, np.float64(77.0).tobytes())
    elif how == "apply":
        bus.apply(mmsb.Delta.at(a, 24, np.float64(77.0).tobytes()))
    elif how == "update":
        a.update(new)
    else:
        with a.edit() as arr:
            arr[3] = 77.0
    assert calls == [], "deferred mode must not recompute inside the commit"
    assert {p.id: (p.view().tobytes(), p.epoch) for p in (b, c, d)} == before
    assert {p.id for p in bus.stale_pages()} == {b.id, c.id, d.id}
    assert bus.propagate() == 3 and calls == ["b"]


def test_deferred_mode_rejects_unknown_modes(bus):
    with pytest.raises(mmsb.InvalidArgumentError):
        bus.propagation = "lazy"
    assert bus.propagation == "eager"


# ---- PropagationError: the whole commit rolls back -------------------------------------------
class Boom(Exception):
    pass


def failing_graph(bus):
    """a -> b (copy) -> c (raises when a[0] > 100) -> e; a -> d (sum_product)."""
    a = bus.create_page(data=np.arange(ELEMS, dtype=F64), name="a")
    b, c, d, e = (bus.create_page(shape=(ELEMS,), dtype=F64, name=n) for n in "bcde")

    def fragile(out, x):
        if x[0] > 100:
            raise Boom("input too large")
        out[:] = x + 1
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    bus.depend(c, on=[b], fn=fragile)
    bus.depend(d, on=[a], fn=mmsb.ops.reduce("sum_product"), weights=[3.0])
    bus.depend(e, on=[c], fn=mmsb.ops.copy)
    return a, b, c, d, e


BAD = np.float64(500.0).tobytes()


def commit_bad(bus, a, how):
    if how == "write":
        a.write(0, BAD)
    elif how == "apply":
        bus.apply(mmsb.Delta.at(a, 0, BAD))
    elif how == "update":
        new = a.snapshot()[0]
        new[0] = 500.0
        a.update(new)
    elif how == "edit":
        with a.edit() as arr:
            arr[0] = 500.0
    elif how == "batch":
        other = bus.page("d")  # a row on another page in the same batch goes too
        bus.apply_batch(mmsb.DeltaBatch([other.id, a.id], [8, 0], [8, 8], np.float64(1.0).tobytes() + BAD))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["write", "apply", "update", "edit", "batch"])
def test_failing_recompute_rolls_back_the_whole_commit(bus, how):
    a, b, c, d, e = failing_graph(bus)
    a.write(16, np.float64(5.0).tobytes())
    before = capture_full_state(bus)
    memos = {p.id: bus.graph.derivation(p)["memo"] for p in (b, c, d, e)}
    with pytest.raises(mmsb.PropagationError) as ei:
        commit_bad(bus, a, how)
    msg = str(ei.value)
    assert f"page {c.id}" in msg and "input too large" in msg
    assert capture_full_state(bus) == before  # bytes, epochs, lsn: the user delta too
    assert {p.id: bus.graph.derivation(p)["memo"] for p in (b, c, d, e)} == memos
    assert bus.stale_pages() == []
    assert bus.verify().ok
    # the bus goes on normally
    a.write(0, np.float64(7.0).tobytes())
    assert e.view()[0] == 8.0 and d.view()[0] == 21.0


def test_failing_recompute_inside_a_transaction_undoes_only_that_op(bus):
    a, b, c, d, e = failing_graph(bus)
    before = capture_full_state(bus)
    with bus.transaction():
        a.write(8, np.float64(9.0).tobytes())
        inside = capture_full_state(bus)
        with pytest.raises(mmsb.PropagationError):
            a.write(0, BAD)
        assert capture_full_state(bus) == inside
        a.write(16, np.float64(10.0).tobytes())
    assert a.view()[1] == 9.0 and a.view()[2] == 10.0 and a.view()[0] == 0.0
    assert e.view()[2] == 11.0 and e.view()[1] == 10.0
    assert a.epoch == before["pages"][a.id][1] + 2
    # an error that escapes the block rolls the whole transaction back
    before = capture_full_state(bus)
    with pytest.raises(mmsb.PropagationError):
        with bus.transaction():
            a.write(8, np.float64(-1.0).tobytes())
            a.write(0, BAD)
    assert capture_full_state(bus) == before


def test_failing_first_recompute_refuses_depend(bus):
    a = bus.create_page(data=np.full(ELEMS, 1000.0))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    before = capture_full_state(bus)

    def bad(out, x):
        raise Boom("nope")
    with pytest.raises(mmsb.PropagationError) as ei:
        bus.depend(b, on=[a], fn=bad)
    assert f"page {b.id}" in str(ei.value)
    assert capture_full_state(bus) == before
    assert bus.graph.derivation(b) is None and bus.graph.parents(b) == []


def test_failing_recompute_is_not_logged(tmp_path):
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        a, b, c, d, e = failing_graph(bus)
        a.write(8, np.float64(3.0).tobytes())
        for how in ("write", "batch"):
            with pytest.raises(mmsb.PropagationError):
                commit_bad(bus, a, how)
        want = capture_full_state(bus)
        assert bus.verify().ok
    with mmsb.replay(path) as old:
        assert capture_full_state(old) == want
    with mmsb.open(path) as bus:
        assert capture_full_state(bus) == want


def test_callable_may_return_a_wrong_shape_only_as_an_error(bus):
    a = bus.create_page(data=np.arange(ELEMS, dtype=F64))
    b = bus.create_page(shape=(ELEMS,), dtype=F64)
    bus.depend(b, on=[a], fn=lambda out, x: x[: ELEMS // 2] if x[0] > 10 else x * 3)
    before = capture_full_state(bus)
    with pytest.raises(mmsb.PropagationError) as ei:
        a.write(0, np.float64(20.0).tobytes())
    assert f"page {b.id}" in str(ei.value)
    assert capture_full_state(bus) == before


# ---- directory runs: replay is bit-exact without running callables ----------------------------
def full_state(bus):
    st = capture_full_state(bus)
    st["edges"] = sorted((e.parent, e.child, e.kind) for p in bus.pages() for e in bus.graph.out_edges(p))
    return st


def test_replay_of_a_propagating_run_is_bit_exact(tmp_path):
    rng = np.random.default_rng(77)
    path = tmp_path / "bus"
    bus = mmsb.Bus(path)
    orc = Oracle(bus, rng, n=24, n_sources=6)
    orc.register_all()
    states = {bus.lsn: full_state(bus)}
    for step in range(30):
        orc.commit_and_check(OPS[int(rng.integers(len(OPS)))])
        states[bus.lsn] = full_state(bus)
        if step == 12:
            bus.checkpoint()
    final_lsn = bus.lsn
    # time travel on the live bus
    for lsn in sorted(states)[:: 4]:
        with bus.at(lsn) as old:
            assert full_state(old) == states[lsn], lsn
    assert bus.verify().ok
    bus.close()
    orc.calls.clear()
    with mmsb.replay(path) as old:
        assert full_state(old) == states[final_lsn]
        assert old.lsn == final_lsn
    for lsn in sorted(states)[1:: 5]:
        with mmsb.replay(path, to=lsn) as old:
            assert full_state(old) == states[lsn], lsn
    with mmsb.open(path) as bus2:
        assert full_state(bus2) == states[final_lsn]
        assert bus2.verify().ok
    assert orc.calls == {}  # no callable ran during replay or recovery


def test_reopen_marks_unregistered_callables_stale_until_depend_again(tmp_path):
    rng = np.random.default_rng(78)
    path = tmp_path / "bus"
    bus = mmsb.Bus(path)
    orc = Oracle(bus, rng, n=26, n_sources=6)
    orc.register_all()
    for _ in range(8):
        orc.commit_and_check(OPS[int(rng.integers(len(OPS)))])
    want = full_state(bus)
    bus.close()

    def descendants(seeds):
        out, todo = set(seeds), list(seeds)
        while todo:
            q = todo.pop()
            for c, s in orc.spec.items():
                if q in s[1] and c not in out:
                    out.add(c)
                    todo.append(c)
        return out
    py = [pid for pid, s in orc.spec.items() if s[0] == "py"]
    assert py, "the random DAG has Python callables"
    bus = mmsb.open(path)
    orc.bus = bus
    orc.pages = {pid: bus.page(pid) for pid in orc.pages}
    assert full_state(bus) == want
    stale = {p.id for p in bus.stale_pages()}
    assert descendants(py) <= stale
    # Cutoffs are not logged, so a built-in page whose last recompute was a cutoff comes back with
    # an older memo and is (conservatively) stale too; its bytes are up to date all the same.
    scratch = orc.from_scratch()
    for pid in stale - descendants(py):
        assert orc.spec[pid][0] != "py"
        d = bus.graph.derivation(pid)
        assert list(d["memo"]) != [bus.page(q).epoch for q in d["parents"]], pid
        assert scratch[pid].tobytes() == bus.page(pid).view().tobytes(), pid
    for pid in py:
        assert bus.page(pid).stale
        assert bus.graph.derivation(pid)["missing_callable"]
    # re-register in a random order: re-attached, nothing logged, nothing changes
    orc.calls.clear()
    lsn = bus.lsn
    for i in rng.permutation(len(py)):
        pid = py[int(i)]
        kind, parents, arg, weights = orc.spec[pid]
        bus.depend(pid, on=parents, fn=orc.fn_for(pid))
        assert bus.lsn == lsn
        assert not bus.graph.derivation(pid)["missing_callable"]
    assert bus.stale_pages() == []
    assert full_state(bus) == want
    # and the wave works as before
    orc.lsn = bus.lsn
    for _ in range(8):
        orc.commit_and_check(OPS[int(rng.integers(len(OPS)))])
    bus.close()


def test_writes_after_reopen_without_callables_leave_derived_pages_stale(tmp_path):
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        calls, a, b, c, d = deferred_chain(bus)
        a.write(0, np.float64(3.0).tobytes())
    with mmsb.open(path) as bus:
        a, b, c, d = (bus.page(n) for n in "abcd")
        assert [p.id for p in bus.stale_pages()] == [b.id, c.id, d.id]  # d is below c
        assert bus.graph.derivation(b)["missing_callable"]
        assert not bus.graph.derivation(d)["missing_callable"]
        b_before = b.snapshot()
        a.write(8, np.float64(11.0).tobytes())
        assert b.snapshot()[1] == b_before[1]  # not recomputed: its function is missing
        assert d.view()[1] == max(11.0 + 1.0, c.view()[1] - 1.0)  # built-in children still follow a
        assert {p.id for p in bus.stale_pages()} == {b.id, c.id, d.id}
        calls2 = []

        def dbl(out, x):
            calls2.append(1)
            out[:] = 2 * x
        bus.depend(b, on=[a], fn=dbl)  # re-attach: the wave catches b and c up
        assert calls2 == [1]
        for page, want in zip((b, c, d), expected_chain(a)):
            assert np.array_equal(page.view(), want)
        assert bus.stale_pages() == []


def test_history_lists_propagated_deltas(tmp_path):
    with mmsb.Bus(tmp_path / "bus") as bus:
        calls, a, b, c, d = deferred_chain(bus)
        lsn0 = bus.lsn
        a.write(0, np.float64(3.0).tobytes())
        for page in (b, c, d):
            hist = bus.history(page)
            assert [h.epoch for h in hist] == list(range(1, page.epoch + 1))
            assert all(h.source == "propagation" for h in hist)
            prov = bus.provenance(page, max_depth=0)
            assert hist[-1].lsn == prov.nodes[prov.root].lsn
        assert bus.history(a)[-1].lsn == lsn0 + 1 and bus.history(a)[-1].source == "user"
        assert set(bus.diff(lsn0, bus.lsn)) == {a.id, b.id, c.id, d.id}


def test_page_at_epoch_after_propagation(tmp_path):
    with mmsb.Bus(tmp_path / "bus") as bus:
        calls, a, b, c, d = deferred_chain(bus)
        for i in range(3):
            a.write(8 * i, np.float64(10.0 + i).tobytes())
            for page in (a, b, c, d):
                assert np.array_equal(page.at(page.epoch), page.view()), (i, page.id)


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


def test_python_recomputes_on_a_worker_thread_do_not_deadlock_with_python_writers():
    # The worker commits batches with the GIL released; their waves need the GIL for the
    # callable while the main thread keeps writing to the same bus (and so waits for its lock).
    import threading

    bus = mmsb.Bus()
    src = bus.create_page(shape=(16,), dtype="float64")
    out = bus.create_page(shape=(16,), dtype="float64")
    other = bus.create_page(16)
    bus.depend(out, on=[src], fn=lambda o, x: np.multiply(x, 2.0, out=o))
    errors = []

    def worker():
        try:
            for i in range(300):
                row = np.array([float(i)]).tobytes()
                bus.apply_batch(mmsb.DeltaBatch([src.id], [8 * (i % 16)], [8], row))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    for i in range(300):
        other.write(i % 16, b"x")
    t.join(timeout=60)
    assert not t.is_alive(), "worker thread deadlocked"
    assert not errors
    np.testing.assert_array_equal(out.view(), src.view() * 2.0)
    bus.close()


def test_a_recompute_that_calls_into_the_bus_fails_cleanly():
    bus = mmsb.Bus()
    a = bus.create_page(data=np.arange(4.0))
    c = bus.create_page(shape=(4,), dtype="float64")

    def reentrant(out, x):
        bus.page(a.id)  # would wait for the lock its own wave holds
        out[:] = x

    lsn = bus.lsn
    with pytest.raises(mmsb.PropagationError, match="must not read or write the bus"):
        bus.depend(c, on=[a], fn=reentrant)
    assert bus.lsn == lsn and bus.graph.derivation(c) is None and c.epoch == 0
    bus.close()
