"""`mmsb bench`: the side-by-side comparison of DESIGN §5, in one process, same seed and data.

mmsb against plain NumPy (the floor for Python users), the memcpy floors (libc memmove, and the
C++ apply floor when the Google Benchmark binaries are built), SQLite in WAL mode and LMDB
(durable logging, and state at a point of the log), and oneTBB's flow graph (propagation).
Every timed variant's result is checked against an oracle; a wrong one fails the run.

Categories (CATEGORIES, in report order): allocation, delta, gpu (device pages against CuPy;
skipped without a CUDA device), propagation, replay, persistence, stress, growth (cost-growth
curves: full mode, or when named). Each is a module here with a run(ctx) that fills in its
figures.

    import mmsb.bench
    results = mmsb.bench.run(quick=True, only=["delta", "stress"])
    print(results.table())

Command line: `mmsb bench [--quick] [--only CATS] [--json OUT] [--compare OLD.json] [--plots DIR]
[--no-plots] [--no-progress]`; `python -m mmsb.bench.report --markdown RESULTS.json` prints the
README's table.
"""

from __future__ import annotations

from ._measure import VerificationError
from ._runner import CATEGORIES, SCHEMA, BenchResults, parse_only, run, thread_sweep
from .regress import Comparison, compare, load_results

__all__ = ["CATEGORIES", "SCHEMA", "BenchResults", "Comparison", "VerificationError", "compare",
           "load_results", "parse_only", "run", "thread_sweep"]
