"""Provenance DAGs (``bus.provenance(page)``): which deltas produced a page, back to user deltas."""

from __future__ import annotations

import functools
import html
from typing import Dict, Iterator, List, NamedTuple, Tuple

Key = Tuple[int, int]  # (page, epoch)


class ProvenanceNode(NamedTuple):
    page: int
    epoch: int
    lsn: int
    source: str  # "user", "propagation", ...
    timestamp_ns: int
    inputs: Tuple[Key, ...]  # the parents and their epochs (propagated deltas)


class Provenance:
    """The DAG behind one (page, epoch). ``root`` is that key; ``nodes`` maps (page, epoch) to
    ProvenanceNode; ``edges`` lists (child key, parent key); ``depth`` is the largest number of hops
    from the root to a node, counted along the shortest path to it, as the engine expands them
    (≤ ``max_depth``; nodes at the limit keep their inputs but are not expanded)."""

    def __init__(self, steps: list, max_depth: int, root: Key = (0, 0)) -> None:
        self.max_depth = max_depth
        self.nodes: Dict[Key, ProvenanceNode] = {}
        nodes = self.nodes
        for key, lsn, source, ts, inputs in steps:  # key and inputs: (page, epoch) tuples
            if key not in nodes:
                nodes[key] = ProvenanceNode(key[0], key[1], lsn, source, ts, inputs)
        self.root: Key = steps[0][0] if steps else root
        self.levels: Dict[Key, int] = {self.root: 0} if steps else {}
        levels = self.levels
        for k, n in nodes.items():  # BFS order: parents of a node come after it
            level = levels.get(k, 0) + 1
            for i in n.inputs:
                if i in nodes and i not in levels:
                    levels[i] = level
        self.depth = max(levels.values(), default=0)

    @functools.cached_property
    def edges(self) -> List[Tuple[Key, Key]]:
        """(child key, parent key) for every input that is a node of the DAG, in node order:
        derived from ``nodes`` on first use (a deep fan-in answer has tens of thousands)."""
        nodes = self.nodes
        return [(k, i) for k, n in nodes.items() for i in n.inputs if i in nodes]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[ProvenanceNode]:
        return iter(self.nodes.values())

    def __getitem__(self, key: Key) -> ProvenanceNode:
        return self.nodes[key]

    def sources(self) -> List[ProvenanceNode]:
        """The leaves: deltas that no recompute produced (user, replay or remote)."""
        return [n for n in self.nodes.values() if not n.inputs]

    def to_dot(self) -> str:
        """Graphviz source: one node per (page, epoch), an edge from each input to what it produced."""
        lines = ["digraph provenance {", "  rankdir=RL;", '  node [shape=box, fontname="monospace"];']
        for (p, e), n in self.nodes.items():
            lines.append(f'  "p{p}e{e}" [label="page {p} @ epoch {e}\\nlsn {n.lsn} ({n.source})"];')
        for (cp, ce), (pp, pe) in self.edges:
            lines.append(f'  "p{pp}e{pe}" -> "p{cp}e{ce}";')
        lines.append("}")
        return "\n".join(lines)

    def to_svg(self, max_nodes: int = 120, max_per_level: int = 16, max_levels: int = 10) -> str:
        """A layered SVG drawing (no external tools): the root on the left, inputs to its right.
        A big DAG is cut so the drawing stays readable and cheap: at most `max_levels` columns
        (nearest first), `max_per_level` nodes per column and `max_nodes` in all; a "… N more"
        line under a column, and one after the last drawn column, count what was left out."""
        by_level: Dict[int, List[Key]] = {}
        for k in self.nodes:
            by_level.setdefault(self.levels.get(k, 0), []).append(k)
        shown: Dict[int, List[Key]] = {}
        budget = max_nodes
        for lvl in sorted(by_level):
            if budget <= 0 or len(shown) == max_levels:
                break
            shown[lvl] = by_level[lvl][:min(max_per_level, budget)]
            budget -= len(shown[lvl])
        cut = {lvl: len(by_level[lvl]) - len(ks) for lvl, ks in shown.items() if len(by_level[lvl]) > len(ks)}
        hidden = len(self.nodes) - sum(len(ks) for ks in shown.values()) - sum(cut.values())
        w, h, gx, gy = 150, 38, 50, 14
        pos = {k: (10 + col * (w + gx), 10 + i * (h + gy))
               for col, ks in enumerate(shown.values()) for i, k in enumerate(ks)}
        columns = len(shown) + (1 if hidden else 0)
        width = 20 + max(columns, 1) * (w + gx)
        height = 20 + (max((len(v) for v in shown.values()), default=1) + (1 if cut else 0)) * (h + gy)
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">']
        for child, parent in self.edges:
            if child in pos and parent in pos:
                (x1, y1), (x2, y2) = pos[child], pos[parent]
                parts.append(f'<line x1="{x1 + w}" y1="{y1 + h / 2}" x2="{x2}" y2="{y2 + h / 2}" stroke="#888"/>')
        for k, (x, y) in pos.items():
            n = self.nodes[k]
            fill = "#dbeafe" if n.source == "propagation" else "#dcfce7"
            parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="4" fill="{fill}" stroke="#555"/>')
            parts.append(f'<text x="{x + 6}" y="{y + 15}">page {n.page} @ {n.epoch}</text>')
            parts.append(f'<text x="{x + 6}" y="{y + 30}">lsn {n.lsn} {html.escape(n.source)}</text>')
        for col, (lvl, ks) in enumerate(shown.items()):
            if lvl in cut:
                parts.append(f'<text x="{10 + col * (w + gx) + 6}" y="{10 + len(ks) * (h + gy) + 15}" fill="#666">'
                             f'… {cut[lvl]} more</text>')
        if hidden:
            parts.append(f'<text x="{10 + len(shown) * (w + gx) + 6}" y="{10 + h / 2}" fill="#666">… {hidden} more deeper</text>')
        parts.append("</svg>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        from ._html import provenance_html

        return provenance_html(self)

    def __repr__(self) -> str:
        return f"<mmsb.Provenance page={self.root[0]} epoch={self.root[1]} nodes={len(self)} depth={self.depth}>"
