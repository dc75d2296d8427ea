"""Progress of long operations (recovery, replay, time travel, checkpoints): what the engine
reports to a progress callable, the tqdm bars of progress=True, and that a progress callable that
raises abandons the work cleanly."""

from __future__ import annotations

import os

import numpy as np
import pytest

import mmsb
from mmsb import _progress


class Recorder:
    """A progress callable that keeps every call."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.fail_at = fail_at

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.calls.append((phase, done, total))
        if phase == self.fail_at and done > 0:
            raise KeyboardInterrupt  # what Ctrl-C in a progress bar looks like

    def phase(self, name: str) -> list[tuple[int, int]]:
        return [(d, t) for p, d, t in self.calls if p == name]


def _fill(path, pages: int = 40, rounds: int = 30, checkpoint_at: int | None = None) -> tuple[int, dict]:
    """A bus directory with `pages` pages and rounds x pages deltas; returns (lsn, bytes by id)."""
    rng = np.random.default_rng(1)
    with mmsb.Bus(path) as bus:
        ps = [bus.create_page(64) for _ in range(pages)]
        for r in range(rounds):
            for p in ps:
                p.write(int(rng.integers(0, 8)) * 8, rng.bytes(8))
            if checkpoint_at is not None and r == checkpoint_at:
                bus.checkpoint(progress=False)
        return bus.lsn, {p.id: bytes(p.view()) for p in ps}


def _monotone_to_the_end(steps: list[tuple[int, int]], total: int) -> None:
    assert steps, "the phase was never reported"
    assert all(t == total for _, t in steps)
    dones = [d for d, _ in steps]
    assert dones == sorted(dones) and dones[0] == 0 and dones[-1] == total
    # Reported in steps, not once per change: a reporter must not cost a call per record.
    assert len(steps) <= 2 * 100 + 2


def test_reopen_reports_scan_and_replay_to_the_last_lsn(tmp_path):
    lsn, state = _fill(tmp_path / "b")
    rec = Recorder()
    with mmsb.Bus(tmp_path / "b", progress=rec) as bus:
        assert bus.lsn == lsn
        assert {p.id: bytes(p.view()) for p in bus.pages()} == state
    _monotone_to_the_end(rec.phase("replay"), lsn)
    scan = rec.phase("scan")
    assert scan[-1][0] == scan[-1][1] >= 1
    assert [p for p, _, _ in rec.calls].index("replay") > [p for p, _, _ in rec.calls].index("scan")


def test_replay_after_a_checkpoint_counts_only_the_tail(tmp_path):
    lsn, _ = _fill(tmp_path / "b", checkpoint_at=19)
    rec = Recorder()
    with mmsb.open(tmp_path / "b", progress=rec) as bus:
        covered = bus.recovery["checkpoint_lsn"]
    assert 0 < covered < lsn
    _monotone_to_the_end(rec.phase("replay"), lsn - covered)


def test_mmsb_replay_and_at_report_up_to_the_lsn_asked_for(tmp_path):
    lsn, _ = _fill(tmp_path / "b")
    rec = Recorder()
    with mmsb.replay(tmp_path / "b", to=lsn // 2, progress=rec) as old:
        assert old.lsn == lsn // 2
    _monotone_to_the_end(rec.phase("replay"), lsn // 2)
    for path in (tmp_path / "b", None):  # a directory bus and an in-memory bus
        rec = Recorder()
        bus = mmsb.Bus(path) if path is None else mmsb.open(path)
        with bus:
            if path is None:
                p = bus.create_page(8)
                for i in range(50):
                    p.write(0, bytes([i]) * 8)
            with bus.at(bus.lsn - 10, progress=rec) as old:
                assert old.lsn == bus.lsn - 10
            _monotone_to_the_end(rec.phase("replay"), bus.lsn - 10)


def test_checkpoint_reports_every_page(tmp_path):
    _fill(tmp_path / "b", pages=250, rounds=1)
    rec = Recorder()
    with mmsb.open(tmp_path / "b", progress=False) as bus:
        bus.checkpoint(progress=rec)
    _monotone_to_the_end(rec.phase("checkpoint"), 250)


def test_a_raising_progress_abandons_a_checkpoint_and_leaves_no_file(tmp_path):
    _fill(tmp_path / "b", pages=250, rounds=1)
    with mmsb.open(tmp_path / "b", progress=False) as bus:
        before = sorted(os.listdir(tmp_path / "b"))
        with pytest.raises(KeyboardInterrupt):
            bus.checkpoint(progress=Recorder(fail_at="checkpoint"))
        assert sorted(os.listdir(tmp_path / "b")) == before  # no checkpoint, no .tmp
        p = bus.page(1)
        p.write(0, b"still ok")  # the bus goes on
        lsn = bus.checkpoint(progress=False)
        assert lsn == bus.lsn
    with mmsb.open(tmp_path / "b", progress=False) as bus:
        assert bytes(bus.page(1).view()[:8]) == b"still ok"


def test_a_raising_progress_abandons_an_open_and_leaves_the_directory_as_it_was(tmp_path):
    lsn, state = _fill(tmp_path / "b")
    files = {f: os.path.getsize(tmp_path / "b" / f) for f in os.listdir(tmp_path / "b")}
    with pytest.raises(KeyboardInterrupt):
        mmsb.open(tmp_path / "b", progress=Recorder(fail_at="replay"))
    assert {f: os.path.getsize(tmp_path / "b" / f) for f in os.listdir(tmp_path / "b")} == files
    with mmsb.open(tmp_path / "b", progress=False) as bus:  # the lock was released
        assert bus.lsn == lsn
        assert {p.id: bytes(p.view()) for p in bus.pages()} == state


def test_progress_true_draws_bars_and_false_none(tmp_path, capsys):
    _fill(tmp_path / "b", pages=20, rounds=5)
    with mmsb.open(tmp_path / "b", progress=True) as bus:
        bus.checkpoint(progress=True)
    err = capsys.readouterr().err
    assert "mmsb open: replaying changes" in err
    assert "mmsb checkpoint: writing pages" in err
    with mmsb.open(tmp_path / "b", progress=False) as bus:
        bus.checkpoint(progress=False)
    assert capsys.readouterr().err == ""


def test_default_progress_is_silent_where_nobody_watches(tmp_path, capsys):
    assert not _progress.interactive()  # pytest captures stderr: not a terminal, not Jupyter
    assert _progress.reporter(None, "open") is None
    assert _progress.reporter(False, "open") is None
    assert _progress.reporter(True, "open") is not None
    _fill(tmp_path / "b", pages=20, rounds=5)
    with mmsb.open(tmp_path / "b") as bus:
        bus.checkpoint()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", [1, "yes", 2.5])
def test_a_progress_that_is_neither_a_flag_nor_callable_is_refused(tmp_path, bad):
    _fill(tmp_path / "b", pages=2, rounds=1)
    with pytest.raises(mmsb.InvalidArgumentError, match="progress must be"):
        mmsb.open(tmp_path / "b", progress=bad)
    with mmsb.open(tmp_path / "b", progress=False) as bus:
        lsn = bus.lsn
        with pytest.raises(mmsb.InvalidArgumentError, match="progress must be"):
            bus.checkpoint(progress=bad)
        with pytest.raises(mmsb.InvalidArgumentError, match="progress must be"):
            bus.at(1, progress=bad)
        assert bus.lsn == lsn and not [f for f in os.listdir(tmp_path / "b") if f.startswith("ckpt")]


def test_bench_and_validate_follow_the_same_rule(capsys):
    import mmsb.bench

    mmsb.bench.run(quick=True, only="allocation", progress=True)
    assert "mmsb bench: allocation" in capsys.readouterr().err
    mmsb.bench.run(quick=True, only="allocation")  # None: nobody watches under pytest
    mmsb.validate(quick=True, only=["purity"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", [lambda phase, done, total: None, "yes", 1])
def test_bench_and_validate_refuse_a_progress_they_cannot_follow(bad, capsys):
    """Their bars follow validators or categories, not engine phases: a callable was never
    called (a bar was drawn instead), and any other value was taken as a flag."""
    import mmsb.bench

    with pytest.raises(mmsb.InvalidArgumentError, match="progress must be None, True or False"):
        mmsb.validate(quick=True, only=["purity"], progress=bad)
    with pytest.raises(mmsb.InvalidArgumentError, match="progress must be None, True or False"):
        mmsb.bench.run(quick=True, only="allocation", progress=bad)
    assert capsys.readouterr().err == ""
