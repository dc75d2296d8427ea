"""The command line: mmsb demo, mmsb info, mmsb inspect (summary, --records, --json, graph records,
damage)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mmsb
from mmsb.cli import main
from mmsb.inspect_cmd import inspect_dir


def run_cli(*args):
    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        rc = main(list(args))
    finally:
        sys.stdout = old
    return rc, out.getvalue()


def make_bus(path):
    with mmsb.Bus(path) as bus:
        p = bus.create_page(data=np.arange(4.0), name="x")
        p.write(0, b"\x01" * 8)
        bus.checkpoint()
        bus.apply_batch(mmsb.DeltaBatch([p.id] * 3, [0, 8, 16], [8] * 3, bytes(24)))
        bus.delete_page(p)
        return bus.lsn


def test_inspect_summary_and_records_cover_every_lsn(tmp_path):
    path = str(tmp_path / "b")
    lsn = make_bus(path)
    rc, text = run_cli("inspect", path)
    assert rc == 0
    assert f"last lsn in the log: {lsn}" in text and "checkpoint lsn" in text
    rc, text = run_cli("inspect", path, "--records", "--json")
    info = json.loads(text)
    covered = []
    for seg in info["segments"]:
        assert seg["torn_tail"] is None
        for rec in seg["dump"]:
            covered.extend(range(rec["first_lsn"], rec["first_lsn"] + rec["lsn_count"]))
    assert covered == list(range(1, lsn + 1))
    ops = [op for seg in info["segments"] for rec in seg["dump"] for op in rec["ops"]]
    assert ops[0].startswith("create page 1") and "batch of 3 rows" in " ".join(ops)
    assert ops[-1] == "delete page 1"
    assert [cp["lsn"] for cp in info["checkpoints"]] == [3]


def test_inspect_names_graph_and_propagation_records(tmp_path):
    """Every op of a graph's life in the record dump: depend, edges, derived deltas, waves
    (eager, deferred and propagate()), metadata set and removed, and a mode change inside a
    transaction."""
    path = str(tmp_path / "g")
    with mmsb.Bus(path) as bus:
        a = bus.create_page(data=np.zeros(2), name="a")
        b = bus.create_page(shape=(2,), dtype="float64", name="b")
        c = bus.create_page(8, name="c")
        bus.depend(b, on=[a], fn=mmsb.ops.copy)
        bus.add_edge(a, c, kind="control")
        a.write(0, np.float64(1).tobytes())
        bus.propagation = "deferred"
        a.write(8, np.float64(2).tobytes())
        bus.propagate()
        bus.remove_edge(a, c)
        c.set_metadata("unit", "m")
        c.set_metadata("unit", None)
        with bus.transaction():
            a.write(0, np.float64(3).tobytes())
            bus.propagation = "eager"
    rc, text = run_cli("inspect", path, "--records", "--json")
    assert rc == 0
    records = [rec["ops"] for seg in json.loads(text)["segments"] for rec in seg["dump"]]
    ids = (a.id, b.id, c.id)
    assert records[3:] == [
        ["depend page %d on 1 parents" % ids[1], "wave (eager)"],
        ["add control edge %d -> %d" % (ids[0], ids[2])],
        ["delta to page %d: 1 runs, 8 B (user)" % ids[0], "derived delta to page %d: 1 runs, 2 B" % ids[1],
         "wave (eager)"],
        ["delta to page %d: 1 runs, 8 B (user)" % ids[0]],
        ["derived delta to page %d: 1 runs, 1 B" % ids[1], "propagate (deferred)"],
        ["remove control edge %d -> %d" % (ids[0], ids[2])],
        ["set metadata 'unit' of page %d" % ids[2]],
        ["remove metadata 'unit' of page %d" % ids[2]],
        ["delta to page %d: 1 runs, 8 B (user)" % ids[0], "propagation mode changes (after deferred changes)"],
    ]


def test_inspect_reports_damage_and_exits_nonzero(tmp_path):
    path = str(tmp_path / "b")
    make_bus(path)
    seg = os.path.join(path, sorted(f for f in os.listdir(path) if f.startswith("seg-"))[0])
    data = bytearray(open(seg, "rb").read())
    data[40] ^= 0x10
    open(seg, "wb").write(data)
    rc, text = run_cli("inspect", path)
    assert rc == 1 and "CORRUPT" in text and seg in text


def test_inspect_of_damage_inside_a_segment_shows_the_records_before_it(tmp_path):
    """A bad record with valid ones after it is corruption: the summary keeps the segment's good
    records before it and says after which lsn the log is damaged, instead of showing nothing."""
    path = str(tmp_path / "b")
    with mmsb.Bus(path) as bus:
        p = bus.create_page(64)
        for i in range(6):
            p.write(0, bytes([i]) * 8)
    info = inspect_dir(path, records=True)
    [seg] = info["segments"]
    third = seg["dump"][3]
    data = bytearray(open(seg["file"], "rb").read())
    data[third["offset"] + 40] ^= 0x01  # inside the body of the record of lsn 4
    open(seg["file"], "wb").write(data)
    rc, text = run_cli("inspect", path, "--records")
    assert rc == 1
    assert f"CORRUPT: segment '{seg['file']}' is corrupt at byte {third['offset']}" in text
    assert f"the log is damaged after lsn {third['first_lsn'] - 1}" in text
    assert "last lsn in the log" not in text
    damaged = inspect_dir(path, records=True)["segments"][0]
    assert damaged["dump"] == seg["dump"][:3] and damaged["records"] == 3
    assert damaged["last_lsn"] == third["first_lsn"] - 1 and damaged["torn_tail"] is None


def test_inspect_reports_a_damaged_checkpoint_and_exits_nonzero(tmp_path):
    path = str(tmp_path / "b")
    make_bus(path)
    ckpt = os.path.join(path, next(f for f in os.listdir(path) if f.endswith(".ckpt")))
    data = bytearray(open(ckpt, "rb").read())
    data[60] ^= 0x01  # inside the first page entry
    open(ckpt, "wb").write(data)
    rc, text = run_cli("inspect", path)
    assert rc == 1 and f"checkpoint {ckpt!r}: DAMAGED:" in text
    rc, text = run_cli("inspect", path, "--json")
    [cp] = json.loads(text)["checkpoints"]
    assert cp["file"] == ckpt and "checksum mismatch" in cp["error"] and "lsn" not in cp


def test_inspect_of_a_path_without_a_bus_says_so_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    for name, why in [("nothing", "no bus directory"), ("afile", "not a directory"),
                      ("empty", "holds no mmsb log or checkpoint")]:
        r = subprocess.run([sys.executable, "-m", "mmsb", "inspect", str(tmp_path / name)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stdout == "", (name, r)
        assert r.stderr.startswith("mmsb inspect: ") and why in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_validate_refuses_a_json_path_it_cannot_write_before_running(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mmsb", "validate", "--quick", "--only", "graph", "--no-progress",
                        "--json", str(tmp_path / "missing" / "out.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot write --json" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "PASS" not in r.stdout  # nothing ran


def test_info_prints_build_info_as_json():
    rc, text = run_cli("info")
    assert rc == 0 and json.loads(text) == mmsb.build_info()


def test_demo_runs_end_to_end_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "mmsb", "demo", "--rows", "20000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for step in ("== 1.", "== 2.", "== 3.", "== 4.", "== 5.", "== 6."):
        assert step in proc.stdout
    assert "bytes, epoch and lsn unchanged: True" in proc.stdout
    assert "'truncated_tail': True" in proc.stdout


def test_validate_refused_for_its_arguments_leaves_an_old_report_alone(tmp_path):
    old = tmp_path / "old.json"
    old.write_text('{"summary": "an earlier run"}')
    new = tmp_path / "new.json"
    for out in (old, new):
        r = subprocess.run([sys.executable, "-m", "mmsb", "validate", "--quick", "--only", "no_such_validator",
                            "--json", str(out)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert old.read_text() == '{"summary": "an earlier run"}' and not new.exists()


def test_inspect_quotes_names_so_that_they_cannot_break_a_line(tmp_path):
    path = str(tmp_path / "b")
    with mmsb.Bus(path) as bus:
        p = bus.create_page(8, name='a"b\nlast lsn in the log: 99\\\'')
        p.set_metadata("k\x01", "v")
    rc, text = run_cli("inspect", path, "--records")
    assert rc == 0
    assert "create page 1 (8 B raw 'a\"b\\nlast lsn in the log: 99\\\\\\'')" in text
    assert "set metadata 'k\\x01' of page 1" in text
    assert [line for line in text.splitlines() if line.startswith("last lsn")] == ["last lsn in the log: 2"]


@pytest.mark.parametrize("name", ["evil\u202egpj.exe", "a\u2028b", "x\u2066y\u2069", "c1\x85z", "\u200fr", "caf\u00e9 \u2603"])
def test_inspect_quotes_names_as_python_does_bidi_overrides_and_line_separators_included(tmp_path, name):
    # a direction override would make a terminal show the name reordered; Python's repr escapes it
    path = str(tmp_path / "b")
    with mmsb.Bus(path) as bus:
        bus.create_page(8, name=name)
    rc, text = run_cli("inspect", path, "--records")
    assert rc == 0 and f"(8 B raw {name!r})" in text, text


def test_inspect_quotes_paths_and_file_names_so_that_they_cannot_break_a_line(tmp_path):
    forged = "\nlast lsn in the log: 99"
    path = str(tmp_path / f"b{forged}")
    lsn = make_bus(path)
    (tmp_path / f"b{forged}" / f"notes{forged}").write_text("x")
    rc, text = run_cli("inspect", path)
    assert rc == 0
    lines = text.splitlines()
    assert lines[0] == f"bus directory {path!r}"
    assert lines[-2] == f"  other files: {f'notes{forged}'!r}"
    assert [line for line in lines if line.startswith("last lsn")] == [f"last lsn in the log: {lsn}"]
    empty = tmp_path / f"empty{forged}"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "mmsb", "inspect", str(empty)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stderr == f"mmsb inspect: {str(empty)!r} holds no mmsb log or checkpoint\n"


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`mmsb inspect ... | head -1`: the closed pipe ends the command with the status of SIGPIPE
    (141), not a BrokenPipeError traceback and status 1 (which means "damaged")."""
    path = str(tmp_path / "b")
    with mmsb.Bus(path) as bus:
        p = bus.create_page(8)
        for i in range(3000):  # more lines than a pipe buffers
            p.write(0, bytes([i % 256]))
    proc = subprocess.Popen([sys.executable, "-m", "mmsb", "inspect", path, "--records"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"bus directory")
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and b"Traceback" not in err, err


def test_ctrl_c_ends_a_command_with_one_line_and_status_130(tmp_path):
    import signal
    import time

    script = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from mmsb.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", script, "validate", "--no-progress",
                             "--json", str(tmp_path / "v.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "v.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the path is checked (the file made) just before the validators start
    time.sleep(1)  # inside the first (full-size) validator
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "mmsb validate: interrupted" in err and "Traceback" not in err, err
    assert not (tmp_path / "v.json").exists()  # the file it made to check the path is gone again


def test_inspect_of_a_segment_damaged_at_its_first_record_shows_no_lsn_range(tmp_path):
    path = str(tmp_path / "b")
    with mmsb.Bus(path) as bus:
        p = bus.create_page(64)
        for i in range(3):
            p.write(0, bytes([i]) * 8)
    [seg] = inspect_dir(path, records=True)["segments"]
    first = seg["dump"][0]
    data = bytearray(open(seg["file"], "rb").read())
    data[first["offset"] + 40] ^= 0x01
    open(seg["file"], "wb").write(data)
    rc, text = run_cli("inspect", path)
    [line] = [line for line in text.splitlines() if line.startswith("  segment from")]
    assert rc == 1 and f"from lsn {first['first_lsn']}" in line and " 0 records" in line and ".." not in line
    assert "the log is damaged after lsn 0" in text


def test_inspect_reports_lsns_missing_between_segments_as_mmsb_open_does(tmp_path):
    """A segment lost from the middle of the log (no checkpoint covers it): open refuses the log,
    and inspect says so too, after the lsn the log reaches before the gap. With the checkpoint
    that covers it kept, the gap is no damage to either."""
    path = str(tmp_path / "b")
    with mmsb.Bus(path) as bus:
        p = bus.create_page(16, name="x")
        for i in range(3):
            p.write(i, b"a")
            bus.checkpoint()
        p.write(5, b"b")
    segs = sorted(f for f in os.listdir(path) if f.startswith("seg-"))
    os.remove(os.path.join(path, segs[1]))  # lsn 3
    rc, text = run_cli("inspect", path)
    assert rc == 0 and "last lsn in the log: 5" in text  # the newest checkpoint covers lsn 3
    with mmsb.open(path) as bus:
        assert bus.lsn == 5
    for f in os.listdir(path):
        if f.endswith(".ckpt"):
            os.remove(os.path.join(path, f))
    with pytest.raises(mmsb.LogCorruptError, match="a segment is missing"):
        mmsb.open(path)
    rc, text = run_cli("inspect", path)
    assert rc == 1 and "records in between are missing" in text and repr(os.path.join(path, segs[2])) in text
    assert "the log is damaged after lsn 2" in text
    assert inspect_dir(path)["segments"][1]["gap_after"] == 2


def test_inspect_and_open_agree_that_a_short_segment_header_holds_nothing(tmp_path):
    """A crash while a rotation wrote the next segment's header leaves it short: nothing was
    committed there, and the bus opens with everything before it."""
    path = str(tmp_path / "b")
    with mmsb.Bus(path) as bus:
        bus.create_page(16, name="x").write(0, b"abc")
        last = bus.lsn
    stub = os.path.join(path, f"seg-{last + 1:020d}.log")
    open(stub, "wb").write(b"MMSB")
    rc, text = run_cli("inspect", path)
    assert rc == 0 and f"from lsn {last + 1}" in text and "incomplete segment header" in text
    with mmsb.open(path) as bus:
        assert bus.lsn == last and bus.page("x").read(0, 3) == b"abc"
        bus.page("x").write(3, b"d")
    with mmsb.open(path) as bus:
        assert bus.page("x").read(0, 4) == b"abcd"
