"""Validator 10, provenance: bus.provenance() answers which deltas produced a page, recursively
to the depth limit, correctly and fast on deep DAGs (DESIGN §1 "Provenance", §5).

Structures (float64 pages of 16 elements on an in-memory bus): copy chains, a root and 31
mmsb.ops.copy pages each copying the one before; one chain of 40 copies, deeper than the
default limit (32); and fan-in DAGs of 32 layers (a layer of root pages, then 31 layers each
page of which is mmsb.ops.reduce("sum_product") — the mean — of 8..32 pages, most from the
layer below, some from farther down, so shortest and longest paths differ). Several rounds of
user writes (DeltaBatch rows) go to random subsets of the roots (and once to the 40-chain's);
each commit's wave recomputes what changed.

Queries: bus.provenance(page, epoch, max_depth=k) for the deepest pages (31 hops from a root), at
every epoch with k = 32 and at sampled epochs with k in 0, 1, 2, 7, 15, 30, 31; the timed
queries (bus.provenance(page): the current epoch, the default limit, judged as k = 32); and
bus.provenance(tip) of the 40-copy chain with the default limit, which must stop 32 hops from
the tip. Each answer is compared with the DAG expected from what this validator built: the
parents of every page in the order given to depend; "user" deltas at the roots, at the lsns the
batches returned; "propagation" deltas elsewhere, at the lsns and epochs the page_changed events
reported, with as inputs the parents at the epochs they had just before that lsn; nodes
expanded breadth first, nodes at level k kept but not expanded. Those event lsns are checked
against the log (bus.history) on a sample of pages.

Metrics: resolve_ms_p99 (wall time of provenance() with the default limit on the deepest pages,
many queries, each answer judged after its timing), depth_limit_violations (answers with a node
more than k hops from the root, or, for k >= the full depth, not reaching every user delta
behind the page), wrong_answers (root, nodes, lsns, sources, inputs with their epochs, edges or
depth differ from the expected DAG; plus sampled pages whose log history disagrees with the
events the expectation was built from).
Quick: fewer chains, narrower DAGs (width 12, fan-in 8..12), fewer queries; same depths.
"""

from __future__ import annotations

import bisect
import functools
import gc
import time

import numpy as np

import mmsb

from ._framework import Context, validator

DEPTH = 31
DEFAULT_LIMIT = 32  # provenance()'s documented default max_depth
UNLIMITED = 10 ** 6  # a depth beyond every structure built here
ELEMS = 16


class Built:
    """The pages, their parents (None for roots) and the user writes' lsns: (page, epoch) -> lsn."""

    def __init__(self, bus):
        self.bus, self.parents, self.user_lsn, self.roots, self.deepest = bus, {}, {}, [], []
        self.changed = {}  # derived page -> [(epoch, lsn)] from page_changed events

    def page(self, parents=None, fn=None, weights=None):
        p = self.bus.create_page(shape=(ELEMS,), dtype="float64")
        self.parents[p.id] = parents
        if parents is None:
            self.roots.append(p.id)
        else:
            self.bus.depend(p, on=parents, fn=fn, weights=weights)
        return p.id

    def chain(self, hops):
        """A root and `hops` copies each of the one before; returns (root, tip)."""
        ids = [self.page()]
        for _ in range(hops):
            ids.append(self.page([ids[-1]], mmsb.ops.copy))
        return ids[0], ids[-1]

    def fan_in(self, rng, width, lo, hi, skips):
        """32 layers; each derived page is the mean of lo..hi pages of the layer below, except
        that a fraction `skips` of them take their last parent from a farther layer."""
        layers = [[self.page() for _ in range(width)]]
        for level in range(1, DEPTH + 1):
            layer = []
            for _ in range(width):
                k = int(rng.integers(lo, hi + 1))
                parents = [int(x) for x in rng.choice(layers[-1], k, replace=False)]
                if level > 1 and rng.random() < skips:
                    parents[-1] = int(rng.choice(layers[int(rng.integers(0, level - 1))]))
                layer.append(self.page(parents, mmsb.ops.reduce("sum_product"), [1.0 / k] * k))
            layers.append(layer)
        self.deepest += layers[-1]

    def write_roots(self, rng, ids=None):
        """One DeltaBatch to `ids`, or to a random 70% of the roots."""
        if ids is None:
            ids = [r for r in self.roots if rng.random() < 0.7]
        data = rng.standard_normal(ELEMS * len(ids))
        last = self.bus.apply_batch(mmsb.DeltaBatch(ids, [0] * len(ids), [ELEMS * 8] * len(ids), data))
        for row, pid in enumerate(ids):  # rows take consecutive lsns in order
            epoch = sum(1 for (p, _) in self.user_lsn if p == pid) + 1
            self.user_lsn[(pid, epoch)] = last - len(ids) + 1 + row


class Oracle:
    """The expected provenance, from the structure built, the lsns of the user writes, and the
    page_changed events of the waves (lsn and epoch of every propagated delta)."""

    def __init__(self, built):
        self.b = built

    @functools.lru_cache(maxsize=None)
    def node(self, key):
        pid, epoch = key
        if self.b.parents[pid] is None:
            return self.b.user_lsn.get(key, -1), "user", ()
        lsns = self.lsns(pid)
        if epoch > len(lsns):
            return -1, "no such delta", ()
        inputs = tuple((q, bisect.bisect_left(self.lsns(q), lsns[epoch - 1])) for q in self.b.parents[pid])
        return lsns[epoch - 1], "propagation", inputs

    @functools.lru_cache(maxsize=None)
    def lsns(self, pid):
        """The page's delta lsns in epoch order: the user writes' (recorded here) or the waves'."""
        if self.b.parents[pid] is None:
            return sorted(lsn for (p, _), lsn in self.b.user_lsn.items() if p == pid)
        return [lsn for _, lsn in sorted(self.b.changed.get(pid, []))]

    @functools.lru_cache(maxsize=256)
    def dag(self, root, k):
        """(nodes {key: (lsn, source, inputs)}, levels {key: hops}) expanded breadth first to k."""
        nodes, levels, queue = {}, {root: 0}, [root]
        for key in queue:
            nodes[key] = self.node(key)
            if levels[key] < k:
                for i in nodes[key][2]:
                    if i[1] > 0 and i not in levels:
                        levels[i] = levels[key] + 1
                        queue.append(i)
        return nodes, levels


def levels_of(prov) -> dict:
    """Hop distance from the root of every node of an answer, along the answer's own inputs."""
    levels, todo = {prov.root: 0}, [prov.root]
    for key in todo:
        for i in prov.nodes[key].inputs if key in prov.nodes else ():
            if i in prov.nodes and i not in levels:
                levels[i] = levels[key] + 1
                todo.append(i)
    return levels


def judge(prov, oracle, root, k) -> tuple[bool, bool]:
    """(depth limit violated, answer wrong) for the answer `prov` to (root, k)."""
    nodes, levels = oracle.dag(root, k)
    got = levels_of(prov)
    full_nodes, full_levels = oracle.dag(root, UNLIMITED)
    users = {key for key, (_, src, _) in full_nodes.items() if src == "user"}
    violated = max(got.values(), default=0) > k or prov.depth > k or (
        k >= max(full_levels.values()) and users - {key for key, n in prov.nodes.items() if n.source == "user"})
    edges = {(key, i) for key, (_, _, ins) in nodes.items() for i in ins if i in nodes}
    wrong = (prov.root != root or set(prov.nodes) != set(nodes) or set(prov.edges) != edges
             or prov.depth != max(levels.values()) or set(got) != set(prov.nodes)
             or any((n.lsn, n.source, n.inputs) != nodes[key] for key, n in prov.nodes.items() if key in nodes))
    return bool(violated), bool(wrong)


@validator(10, "provenance", ("resolve_ms_p99", "depth_limit_violations", "wrong_answers"))
def run(ctx: Context) -> dict:
    chains, dags, width, fan, rounds, timed = ctx.size((16, 2, 32, (8, 32), 4, 300), (4, 2, 12, (8, 12), 3, 40))
    rng = np.random.default_rng(ctx.seed)
    bus = mmsb.Bus()
    built = Built(bus)
    for _ in range(chains):
        built.deepest.append(built.chain(DEPTH)[1])
    for d in range(dags):  # the first one strictly layered (depth 31 by every path), then with skips
        built.fan_in(rng, width, *fan, skips=0.0 if d == 0 else 0.05)
    deep_root, deep_tip = built.chain(DEFAULT_LIMIT + 8)
    changed = bus.subscribe("page_changed", lambda e: built.changed.setdefault(e.page, []).append((e.epoch, e.lsn)))
    for _ in range(rounds):
        built.write_roots(rng)
    built.write_roots(rng, [deep_root])  # written at least once, whatever the random rounds chose
    changed.cancel()
    oracle = Oracle(built)
    violations, wrong, first = 0, 0, []

    def tally(pid, epoch, k, prov):
        nonlocal violations, wrong
        bad_depth, bad_answer = judge(prov, oracle, (pid, epoch), k)
        violations, wrong = violations + bad_depth, wrong + bad_answer
        if (bad_depth or bad_answer) and len(first) < 5:
            first.append(f"page {pid} epoch {epoch} max_depth {k}: depth {'violated' if bad_depth else 'ok'}, "
                         f"answer {'wrong' if bad_answer else 'ok'} ({len(prov)} nodes)")

    picks = rng.choice(built.deepest, timed).tolist()
    for pid in set(picks):  # the expected DAGs built and cached first: judging between timings then
        for k in (DEFAULT_LIMIT, UNLIMITED):  # leaves no new long-lived objects for the collector to scan
            oracle.dag((pid, bus.page(pid).epoch), k)
    gc.collect()
    times = []
    for pid in ctx.progress(picks, total=timed, desc="provenance: timed"):
        epoch = bus.page(pid).epoch
        start = time.perf_counter()
        prov = bus.provenance(pid)  # the current epoch, the default limit
        times.append((time.perf_counter() - start) * 1e3)
        tally(pid, epoch, DEFAULT_LIMIT, prov)  # judged one by one: a full-size run's answers are big
        del prov  # freed outside the timed region
    deep = bus.provenance(deep_tip)
    tally(deep_tip, bus.page(deep_tip).epoch, DEFAULT_LIMIT, deep)
    work = [(pid, e, k) for pid in built.deepest for e in range(1, bus.page(pid).epoch + 1)
            for k in (0, 1, 2, 7, 15, 30, 31, 32) if k == 32 or rng.random() < ctx.size(0.1, 0.2)]
    for pid, epoch, k in ctx.progress(work, total=len(work), desc="provenance: answers"):
        tally(pid, epoch, k, bus.provenance(pid, epoch=epoch, max_depth=k))
    # the events the oracle used against the log itself, on a sample of pages
    sample = [int(p) for p in rng.choice(sorted(built.parents), min(64, len(built.parents)), replace=False)]
    disagree = [p for p in sample if oracle.lsns(p) != [h.lsn for h in bus.history(p)]]
    ctx.note("log_disagreements", disagree)
    ctx.note("pages", len(built.parents))
    ctx.note("queries_checked", len(work) + timed + 1)
    ctx.note("default_limit_chain_depth", deep.depth)
    ctx.note("nodes_in_deepest_fan_in_answer", len(bus.provenance(built.deepest[-1])))
    ctx.note("resolve_ms_p50", float(np.percentile(times, 50)))
    ctx.note("first_failures", first)
    bus.close()
    return {"resolve_ms_p99": float(np.percentile(times, 99)), "depth_limit_violations": violations,
            "wrong_answers": wrong + len(disagree)}
