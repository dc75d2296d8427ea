"""Validator 8, invariants: a long random workload that could break the engine's invariants if
it had bugs, checked after every cycle (DESIGN §1, §5).

Workload (10,000 cycles, directory bus): random deltas (at, runs, masked, batches, transactions,
edit) on source pages; page creates and deletes; bus.depend with mmsb.ops.copy and every
mmsb.ops.reduce semiring (on layouts where NumPy's result is exact); control edges, remove_edge;
refused calls that must raise the named error and change nothing (lsn, bytes, epochs, edges):
cycle-closing depend / add_edge (GraphCycleError), duplicate edges and deletes of pages with
children (GraphError); deferred-propagation phases ending in bus.propagate(); checkpoints; every
1,000 cycles close + mmsb.open (built-in ops: nothing to re-register), giving back the same state.

Checked after every cycle: the lsn and every epoch never decrease; sizes and layouts never
change; the live pages and the edges are the expected ones; bus.graph.validate() is ok; each
derived page (unless stale in deferred mode) equals its recompute from its parents in NumPy.
Every 100 cycles, after each reopen and at the end: bus.verify() (log = memory) has no problem.
Metric: violations (failed checks; the first are noted). Quick: 500 cycles, reopen every 100.
"""

from __future__ import annotations

import functools
import os

import numpy as np

import mmsb

from ._framework import Context, validator

# group -> dtype, element count, semirings allowed (all exact under NumPy's arithmetic)
GROUPS = {"f8": ("float64", 64, ["min_plus", "max_plus", "max_min"]),
          "i8": ("int64", 64, ["min_plus", "max_plus", "max_min"]),
          "i4": ("int32", 128, ["sum_product"]), "b1": ("bool", 512, ["boolean"])}
TIMES = {"sum_product": np.multiply, "min_plus": np.add, "max_plus": np.add, "max_min": np.minimum,
         "boolean": np.logical_and}
PLUS = {"sum_product": np.add, "min_plus": np.minimum, "max_plus": np.maximum, "max_min": np.maximum,
        "boolean": np.logical_or}


def recompute(fn, parents, weights, dtype):
    """child = copy(parent) or ⊕_i (w_i ⊗ parent_i), elementwise, as NumPy computes it."""
    if fn == "copy":
        return parents[0].copy()
    dt = np.dtype(dtype)
    top = np.inf if dt.kind == "f" else np.iinfo(dt).max if dt.kind == "i" else True
    one = {"sum_product": 1, "min_plus": 0, "max_plus": 0, "max_min": top, "boolean": True}[fn]
    terms = [TIMES[fn](np.array(w).astype(dt), p) for w, p in zip(weights or [one] * len(parents), parents)]
    return np.asarray(functools.reduce(PLUS[fn], terms), dt)  # in parent order, like the kernels


class Invariants:
    """The bus under test and what it should hold: layouts, sizes, epochs seen, edges, derivations."""

    def __init__(self, path, rng):
        self.path, self.rng, self.reopens, self.bus = path, rng, 0, mmsb.Bus(path)
        self.group, self.size, self.epoch = {}, {}, {}  # id -> group / bytes / last epoch seen
        self.edges, self.deriv = {}, {}  # (parent, child) -> kind; child -> [fn, parents, weights]
        self.lsn, self.violations, self.notes, self.refusals = 0, 0, [], {}
        for i in range(48):
            self.create(list(GROUPS)[i % 4])

    def fail(self, what):
        self.violations, self.notes = self.violations + 1, (self.notes + [what])[:20]

    def values(self, g, n):  # int64 stays far from overflow under min/max-plus chains
        r = self.rng
        return np.asarray({"b1": lambda: r.random(n) < 0.5, "i4": lambda: r.integers(-2 ** 31, 2 ** 31, n),
                           "i8": lambda: r.integers(-10 ** 9, 10 ** 9, n),
                           "f8": lambda: r.standard_normal(n) * 100}[g](), GROUPS[g][0])

    def create(self, g):
        dtype, n, _ = GROUPS[g]
        data = self.values(g, n) if self.rng.random() < 0.5 else None
        p = self.bus.create_page(data=data) if data is not None else self.bus.create_page(shape=(n,), dtype=dtype)
        self.group[p.id], self.size[p.id], self.epoch[p.id] = g, p.size, p.epoch

    def reach(self, start, down=True):  # pages reachable from `start` along edges (or against them)
        nxt, seen, todo = {}, set(), [start]
        for a, b in self.edges:
            nxt.setdefault(a if down else b, []).append(b if down else a)
        while todo:
            new = [k for k in nxt.get(todo.pop(), ()) if k not in seen]
            seen.update(new)
            todo += new
        return seen

    def snapshot(self):
        b = self.bus
        return (b.lsn, sorted((p.id, p.epoch, p.read(0, p.size)) for p in b.pages()),
                sorted((e.parent, e.child, e.kind) for p in b.pages() for e in b.graph.in_edges(p)))

    def refused(self, what, error, call):
        self.refusals[error.__name__] = self.refusals.get(error.__name__, 0) + 1
        before = self.snapshot()
        try:
            call()
            self.fail(f"{what}: accepted")
        except mmsb.MmsbError as e:
            if not isinstance(e, error):
                self.fail(f"{what}: raised {type(e).__name__} instead of {error.__name__}: {e}")
        if self.snapshot() != before:
            self.fail(f"{what}: the refused call changed the bus")

    def op_write(self):
        r, bus = self.rng, self.bus
        ids = [i for i in self.group if i not in self.deriv]  # derived pages are written by waves only
        pid = ids[int(r.integers(len(ids)))]
        g, p = self.group[pid], bus.page(pid)
        n, item, kind, val = GROUPS[g][1], np.dtype(GROUPS[g][0]).itemsize, int(r.integers(5)), self.values
        if kind == 0:
            i = int(r.integers(n))
            bus.apply(mmsb.Delta.at(p, i * item, val(g, int(r.integers(1, n - i + 1)))))
        elif kind == 1:
            bus.apply(mmsb.Delta.runs(p, [0, item * int(r.integers(n))], [val(g, 2), val(g, 1)]))
        elif kind == 2:
            mask = r.random(n) < 0.3
            bus.apply(mmsb.Delta.masked(p, mask, val(g, int(mask.sum()))))
        elif kind == 3:
            with p.edit() as a:
                a[int(r.integers(n))] = val(g, 1)[0]
        else:  # a batch (or a transaction) over several source pages
            rows = []
            for q in (ids[int(k)] for k in r.integers(0, len(ids), int(r.integers(2, 8)))):
                dtype, m, _ = GROUPS[self.group[q]]
                rows.append((q, np.dtype(dtype).itemsize * int(r.integers(m)), val(self.group[q], 1).tobytes()))
            if r.random() < 0.5:
                bus.apply_batch(mmsb.DeltaBatch([q for q, _, _ in rows], [o for _, o, _ in rows],
                                                [len(d) for _, _, d in rows], b"".join(d for _, _, d in rows)))
            else:
                with bus.transaction():
                    for q, o, d in rows:
                        bus.page(q).write(o, d)

    def op_depend(self):
        r, child = self.rng, list(self.group)[int(self.rng.integers(len(self.group)))]
        g = self.group[child]
        ids = [i for i in self.group if self.group[i] == g]
        cands = [i for i in ids if i != child and self.edges.get((i, child), "data") == "data"] or [child]
        parents = [cands[int(k)] for k in r.choice(len(cands), min(len(cands), int(r.integers(1, 5))), replace=False)]
        fn = "copy" if r.random() < 0.3 else GROUPS[g][2][int(r.integers(len(GROUPS[g][2])))]
        parents = parents[:1] if fn == "copy" else parents
        weights = None if fn == "copy" or r.random() < 0.4 else \
            [float(r.integers(0, 2)) if g == "b1" else float(r.integers(-3, 4)) for _ in parents]
        op = mmsb.ops.copy if fn == "copy" else mmsb.ops.reduce(fn)
        call = lambda: self.bus.depend(child, on=parents, fn=op, weights=weights)  # noqa: E731
        if (self.reach(child) | {child}) & set(parents):
            return self.refused(f"depend({child}, on={parents}) closing a cycle", mmsb.GraphCycleError, call)
        call()  # the new data parents replace the old ones
        self.edges = {e: k for e, k in self.edges.items() if e[1] != child or k != "data"}
        self.edges.update({(p, child): "data" for p in parents})
        self.deriv[child] = [fn, parents, weights]

    def op_edge(self):
        r, ids = self.rng, list(self.group)
        a, b = (ids[int(k)] for k in r.choice(len(ids), 2, replace=False))
        up = sorted(self.reach(b, down=False))
        if up and r.random() < 0.5:  # a deliberate cycle: an edge from a page to one of its ancestors
            a, b = b, up[int(r.integers(len(up)))]
        call = lambda: self.bus.add_edge(a, b, kind="control")  # noqa: E731
        if a in self.reach(b):
            return self.refused(f"add_edge({a}, {b}) closing a cycle", mmsb.GraphCycleError, call)
        if (a, b) in self.edges:
            return self.refused(f"duplicate edge ({a}, {b})", mmsb.GraphError, call)
        call()
        self.edges[(a, b)] = "control"

    def op_remove_edge(self):
        a, b = list(self.edges)[int(self.rng.integers(len(self.edges)))]
        self.bus.remove_edge(a, b)
        if self.edges.pop((a, b)) == "data":  # the derivation keeps its other parents, if any
            fn, parents, weights = self.deriv.pop(b)
            k = parents.index(a)
            if len(parents) > 1:
                self.deriv[b] = [fn, parents[:k] + parents[k + 1:], weights and weights[:k] + weights[k + 1:]]

    def op_delete(self):
        pid = list(self.group)[int(self.rng.integers(len(self.group)))]
        if any(a == pid for a, _ in self.edges):
            return self.refused(f"delete_page({pid}) with children", mmsb.GraphError, lambda: self.bus.delete_page(pid))
        self.bus.delete_page(pid)
        self.edges = {e: k for e, k in self.edges.items() if e[1] != pid}
        for d in (self.group, self.size, self.epoch, self.deriv):
            d.pop(pid, None)

    def op_reopen(self):
        before, stale = self.snapshot(), [p.id for p in self.bus.stale_pages()]  # control children, in eager mode
        self.bus.close()
        self.bus, self.reopens = mmsb.open(self.path), self.reopens + 1
        if self.snapshot() != before or [p.id for p in self.bus.stale_pages()] != stale:
            self.fail(f"mmsb.open: not the state at close, or stale pages {self.bus.stale_pages()} (at close: {stale})")
        self.verify("after reopen")

    def verify(self, when):
        for problem in self.bus.verify().problems:
            self.fail(f"verify {when}: {problem}")

    def check(self, cycle):
        bus = self.bus
        if bus.lsn < self.lsn:
            self.fail(f"cycle {cycle}: lsn went back from {self.lsn} to {bus.lsn}")
        self.lsn = bus.lsn
        live = {p.id: p for p in bus.pages()}
        if set(live) != set(self.group):
            self.fail(f"cycle {cycle}: live pages {sorted(set(live) ^ set(self.group))} unexpected or missing")
        for pid, p in ((k, v) for k, v in live.items() if k in self.group):
            if p.epoch < self.epoch[pid]:
                self.fail(f"cycle {cycle}: page {pid} epoch went back from {self.epoch[pid]} to {p.epoch}")
            self.epoch[pid], (dtype, n, _) = p.epoch, GROUPS[self.group[pid]]
            if p.size != self.size[pid] or p.dtype != np.dtype(dtype) or p.shape != (n,):
                self.fail(f"cycle {cycle}: page {pid} is now {p.size} B {p.dtype}{p.shape}")
        if not (report := bus.graph.validate()).ok or report.cycles or report.dangling:
            self.fail(f"cycle {cycle}: graph.validate(): cycles {report.cycles}, dangling {report.dangling}")
        got = {(e.parent, e.child): e.kind for p in live.values() for e in bus.graph.in_edges(p)}
        if got != self.edges:
            self.fail(f"cycle {cycle}: edges differ: {sorted(set(got.items()) ^ set(self.edges.items()))[:4]}")
        stale = {p.id for p in bus.stale_pages()} if bus.propagation == "deferred" else set()
        for child, (fn, parents, weights) in self.deriv.items():
            if child in stale or child not in live or any(q not in live for q in parents):
                continue
            want = recompute(fn, [live[q].view() for q in parents], weights, GROUPS[self.group[child]][0])
            if want.tobytes() != live[child].read(0, live[child].size):
                self.fail(f"cycle {cycle}: page {child} != {fn}({parents}, weights={weights}) of its parents")


@validator(8, "invariants", ("violations",))
def run(ctx: Context) -> dict:
    cycles, reopen_every = ctx.size((10_000, 1_000), (500, 100))
    rng = np.random.default_rng(ctx.seed)
    inv = Invariants(os.path.join(ctx.tmpdir, "invariants.mmsb"), rng)
    ops = [(inv.op_write, 45), (inv.op_depend, 14), (inv.op_edge, 12), (lambda: inv.edges and inv.op_remove_edge(), 7),
           (inv.op_delete, 5), (lambda: inv.create(list(GROUPS)[int(rng.integers(4))]), 5),
           (lambda: inv.bus.checkpoint(), 2)]
    weights = np.array([w for _, w in ops], float) / sum(w for _, w in ops)
    deferred_until, next_reopen = 0, reopen_every
    for c in ctx.progress(range(1, cycles + 1), total=cycles, desc="invariants"):
        if c == deferred_until:
            inv.bus.propagate()
            inv.bus.propagation = "eager"
        elif deferred_until < c and rng.random() < 0.01:
            inv.bus.propagation, deferred_until = "deferred", c + int(rng.integers(2, 20))
        ops[int(rng.choice(len(ops), p=weights))][0]()
        inv.check(c)
        if c % 100 == 0:
            inv.verify(f"at cycle {c}")
        if c >= next_reopen and inv.bus.propagation == "eager":
            inv.op_reopen()
            next_reopen += reopen_every
    inv.verify("at the end")
    for key, value in [("cycles", cycles), ("pages_live_at_end", len(inv.group)), ("edges_at_end", len(inv.edges)),
                       ("derived_at_end", len(inv.deriv)), ("lsn", inv.bus.lsn), ("reopens", inv.reopens),
                       ("refusals_checked", inv.refusals), ("first_violations", inv.notes)]:
        ctx.note(key, value)
    inv.bus.close()
    return {"violations": inv.violations}
