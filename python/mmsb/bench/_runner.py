"""Running the categories of `mmsb bench` and assembling the results (the JSON's content)."""

from __future__ import annotations

import ctypes
import datetime
import importlib
import importlib.metadata
import os
import platform
import shutil
import sqlite3
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np

from .. import _progress
from .._reports import Report
from ..errors import InvalidArgumentError
from . import _stores
from . import workloads as wl
from ._measure import BenchContext, Section, VerificationError
from ._stores import durable_base
from .stress import SEED as STRESS_SEED

SCHEMA = "mmsb-bench/1"
# Report order; `growth` (cost-growth curves) runs in full mode only, unless asked for by name.
CATEGORIES = ("allocation", "delta", "gpu", "propagation", "replay", "persistence", "stress", "growth")


class BenchResults(Report):
    """What mmsb.bench.run() returns and `mmsb bench` writes as JSON: schema, date, host,
    git_commit (None outside a git checkout), machine, build_info, versions (NumPy, oneTBB,
    pybind11, Google Benchmark, SQLite, LMDB; None where not known), settings (seeds included),
    categories ({name: {status, seconds, figures, skipped, series, details[, error]}}), growth
    (curves, when run), verified, wall_seconds."""

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


def git_commit(package_dir: Path = Path(__file__).resolve().parents[1]) -> Optional[str]:
    """HEAD of the git checkout whose python/mmsb is `package_dir`; None without git, outside a
    checkout (an installed wheel), or for a package installed into a checkout it does not come
    from (a virtual environment inside another repository)."""
    try:
        out = subprocess.run(["git", "-C", str(package_dir), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() / "python" / "mmsb" != package_dir:
        return None
    return lines[1]


def _loaded_tbb_version() -> Optional[str]:
    """TBB_runtime_version() of the libtbb this process loaded (the extension's), or None."""
    try:
        with open("/proc/self/maps") as f:
            path = next((line.split()[-1] for line in f if "/libtbb.so" in line), None)
        if path is None:
            return None
        fn = ctypes.CDLL(path).TBB_runtime_version
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    version = fn()
    return version.decode() if version else None


def _versions() -> dict:
    """Versions of the libraries the figures depend on, where this process can tell them
    (Google Benchmark's is filled in by a category that runs a binary reporting it)."""
    try:
        pybind11 = importlib.metadata.version("pybind11")  # the build requirement, when installed
    except importlib.metadata.PackageNotFoundError:
        pybind11 = None
    return {"numpy": np.__version__, "onetbb": _loaded_tbb_version(), "pybind11": pybind11,
            "google_benchmark": None, "sqlite": sqlite3.sqlite_version,
            "lmdb": ".".join(map(str, _stores.lmdb.version())) if _stores.lmdb is not None else None}


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
        host=platform.node(), git_commit=git_commit(), machine=machine, build_info=build, versions=_versions(),
        settings={"quick": quick, "threads": sweep, "categories": selected, "seed": wl.SEED,
                  "stress_seed": STRESS_SEED, "scratch_dir": base, "scratch_filesystem": fs},
        categories={}, verified=True)
    start = time.perf_counter()
    bar = _progress.bar(len(selected), "mmsb bench", show)
    for name in selected:
        section = Section(name)
        workdir = tempfile.mkdtemp(prefix=f"mmsb-bench-{name}-", dir=base)
        ctx = BenchContext(quick=quick, threads=sweep, workdir=workdir, section=section, bar=bar,
                           versions=results["versions"])
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
