"""What every category of `mmsb bench` shares: timing, verification, and the figures it records.

A figure is one measured quantity (a rate or a latency) with the value of every timed repeat, so
its best value, its median and its spread (used by `--compare` for the noise band) all come from
the same samples. A reference figure measures what mmsb is compared with (NumPy, a memcpy floor,
SQLite, LMDB, oneTBB, a plain loop), not mmsb. A figure may name an anchor (usually a reference,
sometimes another mmsb figure) in the same category; its ratio is then computed when the category
is finished, oriented so that > 1 always means "better than the anchor" (a higher rate, or a
lower latency).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np


class VerificationError(RuntimeError):
    """A benchmarked variant produced a wrong result (bytes, epochs, rows after reopening): its
    figure would be meaningless, so the whole bench run fails."""


def verify(ok: bool, what: str) -> None:
    """Raises VerificationError(what) unless `ok`."""
    if not ok:
        raise VerificationError(what)


def verify_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Rows are pages: a mismatch names the first differing page (index from 0) and byte. Rows
    of whole 8-byte words are compared as words first (several times faster on 64 MiB)."""
    words = (got.shape == want.shape and got.dtype == want.dtype == np.uint8
             and got.shape[-1] % 8 == 0 and got.flags.c_contiguous and want.flags.c_contiguous)
    if words and np.array_equal(got.view(np.uint64), want.view(np.uint64)):
        return
    if got.shape != want.shape:
        raise VerificationError(f"{what} (shape {got.shape}, expected {want.shape})")
    if not np.array_equal(got, want):
        page, byte = (int(i[0]) for i in np.nonzero(got != want))
        raise VerificationError(f"{what} (first at page index {page}, byte {byte}: "
                                f"got {got[page, byte]}, expected {want[page, byte]})")


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1,
          check: Optional[Callable[[Any], None]] = None) -> list[float]:
    """Seconds of each of `repeats` calls of fn, after `warmup` untimed ones. The warm-up takes
    first-touch page faults and lazy initialisation out of every variant's figures alike; the
    collector is paused so a collection triggered by one variant's garbage is not charged to
    another. `check`, if given, is called untimed on each run's result."""
    seconds = []
    for i in range(warmup + repeats):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - t0
        finally:
            gc.enable()
        if check is not None:
            check(out)
        del out  # whatever fn built (a bus, arrays) is freed outside the timed region
        if i >= warmup:
            seconds.append(elapsed)
    return seconds


@dataclass
class Figure:
    """One measured quantity: `samples` holds the value of each timed repeat, in `unit`."""

    name: str
    unit: str
    samples: list[float]
    higher_is_better: bool = True
    # The anchor: a figure name, or a tuple of alternatives (the first one measured is used,
    # e.g. the C++ floor when its binary is built, else the memmove floor).
    ratio_to: Union[None, str, tuple[str, ...]] = None
    also: Sequence[Union[str, tuple[str, ...]]] = ()  # further anchors, reported beside the main one
    note: str = ""
    # True for what mmsb is measured against (NumPy, SQLite, LMDB, oneTBB, a floor): `--compare`
    # reads its change between runs as the machine's drift, never as an mmsb regression.
    reference: bool = False

    @property
    def value(self) -> float:
        """The best repeat: the least disturbed one on a shared machine."""
        return max(self.samples) if self.higher_is_better else min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def ratio(self, anchor: "Figure") -> float:
        """> 1: this figure is better than `anchor` (faster rate or lower latency)."""
        if anchor.unit != self.unit or anchor.higher_is_better != self.higher_is_better:
            raise ValueError(f"figure {self.name!r} ({self.unit}) cannot be compared with "
                             f"{anchor.name!r} ({anchor.unit})")
        return self.value / anchor.value if self.higher_is_better else anchor.value / self.value


def rate(name: str, unit: str, ops: float, seconds: Sequence[float], **kw: Any) -> Figure:
    """A higher-is-better figure: `ops` per second for each timed run."""
    return Figure(name, unit, [ops / s for s in seconds], True, **kw)


def latency(name: str, seconds: Sequence[float], unit: str = "ms", **kw: Any) -> Figure:
    """A lower-is-better figure from seconds, shown in ms (or us)."""
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    return Figure(name, unit, [s * scale for s in seconds], False, **kw)


@dataclass
class Section:
    """The figures, skipped parts, plot series and details one category produced."""

    category: str
    figures: list[Figure] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    series: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        if any(f.name == figure.name for f in self.figures):
            raise ValueError(f"{self.category}: two figures named {figure.name!r}")
        self.figures.append(figure)
        return figure

    def get(self, name: str) -> Optional[Figure]:
        return next((f for f in self.figures if f.name == name), None)

    def _present(self, spec: Union[None, str, tuple[str, ...]]) -> Optional[str]:
        """The first of the anchor alternatives `spec` that has a figure here."""
        names = (spec,) if isinstance(spec, str) else (spec or ())
        return next((n for n in names if self.get(n) is not None), None)

    def skip(self, what: str, reason: str) -> None:
        """Records a part that could not run, and why: it gets no figure, never a made-up one."""
        self.skipped.append({"what": what, "reason": reason})

    def to_dict(self, seconds: float) -> dict:
        """The category as it goes into the JSON, ratios resolved against the anchors present."""
        figures = []
        for f in self.figures:
            d = {"name": f.name, "unit": f.unit, "value": f.value, "median": f.median,
                 "repeats": len(f.samples), "samples": list(f.samples),
                 "higher_is_better": f.higher_is_better, "reference": f.reference, "ratio_to": None, "ratio": None}
            anchors = [a for a in (self._present(f.ratio_to), *map(self._present, f.also)) if a]
            if self._present(f.ratio_to) and anchors:
                d["ratio_to"], d["ratio"] = anchors[0], f.ratio(self.get(anchors[0]))
                d["also"] = [{"ratio_to": a, "ratio": f.ratio(self.get(a))} for a in anchors[1:]]
            if f.note:
                d["note"] = f.note
            figures.append(d)
        status = "ok" if figures else "skipped"
        return {"status": status, "seconds": seconds, "figures": figures, "skipped": self.skipped,
                "series": self.series, "details": self.details}


@dataclass
class BenchContext:
    """What a category's run(ctx) gets: the size to run at, the thread counts of the sweep, a
    scratch directory (removed afterwards), where its results go, the results' library versions
    (a category fills in one only it can tell), and a progress callback."""

    quick: bool
    threads: list[int]
    workdir: str
    section: Section
    bar: Any = None  # the run's tqdm bar when progress is shown
    versions: dict = field(default_factory=dict)  # the results' library versions, for a category to complete

    def size(self, full: Any, quick: Any) -> Any:
        """The full-size value, or the quick one under --quick."""
        return quick if self.quick else full

    @property
    def show_progress(self) -> bool:
        return self.bar is not None

    def progress(self, message: str) -> None:
        """Names the current step on the progress bar, when there is one (never in the results)."""
        if self.bar is not None:
            self.bar.set_postfix_str(message[:60], refresh=True)
