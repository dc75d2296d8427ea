"""Running the categories of `mmsb bench` and assembling the results (the JSON's content)."""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import shutil
import tempfile
import time
import traceback
from typing import Callable, Iterable, Optional, Union

from .. import _progress
from .._reports import Report
from ..errors import InvalidArgumentError
from . import workloads as wl
from ._measure import BenchContext, Section, VerificationError
from ._stores import durable_base

SCHEMA = "mmsb-bench/1"
# Report order; `growth` (cost-growth curves) runs in full mode only, unless asked for by name.
CATEGORIES = ("allocation", "delta", "gpu", "propagation", "replay", "persistence", "stress", "growth")


class BenchResults(Report):
    """What mmsb.bench.run() returns and `mmsb bench` writes as JSON: schema, date, host,
    machine, build_info, settings, categories ({name: {status, seconds, figures, skipped, series,
    details[, error]}}), growth (curves, when run), verified, wall_seconds."""

    def failures(self) -> list[tuple[str, str]]:
        """(category, error) for every category whose run failed (a wrong result or a crash)."""
        return [(name, c["error"]) for name, c in self["categories"].items() if c["status"] == "failed"]

    def figures(self) -> Iterable[tuple[str, dict]]:
        """(category, figure) pairs in report order."""
        for name, c in self["categories"].items():
            for f in c["figures"]:
                yield name, f

    def table(self) -> str:
        """The printed table: category, figure, value, unit, ratio against its anchor."""
        from .report import format_table

        return format_table(self)


def parse_only(only: Union[None, str, Iterable[str]]) -> list[str]:
    """The selected categories in report order. `only` is None (all), or names, each of which
    may be a comma-separated list ("delta,replay"). InvalidArgumentError names unknown ones."""
    if only is None:
        return list(CATEGORIES)
    names = [only] if isinstance(only, str) else list(only)
    wanted = [n.strip() for item in names for n in str(item).split(",") if n.strip()]
    unknown = [n for n in wanted if n not in CATEGORIES]
    if unknown or not wanted:
        raise InvalidArgumentError(f"unknown bench categor{'y' if len(unknown) == 1 else 'ies'} "
                                   f"{', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(CATEGORIES)}")
    return [c for c in CATEGORIES if c in wanted]


def thread_sweep(cpus: Optional[int] = None) -> list[int]:
    """1, 2, 4, ... up to the core count, and the core count itself: every count on small
    machines, without a run per count on a large one."""
    cpus = cpus or os.cpu_count() or 1
    counts, t = [], 1
    while t < cpus:
        counts.append(t)
        t *= 2
    return counts + [cpus]


def _machine() -> tuple[dict, dict]:
    from ..validation._framework import machine_info

    machine = machine_info()
    build = machine.pop("build_info")
    machine["hostname"] = platform.node()
    machine["load_average_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return machine, build


def _run_category(name: str, ctx: BenchContext) -> None:
    module = importlib.import_module(f"{__package__}.{name}")
    module.run(ctx)


def _run_growth(quick: bool, workdir: str, progress: bool, section: Section) -> Optional[list]:
    try:
        growth = importlib.import_module(f"{__package__}.growth")
    except ImportError as e:
        section.skip("growth curves", f"mmsb.bench.growth is not available ({e})")
        return None
    return growth.run_growth(quick=quick, workdir=workdir, progress=progress)


def run(quick: bool = False, only: Union[None, str, Iterable[str]] = None, *, plots: bool = False,
        plots_dir: Optional[str] = None, progress: Optional[bool] = None, threads: Optional[list[int]] = None,
        on_category: Optional[Callable[[str, dict], None]] = None) -> BenchResults:
    """Runs the selected bench categories (all by default; `only` names some, see CATEGORIES) at
    full size, or shrunk with `quick=True`, and returns BenchResults. A category whose variant
    produces a wrong result is recorded as failed (results.failures(), results["verified"] is
    False) and the others still run. `growth` runs in full mode, or when named in `only`.
    `plots=True` writes the PNG plots into `plots_dir` (default: the working directory).
    A progress bar (terminal or notebook) follows the categories and names the current step
    where someone is watching, as everywhere in mmsb (see mmsb._progress); `progress=False`
    turns it off, True forces it."""
    selected = parse_only(only)
    explicit = only is not None
    show = _progress.wanted(progress)
    machine, build = _machine()
    sweep = list(threads) if threads else thread_sweep()
    if not all(isinstance(t, int) and t >= 1 for t in sweep):
        raise InvalidArgumentError(f"threads must be positive integers; got {sweep}")
    base, fs = durable_base()
    results = BenchResults(
        schema=SCHEMA, date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        host=platform.node(), machine=machine, build_info=build,
        settings={"quick": quick, "threads": sweep, "categories": selected, "seed": wl.SEED,
                  "scratch_dir": base, "scratch_filesystem": fs},
        categories={}, verified=True)
    start = time.perf_counter()
    bar = _progress.bar(len(selected), "mmsb bench", show)
    for name in selected:
        section = Section(name)
        workdir = tempfile.mkdtemp(prefix=f"mmsb-bench-{name}-", dir=base)
        ctx = BenchContext(quick=quick, threads=sweep, workdir=workdir, section=section, bar=bar)
        if bar is not None:
            bar.set_description(f"mmsb bench: {name}")
        t0, error = time.perf_counter(), None
        try:
            if name != "growth":
                _run_category(name, ctx)
            elif quick and not explicit:
                section.skip("growth curves", "full mode only (name it in --only to run it at quick size)")
            else:
                curves = _run_growth(quick, workdir, show, section)
                if curves is not None:
                    results["growth"] = curves
        except VerificationError as e:
            error = f"verification failed: {e}"
        except Exception as e:  # a crash fails the run too, and says where
            error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        entry = section.to_dict(time.perf_counter() - t0)
        if name == "growth" and "growth" in results:
            entry["status"], entry["curves"] = "ok", [c.get("name") for c in results["growth"]]
        if error is not None:
            entry["status"], entry["error"] = "failed", error
            results["verified"] = False
        results["categories"][name] = entry
        if bar is not None:
            bar.update(1)
        if on_category is not None:
            on_category(name, entry)
    results["wall_seconds"] = time.perf_counter() - start
    results["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if plots:
        from .plots import write_plots

        results["plots"] = write_plots(results, plots_dir or os.getcwd())
    return results
