"""Dict-like reports with attribute access (bus.stats(), bus.memory())."""

from __future__ import annotations

import reprlib
from typing import Any, NamedTuple

from ._args import int_arg

# Values in a one-line repr: a list of 100k page ids or a traceback must not flood the prompt.
_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 4
_SHORT.maxstring = _SHORT.maxother = 40
_REPR_WIDTH = 120


class Report(dict):
    """A dict whose keys are also attributes: ``r["commits"] == r.commits``. repr() is one short
    line (the key fields, then how many more), str() lists every field; Jupyter shows a table."""

    _key_fields: tuple = ()  # the fields repr() shows first (all of them, in order, if empty)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {key!r}; fields: {sorted(self)}") from None

    def __repr__(self) -> str:
        keys = [k for k in self._key_fields if k in self] or list(self)
        parts: list = []
        width = len(type(self).__name__) + 2
        for k in keys:
            part = f"{k}={_SHORT.repr(self[k])}"
            if parts and width + len(part) > _REPR_WIDTH:
                break
            parts.append(part)
            width += len(part) + 2
        if len(self) > len(parts):
            parts.append(f"…+{len(self) - len(parts)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __str__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.items())
        return f"{type(self).__name__}({fields})"

    def _repr_html_(self) -> str:
        from ._html import report_html

        return report_html(self)


class Stats(Report):
    """Counters of a bus since creation or reset_stats()."""

    _key_fields = ("commits", "deltas_applied", "bytes_applied", "waves", "recomputes", "ticks", "events",
                   "handler_errors")


class MemoryReport(Report):
    """Real bytes held by a bus: page data, arena slack, metadata (records, info, names)."""

    _key_fields = ("total_bytes", "pages", "data_bytes", "log_bytes", "metadata_bytes")


class TickReport(Report):
    """bus.tick(): tick, first_lsn/last_lsn (committed lsns: (first, last]), submissions,
    deltas_applied, bytes_applied, rejected and rejections (why, for the first 16), recomputes,
    derived_deltas, validated, validation_failures (page ids), gc_ran, gc (GcReport or None),
    phase_ns (drain, apply, propagate, validate, gc), total_ns, overruns (phases over budget),
    queue_depth (left waiting), replicated_rows (rows broadcast by bus.replicate's replicator),
    replication_error (None, or why that broadcast failed: the replicator is detached)."""

    _key_fields = ("tick", "first_lsn", "last_lsn", "submissions", "deltas_applied", "rejected", "total_ns", "overruns")

    def _repr_html_(self) -> str:
        from ._html import tick_html

        return tick_html(self)

    def phase_seconds(self) -> dict:
        """Time of each phase in seconds."""
        return {k: v / 1e9 for k, v in self["phase_ns"].items()}


class GcReport(Report):
    """bus.gc(): bytes_freed, pause_ns, arena_bytes_released, record_bytes_freed, cache_bytes_freed,
    index_bytes_freed, log_files_removed, log_bytes_freed."""

    _key_fields = ("bytes_freed", "pause_ns", "log_files_removed")


class LatencyReport(Report):
    """bus.latency(kind): count, sum_ns, max_ns, p50_ns, p90_ns, p99_ns, p999_ns and buckets
    [(lower_ns, upper_ns, count), ...] (8 log-linear buckets per power of two: quantiles are the
    upper bound of their bucket, within 12.5%)."""

    _key_fields = ("count", "p50_ns", "p99_ns", "max_ns")

    def _repr_html_(self) -> str:
        from ._html import latency_html

        return latency_html(self)


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
        return self.ids[self.age >= int_arg("min_age", min_age)]

    def __repr__(self) -> str:
        return f"PageAges(pages={len(self.ids)}, lsn={self.lsn})"

    def _repr_html_(self) -> str:
        from ._html import page_ages_html

        return page_ages_html(self)


class IntegrityReport(Report):
    """bus.verify(): ok, pages_checked, records_checked, log_checked, problems (list of str)."""

    _key_fields = ("ok", "pages_checked", "records_checked", "problems")

    def __bool__(self) -> bool:
        return bool(self["ok"])


class DeltaRecord(NamedTuple):
    """One committed delta of a page (bus.history(page))."""

    lsn: int
    epoch: int  # the page's epoch after this delta
    source: str
    timestamp_ns: int
    runs: list  # [(offset, length), ...]

    def __repr__(self) -> str:
        # A record can hold thousands of runs; the first few say what it touched.
        runs = ", ".join(map(repr, self.runs[:4])) + (f", …+{len(self.runs) - 4}" if len(self.runs) > 4 else "")
        return (f"DeltaRecord(lsn={self.lsn}, epoch={self.epoch}, source={self.source!r}, "
                f"timestamp_ns={self.timestamp_ns}, runs=[{runs}])")
