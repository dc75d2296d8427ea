"""`mmsb demo`: the tour runs end to end, prints every step with its checked facts, fails (exit 1,
naming what differed) when one of its checks does not hold, and colors only a terminal."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest

import mmsb
from mmsb import _demo_steps
from mmsb.cli import main
from mmsb.demo import run_demo

HEADINGS = (
    "== 1. Pages and zero-copy views",
    "== 2. Deltas and epochs",
    "== 3. Batches:",
    "== 4. Propagation: derived pages, waves, cutoff, cycles",
    "== 5. Crash and recovery, time travel, diff",
    "== 6. Provenance: where a value came from",
    "== Where next",
)


@pytest.fixture(scope="module")
def quick_run() -> subprocess.CompletedProcess:
    """One `python -m mmsb demo --quick` for the whole module: it starts (and kills) a child."""
    return subprocess.run([sys.executable, "-m", "mmsb", "demo", "--quick"],
                          capture_output=True, text=True, timeout=120)


def test_quick_demo_exits_0_with_every_step(quick_run):
    assert quick_run.returncode == 0, quick_run.stdout[-3000:] + quick_run.stderr
    positions = [quick_run.stdout.find(h) for h in HEADINGS]
    assert -1 not in positions, [h for h, p in zip(HEADINGS, positions) if p == -1]
    assert positions == sorted(positions), "steps out of order"
    assert "✗" not in quick_run.stdout
    checks = int(re.search(r"✓ all (\d+) checks held", quick_run.stdout).group(1))
    assert checks == quick_run.stdout.count("   ✓ ")


def test_quick_demo_prints_the_checked_facts(quick_run):
    out = quick_run.stdout
    assert "✓ an out-of-bounds write is refused; bytes, epoch and lsn unchanged: True" in out
    assert re.search(r"threads=1: +\d+\.\d+ M deltas/s", out)
    assert "✓ threads=1: every page equals a NumPy last-writer-wins model of the batch" in out
    assert "✓ coldest equals NumPy's min(harbour + 0.0, valley + 1.5)" in out
    assert "✓ only harbour's descendants were recomputed (coldest, frost)" in out
    assert "✓ cutoff: coldest recomputed to the same bytes" in out
    assert "GraphCycleError: " in out and "✓ the cycle was refused and the graph is unchanged" in out
    # the recovered lsn really is at least the last acknowledged one, as printed
    recovered, acked = map(int, re.search(r"✓ recovered lsn (\d+) >= last acknowledged lsn (\d+)", out).groups())
    assert recovered >= acked > 0
    assert re.search(r"exit status -9", out)
    assert re.search(r"✓ bus\.at\(\d+\) is exactly the state the child acknowledged last", out)
    assert "'truncated_tail': True" in out and "✓ only the torn record is lost" in out
    assert re.search(r"frost \(page \d+\) @ epoch \d+  lsn \d+  propagation\n +└─ coldest", out)
    assert "digraph provenance {" in out
    assert "✓ coldest @ epoch" in out and "at the epochs provenance names" in out
    for pointer in ("mmsb validate --quick", "mmsb bench", "notebooks/", "docs/api.md"):
        assert pointer in out


def test_no_ansi_codes_when_output_is_not_a_tty(quick_run):
    assert "\x1b[" not in quick_run.stdout


@pytest.mark.parametrize("reference, claim", [
    ("min_plus_reference", "✗ coldest equals NumPy's min(harbour + 0.0, valley + 1.5)"),
    ("counter_reference", "✗ recovered state = the child's first"),
])
def test_a_failed_check_prints_what_differed_and_returns_1(monkeypatch, reference, claim):
    true_model = getattr(_demo_steps, reference)
    monkeypatch.setattr(_demo_steps, reference, lambda *a: true_model(*a) + 1.0)
    out = io.StringIO()
    assert run_demo(quick=True, out=out) == 1
    text = out.getvalue()
    assert claim in text
    assert re.search(r"elements differ; first at index \d+: got .+, expected .+", text)
    assert re.search(r"✗ \d+ of \d+ checks failed", text)
    assert "\x1b[" not in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colors_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    for stream, colored in ((_Terminal(), True), (io.StringIO(), False)):
        tour = _demo_steps.Tour(stream)
        tour.heading("1. x")
        tour.check("holds", True)
        assert ("\x1b[" in stream.getvalue()) is colored
    monkeypatch.setenv("NO_COLOR", "1")
    stream = _Terminal()
    _demo_steps.Tour(stream).check("holds", False, "detail")
    assert "\x1b[" not in stream.getvalue() and "✗ holds: detail" in stream.getvalue()


def test_rows_must_be_positive(capsys):
    with pytest.raises(mmsb.InvalidArgumentError, match="rows must be a positive int; got 0"):
        run_demo(rows=0, out=io.StringIO())
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--rows", "-5"])
    assert exit_info.value.code == 2 and "--rows" in capsys.readouterr().err


@pytest.mark.parametrize("rows", [10**13, 99999999999999999999999])
def test_rows_that_cannot_fit_in_memory_are_refused_before_the_tour(capsys, rows):
    out = io.StringIO()
    with pytest.raises(mmsb.InvalidArgumentError, match=f"rows = {rows:,} needs about .* GiB"):
        run_demo(rows=rows, out=out)
    assert out.getvalue() == ""
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--rows", str(rows)])
    printed = capsys.readouterr()
    assert exit_info.value.code == 2 and printed.out == ""
    assert printed.err.splitlines()[-1].startswith(f"mmsb demo: error: argument --rows: rows = {rows:,} needs about")


def test_counter_reference_matches_the_child_loop():
    for k in (0, 1, 63, 64, 65, 200):
        page = np.zeros(64)
        for i in range(1, k + 1):
            page[i % 64] = i
        assert np.array_equal(_demo_steps.counter_reference(k), page), k


def test_batch_reference_is_last_writer_wins():
    rng = np.random.default_rng(5)
    index, slots = rng.integers(0, 3, 50), rng.integers(0, 64, 50)
    rows = rng.integers(0, 256, (50, 64), dtype=np.uint8)
    pages = np.zeros((3, 4096), np.uint8)
    for i in range(50):
        pages[index[i], slots[i] * 64:(slots[i] + 1) * 64] = rows[i]
    assert np.array_equal(_demo_steps.batch_reference(3, index, slots, rows), pages)


def test_provenance_tree_prints_a_shared_parent_once():
    bus = mmsb.Bus()
    a = bus.create_page(data=np.ones(4), name="a")
    left, right, top = (bus.create_page(shape=(4,), dtype="float64", name=n) for n in ("left", "right", "top"))
    bus.depend(left, on=[a], fn=mmsb.ops.copy)
    bus.depend(right, on=[a], fn=mmsb.ops.copy)
    bus.depend(top, on=[left, right], fn=mmsb.ops.reduce("sum_product"))
    lines = _demo_steps.provenance_tree(bus.provenance(top), lambda pid: bus.page(pid).name)
    assert lines[0].startswith(f"top (page {top.id}) @ epoch 1  lsn ")
    assert lines[1].startswith("├─ left") and lines[3].startswith("└─ right")
    assert lines[2].startswith("│  └─ a ") and lines[4].startswith("   └─ a ") and lines[4].endswith("(see above)")
    assert len(lines) == 5
    bus.close()
