"""mmsb — Memory-Mapped State Bus.

Versioned byte pages where every change is a delta: zero-copy NumPy/DLPack views, explicit and
diffed deltas, columnar batches applied in parallel, per-page epochs and a global lsn. With a
directory (mmsb.Bus(path)), every change is written to a checksummed log before it is applied:
crash recovery (mmsb.open), transactions, history and time travel (bus.at, mmsb.replay); an
in-memory bus keeps the same log in memory, so history, time travel and diff work there too.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import weakref
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from . import errors
from .errors import *  # noqa: F403  (the public error classes)
from . import _core
from ._args import int_arg
from ._core import Bus, Delta, DeltaBatch, Page
from ._progress import Progress
from ._reports import (
    DeltaRecord,
    GcReport,
    IntegrityReport,
    LatencyReport,
    MemoryReport,
    PageAges,
    Stats,
    TickReport,
)
from . import cuda
from . import ops
from .semiring import Semiring
from .provenance import Provenance, ProvenanceNode
from .purity import PurityReport, validate_purity
from . import _graph
from . import _html
from ._graph import Edge, Event, Graph, GraphReport, Subscription

__version__: str = _core.__version__

# A bus directory: as os.fsencode takes it (bytes are the OS's own; bus.path gives a str back).
_Path = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_log = logging.getLogger("mmsb")
# A library leaves handlers to the application; the NullHandler keeps Python's last-resort handler
# from printing mmsb's warnings to stderr in a program that configured no logging.
_log.addHandler(logging.NullHandler())

# Callbacks handed every TickReport and GcReport of a bus, keyed by bus._instance_id: mmsb.metrics
# builds its tick-phase and GC-pause histograms from them, since the engine keeps no per-phase
# histogram and the "tick" event carries no phase times.
_report_hooks: dict[int, list[Callable[[str, Any], None]]] = {}


def _notify(bus: Bus, kind: str, report: Any) -> None:
    for hook in tuple(_report_hooks.get(bus._instance_id, ())):
        try:
            hook(kind, report)
        except Exception:  # the tick or gc has happened; an observer must not turn it into an error
            _log.exception("mmsb %s report hook %r failed", kind, hook)


def _where(bus: Bus) -> str:
    return bus.path or "in-memory bus"


# Directory buses still open when the interpreter exits are closed then: one in a reference
# cycle (a handler that refers to its bus) is never collected at exit, and with
# durability="none" the commits it gathered would never reach its files. Only by the process
# that opened them: a forked child exiting must not write its copy of the parent's log buffers.
_open_directory_buses: "weakref.WeakKeyDictionary[Bus, int]" = weakref.WeakKeyDictionary()


@atexit.register
def _close_at_exit() -> None:
    for bus, pid in list(_open_directory_buses.items()):
        if pid == os.getpid() and not bus.closed:
            try:
                bus.close()
            except errors.MmsbError as e:
                _log.error("closing %s at exit failed: %s", bus.path, e)


def _log_opened(bus: Bus) -> None:
    _open_directory_buses[bus] = os.getpid()
    r = bus.recovery
    if r["truncated_tail"]:
        _log.warning("cut a torn tail off the log of %s: %s", bus.path, r["tail_reason"])
    _log.info("opened bus %s at lsn %d (checkpoint lsn %d, %d log records replayed)",
              bus.path, bus.lsn, r["checkpoint_lsn"], r["records_replayed"])


def _log_gc(bus: Bus, g: Any, trigger: str) -> None:
    # A gc that found nothing to free is routine (a tick over its memory budget runs one each time).
    level = logging.INFO if g["bytes_freed"] or g["log_files_removed"] else logging.DEBUG
    _log.log(level, "gc of %s (%s) freed %d bytes and %d log files in a %.3f ms pause",
             _where(bus), trigger, g["bytes_freed"], g["log_files_removed"], g["pause_ns"] / 1e6)


def _log_tick(bus: Bus, r: Any) -> None:
    if r["overruns"]:
        phases = ", ".join(f"{k} {v / 1e6:.3f} ms" for k, v in r["phase_ns"].items())
        _log.warning("tick %d of %s over budget in %s (%s; total %.3f ms)",
                     r["tick"], _where(bus), ", ".join(r["overruns"]), phases, r["total_ns"] / 1e6)
    if r["rejected"]:
        _log.warning("tick %d of %s rejected %d submissions (not applied); first: %s",
                     r["tick"], _where(bus), r["rejected"], r["rejections"][0] if r["rejections"] else "?")
    if r["validation_failures"]:
        _log.error("tick %d of %s: sampled validation found derived pages %s differing from a recompute",
                   r["tick"], _where(bus), r["validation_failures"])


def build_info() -> dict:
    """What this build contains: version, compiler, CUDA/NCCL/TBB on or off, SIMD level, page
    metadata bytes."""
    return dict(_core.build_info())


def _create_page(
    self: Bus,
    size: Optional[int] = None,
    *,
    shape: Union[int, Sequence[int], None] = None,
    dtype: Any = None,
    data: Any = None,
    name: Optional[str] = None,
    metadata: Optional[Mapping[str, Union[str, bytes]]] = None,
    location: str = "cpu",
) -> Page:
    """Create a page: raw (`size` bytes), typed (`shape` + `dtype`) or from `data` (dtype and
    shape inferred; the content becomes delta 1). Pages are zero-filled, 64-byte aligned and
    never move. Raises InvalidArgumentError (bad size/shape/dtype/name), DeviceUnavailableError
    (device location without a device), OutOfMemoryError; nothing is created then."""
    return self._create_page(size, shape, dtype, data, name, metadata, location)


def validate(
    targets: Optional[Union[str, "os.PathLike[str]"]] = None, quick: bool = False, *,
    progress: Optional[bool] = None, only: Union[str, Sequence[str], None] = None,
) -> Any:
    """Run the ten validators of DESIGN §5 against their targets (default: the packaged
    benchmarks_targets.json) and return a ValidationReport (✓/✗ per validator, measured figures,
    machine info; bool() is True only if all pass). `quick=True` shrinks the workloads; `only`
    names a subset. Same as `mmsb validate` on the command line."""
    from .validation import validate as _run

    return _run(targets, quick=quick, progress=progress, only=only)


def open(  # noqa: A001  (mmsb.open is the documented name)
    path: _Path,
    *,
    durability: str = "flush",
    threads: Optional[int] = None,
    retention: Optional[int] = None,
    queue_capacity: Optional[int] = None,
    progress: Progress = None,
    clock: Optional[Callable[[], int]] = None,
) -> Bus:
    """Open an existing bus directory for writing: newest valid checkpoint, then the log after
    it (a torn tail is cut off). Raises BusLockedError if another Bus has it open,
    LogCorruptError for damage inside the log, InvalidArgumentError if no bus is there.
    progress: None shows a bar for a recovery that takes a while where someone is watching (a
    terminal or Jupyter), True always, False never; or a callable(phase, done, total).
    clock: as for Bus (None: commit timestamps from the wall clock)."""
    bus = Bus._open(path, durability, threads, retention, queue_capacity, progress, clock)
    _log_opened(bus)
    return bus


def replay(
    path: _Path, to: Optional[int] = None, *, threads: Optional[int] = None,
    progress: Progress = None,
) -> Bus:
    """A read-only Bus rebuilt from the directory's log as of lsn `to` (default: the end), from
    the newest checkpoint at or before it. Needs no lock: it may run beside the writing bus and
    sees what that bus has handed to the OS. Raises HistoryUnavailableError past the end.
    progress: as for mmsb.open."""
    return Bus._replay(path, to, threads, progress)


def _history(self: Bus, page: Union[Page, int, str]) -> list[DeltaRecord]:
    """Every committed delta of `page` in lsn order (lsn, epoch, source, timestamp_ns, runs),
    read from the log (the files of a directory bus, or an in-memory bus's log in memory): the
    bus's indexes name the records holding them, and only those are read. On a bus reopened from
    a checkpoint the first call reads the older log once. Raises HistoryUnavailableError once the
    retention has removed the log's start."""
    return [DeltaRecord(*entry) for entry in self._history(page)]


def _page_at(self: Page, epoch: int) -> Any:
    """A copy of the page's content after its first `epoch` deltas (`p.at(0)` is all zeros)."""
    import numpy as np

    epoch = int_arg("epoch", epoch)
    if self.bus.in_transaction:
        raise InvalidArgumentError("Page.at() is not allowed inside an open transaction (its changes are not "
                                   "committed yet); call it after the transaction ends")
    now = self.epoch
    if epoch == now:  # the present: one copy, taken with its epoch (another thread may commit)
        current, now = self.snapshot()
        if now == epoch:
            return current
    if epoch > now:
        raise HistoryUnavailableError(f"page {self.id} is at epoch {now}; epoch {epoch} has not happened")
    if epoch == 0:
        return np.zeros_like(self.view())
    # The page shows that epoch from its delta up to the lsn before the next one: that last lsn,
    # found in the provenance index, lies inside what a retention keeps whenever any lsn of the
    # epoch does. The index starts at the checkpoint a reopened bus came from; the log before
    # that, if still there, is read through history(), or searched when a retention removed its
    # start (history() needs all of it).
    try:
        lsn = self.bus._provenance(self, epoch + 1, 0)[0][1] - 1
    except HistoryUnavailableError:
        try:
            lsn = self.bus.history(self)[epoch - 1].lsn
        except HistoryUnavailableError:
            lsn = _last_lsn_at_epoch(self, epoch)
    # Exactly that lsn, also inside a transaction record (a write and its wave are one record).
    with self.bus._at_exact(lsn) as old:
        return old.page(self.id).snapshot()[0]


def _last_lsn_at_epoch(page: Page, epoch: int) -> int:
    """The last lsn at which `page` was at `epoch` (< its epoch now), by bisection over the lsns
    through time travel: the page's epoch only grows with the lsn, and the lsns the retention
    dropped come first. O(log lsn) replays, for the one case no index answers."""

    def epoch_at(lsn: int) -> int | None:
        try:
            with page.bus._at_exact(lsn) as old:
                return old.page(page.id).epoch
        except HistoryUnavailableError:
            return None  # before what the retention keeps
        except PageNotFoundError:
            return 0  # not created yet

    lo, lo_epoch, hi = 0, None, page.bus.lsn  # epoch_at(hi) > epoch; the answer lies in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        at = epoch_at(mid)
        if at is None or at <= epoch:
            lo, lo_epoch = mid, at
        else:
            hi = mid
    if lo_epoch != epoch:
        raise HistoryUnavailableError(f"epoch {epoch} of page {page.id} is older than the history the "
                                      f"retention keeps")
    return lo


def _verify(self: Bus) -> IntegrityReport:
    """Check the bus: internal invariants (no orphan names or metadata, live pages have data,
    last lsns <= the bus lsn), and log = memory: for a directory bus every log checksum, and
    replay from lsn 1 and from the newest checkpoint both equal the pages in memory; for an
    in-memory bus, replay of its in-memory log equals them. Problems
    are listed in .problems; .ok (and bool(report)) is True when there are none."""
    return IntegrityReport(self._verify())


_LATENCY_KINDS = ("commit", "tick")


def _stats(self: Bus) -> Stats:
    """Counters since creation or reset_stats(): deltas_applied, bytes_applied, commits, waves,
    recomputes, memo_skips, cutoffs, derived_deltas, events, handler_errors, submits, ticks,
    tick_overruns, gc_runs, queue_depth, queue_high_water, commit and tick latency quantiles
    (commit_p50_ns, commit_p99_ns, commit_max_ns, tick_p50_ns, tick_p99_ns, tick_max_ns; the
    whole histograms: bus.latency("commit" | "tick")), ..."""
    s = Stats(self._stats())
    s["handler_errors"] = _graph.handler_errors(self)
    for kind in _LATENCY_KINDS:
        h = self._latency(kind)
        s[f"{kind}_count"] = h["count"]
        for q in ("p50", "p99", "max"):
            s[f"{kind}_{q}_ns"] = h[f"{q}_ns"]
    return s


def _latency(self: Bus, kind: str = "commit") -> LatencyReport:
    """Latency histogram of data commits ("commit": apply, write, update, apply_batch,
    transactions, ticks) or of ticks ("tick"), since creation or reset_stats()."""
    # Checked here: the binding would turn bytes into a kind and raise a bare TypeError for None,
    # an int or a str UTF-8 cannot hold.
    if not isinstance(kind, str) or kind not in _LATENCY_KINDS:
        raise InvalidArgumentError(f"kind must be 'commit' or 'tick'; got {kind!r}")
    return LatencyReport(self._latency(kind))


def _tick(self: Bus) -> TickReport:
    """Drain the ingest queue and commit what it held as one atomic record (in submission order;
    runs of single-run deltas and batches applied as one parallel batch), run the propagation
    wave (eager and deferred modes), the sampled validation (configure_tick(validate_sample=)),
    and gc() when memory is over configure_tick(memory_budget=). Invalid submissions are
    reported in .rejected / .rejections, not applied. If a recompute raises (PropagationError)
    nothing is applied and the submissions wait for the next tick."""
    report = TickReport(self._tick())
    if report["gc"] is not None:
        report["gc"] = GcReport(report["gc"])
        _log_gc(self, report["gc"], f"tick {report['tick']} over its memory budget")
    _log_tick(self, report)
    if _report_hooks:
        _notify(self, "tick", report)
    return report


def _gc(self: Bus) -> GcReport:
    """Reclaim memory without changing committed state or retained history: wholly free page
    slabs (deleted pages), caches, and log files / provenance entries beyond the retention."""
    report = GcReport(self._gc())
    _log_gc(self, report, "gc()")
    if _report_hooks:
        _notify(self, "gc", report)
    return report


def _page_ages(self: Bus) -> PageAges:
    """Last-write lsn of every live page (for cold-page policies): .ids, .last_lsn, .age,
    .cold(min_age)."""
    return PageAges(*self._page_ages())


def _reset_stats(self: Bus) -> None:
    """Zero every counter of stats()."""
    self._reset_stats()
    _graph.reset_handler_errors(self)


def _memory(self: Bus) -> MemoryReport:
    """Real bytes held: pages, data_bytes, arena_slack_bytes, metadata_bytes, graph_bytes,
    index_bytes (provenance and history lookups), cache_bytes, log_bytes, queue_bytes, total_bytes."""
    return MemoryReport(self._memory())


def _print_stats(self: Bus) -> None:
    """Print stats() one counter per line, names right-aligned to the longest."""
    stats = self.stats()
    width = max(map(len, stats), default=0)
    for key, value in stats.items():
        print(f"{key:>{width}}: {value}")


_bus_init, _bus_close, _bus_checkpoint = Bus.__init__, Bus.close, Bus.checkpoint


@functools.wraps(_bus_init)
def _init(self: Bus, *args: Any, **kwargs: Any) -> None:
    _bus_init(self, *args, **kwargs)
    if self.path is not None:
        _log_opened(self)


@functools.wraps(_bus_close)
def _close(self: Bus) -> None:
    before = self._stats()["submits_discarded"]
    try:
        _bus_close(self)
    finally:  # a DurabilityError from the final sync still leaves the bus closed
        discarded = self._stats()["submits_discarded"] - before
        if discarded > 0:
            _log.warning("closed %s with %d queued submissions discarded (never ticked)", _where(self), discarded)


def _exit(self: Bus, *exc_info: Any) -> bool:
    self.close()
    return False


@functools.wraps(_bus_checkpoint)
def _checkpoint(self: Bus, *, progress: Progress = None) -> int:
    lsn = _bus_checkpoint(self, progress=progress)
    _log.info("checkpoint of %s written at lsn %d", self.path, lsn)
    return lsn


Bus.__init__ = _init
Bus.close = _close
Bus.__exit__ = _exit
Bus.checkpoint = _checkpoint
Bus.create_page = _create_page
Bus.history = _history
Bus.verify = _verify
Page.at = _page_at
Bus.stats = _stats
Bus.memory = _memory
Bus.print_stats = _print_stats
Bus.reset_stats = _reset_stats
Bus.latency = _latency
Bus.tick = _tick
Bus.gc = _gc
Bus.page_ages = _page_ages
Bus.depend = _graph.depend
Bus.subscribe = _graph.subscribe
Bus.provenance = _graph.provenance
Bus.graph = property(_graph.Graph, doc="The dependency graph (children, parents, topological_order, validate).")
Bus._repr_html_ = _html.bus_html
Page._repr_html_ = _html.page_html

__all__ = [
    "Bus",
    "Delta",
    "DeltaBatch",
    "MemoryReport",
    "Page",
    "Stats",
    "TickReport",
    "GcReport",
    "LatencyReport",
    "PageAges",
    "build_info",
    "validate",
    "open",
    "replay",
    "DeltaRecord",
    "IntegrityReport",
    "cuda",
    "errors",
    "ops",
    "Semiring",
    "Provenance",
    "ProvenanceNode",
    "PurityReport",
    "validate_purity",
    "Edge",
    "Event",
    "Graph",
    "GraphReport",
    "Subscription",
    # The error classes, named here rather than added from errors.__all__: mypy does not follow
    # `__all__ += errors.__all__`, and `from mmsb import *` would hide them from it
    # (test_errors checks that this list and errors.__all__ agree).
    "MmsbError",
    "InvalidArgumentError",
    "PageNotFoundError",
    "InvalidDeltaError",
    "EpochConflictError",
    "GraphCycleError",
    "GraphError",
    "PropagationError",
    "LogCorruptError",
    "DurabilityError",
    "BusLockedError",
    "HistoryUnavailableError",
    "QueueFullError",
    "ClosedError",
    "DeviceUnavailableError",
    "OutOfMemoryError",
    "ReadOnlyError",
]
