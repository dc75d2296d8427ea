"""Dict-like reports with attribute access (bus.stats(), bus.memory())."""

from __future__ import annotations

from typing import Any, NamedTuple


class Report(dict):
    """A dict whose keys are also attributes: ``r["commits"] == r.commits``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {key!r}; fields: {sorted(self)}") from None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.items())
        return f"{type(self).__name__}({fields})"


class Stats(Report):
    """Counters of a bus since creation or reset_stats()."""


class MemoryReport(Report):
    """Real bytes held by a bus: page data, arena slack, metadata (records, info, names)."""


class TickReport(Report):
    """bus.tick(): tick, first_lsn/last_lsn (committed lsns: (first, last]), submissions,
    deltas_applied, bytes_applied, rejected and rejections (why, for the first 16), recomputes,
    derived_deltas, validated, validation_failures (page ids), gc_ran, gc (GcReport or None),
    phase_ns (drain, apply, propagate, validate, gc), total_ns, overruns (phases over budget),
    queue_depth (left waiting)."""

    def phase_seconds(self) -> dict:
        """Time of each phase in seconds."""
        return {k: v / 1e9 for k, v in self["phase_ns"].items()}


class GcReport(Report):
    """bus.gc(): bytes_freed, pause_ns, arena_bytes_released, cache_bytes_freed, index_bytes_freed,
    log_files_removed."""


class LatencyReport(Report):
    """bus.latency(kind): count, sum_ns, max_ns, p50_ns, p90_ns, p99_ns, p999_ns and buckets
    [(lower_ns, upper_ns, count), ...] (8 log-linear buckets per power of two: quantiles are the
    upper bound of their bucket, within 12.5%)."""


class PageAges(NamedTuple):
    """bus.page_ages(): live page ids, the lsn of each one's last write, and the bus lsn."""

    ids: Any  # ndarray[uint64]
    last_lsn: Any  # ndarray[uint64]
    lsn: int

    @property
    def age(self) -> Any:
        """Commits since each page's last write (bus lsn - last_lsn)."""
        return self.lsn - self.last_lsn

    def cold(self, min_age: int) -> Any:
        """Ids of pages not written in the last `min_age` lsns."""
        return self.ids[self.age >= min_age]


class IntegrityReport(Report):
    """bus.verify(): ok, pages_checked, records_checked, log_checked, problems (list of str)."""

    def __bool__(self) -> bool:
        return bool(self["ok"])


class DeltaRecord(NamedTuple):
    """One committed delta of a page (bus.history(page))."""

    lsn: int
    epoch: int  # the page's epoch after this delta
    source: str
    timestamp_ns: int
    runs: list  # [(offset, length), ...]
