"""What the command line writes: a report file is replaced whole or not at all (a full disk, a
size limit or an interrupt keeps the previous one), nothing made for a refused run is left, and
standard output that cannot be written (a closed pipe, a full disk) ends the command in one line
with its own status, never a traceback."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading

import pytest

from mmsb._outputs import GuardedStdout, PendingOutput, StdoutLost, make_folders, remove_empty_folders

# A child that may write at most 200 bytes to any file (RLIMIT_FSIZE; SIGXFSZ ignored, so that a
# longer write fails with EFBIG instead of killing it): a disk that fills up mid-report.
LIMITED = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
           "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200)); ")


def test_pending_output_is_removed_only_when_it_made_an_empty_file(tmp_path):
    fresh = PendingOutput(str(tmp_path / "new.json"))
    assert fresh.check() is None and (tmp_path / "new.json").exists()
    fresh.discard()
    assert not (tmp_path / "new.json").exists()
    (tmp_path / "old.json").write_text("kept")
    old = PendingOutput(str(tmp_path / "old.json"))
    assert old.check() is None
    old.discard()
    assert (tmp_path / "old.json").read_text() == "kept"
    done = PendingOutput(str(tmp_path / "done.json"))
    done.check()
    done.write("{}")
    done.discard()
    assert (tmp_path / "done.json").read_text() == "{}"
    assert "Not a directory" in PendingOutput(str(tmp_path / "old.json" / "x")).check()
    assert PendingOutput("").check() == "the path is empty"


def test_folders_made_for_an_output_go_when_it_is_discarded_and_stay_when_written(tmp_path):
    out = PendingOutput(str(tmp_path / "a" / "b" / "r.json"), make_folder=True)
    assert out.check() is None and (tmp_path / "a" / "b" / "r.json").exists()
    out.discard()
    assert os.listdir(tmp_path) == []
    out = PendingOutput(str(tmp_path / "a" / "b" / "r.json"), make_folder=True)
    out.check()
    out.write("x")
    out.discard()
    assert (tmp_path / "a" / "b" / "r.json").read_text() == "x"
    # A folder someone else filled meanwhile is kept.
    made = make_folders(str(tmp_path / "c" / "d"))
    assert made == [str(tmp_path / "c"), str(tmp_path / "c" / "d")]
    (tmp_path / "c" / "other").write_text("theirs")
    remove_empty_folders(made)
    assert os.listdir(tmp_path / "c") == ["other"]
    with pytest.raises(NotADirectoryError):
        make_folders(str(tmp_path / "a" / "b" / "r.json" / "x"))


def test_folders_made_before_a_failing_one_are_removed_again(tmp_path, monkeypatch):
    made = []
    real = os.mkdir

    def third_fails(path, *args, **kwargs):
        if len(made) == 2:
            raise PermissionError(13, "Permission denied", path)
        real(path, *args, **kwargs)
        made.append(path)

    monkeypatch.setattr(os, "mkdir", third_fails)
    with pytest.raises(PermissionError):
        make_folders(str(tmp_path / "a" / "b" / "c"))
    assert len(made) == 2 and os.listdir(tmp_path) == []


def test_write_replaces_the_file_whole_keeping_its_permissions_and_links(tmp_path):
    old = tmp_path / "r.json"
    old.write_text("an earlier report, longer than the new one")
    os.chmod(old, 0o640)
    link = tmp_path / "latest.json"
    link.symlink_to(old)
    out = PendingOutput(str(link))
    assert out.check() is None
    out.write("new")
    assert old.read_text() == "new" and link.is_symlink()
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "r.json"]  # no temporary file left


def test_a_folder_that_takes_no_new_file_gets_its_file_written_in_place(tmp_path, monkeypatch):
    # A folder the user may not add to, holding a file they may write (checked by check()):
    # no temporary file can be made beside it, so the report is written where it is.
    old = tmp_path / "r.json"
    old.write_text("an earlier report")
    out = PendingOutput(str(old))
    assert out.check() is None

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)  # root ignores a chmod of the folder
    out.write("new")
    assert old.read_text() == "new" and os.listdir(tmp_path) == ["r.json"]


def test_a_descriptor_is_written_in_place_after_what_was_written_to_it_before(tmp_path):
    # `cmd > out.txt` with `--json /dev/stdout`: out.txt holds what `echo text; cat report`
    # would leave, and what is printed after the report follows it.
    with open(tmp_path / "out.txt", "wb") as f:
        os.write(f.fileno(), b"printed before\n")
        out = PendingOutput(f"/dev/fd/{f.fileno()}")
        assert out.check() is None
        out.write("{}\n")
        os.write(f.fileno(), b"printed after\n")
    assert (tmp_path / "out.txt").read_text() == "printed before\n{}\nprinted after\n"
    assert os.listdir(tmp_path) == ["out.txt"]
    read, write = os.pipe()  # /dev/stdout piped to a reader, or the shell's >(...)
    with open(read, "rb") as reader:
        out = PendingOutput(f"/dev/fd/{write}")
        assert out.check() is None
        out.write("{}\n")
        os.close(write)
        assert reader.read() == b"{}\n"


def test_a_descriptor_not_open_for_writing_is_refused_by_check():
    read, write = os.pipe()
    assert PendingOutput(f"/dev/fd/{read}").check() == "Bad file descriptor"
    os.close(read)
    os.close(write)
    assert PendingOutput(f"/dev/fd/{write}").check() == "Bad file descriptor"


def test_check_leaves_a_fifo_unopened_so_that_its_reader_gets_the_whole_report(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()  # waits in open() for a writer
    out = PendingOutput(str(fifo))
    assert out.check() is None
    reader.join(0.5)
    assert reader.is_alive(), f"check() opened the FIFO: its reader ended with {got}"
    out.write("the report")
    reader.join(10)
    assert got == ["the report"]


@pytest.mark.parametrize("stdout", ["pipe", "file"])
def test_validate_json_to_dev_stdout_follows_the_printed_lines(tmp_path, stdout):
    """docs/api.md: `--json /dev/stdout` is written in place: the report between the lines and
    the summary, whatever standard output is."""
    args = [sys.executable, "-m", "mmsb", "validate", "--quick", "--only", "purity", "--no-progress",
            "--json", "/dev/stdout"]
    if stdout == "pipe":
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        text = r.stdout
    else:
        with open(tmp_path / "out.txt", "w") as f:
            r = subprocess.run(args, stdout=f, stderr=subprocess.PIPE, text=True, timeout=120)
        text = (tmp_path / "out.txt").read_text()
    assert r.returncode == 0 and r.stderr == "", r.stderr
    first, *report, summary = text.splitlines()
    assert first.startswith("✓  4 purity") and summary == "1/1 PASS"
    assert json.loads("\n".join(report))["summary"] == "1/1 PASS"


def test_an_interrupt_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    old = tmp_path / "r.json"
    old.write_text("previous")
    out = PendingOutput(str(old))
    out.check()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        out.write("x" * 100_000)
    assert old.read_text() == "previous" and os.listdir(tmp_path) == ["r.json"]


def test_a_write_that_fails_for_space_keeps_the_previous_file(tmp_path):
    old = tmp_path / "r.json"
    old.write_text("previous")
    script = LIMITED + ("from mmsb._outputs import PendingOutput; out = PendingOutput(sys.argv[1]); "
                        "assert out.check() is None\ntry:\n out.write('x' * 10_000)\n"
                        "except OSError as e:\n print(e.strerror)")
    r = subprocess.run([sys.executable, "-c", script, str(old)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "File too large", r
    assert old.read_text() == "previous" and os.listdir(tmp_path) == ["r.json"]


def test_validate_whose_report_cannot_be_written_keeps_the_old_one_and_says_so(tmp_path):
    old = tmp_path / "r.json"
    old.write_text('{"summary": "an earlier run"}')
    script = LIMITED + "from mmsb.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", script, "validate", "--quick", "--only", "graph", "--no-progress",
                        "--json", str(old)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [f"mmsb validate: cannot write --json {str(old)!r}: File too large"]
    assert "1/1 PASS" in r.stdout  # the results were shown, and the summary still is
    assert old.read_text() == '{"summary": "an earlier run"}' and os.listdir(tmp_path) == ["r.json"]


def test_a_full_standard_output_ends_the_command_in_one_line():
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "mmsb", "info"], stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["mmsb info: cannot write standard output: No space left on device"]


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_help_that_cannot_be_written_is_answered_like_any_other_output(buffered):
    # Buffered, the help fails when flushed at the end; unbuffered, in argparse's own write,
    # which drops the error.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    for args in (["--help"], ["inspect", "--help"]):
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, "-m", "mmsb", *args], stdout=full, stderr=subprocess.PIPE,
                               text=True, env=env, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.splitlines() == ["mmsb: cannot write standard output: No space left on device"]
        read, write = os.pipe()
        os.close(read)  # a reader that went away before the help was written
        r = subprocess.run([sys.executable, "-m", "mmsb", *args], stdout=write, stderr=subprocess.PIPE,
                           text=True, env=env, timeout=60)
        os.close(write)
        assert r.returncode == 141 and r.stderr == "", (args, r.stderr)


def test_validate_with_json_goes_on_after_its_reader_leaves_and_writes_the_report(tmp_path):
    """`mmsb validate --json r.json | head -0`: the lines are lost, the report is not."""
    report = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "mmsb", "validate", "--quick", "--no-progress",
                             "--only", "graph", "purity", "--json", str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the first line: importing mmsb alone takes longer than this
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141 and err == b"", err
    assert [r["name"] for r in json.loads(report.read_text())["results"]] == ["graph", "purity"]


def test_guarded_stdout_answers_a_failure_once_and_drops_what_follows():
    class Broken(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    guard = GuardedStdout(Broken())
    with pytest.raises(StdoutLost) as lost:
        guard.write("a")
    assert lost.value.error.errno == 32 and guard.lost is lost.value.error
    assert guard.write("bc") == 2  # dropped, not raised again
    guard.flush()
