"""The example applications (examples/*.py) run at small size and pass their own checks, and
those checks are able to fail: each verify function rejects a deliberately corrupted result, and
a corrupted oracle makes the whole run exit 1."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mmsb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)

import _common  # noqa: E402
import dataflow  # noqa: E402
import game_ai  # noqa: E402
import order_book  # noqa: E402

from _common import CheckFailed  # noqa: E402

# (script, small arguments, a line its narration must contain)
RUNS = [
    ("game_ai.py", ["--size", "3", "--ticks", "12"], "bytes and epochs identical"),
    ("dataflow.py", ["--size", "8"], "reaching definitions = worklist algorithm"),
    ("order_book.py", ["--size", "12"], "exposures equal their recomputation"),
]


def run_script(script, args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script,args,line", RUNS, ids=[r[0] for r in RUNS])
def test_example_runs_and_passes_its_checks(script, args, line):
    r = run_script(script, [*args, "--seed", "3"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert line in r.stdout
    assert r.stdout.rstrip().endswith("all checks passed")


@pytest.mark.parametrize("script,args,line", RUNS, ids=[r[0] for r in RUNS])
def test_example_keeps_dir_and_refuses_a_used_one(script, args, line, tmp_path):
    path = tmp_path / "bus"
    assert run_script(script, [*args, "--dir", str(path)]).returncode == 0
    with mmsb.replay(str(path)) as replayed:  # the kept directory is a valid bus log
        assert replayed.lsn > 0 and len(replayed) > 0
    again = run_script(script, [*args, "--dir", str(path)])
    assert again.returncode == 2 and "is not an empty directory" in again.stderr


def test_bad_size_is_a_usage_error():
    r = run_script("dataflow.py", ["--size", "0"])
    assert r.returncode == 2 and "expected a positive integer, got 0" in r.stderr


# ---- the checkers reject wrong results -----------------------------------------------------
def test_game_ai_checkers_reject_corruption():
    start = game_ai.initial_states(3, 1)
    match = game_ai.plain_match(start, 6)
    game_ai.verify_match(match, [m.copy() for m in match])
    bad = [m.copy() for m in match]
    bad[4][2, 2] -= 1.0  # one agent's hp at tick 4
    with pytest.raises(CheckFailed, match="tick 4"):
        game_ai.verify_match(match, bad)
    with pytest.raises(CheckFailed, match="ticks played"):
        game_ai.verify_match(match, match[:-1])
    team0, team1, control = game_ai.reference_maps(start)
    game_ai.verify_maps(start, team0, team1, control, "now")
    wrong = control.copy()
    wrong[3, 5] += 1.0
    with pytest.raises(CheckFailed, match="control"):
        game_ai.verify_maps(start, team0, team1, wrong, "now")


def test_state_comparison_catches_bytes_epochs_and_missing_pages():
    live = {"a": (b"\x00\x01", 3), "b": (b"", 1)}
    assert _common.compare_states(live, dict(live)) == []
    assert _common.compare_states(live, {"a": (b"\x00\x02", 3), "b": (b"", 1)}) == ["page a: bytes differ (epoch 3 expected, 3 found)"]
    assert _common.compare_states(live, {"a": (b"\x00\x01", 4), "b": (b"", 1)}) == ["page a: epoch differ (epoch 3 expected, 4 found)"]
    assert _common.compare_states(live, {"a": live["a"], "c": (b"", 0)}) == ["page b missing", "unexpected page c"]
    assert _common.compare_arrays("x", np.array([np.nan]), np.array([np.nan]))  # NaN never matches


def test_dataflow_checkers_reject_corruption():
    cfg = dataflow.random_cfg(9, 4)
    reaching, dist = dataflow.worklist_reaching(cfg), dataflow.bellman_ford(cfg)
    dataflow.verify(cfg, reaching, dist, "oracle")
    flipped = reaching.copy()
    flipped[5, 0] = not flipped[5, 0]
    with pytest.raises(CheckFailed, match="reaching definitions"):
        dataflow.verify(cfg, flipped, dist, "corrupted")
    shorter = dist.copy()
    shorter[0, -1] -= 1.0
    with pytest.raises(CheckFailed, match="shortest paths"):
        dataflow.verify(cfg, reaching, shorter, "corrupted")


def test_dataflow_oracles_and_provenance_check_on_a_known_loop():
    # 0 -> 1 -> 2 -> 3, back edge 2 -> 1; x defined in 0 and in 2, y in 1.
    cfg = dataflow.Cfg(preds=[[], [0, 2], [1], [2]], succs=[[1], [2], [1, 3], []],
                       defs=[(0, 0), (1, 1), (2, 0)], cost=np.array([1.0, 2.0, 3.0, 4.0]))
    out = dataflow.worklist_reaching(cfg)
    assert out.tolist() == [[True, False, False], [True, True, True], [False, True, True], [False, True, True]]
    assert dataflow.bellman_ford(cfg)[0].tolist() == [0.0, 1.0, 3.0, 6.0]
    assert dataflow.bellman_ford(cfg)[3, 0] == np.inf
    # d2 (x in block 2) reaches the end of block 1 around the loop; block 3 cannot reach block 1.
    assert dataflow.pick_fact(cfg, out) == (3, 1)  # d1 travels two edges, 1 -> 2 -> 3
    assert dataflow.verify_provenance(cfg, ["gen.b2", "keep.b1", "gen.b0"], (1, 2)) == [0, 1, 2]
    with pytest.raises(CheckFailed, match="is not a source"):
        dataflow.verify_provenance(cfg, ["keep.b1", "gen.b0"], (1, 2))
    with pytest.raises(CheckFailed, match="block 3 cannot reach block 1"):
        dataflow.verify_provenance(cfg, ["gen.b2", "gen.b3"], (1, 2))


def test_order_book_checkers_reject_corruption():
    events = order_book.session(9, 27, 2)
    orders = order_book.blotter_at(events, 9)
    desk, firm = order_book.reference_exposure(orders)
    order_book.verify_exposures(orders, desk, firm, "oracle")
    off = firm.copy()
    off[0, int(orders[0, order_book.INSTR])] += 0.25
    with pytest.raises(CheckFailed, match="firm"):
        order_book.verify_exposures(orders, desk, off, "corrupted")
    touched = {f"order.{n}" for _, n, _ in events[10:]} | {f"cash.{n % 3}" for k, n, _ in events[10:] if k == "fill"}
    order_book.verify_diff(events[10:], sorted(touched) + ["firm"])
    missing = sorted(touched)[1:]
    with pytest.raises(CheckFailed, match="not in the diff"):
        order_book.verify_diff(events[10:], missing)
    with pytest.raises(CheckFailed, match="no event touched it"):
        order_book.verify_diff(events[10:], sorted(touched) + ["order.999"])


@pytest.mark.parametrize("module,oracle,args", [
    (game_ai, "reference_maps", ["--size", "2", "--ticks", "3"]),
    (dataflow, "bellman_ford", ["--size", "5"]),
    (order_book, "reference_exposure", ["--size", "6"]),
], ids=["game_ai", "dataflow", "order_book"])
def test_a_wrong_oracle_makes_the_run_exit_1(module, oracle, args, monkeypatch, capsys):
    honest = getattr(module, oracle)

    def skewed(*a):
        result = honest(*a)
        first = result[-1] if isinstance(result, tuple) else result
        first.flat[0] += 1.0  # one element off by one
        return result

    monkeypatch.setattr(module, oracle, skewed)
    assert module.main([*args, "--seed", "1"]) == 1
    assert "CHECK FAILED" in capsys.readouterr().out
