"""Prometheus metrics of a Bus (needs prometheus-client: ``pip install mmsb[metrics]``).

    import mmsb, mmsb.metrics

    bus = mmsb.Bus("state.mmsb")
    with mmsb.metrics.serve(bus, port=9464) as server:   # http://127.0.0.1:9464/metrics
        ...                                                # commit, submit, tick as usual

    my_registry.register(mmsb.metrics.collector(bus))     # or into a CollectorRegistry of yours
    print(mmsb.metrics.generate_latest(bus).decode())     # or one text exposition, now

Names follow Prometheus conventions: counters end in ``_total``, durations are histograms in
seconds (``le`` bounds: BUCKETS), sizes are in bytes.

Everything is read from the bus when scraped: counters (``mmsb_*_total``) from ``bus.stats()``,
gauges from ``bus.memory()`` and the bus, and the ``mmsb_commit_seconds`` / ``mmsb_tick_seconds``
histograms from the engine's latency histograms (``bus.latency()``). The engine has no per-phase
tick histogram, so ``mmsb_tick_phase_seconds{phase}`` and ``mmsb_gc_pause_seconds`` are kept here,
from every TickReport and GcReport the bus produces while the collector exists.

The collector holds the bus weakly (a metrics endpoint must not keep a bus directory locked); a
closed or dropped bus is scraped as ``mmsb_up 0`` and nothing else. Scrapes run on the HTTP
server's threads: stats() and latency() read atomics, memory() takes the bus's commit lock (and
waits while another thread's transaction is open), releasing the GIL while it waits.
"""

from __future__ import annotations

import bisect
import os
import threading
import weakref
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

try:
    import prometheus_client
except ImportError as e:  # an optional dependency: say which
    raise ImportError("mmsb.metrics needs prometheus-client: pip install 'mmsb[metrics]'") from e
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

import mmsb
from .errors import ClosedError, InvalidArgumentError

__all__ = ["BusCollector", "MetricsServer", "collector", "generate_latest", "serve", "BUCKETS"]

# Every histogram's `le` bounds: (2**m - 1) ns for m = 8..35, i.e. 255 ns to 34 s, one per octave.
# Each is the top of one of the engine's log-linear buckets (8 per octave, integer nanoseconds),
# so the cumulative counts built from them are exact, and a fixed set keeps the series stable
# from scrape to scrape (histogram_quantile over rate() needs that).
_BOUNDS_NS: Tuple[int, ...] = tuple((1 << m) - 1 for m in range(8, 36))
BUCKETS: Tuple[float, ...] = tuple(b / 1e9 for b in _BOUNDS_NS)

# (metric name without _total, bus.stats() key, HELP)
_COUNTERS: Tuple[Tuple[str, str, str], ...] = (
    ("mmsb_deltas_applied", "deltas_applied", "User deltas committed (each row of a batch counts one)."),
    ("mmsb_applied_bytes", "bytes_applied", "Payload bytes of the user deltas committed."),
    ("mmsb_commits", "commits", "Data commits: apply, write, update, apply_batch, transactions, ticks."),
    ("mmsb_pages_created", "pages_created", "Pages created."),
    ("mmsb_pages_deleted", "pages_deleted", "Pages deleted."),
    ("mmsb_propagation_waves", "waves", "Propagation waves run."),
    ("mmsb_recomputes", "recomputes", "Derived-page recomputes run."),
    ("mmsb_memo_skips", "memo_skips", "Recomputes skipped because the parents' epochs matched the memo."),
    ("mmsb_cutoffs", "cutoffs", "Recomputes whose output was unchanged (the wave stopped there)."),
    ("mmsb_derived_deltas", "derived_deltas", "Deltas committed by propagation."),
    ("mmsb_events", "events", "Events handed to subscribers."),
    ("mmsb_handler_errors", "handler_errors", "Event handlers that raised (logged to logger 'mmsb')."),
    ("mmsb_submits", "submits", "Submissions accepted into the ingest queue."),
    ("mmsb_submits_rejected", "submits_rejected", "Submissions a tick found invalid and did not apply."),
    ("mmsb_submits_discarded", "submits_discarded", "Submissions still queued when the bus closed."),
    ("mmsb_ticks", "ticks", "Ticks run."),
    ("mmsb_tick_overruns", "tick_overruns", "Ticks with at least one phase over its budget."),
    ("mmsb_validation_failures", "validation_failures", "Sampled derived pages that differed from a recompute."),
    ("mmsb_gc_runs", "gc_runs", "GC runs (explicit, and by ticks over the memory budget)."),
    ("mmsb_gc_freed_bytes", "gc_bytes_freed", "Bytes GC reclaimed."),
)
# MemoryReport keys whose sum is total_bytes, exported as mmsb_memory_bytes{kind=...}
_MEMORY_KINDS: Tuple[str, ...] = ("data", "arena_slack", "metadata", "graph", "index", "cache", "log", "queue",
                                 "mirror")
_PHASES: Tuple[str, ...] = ("drain", "apply", "propagate", "validate", "gc")


def _cumulative(counts: List[int]) -> List[Tuple[str, int]]:
    """[(le, cumulative count)] from counts per bound of _BOUNDS_NS, +Inf last."""
    out, seen = [], 0
    for le, n in zip(BUCKETS + (float("inf"),), counts):
        seen += n
        out.append((floatToGoString(le), seen))
    return out


def _engine_histogram(name: str, doc: str, latency: Any) -> HistogramMetricFamily:
    """A Prometheus histogram (seconds) from a LatencyReport. Its _count is the +Inf bucket, from
    the same read of the buckets (a reader racing a commit may see the engine's count ahead of
    them); _sum is the engine's exact sum of nanoseconds."""
    counts = [0] * (len(_BOUNDS_NS) + 1)
    for _, upper_ns, n in latency["buckets"]:
        counts[bisect.bisect_left(_BOUNDS_NS, upper_ns)] += n  # no engine bucket straddles a bound
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], _cumulative(counts), sum_value=latency["sum_ns"] / 1e9)
    return family


class _Histogram:
    """Durations counted per bound of _BOUNDS_NS, like the engine's. prometheus_client's
    Histogram.observe costs ~6 us (5 per tick); this is a bisect and an add."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # ticks and scrapes run on different threads
        self._counts = [0] * (len(_BOUNDS_NS) + 1)
        self._sum_ns = 0

    def observe(self, ns: int) -> None:
        i = bisect.bisect_left(_BOUNDS_NS, ns)
        with self._lock:
            self._counts[i] += 1
            self._sum_ns += ns

    def add_to(self, family: HistogramMetricFamily, labels: List[str]) -> None:
        with self._lock:
            counts, sum_ns = list(self._counts), self._sum_ns
        family.add_metric(labels, _cumulative(counts), sum_value=sum_ns / 1e9)


class BusCollector(Collector):
    """A prometheus_client Collector reading one bus at scrape time (see the module docstring).
    Register it in any CollectorRegistry; close() stops its tick/gc bookkeeping."""

    def __init__(self, bus: "mmsb.Bus") -> None:
        if not isinstance(bus, mmsb.Bus):
            raise InvalidArgumentError(f"expected an mmsb.Bus; got {type(bus).__name__}")
        if bus.closed:
            raise ClosedError("the bus is closed; serve metrics of an open bus")
        self._bus = weakref.ref(bus)
        self._bus_id = bus._instance_id
        self._lock = threading.Lock()
        self._scrape_errors = 0
        self._segments: Dict[str, int] = {}  # log segment file -> largest size seen
        self._newest: Optional[str] = None  # the newest segment at the last scrape
        self._phases = {phase: _Histogram() for phase in _PHASES}
        self._gc_pause = _Histogram()
        # The hook must not keep the collector alive, or an unclosed one would never go away.
        self._hook = _weak_hook(weakref.ref(self))
        mmsb._report_hooks.setdefault(self._bus_id, []).append(self._hook)
        self._finalizer = weakref.finalize(self, _remove_hook, self._bus_id, self._hook)

    def close(self) -> None:
        """Stop recording tick phases and GC pauses (scrapes still read the bus)."""
        self._finalizer()

    def _on_report(self, kind: str, report: Any) -> None:
        if kind == "tick":
            for phase, ns in report["phase_ns"].items():
                self._phases[phase].observe(ns)
            report = report["gc"]
        if report is not None:
            self._gc_pause.observe(report["pause_ns"])

    def describe(self) -> List[Metric]:
        """The metric names, for duplicate checks when registered (no values are read)."""
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        """Read the bus. Never raises: a failed read is logged and scraped as mmsb_up 0."""
        bus = self._bus()
        try:
            families = list(self._families(bus)) if bus is not None and not bus.closed else []
        except Exception:
            with self._lock:
                self._scrape_errors += 1
            mmsb._log.exception("reading metrics of %s failed", mmsb._where(bus))
            families = []
        yield GaugeMetricFamily("mmsb_up", "1 while the bus is open and readable, else 0.", value=1 if families else 0)
        yield CounterMetricFamily("mmsb_scrape_errors", "Scrapes where reading the bus raised (logged).",
                                  value=self._scrape_errors)
        yield from families

    def _families(self, bus: Optional["mmsb.Bus"]) -> Iterator[Metric]:
        """Every family; empty ones (names only) when `bus` is None."""
        stats = bus.stats() if bus is not None else None
        memory = bus.memory() if bus is not None else None
        for name, key, doc in _COUNTERS:
            yield CounterMetricFamily(name, doc, value=None if stats is None else stats[key])
        gauges = (
            ("mmsb_lsn", "Log sequence number of the last committed record.", lambda: bus.lsn),
            ("mmsb_pages", "Live pages.", lambda: memory["pages"]),
            ("mmsb_queue_depth", "Submissions waiting for a tick.", lambda: stats["queue_depth"]),
            ("mmsb_queue_high_water", "Most submissions waiting at once.", lambda: stats["queue_high_water"]),
            ("mmsb_queue_capacity", "Submissions the ingest queue holds.", lambda: bus.queue_capacity),
        )
        for name, doc, read in gauges:
            yield GaugeMetricFamily(name, doc, value=None if bus is None else read())
        mem = GaugeMetricFamily("mmsb_memory_bytes", "Bytes held, by kind (their sum is the bus's total).",
                                labels=["kind"])
        info = GaugeMetricFamily("mmsb_bus_info", "The bus's storage (always 1).",
                                 labels=["path", "durability", "read_only", "version"])
        if bus is not None:
            for kind in _MEMORY_KINDS:
                mem.add_metric([kind], memory[f"{kind}_bytes"])
            info.add_metric([bus.path or "", bus.durability or "", str(bus.read_only).lower(), mmsb.__version__], 1)
        yield mem
        yield info
        log_bytes = self._log_bytes(bus) if bus is not None else None
        if bus is None or log_bytes is not None:
            yield CounterMetricFamily(
                "mmsb_log_bytes", "Bytes written to the log segment files of the bus directory "
                "(directory buses; see mmsb.metrics docs).", value=log_bytes)
        for name, kind, doc in (("mmsb_commit_seconds", "commit", "Duration of data commits."),
                                ("mmsb_tick_seconds", "tick", "Duration of ticks.")):
            if bus is None:
                yield HistogramMetricFamily(name, doc)
            else:
                yield _engine_histogram(name, doc, bus.latency(kind))
        phases = HistogramMetricFamily("mmsb_tick_phase_seconds", "Duration of each tick phase (ticks since the "
                                       "collector was created).", labels=["phase"])
        for phase, h in self._phases.items():
            h.add_to(phases, [phase])
        gc_pause = HistogramMetricFamily("mmsb_gc_pause_seconds", "Time GC held the commit lock (runs since the "
                                         "collector was created).")
        self._gc_pause.add_to(gc_pause, [])
        yield phases
        yield gc_pause

    def _log_bytes(self, bus: "mmsb.Bus") -> Optional[int]:
        """Sum over every segment file seen in the directory of the largest size seen. Segments
        are append-only and only the newest one grows, so this is the bytes written, and it keeps
        counting files the retention removed; bytes written to a segment after the last scrape
        that saw it, before the retention removed it, are missed. None for an in-memory or
        read-only bus (it writes no log files)."""
        if not bus.path or bus.read_only:
            return None
        with self._lock:  # HTTP scrapes run on threads of their own
            names = sorted(n for n in os.listdir(bus.path) if n.startswith("seg-") and n.endswith(".log"))
            # The newest of the last scrape may have grown before a newer one took over.
            growing = {names[-1], self._newest} if names else {self._newest}
            for name in names:
                if name not in self._segments or name in growing:
                    try:
                        size = os.stat(os.path.join(bus.path, name)).st_size
                    except FileNotFoundError:  # removed by a checkpoint's retention just now
                        continue
                    self._segments[name] = max(size, self._segments.get(name, 0))
            if names:
                self._newest = names[-1]
            return sum(self._segments.values())


def _weak_hook(ref: "weakref.ref[BusCollector]") -> Any:
    def hook(kind: str, report: Any) -> None:
        c = ref()
        if c is not None:
            c._on_report(kind, report)
    return hook


def _remove_hook(bus_id: int, hook: Any) -> None:
    hooks = mmsb._report_hooks.get(bus_id, [])
    if hook in hooks:
        hooks.remove(hook)
    if not hooks:
        mmsb._report_hooks.pop(bus_id, None)


def collector(bus: "mmsb.Bus") -> BusCollector:
    """A Collector for `bus`, to register in your own CollectorRegistry (or push gateway job).
    Raises ClosedError for a closed bus, InvalidArgumentError for anything but a Bus."""
    return BusCollector(bus)


def generate_latest(source: Union["mmsb.Bus", BusCollector]) -> bytes:
    """One text exposition of a bus (or of a BusCollector, whose tick-phase and GC-pause
    histograms then include what it has recorded; a fresh one for a bus has none)."""
    registry = CollectorRegistry()
    own = not isinstance(source, BusCollector)
    c = BusCollector(source) if own else source
    registry.register(c)
    try:
        return prometheus_client.generate_latest(registry)
    finally:
        if own:
            c.close()


class MetricsServer:
    """A running metrics endpoint (serve()). close() stops it and frees its port; also a context
    manager."""

    def __init__(self, bus: "mmsb.Bus", port: int, addr: str, registry: Optional[CollectorRegistry]) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgumentError(f"port must be an int in 0..65535 (0 picks a free one); got {port!r}")
        if not isinstance(addr, str) or not addr:
            raise InvalidArgumentError(f"addr must be a host name or IP address; got {addr!r}")
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise InvalidArgumentError(f"registry must be a prometheus_client CollectorRegistry; got {registry!r}")
        self.collector = BusCollector(bus)
        self.registry = CollectorRegistry() if registry is None else registry
        try:
            self.registry.register(self.collector)
        except ValueError as e:  # names already in the caller's registry
            self.collector.close()
            raise InvalidArgumentError(f"cannot add the bus's metrics to the registry: {e}") from None
        try:
            self._server, self._thread = prometheus_client.start_http_server(port, addr, self.registry)
        except OSError as e:
            self.registry.unregister(self.collector)
            self.collector.close()
            raise InvalidArgumentError(
                f"cannot listen on {addr}:{port}: {e.strerror or e}; pass port=0 to pick a free port") from None
        self.addr = addr
        self.port: int = self._server.server_port
        host = f"[{addr}]" if ":" in addr else addr
        self.url = f"http://{host}:{self.port}/metrics"
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.registry.unregister(self.collector)
        self.collector.close()

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<mmsb.metrics.MetricsServer {self.url}{' (closed)' if self._closed else ''}>"


def serve(bus: "mmsb.Bus", port: int = 0, addr: str = "127.0.0.1",
          registry: Optional[CollectorRegistry] = None) -> MetricsServer:
    """Serve `bus`'s metrics over HTTP (``/metrics``) from a daemon thread, on `addr` (loopback
    unless you name another) and `port` (0 picks a free one: see ``.port`` / ``.url``). The
    bus's collector goes into `registry` (default: a new one of its own). Raises ClosedError for
    a closed bus, InvalidArgumentError for a bad port or address or one already in use."""
    return MetricsServer(bus, port, addr, registry)
