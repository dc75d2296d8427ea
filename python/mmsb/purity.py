"""The purity validator: semiring laws on samples, and for every derived page of a bus that its
recompute is deterministic and leaves its inputs untouched."""

from __future__ import annotations

from typing import Any, Optional

from . import _core
from ._args import int_arg
from ._reports import Report
from .errors import InvalidArgumentError, MmsbError
from .semiring import Semiring

DTYPES = ("int32", "int64", "float32", "float64", "bool")


class PurityReport(Report):
    """ok, law_checks, law_violations, recomputes_checked, nondeterministic, side_effects, failures."""

    def __bool__(self) -> bool:
        return bool(self["ok"])


def _differs_from_its_commit(bus: Any, page: Any, d: dict, output: bytes) -> bool:
    """True when the page holds what its last recompute committed, its parents have not changed
    since (the memo is their epochs, the page is not stale), and yet the recompute now gives other
    bytes: its result depends on something besides its parents (a global, the child's own
    previous content, which every probe starts from and so cannot tell apart by itself)."""
    if page.stale or list(d["memo"]) != [bus.page(p).epoch for p in d["parents"]]:
        return False
    try:
        prov = bus.provenance(page, max_depth=0)
    except MmsbError:  # that epoch is older than the history this bus holds
        return False
    node = prov.nodes.get(prov.root)
    return node is not None and node.source == "propagation" and page.read(0, page.size) != output


def validate_purity(bus: Optional[Any] = None, samples: int = 1000, seed: int = 0, runs: int = 2) -> PurityReport:
    """Check every semiring × supported dtype on ``samples`` random triples; then, for each
    derived page of ``bus``, run its recompute ``runs`` times without committing (parents handed to
    Python callables as writable copies) and report outputs that differ between runs, or from what
    the recompute committed for the same parent epochs (nondeterministic), inputs that changed
    (side_effects) and recomputes that raised (failures). Derived pages whose Python function is
    not registered (after mmsb.open) are not checked: recomputes_checked counts those that were."""
    # Found before the laws are sampled, not after; samples and seed fail on the first check_laws.
    if bus is not None and not isinstance(bus, _core.Bus):
        raise InvalidArgumentError(f"bus must be an mmsb.Bus or None; got {type(bus).__name__}")
    runs = int_arg("runs", runs, low=1)
    law_checks = 0
    violations: list = []
    for s in (getattr(Semiring, n) for n in Semiring.NAMES):
        for dt in DTYPES:
            if s.supports(dt):
                checks, bad = s.check_laws(dt, samples, seed)
                law_checks += checks
                violations += [f"{s.name}/{dt}: {v}" for v in bad]
    nondeterministic: list = []
    side_effects: list = []
    failures: list = []
    checked = 0
    if bus is not None:
        for page in bus.pages():
            d = bus._derivation(page)
            if d is None or d["missing_callable"]:
                continue
            checked += 1
            before = {p: bus.page(p).read(0, bus.page(p).size) for p in d["parents"]}
            outputs = []
            try:
                for _ in range(runs):
                    outputs.append(bus._preview_recompute(page, True))
            except MmsbError as e:
                msg = str(e)
                (side_effects if "modified its input" in msg else failures).append(f"page {page.id}: {msg}")
                continue
            if any(o != outputs[0] for o in outputs[1:]) or _differs_from_its_commit(bus, page, d, outputs[0]):
                nondeterministic.append(page.id)
            after = {p: bus.page(p).read(0, bus.page(p).size) for p in d["parents"]}
            side_effects += [f"page {page.id}: parent {p} changed" for p in before if before[p] != after[p]]
    ok = not (violations or nondeterministic or side_effects or failures)
    return PurityReport(
        ok=ok,
        law_checks=law_checks,
        law_violations=violations,
        recomputes_checked=checked,
        nondeterministic=nondeterministic,
        side_effects=side_effects,
        failures=failures,
    )


__all__ = ["PurityReport", "validate_purity"]
