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
