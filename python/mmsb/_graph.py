"""The graph side of a Bus in Python: depend, the Graph view, events and provenance wrappers."""

from __future__ import annotations

import collections.abc
import logging
import weakref
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Sequence, Union

from . import _core
from ._args import U64_MAX, as_int, int_arg
from ._reports import Report
from .errors import ClosedError, InvalidArgumentError
from .ops import Op
from .provenance import Provenance

logger = logging.getLogger("mmsb")

EVENT_KINDS = ("page_created", "page_deleted", "delta_applied", "page_changed", "page_stale", "checkpoint", "tick")


class GraphReport(Report):
    """bus.graph.validate(): ok, nodes, edges, cycles, dangling, order."""

    def __bool__(self) -> bool:
        return bool(self["ok"])


class Edge(NamedTuple):
    parent: int
    child: int
    kind: str


class Graph:
    """The dependency graph of a bus (``bus.graph``). Pages may be given as Page, id or name."""

    def __init__(self, bus: "_core.Bus") -> None:
        self._bus = bus

    def parents(self, page: Any) -> List["_core.Page"]:
        return [self._bus.page(e[0]) for e in self._bus._in_edges(page)]

    def children(self, page: Any) -> List["_core.Page"]:
        return [self._bus.page(e[1]) for e in self._bus._out_edges(page)]

    def in_edges(self, page: Any) -> List[Edge]:
        return [Edge(*e) for e in self._bus._in_edges(page)]

    def out_edges(self, page: Any) -> List[Edge]:
        return [Edge(*e) for e in self._bus._out_edges(page)]

    def topological_order(self) -> List[int]:
        """Ids of every page with edges, parents before children, ties by smaller id."""
        return list(self._bus._topological_order())

    def validate(self) -> GraphReport:
        """Whole-graph check (Tarjan): cycles, dangling edges, and the canonical order."""
        return GraphReport(self._bus._validate_graph())

    def derivation(self, page: Any) -> Optional[Report]:
        """How a derived page is recomputed: fn, parents, weights, memo, missing_callable."""
        d = self._bus._derivation(page)
        return None if d is None else Report(d)

    def __repr__(self) -> str:
        r = self._bus._validate_graph()
        return f"<mmsb.Graph nodes={r['nodes']} edges={r['edges']}>"


def depend(
    self: "_core.Bus",
    child: Any,
    on: Union[Any, Sequence[Any]],
    fn: Union[Op, Callable[..., Any]],
    weights: Optional[Iterable[float]] = None,
) -> None:
    """Make ``child`` derived from ``on`` (data edges, in order) through ``fn``: ``mmsb.ops.copy``,
    ``mmsb.ops.reduce(semiring)`` (with optional per-parent ``weights``) or a callable
    ``fn(out, *parents)``. Logged; in eager mode the child is computed at once. Re-registering the
    same parents and callable after ``mmsb.open`` only re-attaches the function. Raises
    GraphCycleError, InvalidArgumentError (layouts, weights), PageNotFoundError,
    PropagationError (the first recompute failed); nothing changes then."""
    if isinstance(fn, Op):
        self._depend(child, on, fn.kind, fn.semiring, weights, None, "")
        return
    if not callable(fn):
        raise InvalidArgumentError(f"fn must be mmsb.ops.copy, mmsb.ops.reduce(...) or a callable; got {fn!r}")
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    self._depend(child, on, "callable", "", weights, fn, name)


class Event(NamedTuple):
    """What a subscriber receives."""

    kind: str
    page: int  # 0 for checkpoint and tick
    lsn: int
    epoch: int


class Subscription:
    """Returned by ``bus.subscribe``; ``cancel()`` stops delivery."""

    def __init__(self, hub: "_EventHub", kind: str, fn: Callable[[Event], Any], pages: Optional[frozenset]) -> None:
        self._hub, self.kind, self.fn, self.pages = hub, kind, fn, pages
        self.active = True

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._hub.remove(self)

    def __repr__(self) -> str:
        return f"<mmsb.Subscription {self.kind} active={self.active}>"

    # One registration with the bus: a copy is the same registration (cancelling either cancels
    # it), and it cannot outlive its process.
    def __copy__(self) -> "Subscription":
        return self

    def __deepcopy__(self, memo: dict) -> "Subscription":
        return self

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle 'mmsb.Subscription': it stands for a handler registered with a bus "
                        "of this process; subscribe again where the bus is")


class _EventHub:
    """Per-bus subscriptions and the count of handler errors. Owned by the engine's event sink,
    which stays installed (taking no event kind once no subscription is left), so it lives
    exactly as long as the bus; found again through a weak map keyed by the bus's instance id.
    It reaches the bus through the Python object that subscribed last (weakly: the engine owns
    the hub), since another object for the same bus may have gone since."""

    def __init__(self, bus: "_core.Bus") -> None:
        self._bus_ref = weakref.ref(bus)
        self.subs: List[Subscription] = []
        self.handler_errors = 0

    def kinds(self) -> List[str]:
        return sorted({s.kind for s in self.subs})

    def remove(self, sub: Subscription) -> None:
        self.subs.remove(sub)
        self._rewire()

    def _rewire(self) -> None:
        bus = self._bus_ref()
        if bus is not None and not bus.closed:
            bus._set_event_sink(self.dispatch, self.kinds())

    def dispatch(self, batch: list) -> None:
        for kind, page, lsn, epoch in batch:
            event = Event(kind, page, lsn, epoch)
            for sub in list(self.subs):
                # The snapshot still holds a subscription that an earlier handler of this event
                # cancelled; cancel() promises no delivery after it returns.
                if not sub.active or sub.kind != kind or (sub.pages is not None and page not in sub.pages):
                    continue
                try:
                    sub.fn(event)
                except Exception:  # a failing handler never breaks a commit
                    self.handler_errors += 1
                    logger.exception("mmsb event handler %r failed on %s", sub.fn, event)


_hubs: "weakref.WeakValueDictionary[int, _EventHub]" = weakref.WeakValueDictionary()


def _hub(bus: "_core.Bus", create: bool) -> Optional[_EventHub]:
    hub = _hubs.get(bus._instance_id)
    if hub is None and create:
        hub = _EventHub(bus)
        _hubs[bus._instance_id] = hub
    return hub


def _subscribed_id(bus: "_core.Bus", key: Any) -> int:
    """An int id (a NumPy integer too) is taken as it is: a page_created subscription may name a
    page not created yet. Names and Pages must name a live page."""
    if as_int(key) is None:
        return bus.page(key).id
    return int_arg("a page id", key, low=1, high=U64_MAX)


def subscribe(self: "_core.Bus", kind: str, fn: Callable[[Event], Any], pages: Optional[Iterable[Any]] = None) -> Subscription:
    """Call ``fn(event)`` after each commit for events of ``kind`` (page_created, page_deleted,
    delta_applied, page_changed, page_stale, checkpoint, tick), optionally only for ``pages``.
    Delivered in commit order on the committing thread, after the commit; a handler that raises
    is logged (logger "mmsb") and counted in stats()["handler_errors"], never breaking a commit."""
    if self.closed:
        raise ClosedError("the bus is closed; subscribe on an open one")
    if kind not in EVENT_KINDS:
        raise InvalidArgumentError(f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
    if not callable(fn):
        raise InvalidArgumentError(f"fn must be callable; got {fn!r}")
    if isinstance(pages, (str, _core.Page, bytes, bytearray, memoryview)) or as_int(pages) is not None:
        # One key: a str is a name, not a sequence of one-letter names, and a byte string is a
        # key of the wrong type (refused as one), not a sequence of ids one per byte.
        pages = (pages,)
    elif pages is not None and not isinstance(pages, collections.abc.Iterable):
        raise InvalidArgumentError(f"pages must be a page key or an iterable of them; got {type(pages).__name__}")
    ids = None if pages is None else frozenset(_subscribed_id(self, p) for p in pages)
    hub = _hub(self, create=True)
    assert hub is not None
    hub._bus_ref = weakref.ref(self)
    sub = Subscription(hub, kind, fn, ids)
    hub.subs.append(sub)
    hub._rewire()
    return sub


def handler_errors(bus: "_core.Bus") -> int:
    hub = _hub(bus, create=False)
    return 0 if hub is None else hub.handler_errors


def reset_handler_errors(bus: "_core.Bus") -> None:
    hub = _hub(bus, create=False)
    if hub is not None:
        hub.handler_errors = 0


def provenance(self: "_core.Bus", page: Any, epoch: Optional[int] = None, max_depth: int = 32) -> Provenance:
    """The DAG of deltas behind ``(page, epoch)`` (default: its current epoch): each node is
    (page, epoch, lsn, source, timestamp_ns) and a propagated one links to its parents at the
    epochs they had, recursively to ``max_depth`` hops. A lookup in the per-page lsn index."""
    max_depth = int_arg("max_depth", max_depth)
    # A limit past 2**32 - 1 hops is no limit: no chain of pages is that deep.
    steps = self._provenance(page, epoch, min(max_depth, 2**32 - 1))
    pid = as_int(page)
    if pid is None:
        pid = self.page(page).id
    return Provenance(steps, max_depth, (pid, 0 if epoch is None else epoch))
