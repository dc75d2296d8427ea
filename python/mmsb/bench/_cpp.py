"""Running the C++ Google Benchmark binaries (benchmarks/cpp/) from `mmsb bench`.

The binaries are built by `make test` (build/release/) and `make bench` (build/bench/), not by
the Python package, so an installed mmsb may have none: a category then records the part as
skipped, with the reason, and reports no figure for it. Where to look: the directory named by
MMSB_BENCH_BIN_DIR if it is set (only there: an explicit choice is never second-guessed), else
the build directories of the repository holding this package and of the working directory; of
several builds the newest binary wins (an older build may predate the engine being measured).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Optional

from ._measure import VerificationError

ENV_DIR = "MMSB_BENCH_BIN_DIR"
BUILD_DIRS = ("build/bench/benchmarks/cpp", "build/release/benchmarks/cpp")
_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


class BinaryUnavailable(Exception):
    """The binary is not there or could not run; the message says why (for `skipped`)."""


def _candidates(name: str) -> list[Path]:
    explicit = os.environ.get(ENV_DIR)
    if explicit:
        return [Path(explicit) / name]
    roots = {Path.cwd().resolve(), Path(__file__).resolve().parents[3]}
    return [root / d / name for root in sorted(roots) for d in BUILD_DIRS]


def find_binary(name: str) -> Path:
    """The newest executable `name` among the candidate directories; BinaryUnavailable naming
    every place looked at otherwise."""
    looked = _candidates(name)
    found = [p for p in looked if p.is_file() and os.access(p, os.X_OK)]
    if not found:
        hint = f"set {ENV_DIR}" if not os.environ.get(ENV_DIR) else f"{ENV_DIR} is set"
        raise BinaryUnavailable(f"{name} not found (looked in {', '.join(str(p.parent) for p in looked)}; "
                                f"build it with `make test` or `make bench`, or {hint})")
    return max(found, key=lambda p: p.stat().st_mtime)


def run_gbench(name: str, filter_regex: str, min_time: float, repetitions: int = 1,
               timeout_s: float = 300) -> tuple[list[dict], Path, dict]:
    """Runs benchmark binary `name` on the benchmarks matching `filter_regex`, returns (one dict
    per measured iteration run, from --benchmark_format=json; repetitions give several per
    benchmark, aggregates are dropped), the binary's path and the JSON's context (host, caches,
    and the library_version of Google Benchmark from 1.8 on).

    A benchmark that reports an error (its own check of the result failed) raises
    VerificationError; a binary that is missing, crashes or times out raises BinaryUnavailable."""
    path = find_binary(name)
    # A plain number for min_time: older Google Benchmark (Debian 12's 1.7) rejects the "0.1s"
    # form, newer ones still take seconds without a suffix.
    cmd = [str(path), f"--benchmark_filter={filter_regex}", "--benchmark_format=json",
           f"--benchmark_min_time={min_time}", f"--benchmark_repetitions={repetitions}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BinaryUnavailable(f"{path} could not run: {e}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BinaryUnavailable(f"{path} exited with status {proc.returncode}: {' | '.join(tail)}")
    try:
        out = json.loads(proc.stdout)
        runs, context = out["benchmarks"], out.get("context")
    except (ValueError, KeyError, TypeError) as e:
        raise BinaryUnavailable(f"{path} printed no benchmark JSON ({e})") from None
    bad = [r for r in runs if r.get("error_occurred")]
    if bad:
        raise VerificationError(f"{path.name}: {bad[0]['name']} failed its own check: "
                                f"{bad[0].get('error_message', '?')}")
    runs = [r for r in runs if r.get("run_type", "iteration") == "iteration"]
    if not runs:
        raise BinaryUnavailable(f"{path} ran no benchmark matching {filter_regex!r}")
    return runs, path, context if isinstance(context, dict) else {}


def real_time_ns(run: dict) -> float:
    """Wall-clock time of one iteration, in ns."""
    return float(run["real_time"]) * _UNIT_NS[run.get("time_unit", "ns")]


def family(run: dict) -> str:
    """The benchmark's name without the /real_time suffix and repetition decorations."""
    return run.get("run_name", run["name"]).removesuffix("/real_time")


def group_runs(runs: list[dict]) -> dict[str, list[dict]]:
    """Iteration runs grouped by benchmark (several when --benchmark_repetitions > 1), in order."""
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(family(r), []).append(r)
    return out


def note_version(versions: dict, context: dict) -> None:
    """Records Google Benchmark's version in the results' `versions` when the binary reported it."""
    if context.get("library_version"):
        versions["google_benchmark"] = str(context["library_version"])


def describe(path: Optional[Path]) -> dict:
    """Where a binary came from, for the JSON details; `predates_extension` when it was built
    before the mmsb extension in use (its engine may then be older than the one measured in
    Python: rebuild it with `make bench`)."""
    if path is None:
        return {}
    from .. import _core

    built = path.stat().st_mtime
    return {"binary": str(path), "binary_mtime": built,
            "predates_extension": built < Path(_core.__file__).stat().st_mtime}
