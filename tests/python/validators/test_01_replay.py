"""Validator 1 (replay) at quick size: every replayed, time-travelled and recovered state equals
the recorded one exactly, and the validator notices a corrupt byte, a replay one lsn short and
a replay that ignores the checkpoints."""

from __future__ import annotations

import os
import shutil

import mmsb
from mmsb.validation import v01_replay, validate


def run_replay() -> dict:
    (result,) = validate(quick=True, only=["replay"], progress=False)["results"]
    assert result["error"] is None, result["details"].get("traceback")
    return result


def test_replay_from_every_checkpoint_and_from_empty_is_exact():
    r = run_replay()
    m, d = r["metrics"], r["details"]
    assert set(m) == {"hash_mismatches", "l2_divergence"}
    assert m["hash_mismatches"] == 0
    assert m["l2_divergence"] == 0.0
    assert r["passed"]
    assert d["cycles"] == 100 and d["pages"] == 32 and len(d["checkpoint_lsns"]) == 10
    # the final state was replayed from each checkpoint, newest first, and from empty
    assert d["replay_start_lsns"] == sorted(d["checkpoint_lsns"], reverse=True) + [0]
    assert d["states_compared"] > 2 * 100  # the live bus and bus.at after every cycle, and more


def test_one_corrupt_byte_in_a_replayed_state_is_counted(monkeypatch):
    real = v01_replay.bus_pages

    def corrupted(bus):
        pages = real(bus)
        if bus.read_only and pages:  # replays and time travel only, not the live bus
            pid, epoch, data = pages[0]
            data = data.copy()
            data[min(7, data.size - 1)] ^= 0x40  # the exponent byte of a float64 element
            pages[0] = (pid, epoch, data)
        return pages

    monkeypatch.setattr(v01_replay, "bus_pages", corrupted)
    r = run_replay()
    assert r["metrics"]["hash_mismatches"] > 100
    assert r["metrics"]["l2_divergence"] > 0  # page 1 is a float64 page
    assert not r["passed"]


def test_a_replay_that_stops_one_lsn_short_is_counted(monkeypatch):
    real = mmsb.replay

    def short(path, to=None, **kwargs):
        return real(path, to=None if to is None else max(0, to - 1), **kwargs)

    monkeypatch.setattr(mmsb, "replay", short)
    r = run_replay()
    assert r["metrics"]["hash_mismatches"] > 10
    assert not r["passed"]


def test_a_replay_that_ignores_the_checkpoints_is_counted(tmp_path, monkeypatch):
    real = mmsb.replay

    def from_empty(path, to=None, **kwargs):  # the same states, all replayed from lsn 0
        copy = tmp_path / f"copy-{len(os.listdir(tmp_path))}"
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("ckpt-*"))
        return real(copy, to=to, **kwargs)

    monkeypatch.setattr(mmsb, "replay", from_empty)
    r = run_replay()
    assert r["details"]["replay_start_lsns"] == [0] * 11
    assert r["metrics"]["hash_mismatches"] == 10  # every replay asked to start at a checkpoint
    assert not r["passed"]
