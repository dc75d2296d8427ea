"""`mmsb bench` and mmsb.bench: the JSON holds exactly the selected categories, bad input is
refused with exit 2, --compare flags a regression and not a same-run comparison, the Markdown
table lists every figure, plots are PNG files, the C++ binaries are used or skipped (never
invented), and a wrong result anywhere makes the run exit 1. Sizes are the quick ones or smaller;
speed is never asserted here."""

from __future__ import annotations

import copy
import datetime
import io
import json
import os
import platform
import sqlite3
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb.bench import _runner, compare, delta, persistence, propagation, regress, report, stress, workloads
from mmsb.bench import _stores
from mmsb.bench._measure import BenchContext, Section, VerificationError
from mmsb.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
FIGURE_KEYS = {"name", "unit", "value", "median", "repeats", "samples", "higher_is_better", "reference", "ratio_to",
               "ratio"}


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        rc = main(["bench", *args])
    finally:
        sys.stdout, sys.stderr = old
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def delta_stress(tmp_path_factory):
    """One quick CLI run of delta and stress, with plots: (exit status, stdout, JSON, its path)."""
    d = tmp_path_factory.mktemp("bench")
    path = d / "run.json"
    rc, out, err = run_cli("--quick", "--only", "delta,stress", "--json", str(path), "--plots", str(d / "plots"),
                           "--no-progress")
    assert rc == 0, err
    return rc, out, json.loads(path.read_text()), path


def test_json_holds_exactly_the_selected_categories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default path is relative to the working directory
    rc, out, err = run_cli("--quick", "--only", "allocation", "--no-plots", "--no-progress")
    assert rc == 0, err
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in platform.node())
    (path,) = (tmp_path / "benchmarks" / "results").iterdir()
    assert path.name in {f"{day}-{host}.json" for day in (datetime.date.today(), datetime.date.today()
                                                           - datetime.timedelta(days=1))}  # run across midnight
    data = json.loads(path.read_text())
    assert data["schema"] == mmsb.bench.SCHEMA
    assert list(data["categories"]) == ["allocation"] and data["settings"]["categories"] == ["allocation"]
    assert data["settings"]["quick"] is True and data["settings"]["threads"] == _runner.thread_sweep()
    assert data["machine"]["cores"] == os.cpu_count() and data["build_info"]["version"] == mmsb.__version__
    assert data["git_commit"] == _runner.git_commit() and data["settings"]["stress_seed"] == stress.SEED
    v = data["versions"]
    assert v["numpy"] == np.__version__ and v["sqlite"] == sqlite3.sqlite_version
    assert v["lmdb"] == (".".join(map(str, _stores.lmdb.version())) if _stores.lmdb else None)
    assert set(v) == {"numpy", "onetbb", "pybind11", "google_benchmark", "sqlite", "lmdb"}
    figs = data["categories"]["allocation"]["figures"]
    assert {f["name"] for f in figs} == {"mmsb create_page(4096)", "numpy np.zeros(4096, uint8)",
                                         "mmsb create_page(shape=(1024,), float32)", "numpy np.zeros(1024, float32)"}
    for f in figs:
        assert FIGURE_KEYS <= set(f) and f["repeats"] == len(f["samples"]) == 3
        assert f["value"] == max(f["samples"])  # rates: the best repeat is the highest
    raw = next(f for f in figs if f["name"] == "mmsb create_page(4096)")
    anchor = next(f for f in figs if f["name"] == raw["ratio_to"])
    assert raw["ratio"] == pytest.approx(raw["value"] / anchor["value"])
    assert "mmsb create_page(4096)" in out and path.name in out


def test_git_commit_is_the_checkouts_head_and_none_elsewhere(tmp_path):
    package = Path(mmsb.__file__).resolve().parent
    assert _runner.git_commit(tmp_path) is None                 # not a git checkout
    assert _runner.git_commit(package.parent) is None           # inside a checkout, but not its python/mmsb
    commit = _runner.git_commit(package)
    if (package.parents[1] / ".git").exists():
        assert commit is not None and len(commit) == 40 and int(commit, 16) >= 0
    else:                                                       # an installed package: no checkout to name
        assert commit is None


def test_only_takes_lists_and_repeats():
    assert _runner.parse_only(["replay,delta", "stress"]) == ["delta", "replay", "stress"]
    assert _runner.parse_only(None) == list(mmsb.bench.CATEGORIES)


@pytest.mark.parametrize("only", ["delta,nonsense", "Delta", ","])
def test_unknown_category_exits_2_naming_it(only):
    rc, out, err = run_cli("--quick", "--only", only, "--no-plots")
    assert rc == 2 and not out
    assert "unknown bench categor" in err and (only.split(",")[-1] or "(none given)") in err
    with pytest.raises(mmsb.InvalidArgumentError, match="nonsense"):
        mmsb.bench.run(quick=True, only=["nonsense"])


@pytest.mark.parametrize("content", ["{not json", '{"schema": "other/1", "categories": {}}',
                                     '{"schema": "mmsb-bench/1", "categories": {"delta": {"figures": [{"name": 3}]}}}'])
def test_malformed_compare_file_exits_2_before_running(tmp_path, content):
    old = tmp_path / "old.json"
    old.write_text(content)
    rc, out, err = run_cli("--quick", "--only", "allocation", "--compare", str(old), "--json", str(tmp_path / "n.json"))
    assert rc == 2 and str(old) in err
    assert not (tmp_path / "n.json").exists()  # refused before any benchmark ran


def test_compare_flags_a_made_up_regression(tmp_path, delta_stress):
    new = copy.deepcopy(delta_stress[2])
    rate = new["categories"]["delta"]["figures"][0]
    tick = next(f for f in new["categories"]["stress"]["figures"] if f["name"] == "tick p99, history on")
    assert rate["ratio_to"] and tick["ratio_to"]  # judged by their ratios to anchors the old run has too
    old = copy.deepcopy(new)
    old_rate, old_tick = old["categories"]["delta"]["figures"][0], old["categories"]["stress"]["figures"][4]
    assert old_tick["name"] == tick["name"]
    # Three times better in the old run, the anchors unchanged: beyond any band (at most 100%).
    old_rate["samples"] = [3 * s for s in rate["samples"]]   # higher is better
    old_tick["samples"] = [s / 3 for s in tick["samples"]]   # lower is better
    old_rate["value"], old_tick["value"] = max(old_rate["samples"]), min(old_tick["samples"])
    (tmp_path / "OLD.json").write_text(json.dumps(old))
    cmp = compare(regress.load_results(tmp_path / "OLD.json"), new)
    assert {(r["category"], r["name"]) for r in cmp["regressions"]} == {("delta", rate["name"]), ("stress", tick["name"])}
    assert not cmp and all(r["verdict"] in ("same", "drift") for r in cmp["rows"] if r not in cmp["regressions"])
    text = regress.format_comparison(cmp)
    assert "2 regression(s)" in text and f"delta: {rate['name']}" in text and "REGRESSION" in text


def test_same_run_comparison_flags_nothing(delta_stress):
    _, _, new, _ = delta_stress
    cmp = compare(new, new)
    assert cmp and len(cmp["rows"]) == sum(len(c["figures"]) for c in new["categories"].values())
    assert all(r["verdict"] in ("same", "drift") and r["change_pct"] == 0 for r in cmp["rows"])
    assert {r["basis"] for r in cmp["rows"]} == {"ratio", "machine", "reference"}


def test_cli_compare_reports_and_fails_on_regression(tmp_path):
    def fig(name, value, **kw):
        return {"name": name, "unit": "pages/s", "value": value, "samples": [value] * 2, "higher_is_better": True,
                **kw}

    numpy = "numpy np.zeros(4096, uint8)"
    old = {"schema": "mmsb-bench/1", "settings": {"quick": True},
           "machine": {"cpu": "Some Other CPU", "cores": 512, "memory_bytes": 2**44},
           "categories": {"allocation": {"figures": [fig("mmsb create_page(4096)", 1e15, ratio_to=numpy),
                                                     fig(numpy, 1e6, reference=True), fig("retired", 1.0)]},
                          "stress": {"figures": []}}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    args = ("--quick", "--only", "allocation", "--compare", str(tmp_path / "old.json"),
            "--json", str(tmp_path / "n.json"), "--no-plots", "--no-progress")
    rc, out, err = run_cli(*args)
    assert rc == 0, err                                          # flagged, but not fatal by default
    assert "allocation: mmsb create_page(4096)" in out and "REGRESSION" in out
    assert "only in the old run: allocation: retired" in out
    assert ("new in this run: allocation: mmsb create_page(shape=(1024,), float32); "
            "allocation: numpy np.zeros(1024, float32)") in out
    assert "not compared (not run this time): stress" in out
    assert "different machines (cpu: Some Other CPU vs " in out and "cores: 512 vs" in out
    rc, out, err = run_cli(*args, "--fail-on-regression")
    assert rc == 3


def test_cli_refuses_to_compare_quick_with_full_before_running(tmp_path):
    old = {"schema": "mmsb-bench/1", "settings": {"quick": False}, "categories": {}}
    (tmp_path / "full.json").write_text(json.dumps(old))
    rc, out, err = run_cli("--quick", "--only", "allocation", "--compare", str(tmp_path / "full.json"),
                           "--json", str(tmp_path / "n.json"), "--no-plots", "--no-progress")
    assert rc == 2 and "cannot compare a --quick run with a full run" in err
    assert not (tmp_path / "n.json").exists()  # refused before any benchmark ran


def test_markdown_table_lists_every_figure(delta_stress, capsys):
    _, _, data, path = delta_stress
    assert report.main(["--markdown", str(path)]) == 0
    text = capsys.readouterr().out
    assert "| category | figure | value | unit | vs anchor |" in text and data["host"] in text
    names = [f["name"] for c in data["categories"].values() for f in c["figures"]]
    assert names and all(f"| {n} |" in text for n in names)
    assert report.main([str(path)]) == 0
    text = capsys.readouterr().out
    assert all(n in text for n in names)


def test_plots_are_png_files(delta_stress):
    _, out, data, path = delta_stress
    plots = sorted(os.listdir(path.parent / "plots"))
    assert plots == ["run-throughput-vs-threads.png", "run-tick-latency.png"]
    for name in plots:
        assert (path.parent / "plots" / name).read_bytes()[:8] == PNG
    assert len(data["plots"]) == 2


def test_wrong_oracle_fails_the_run(tmp_path, monkeypatch):
    real = workloads.expected_state

    def one_byte_off(batches, pages=workloads.PAGES):
        state = real(batches, pages)
        state[123, 456] ^= 1
        return state

    monkeypatch.setattr(workloads, "expected_state", one_byte_off)
    rc, out, err = run_cli("--quick", "--only", "delta", "--json", str(tmp_path / "r.json"), "--no-plots",
                           "--no-progress")
    assert rc == 1
    assert "delta: verification failed" in err and "page index 123, byte 456" in err
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verified"] is False and data["categories"]["delta"]["status"] == "failed"


def test_numpy_scatter_reference_holds_exactly_the_rows_it_committed(tmp_path):
    stream = _stores.DurableStream(5000)
    store = _stores.NumpyScatter(str(tmp_path), "memory", stream)
    rows, commits, _ = _stores.timed_append(store, stream.n, 64, cap_s=60)
    assert (rows, commits) == (5000, -(-5000 // 64))
    store.verify(rows)
    with pytest.raises(VerificationError, match="page bytes differ"):
        store.verify(rows - 1)  # the last row's bytes are in the array too


def test_persistence_sets_mmsb_against_both_granularities_and_fsync_against_both_disk_floors():
    variants = set(persistence.variants(_stores.DURABLE_STORES))
    for cls in (_stores.SqliteBlob, _stores.LmdbBlob):
        assert {b for c, _, b in variants if c is cls} == {64, 4096}  # at batch 1, a value per batch is per delta
    anchors = persistence._anchors(_stores.MmsbLog, "flush", 4096)
    assert anchors[:4] == ("SQLite WAL, synchronous=NORMAL, batch 4096, executemany, a row per delta",
                           "LMDB sync=False, batch 4096, putmulti(append), a record per delta",
                           "SQLite WAL, synchronous=NORMAL, batch 4096, insert, a blob per batch",
                           "LMDB sync=False, batch 4096, put(append), a value per batch")
    fsync1 = persistence._anchors(_stores.MmsbWrites, "fsync", 1)
    assert {"disk floor: pwrite(64 B) + fdatasync, append", "disk floor: pwrite(64 B) + fdatasync, overwrite"} \
        <= set(fsync1)
    assert not any("per batch" in a for a in fsync1)


@pytest.mark.parametrize("cls,mode", [("SqliteBlob", "NORMAL"), ("LmdbBlob", False)])
def test_one_value_per_batch_stores_hold_exactly_the_rows_they_committed(tmp_path, cls, mode):
    cls = getattr(_stores, cls)
    if issubclass(cls, _stores.LmdbEnv) and _stores.lmdb is None:
        pytest.skip("the lmdb package is not installed")
    stream = _stores.DurableStream(1000)
    store = cls(str(tmp_path), mode, stream)
    rows, commits, _ = _stores.timed_append(store, stream.n, 64, cap_s=60)
    store.close()
    assert (rows, commits) == (1000, -(-1000 // 64))
    store.verify(rows)
    with pytest.raises(VerificationError, match="rows after reopening"):
        store.verify(rows - 1)
    for upto in (1, 64, 65, 999, 1000):  # cut inside a batch, at its end, and at the stream's end
        got = cls.read_rows(str(tmp_path), upto)
        want = stream.deltas.head(upto)
        assert len(got) == upto and np.array_equal(got.page, want.page) and np.array_equal(got.payload, want.payload)


def test_mmsb_flush_and_none_are_set_against_numpys_scatter_fsync_is_not():
    numpy = "NumPy in memory, no log, batch 4096, slot-row scatter"
    assert numpy in persistence._anchors(_stores.MmsbLog, "flush", 4096)
    assert numpy in persistence._anchors(_stores.MmsbLog, "none", 4096)
    assert numpy not in persistence._anchors(_stores.MmsbLog, "fsync", 4096)


def test_numpy_scatters_build_their_index_columns_outside_the_timed_region(monkeypatch, tmp_path):
    """mmsb's DeltaBatch columns are built before its timing; so are each NumPy form's index
    columns: no form reads the batch (page, offset, slot) while it is timed."""
    batches = workloads.make_batches(2000, 2)
    timing = []
    real_get, real_timed = object.__getattribute__, delta.timed

    def guarded_get(rows, name):
        assert not timing, f"DeltaRows.{name} read inside the timed region"
        return real_get(rows, name)

    def watched_timed(fn, *args, **kw):
        def watched():
            timing.append(fn)
            try:
                return fn()
            finally:
                timing.pop()
        return real_timed(watched, *args, **kw)

    monkeypatch.setattr(workloads.DeltaRows, "__getattribute__", guarded_get)
    monkeypatch.setattr(delta, "timed", watched_timed)
    ctx = BenchContext(quick=True, threads=[1], workdir=str(tmp_path), section=Section("delta"))
    delta._numpy(ctx, batches, workloads.expected_state(batches), workloads.epoch_counts(batches), 1)
    assert [f.name for f in ctx.section.figures] == list(delta.NUMPY_SCATTERS)
    assert all(f.reference for f in ctx.section.figures)


def _fake_binary(directory, name: str, runs: list) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps({"context": {}, "benchmarks": runs}) + "\nEOF\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _wave(name: str, label: str, ns: float, **extra) -> dict:
    return {"name": f"{name}/real_time", "run_name": f"{name}/real_time", "run_type": "iteration",
            "real_time": ns, "time_unit": "ns", "label": label, "iterations": 1000, **extra}


def test_propagation_uses_the_binary_it_finds_and_skips_without_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSB_BENCH_BIN_DIR", str(tmp_path))
    r = mmsb.bench.run(quick=True, only="propagation", progress=False)
    cat = r["categories"]["propagation"]
    assert r["verified"] and cat["status"] == "ok"
    (skip,) = cat["skipped"]
    assert "bench_propagation not found" in skip["reason"] and str(tmp_path) in skip["reason"]
    assert not [f for f in cat["figures"] if "(C++)" in f["name"] or "oneTBB" in f["name"]]
    assert any(f["name"] == "python hop: mmsb ops.copy" for f in cat["figures"])


def test_propagation_reads_the_binarys_json_and_fails_on_its_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSB_BENCH_BIN_DIR", str(tmp_path))
    ctx = BenchContext(quick=True, threads=[1], workdir=str(tmp_path), section=Section("propagation"))
    _fake_binary(tmp_path, "bench_propagation", [
        _wave("Mmsb/wave/workload:0", "hop", 1000.0), _wave("Tbb/wave/workload:0/threads:1", "hop", 250.0),
        _wave("PlainDiff/wave/workload:0", "hop", 10.0), _wave("MmsbSchedule/wave/workload:0", "hop", 100.0)])
    propagation._cpp_part(ctx)
    figs = {f["name"]: f for f in ctx.section.to_dict(0.0)["figures"]}
    assert set(figs) == {"hop: mmsb wave (C++)", "hop: oneTBB flow graph, 1 thread",
                         "hop: plain loop + change detection", "hop: mmsb wave, scheduling alone (C++)"}
    mmsb_wave = figs["hop: mmsb wave (C++)"]
    assert mmsb_wave["value"] == pytest.approx(1e6) and mmsb_wave["ratio_to"] == "hop: oneTBB flow graph, 1 thread"
    assert mmsb_wave["ratio"] == pytest.approx(0.25) and mmsb_wave["also"][0]["ratio"] == pytest.approx(0.01)
    # Scheduling without recompute has no oneTBB counterpart (oneTBB always runs its node bodies):
    # it is set against the whole mmsb wave only.
    schedule = figs["hop: mmsb wave, scheduling alone (C++)"]
    assert schedule["ratio_to"] == "hop: mmsb wave (C++)" and schedule["ratio"] == pytest.approx(10)
    assert schedule["also"] == [] and not schedule["reference"]
    assert figs["hop: oneTBB flow graph, 1 thread"]["reference"] and not mmsb_wave["reference"]

    _fake_binary(tmp_path, "bench_propagation", [
        _wave("Mmsb/wave/workload:0", "hop", 1000.0, error_occurred=True, error_message="pages differ")])
    with pytest.raises(VerificationError, match="pages differ"):
        propagation._cpp_part(BenchContext(quick=True, threads=[1], workdir=str(tmp_path),
                                           section=Section("propagation")))


def test_growth_runs_in_full_mode_only_unless_named(monkeypatch):
    ran = []
    monkeypatch.setattr(_runner, "_run_category", lambda name, ctx: ran.append(name))  # the rest is too slow here
    r = mmsb.bench.run(quick=True, progress=False)
    assert ran == [c for c in mmsb.bench.CATEGORIES if c != "growth"]
    (skip,) = r["categories"]["growth"]["skipped"]
    assert "full mode only" in skip["reason"] and "growth" not in r


def test_growth_skipped_with_the_reason_when_its_module_is_missing(monkeypatch):
    real = _runner.importlib.import_module

    def no_growth(name, *a):
        if name.endswith(".growth"):
            raise ImportError("No module named 'mmsb.bench.growth'")
        return real(name, *a)

    monkeypatch.setattr(_runner.importlib, "import_module", no_growth)
    r = mmsb.bench.run(quick=True, only=["growth"])
    (skip,) = r["categories"]["growth"]["skipped"]
    assert r["categories"]["growth"]["status"] == "skipped" and "mmsb.bench.growth" in skip["reason"]
    assert "growth" not in r


def test_a_cpp_binary_older_than_the_extension_is_flagged(tmp_path):
    import os

    from mmsb import _core
    from mmsb.bench import _cpp

    binary = tmp_path / "bench_propagation"
    binary.write_text("")
    engine = os.stat(_core.__file__).st_mtime
    os.utime(binary, (engine - 60, engine - 60))
    assert _cpp.describe(binary)["predates_extension"] is True
    os.utime(binary, (engine + 60, engine + 60))
    assert _cpp.describe(binary)["predates_extension"] is False
    assert _cpp.describe(None) == {}


def test_output_paths_are_checked_before_the_run(tmp_path):
    """A --json or --plots path that cannot be written fails at once (exit 2), instead of losing
    the results after the whole run."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "f.txt").write_text("x")
    for extra, says in ((["--json", str(tmp_path / "adir")], "cannot write --json"),
                        (["--json", str(tmp_path / "f.txt" / "x.json")], "Not a directory"),
                        (["--json", ""], "the path is empty"),
                        (["--json", str(tmp_path / "ok.json"), "--plots", str(tmp_path / "f.txt")],
                         "cannot make the plots folder"),
                        (["--json", str(tmp_path / "new" / "deep" / "ok.json"), "--plots", str(tmp_path / "f.txt")],
                         "cannot make the plots folder")):
        rc, out, err = run_cli("--quick", "--only", "allocation", "--no-progress", *extra)
        assert rc == 2 and says in err and out == "", (extra, err)
    # Checked, then removed: nothing ran, so nothing made for the outputs is left.
    assert sorted(os.listdir(tmp_path)) == ["adir", "f.txt"]


def test_json_to_a_descriptor_is_written_in_place_with_no_plots_beside_it(tmp_path, monkeypatch):
    """`--json /dev/stdout` has no folder: plots go only to a --plots folder, listed by absolute
    path (relative to /dev they would name nothing)."""
    from mmsb.bench import plots

    folders = []

    def write_plots(results, out_dir, prefix):
        folders.append(out_dir)
        path = os.path.join(out_dir, f"{prefix}x.png")
        with open(path, "wb") as f:
            f.write(PNG)
        return [path]

    monkeypatch.setattr(plots, "write_plots", write_plots)
    for extra in ([], ["--plots", str(tmp_path / "p")]):
        with open(tmp_path / "out.txt", "w") as f:
            f.write("before\n")
            f.flush()
            fd = f.fileno()
            rc, out, err = run_cli("--quick", "--only", "allocation", "--no-progress", "--json", f"/dev/fd/{fd}",
                                   *extra)
        assert rc == 0, err
        before, text = (tmp_path / "out.txt").read_text().split("\n", 1)
        assert before == "before" and json.loads(text)["categories"]["allocation"]["figures"]
        if extra:
            assert folders == [str(tmp_path / "p")] and json.loads(text)["plots"] == [
                str(tmp_path / "p" / f"{fd}-x.png")]
        else:
            assert folders == []


@pytest.mark.parametrize("mutate,says", [
    (lambda d: d["categories"]["c"]["figures"][0].update(samples=None), "list of numeric samples"),
    (lambda d: d["categories"]["c"]["figures"][0].update(samples=5), "list of numeric samples"),
    (lambda d: d.update(settings=[]), "'settings' is not an object"),
])
def test_malformed_compare_files_are_refused_by_name(tmp_path, mutate, says):
    data = {"schema": "mmsb-bench/1", "settings": {}, "categories": {"c": {"figures": [
        {"name": "f", "unit": "x/s", "value": 1.0, "samples": [1.0], "higher_is_better": True}]}}}
    mutate(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(mmsb.InvalidArgumentError, match=says):
        regress.load_results(tmp_path / "bad.json")


def test_report_notes_a_failed_category_without_its_error():
    data = {"categories": {"c": {"status": "failed", "figures": []}}}
    assert report._notes(data) == ["c: FAILED: no error recorded"]
