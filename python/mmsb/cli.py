"""Command line: `mmsb validate`, `mmsb bench`, `mmsb demo`, `mmsb inspect PATH`, `mmsb info`
(also `python -m mmsb ...`)."""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
from typing import Optional, Sequence

from . import build_info
from ._outputs import PendingOutput, StdoutLost, guarded_stdout
from .demo import positive_int, run_demo


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mmsb", description="Memory-Mapped State Bus")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a short narrated run of the main ideas")
    demo.add_argument("--rows", type=positive_int, default=None,
                      help="deltas in the batch step (default 1,000,000; 50,000 with --quick)")
    demo.add_argument("--quick", action="store_true", help="smaller sizes for every step (CI, tests)")
    sub.add_parser("info", help="print build_info() as JSON")
    val = sub.add_parser("validate", help="run the ten validators against their targets (DESIGN §5)")
    val.add_argument("--quick", action="store_true", help="shrunk workloads (CI)")
    val.add_argument("--targets", help="targets JSON (default: the packaged benchmarks_targets.json)")
    val.add_argument("--json", metavar="OUT", help="write the full report (machine info included) here")
    val.add_argument("--only", nargs="+", metavar="NAME", help="run only these validators")
    val.add_argument("--no-progress", action="store_true", help="no progress bars")
    bench = sub.add_parser("bench", help="the side-by-side comparison (DESIGN §5): mmsb vs NumPy, memcpy floors, "
                                         "SQLite, LMDB, oneTBB; JSON, plots, regressions")
    from .bench._command import add_arguments as bench_arguments

    bench_arguments(bench)
    insp = sub.add_parser("inspect", help="summary (and record dump) of a bus directory")
    insp.add_argument("path")
    insp.add_argument("--records", action="store_true", help="dump every record")
    insp.add_argument("--json", action="store_true", help="machine-readable output")
    args = None
    with guarded_stdout() as stdout:
        try:
            # Parsed inside the guard: argparse drops a failed write of `--help` silently, and
            # the guard makes it StdoutLost, answered as for any command's output.
            args = parser.parse_args(argv)
            status = _run(parser, args)
            sys.stdout.flush()  # here, where a failure is answered, not at exit
        except SystemExit:  # `--help` (its text is still buffered), or a usage error
            try:
                sys.stdout.flush()
            except StdoutLost:
                pass
            else:
                raise
        except StdoutLost:
            pass
        except KeyboardInterrupt:
            # Ctrl-C: one line instead of a traceback, the shell's status for SIGINT. What the
            # command was writing is not left half-made (outputs are written at the end, whole).
            print(f"{_name(args)}: interrupted", file=sys.stderr)
            return 128 + signal.SIGINT
    if stdout.lost is None:
        return status
    if stdout.lost.errno == errno.EPIPE:
        # The reader of stdout went away (`mmsb ... | head`): files were written before the
        # printing that failed. Stop quietly, with the status of a process SIGPIPE ended.
        return 128 + signal.SIGPIPE
    print(f"{_name(args)}: cannot write standard output: {stdout.lost.strerror or stdout.lost}", file=sys.stderr)
    return 2


def _name(args: Optional[argparse.Namespace]) -> str:
    """How a message names the command: "mmsb" alone while the arguments are still parsed."""
    return "mmsb" if args is None else f"mmsb {args.command}"


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "demo":
        return run_demo(rows=args.rows, out=sys.stdout, quick=args.quick)
    if args.command == "inspect":
        return _inspect(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "bench":
        from .bench._command import bench_command

        return bench_command(args)
    if args.command == "info":
        print(json.dumps(build_info(), indent=2))
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


def _inspect(args: argparse.Namespace) -> int:
    """Exit 0 for an intact bus directory, 1 for damage it lists, 2 (one line on stderr, no
    traceback) for a path that holds no bus."""
    from .errors import MmsbError
    from .inspect_cmd import inspect_dir, print_inspection

    try:
        info = inspect_dir(args.path, args.records)
    except MmsbError as e:
        print(f"mmsb inspect: {e}", file=sys.stderr)
        return 2
    if not info["segments"] and not info["checkpoints"]:
        print(f"mmsb inspect: {args.path!r} holds no mmsb log or checkpoint", file=sys.stderr)
        return 2
    return print_inspection(info, sys.stdout, args.json)


def _validate(args: argparse.Namespace) -> int:
    """One ✓/✗ line per validator as it finishes, the N/10 PASS summary, exit 0 only if all pass."""
    from .errors import MmsbError
    from .validation import ValidationReport, validate

    out = PendingOutput(args.json) if args.json is not None else None

    def show(result: dict) -> None:
        try:
            print(ValidationReport(results=[result], summary="").lines()[0], flush=True)
        except StdoutLost:
            if out is None:
                raise  # nobody is left to see the results: stop
            # else go on: the report is wanted in the --json file (`... --json r.json | head -1`)

    try:
        if out is not None and (why := out.check()):
            print(f"mmsb validate: cannot write --json {args.json!r}: {why}", file=sys.stderr)
            return 2
        report = validate(args.targets, quick=args.quick, progress=False if args.no_progress else None,
                          only=args.only, on_result=show)
        unwritten = None
        if out is not None:  # written first: the summary's printing may fail (a closed pipe)
            try:
                out.write(report.to_json() + "\n")  # a line of its own before the summary (--json /dev/stdout)
            except OSError as e:  # a full disk, a size limit: an older report is kept whole
                unwritten = e.strerror or str(e)
    except MmsbError as e:
        print(f"mmsb validate: {e}", file=sys.stderr)
        return 2
    finally:
        if out is not None:
            out.discard()  # a run refused, failed or interrupted leaves nothing behind
    print(report["summary"])
    if unwritten is not None:
        print(f"mmsb validate: cannot write --json {args.json!r}: {unwritten}", file=sys.stderr)
        return 2
    return 0 if report else 1
