"""Fixtures shared by the pytest-benchmark suites in this folder, which import them by name.

Not a conftest.py: a second top-level `conftest` module beside tests/python's could clash when
both folders are collected in one session. pytest puts this folder on sys.path (rootdir-relative
imports, no __init__.py), so `from bench_fixtures import bench_ops` finds it."""

from __future__ import annotations

import pytest


@pytest.fixture
def bench_ops(benchmark):
    """bench_ops(fn, ops, **pedantic): time `fn`, which performs `ops` operations per call.

    Sub-microsecond operations are timed as loops of `ops` inside one round, so the timer and
    the call into `fn` are amortized; the per-operation figures go to extra_info (the columns
    pytest-benchmark prints are per round). Keyword arguments select benchmark.pedantic."""

    def run(fn, ops: int, **pedantic):
        benchmark.extra_info["ops_per_round"] = ops
        result = benchmark.pedantic(fn, **pedantic) if pedantic else benchmark(fn)
        if benchmark.stats is not None:  # None under --benchmark-disable
            s = benchmark.stats.stats
            benchmark.extra_info["ns_per_op_min"] = round(s.min / ops * 1e9, 1)
            benchmark.extra_info["ns_per_op_median"] = round(s.median / ops * 1e9, 1)
            benchmark.extra_info["ops_per_s_median"] = round(ops / s.median)
        return result

    return run
