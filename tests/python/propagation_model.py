"""The model of propagation the propagation tests check the bus against: reference computations
(NumPy reductions per semiring, the callable kernels the random graphs use) and `Oracle`, a random
DAG on a bus with its own copy of every page and epoch, which predicts for each commit which
pages are recomputed, which change, and the resulting bytes, epochs, lsn and counters."""

from __future__ import annotations

import numpy as np

import mmsb

ELEMS = 16
F64 = np.dtype("float64")
SEMIRINGS = mmsb.Semiring.NAMES


def stale_state(bus):
    """(stale page ids, {derived page id: memo}) as the bus reports them: the state a wave leaves
    besides bytes, which replay must repeat."""
    stale = tuple(p.id for p in bus.stale_pages())
    memos = {}
    for page in bus.pages():
        d = bus.graph.derivation(page.id)
        if d is not None:
            memos[page.id] = tuple(d["memo"])
    return stale, memos


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
            if self._recompute(pid, recomputed, derived):
                changed.add(pid)
        return recomputed, derived

    def _recompute(self, pid, recomputed, derived):
        """Recomputes pid into the model, noting it in `recomputed`, and in `derived` (with a new
        epoch) when its bytes changed; returns whether they did."""
        recomputed.append(pid)
        new = self.compute(pid, self.vals)
        if new.tobytes() == self.vals[pid].tobytes():
            return False
        self.vals[pid] = new
        self.epochs[pid] += 1
        derived.append(pid)
        return True

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
            self._recompute(pid, recomputed, derived)
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


# The commits Oracle.commit_and_check draws from: writes (and batches) twice as often as the rest.
OPS = ["write", "write", "apply", "same", "update", "edit", "batch", "batch"]


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
