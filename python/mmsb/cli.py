"""Command line: `mmsb demo`, `mmsb inspect PATH`, `mmsb info` (also `python -m mmsb ...`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from . import build_info
from .demo import run_demo


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mmsb", description="Memory-Mapped State Bus")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a short narrated run of the main ideas")
    demo.add_argument("--rows", type=int, default=1_000_000, help="deltas in the batch step")
    sub.add_parser("info", help="print build_info() as JSON")
    insp = sub.add_parser("inspect", help="summary (and record dump) of a bus directory")
    insp.add_argument("path")
    insp.add_argument("--records", action="store_true", help="dump every record")
    insp.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(rows=args.rows, out=sys.stdout)
    if args.command == "inspect":
        from .inspect_cmd import inspect_dir, print_inspection

        return print_inspection(inspect_dir(args.path, args.records), sys.stdout, args.json)
    if args.command == "info":
        print(json.dumps(build_info(), indent=2))
        return 0
    parser.error(f"unknown command {args.command}")
    return 2
