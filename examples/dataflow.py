"""Compiler-IR dataflow: reaching definitions and shortest paths over a random control-flow graph,
computed by mmsb's propagation (`boolean` and `min_plus` recomputes), traced by provenance.

Loops. A CFG with loops is cyclic, and mmsb refuses cyclic dependency graphs. So the fixpoint
iteration is unrolled into layers, an acyclic graph: layer r holds every block's facts after r
rounds of round-robin (Jacobi) iteration, computed from layer r-1 only.
  reaching definitions   in.r<r>.b<b>  = OR over preds p of out.r<r-1>.b<p>    (reduce "boolean")
                         out.r<r>.b<b> = gen.b<b> | (in.r<r>.b<b> & keep.b<b>)  (Python callable;
                         keep = not kill; the semiring has no elementwise AND of two pages)
  shortest paths         dist.r<r>.b<t>[s] = min(dist.r<r-1>.b<t>[s], min_p cost[p] + dist.r<r-1>.b<p>[s])
                                                                 (reduce "min_plus", weights [0, cost...])
Layer r covers the paths of at most r edges, and a definition reaching a block (or a shortest
path) always has a simple path of at most B-1 edges, so layer B-1 is the fixpoint: exactly
Bellman-Ford's bound. It stays the fixpoint after any later edit of gen/keep, so an edit only
runs a propagation wave (cutoff stops it where a layer stops changing) and the graph never grows.
Blocks without predecessors (the entry) use gen.b<b> itself as their out pages.

Checks: reaching definitions against the classic worklist algorithm, all-pairs shortest paths
against Bellman-Ford from each block, before and after deleting a definition (one transaction,
deferred propagation); the provenance of one fact leads back to its defining block's gen page,
through blocks that can reach it.
"""

from __future__ import annotations

import argparse
from collections import deque
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

import mmsb

from _common import CheckFailed, bus_directory, check, compare_arrays, parser, run, say


class Cfg(NamedTuple):
    preds: List[List[int]]
    succs: List[List[int]]
    defs: List[Optional[Tuple[int, int]]]  # definition d = (block, variable); None once deleted
    cost: np.ndarray  # cost of executing each block: the weight of its out-edges


def random_cfg(blocks: int, seed: int) -> Cfg:
    """Fall-through edges keep every block reachable from the entry (block 0); forward jumps and
    back edges (loops, never into the entry) are random; each block defines 0-2 variables."""
    rng = np.random.default_rng(seed)
    succs: List[set] = [set() for _ in range(blocks)]
    for b in range(blocks - 1):
        succs[b].add(b + 1)
        if b + 2 < blocks and rng.random() < 0.35:
            succs[b].add(int(rng.integers(b + 2, blocks)))
        if b > 0 and rng.random() < 0.3:
            succs[b].add(int(rng.integers(1, b + 1)))
    n_vars = max(2, blocks // 3)
    defs = [(b, int(v)) for b in range(blocks) for v in sorted(rng.choice(n_vars, int(rng.integers(0, 3)), replace=False))]
    preds = [sorted(p for p in range(blocks) if b in succs[p]) for b in range(blocks)]
    return Cfg(preds, [sorted(s) for s in succs], defs, rng.integers(1, 10, blocks).astype(np.float64))


def gen_kill(cfg: Cfg) -> Tuple[np.ndarray, np.ndarray]:
    """gen[b, d]: block b makes definition d; kill[b, d]: b redefines d's variable elsewhere."""
    n = len(cfg.preds)
    gen = np.zeros((n, len(cfg.defs)), bool)
    kill = np.zeros_like(gen)
    for d, dv in enumerate(cfg.defs):
        if dv is not None:
            gen[dv[0], d] = True
    for d, dv in enumerate(cfg.defs):
        for e, ev in enumerate(cfg.defs):
            if dv is not None and ev is not None and ev[1] == dv[1] and ev[0] != dv[0]:
                kill[ev[0], d] = True
    return gen, kill


def worklist_reaching(cfg: Cfg) -> np.ndarray:
    """OUT sets by the classic worklist algorithm (no mmsb)."""
    gen, kill = gen_kill(cfg)
    out = gen.copy()
    work, queued = deque(range(len(cfg.preds))), set(range(len(cfg.preds)))
    while work:
        b = work.popleft()
        queued.discard(b)
        inn = np.zeros(gen.shape[1], bool)
        for p in cfg.preds[b]:
            inn |= out[p]
        new = gen[b] | (inn & ~kill[b])
        if not np.array_equal(new, out[b]):
            out[b] = new
            for s in cfg.succs[b]:
                if s not in queued:
                    work.append(s)
                    queued.add(s)
    return out


def bellman_ford(cfg: Cfg) -> np.ndarray:
    """dist[s, t]: cheapest path cost from s to t (the cost of each block left), by Bellman-Ford."""
    n = len(cfg.preds)
    edges = [(u, v) for u in range(n) for v in cfg.succs[u]]
    dist = np.full((n, n), np.inf)
    for s in range(n):
        dist[s, s] = 0.0
        for _ in range(n - 1):
            for u, v in edges:
                dist[s, v] = min(dist[s, v], dist[s, u] + cfg.cost[u])
    return dist


def transfer(out: np.ndarray, inn: np.ndarray, gen: np.ndarray, keep: np.ndarray) -> None:
    """out = gen | (in & keep): the reaching-definitions transfer function of one block."""
    out[:] = gen | (inn & keep)


class Model(NamedTuple):
    gen: List["mmsb.Page"]
    keep: List["mmsb.Page"]
    out: List[List["mmsb.Page"]]  # out[r][b]
    dist: List[List["mmsb.Page"]]  # dist[r][t]


def build(bus: "mmsb.Bus", cfg: Cfg) -> Model:
    """Create the source pages and the unrolled layers (see the module docstring)."""
    n, gen, kill = len(cfg.preds), *gen_kill(cfg)
    gp = [bus.create_page(data=gen[b], name=f"gen.b{b}") for b in range(n)]
    kp = [bus.create_page(data=~kill[b], name=f"keep.b{b}") for b in range(n)]
    out, dist = [gp], [[bus.create_page(data=np.where(np.arange(n) == t, 0.0, np.inf), name=f"dist.r0.b{t}")
                        for t in range(n)]]
    for r in range(1, max(n, 2)):
        layer, dlayer = [], []
        for b in range(n):
            if not cfg.preds[b]:
                layer.append(gp[b])
            else:
                inn = bus.create_page(shape=gen.shape[1:], dtype=bool, name=f"in.r{r}.b{b}")
                bus.depend(inn, on=[out[r - 1][p] for p in cfg.preds[b]], fn=mmsb.ops.reduce("boolean"))
                o = bus.create_page(shape=gen.shape[1:], dtype=bool, name=f"out.r{r}.b{b}")
                bus.depend(o, on=[inn, gp[b], kp[b]], fn=transfer)
                layer.append(o)
            # A self-loop (p == b) never shortens a path (costs are positive), and a page may
            # not be listed twice as a parent.
            ps = [p for p in cfg.preds[b] if p != b]
            d = bus.create_page(shape=(n,), dtype="float64", name=f"dist.r{r}.b{b}")
            bus.depend(d, on=[dist[r - 1][b]] + [dist[r - 1][p] for p in ps],
                       fn=mmsb.ops.reduce("min_plus"), weights=[0.0] + [cfg.cost[p] for p in ps])
            dlayer.append(d)
        out.append(layer)
        dist.append(dlayer)
    return Model(gp, kp, out, dist)


def results(model: Model) -> Tuple[np.ndarray, np.ndarray]:
    """(reaching[b, d], dist[s, t]) read from the last layer."""
    return (np.stack([p.view() for p in model.out[-1]]), np.stack([p.view() for p in model.dist[-1]], axis=1))


def verify(cfg: Cfg, reaching: np.ndarray, dist: np.ndarray, when: str) -> None:
    """mmsb's fixpoint layer equals the worklist algorithm and Bellman-Ford."""
    check(f"dataflow {when}", compare_arrays("reaching definitions", worklist_reaching(cfg), reaching)
          + compare_arrays("shortest paths", bellman_ford(cfg), dist))


def ancestors(cfg: Cfg, t: int) -> set:
    """Blocks with a path to t, and t."""
    seen, todo = {t}, [t]
    while todo:
        for p in cfg.preds[todo.pop()]:
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def verify_provenance(cfg: Cfg, leaf_names: Sequence[str], fact: Tuple[int, int]) -> List[int]:
    """The user deltas behind fact (block t, definition d) include d's gen page, and come only
    from blocks that can reach t. Returns those blocks."""
    t, d = fact
    blocks = sorted({int(n.rsplit(".b", 1)[1]) for n in leaf_names})
    problems = [] if f"gen.b{cfg.defs[d][0]}" in leaf_names else [f"gen.b{cfg.defs[d][0]} is not a source"]
    problems += [f"block {b} cannot reach block {t}" for b in blocks if b not in ancestors(cfg, t)]
    check(f"provenance of definition {d} at block {t}", problems)
    return blocks


def hops(cfg: Cfg, src: int) -> dict:
    """Fewest edges from src to every block it reaches (breadth-first)."""
    dist, todo = {src: 0}, deque([src])
    while todo:
        u = todo.popleft()
        for v in cfg.succs[u]:
            if v not in dist:
                dist[v] = dist[u] + 1
                todo.append(v)
    return dist


def pick_fact(cfg: Cfg, reaching: np.ndarray) -> Optional[Tuple[int, int]]:
    """The reaching definition that travels farthest (in edges) from its block, if any."""
    facts = [(hops(cfg, cfg.defs[d][0]).get(t, 0), t, int(d))
             for t in range(len(cfg.preds)) for d in np.flatnonzero(reaching[t]) if cfg.defs[d][0] != t]
    return max(facts)[1:] if facts else None


def analyse(args: argparse.Namespace) -> None:
    """Build, check, trace a fact, delete its definition and check again (raises CheckFailed)."""
    cfg = random_cfg(max(args.size, 2), args.seed)
    n = len(cfg.preds)
    with bus_directory(args.dir, "dataflow") as path, mmsb.Bus(path) as bus:
        model = build(bus, cfg)
        say(f"CFG: {n} blocks, {sum(map(len, cfg.succs))} edges ({sum(s <= b for b in range(n) for s in cfg.succs[b])} "
            f"back edges), {len(cfg.defs)} definitions; unrolled into {len(model.out)} layers: {len(bus)} pages")
        reaching, dist = results(model)
        verify(cfg, reaching, dist, "as built")
        say(f"reaching definitions = worklist algorithm; all-pairs shortest paths = Bellman-Ford "
            f"(entry to exit costs {dist[0, n - 1]:.0f})")

        fact = pick_fact(cfg, reaching)
        if fact is None:
            say("no definition reaches another block: nothing to trace")
            return
        t, d = fact
        block, var = cfg.defs[d]
        prov = bus.provenance(model.out[-1][t], max_depth=2 * n + 2)
        leaves = [bus.page(node.page).name for node in prov.sources()]
        blocks = verify_provenance(cfg, leaves, fact)
        say(f"fact: definition d{d} (v{var} in block {block}) reaches the end of block {t}; its provenance is "
            f"{len(prov)} deltas (depth {prov.depth}), rooted in user deltas to blocks {blocks}")

        cfg.defs[d] = None  # delete that definition: new gen and keep sets, written atomically
        gen, kill = gen_kill(cfg)
        lsn = bus.lsn
        bus.reset_stats()
        bus.propagation = "deferred"  # the edits only mark pages stale; one wave follows them all
        with bus.transaction():
            changed = sum(model.gen[b].update(gen[b]) + model.keep[b].update(~kill[b]) for b in range(n))
        stale = len(bus.stale_pages())
        bus.propagate()
        bus.propagation = "eager"
        stats = bus.stats()
        reaching, dist = results(model)
        verify(cfg, reaching, dist, "after deleting a definition")
        if reaching[t, d]:
            raise CheckFailed("deleted definition", [f"d{d} still reaches block {t}"])
        touched = sorted(bus.diff(lsn, bus.lsn))
        say(f"deleted d{d}: {changed} source pages in one transaction marked {stale} pages stale; one wave "
            f"recomputed {stats['recomputes']}, {stats['cutoffs']} cut off unchanged, {len(touched)} pages "
            f"changed; results again equal the worklist algorithm and Bellman-Ford")


def build_parser() -> argparse.ArgumentParser:
    return parser(__doc__.splitlines()[0], 12, "basic blocks in the CFG (>= 2)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: run the analysis and all checks; the exit code says whether they passed."""
    return run(analyse, build_parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
