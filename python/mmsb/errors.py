"""The mmsb exception hierarchy.

Every engine error is raised as one of these classes (the C++ side maps its error codes onto them
by name, in one translator). Each message names the page, lsn or value at fault and a hint. A call
that raises leaves the bus exactly as it was.
"""

from __future__ import annotations

__all__ = [
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


class MmsbError(Exception):
    """Base class of every error raised by mmsb."""


class InvalidArgumentError(MmsbError, ValueError):
    """A bad argument: size, dtype, shape, name, metadata, offset, non-contiguous data."""


class PageNotFoundError(MmsbError, KeyError):
    """No live page has this id or name (or it belongs to another bus)."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


class InvalidDeltaError(MmsbError, ValueError):
    """A delta or batch is malformed or does not fit its page; nothing was logged or applied."""


class EpochConflictError(MmsbError):
    """The page's epoch differs from the delta's expect_epoch (optimistic concurrency)."""


class GraphCycleError(MmsbError, ValueError):
    """Adding the edge would close a cycle; the graph is unchanged."""


class GraphError(MmsbError):
    """A dependency-graph rule was broken (e.g. deleting a page that still has children)."""


class PropagationError(MmsbError):
    """A recompute failed; the wave's commit was aborted."""


class LogCorruptError(MmsbError, OSError):
    """A log or checkpoint file is corrupt (names file, offset and what failed)."""


class DurabilityError(MmsbError, OSError):
    """Writing or syncing the log failed; the commit did not happen."""


class BusLockedError(MmsbError):
    """Another writer holds the bus directory."""


class HistoryUnavailableError(MmsbError):
    """The requested lsn/epoch is older than the retained history."""


class QueueFullError(MmsbError):
    """The ingest ring is full and submit(block=False) was asked."""


class ClosedError(MmsbError):
    """The bus is closed."""


class DeviceUnavailableError(MmsbError, RuntimeError):
    """A device (CUDA) operation was asked for but no usable device exists."""


class OutOfMemoryError(MmsbError, MemoryError):
    """The operating system refused memory for page data."""


class ReadOnlyError(MmsbError, PermissionError):
    """A change was asked of a read-only bus (bus.at(lsn), mmsb.replay)."""
