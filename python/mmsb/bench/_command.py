"""`mmsb bench`: run, print the table, write the JSON and the plots, compare with an old run.

Exit status: 0 when every result verified (and, with --fail-on-regression, nothing regressed);
1 when a variant produced a wrong result (or a category crashed); 2 on bad usage (an unknown
category, an unreadable or malformed --compare file, a --compare file of the other size: --quick
against full); 3 with --fail-on-regression when an mmsb figure regressed beyond its noise band.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from typing import Optional

from .._outputs import PendingOutput, is_stream, make_folders, remove_empty_folders
from ..errors import InvalidArgumentError, MmsbError

EXIT_FAILED, EXIT_USAGE, EXIT_REGRESSION = 1, 2, 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `mmsb bench` (the parser lives in mmsb.cli)."""
    from ._runner import CATEGORIES

    p.add_argument("--quick", action="store_true", help="small workloads (seconds; as in make test)")
    p.add_argument("--only", action="append", metavar="CATS",
                   help=f"comma-separated categories to run ({', '.join(CATEGORIES)}); repeatable")
    p.add_argument("--json", metavar="OUT",
                   help="results file (default: benchmarks/results/<YYYY-MM-DD>-<host>.json under the working directory)")
    p.add_argument("--compare", metavar="OLD.json", help="compare with an earlier run and flag regressions")
    p.add_argument("--noise-floor", type=float, default=None, metavar="FRACTION",
                   help="smallest noise band of --compare (default 0.10 = 10%%)")
    p.add_argument("--fail-on-regression", action="store_true", help=f"exit {EXIT_REGRESSION} when --compare flags one")
    p.add_argument("--plots", metavar="DIR", help="where the PNG plots go (default: next to the JSON)")
    p.add_argument("--no-plots", action="store_true", help="write no plots")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


def default_json_path(now: Optional[datetime.date] = None) -> str:
    """benchmarks/results/<YYYY-MM-DD>-<host>.json, relative to the working directory."""
    day = (now or datetime.date.today()).isoformat()
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in platform.node() or "host")
    return os.path.join("benchmarks", "results", f"{day}-{host}.json")


def bench_command(args: argparse.Namespace) -> int:
    """Runs `mmsb bench` with parsed arguments; returns the exit status."""
    from . import regress
    from ._runner import parse_only, run

    out = default_json_path() if args.json is None else args.json
    if args.no_plots or (args.plots is None and is_stream(out)):
        plots_dir = None  # a pipe or device (--json /dev/stdout) has no folder to put plots next to
    else:
        plots_dir = args.plots or os.path.dirname(os.path.abspath(out))
    pending = PendingOutput(out, make_folder=True)  # the default path's folders may not exist yet
    try:
        only = parse_only(args.only)
        old = regress.load_results(args.compare) if args.compare else None
        if old is not None:
            regress.require_same_size(old, args.quick)  # refused now, not after minutes of benchmarks
        floor = regress.NOISE_FLOOR if args.noise_floor is None else args.noise_floor
        if not 0 <= floor < 10:
            raise InvalidArgumentError(f"--noise-floor {floor} is not a fraction in [0, 10) (0.10 means 10%)")
        # The outputs are checked before the run, so that a path that cannot be written fails now,
        # not after minutes of benchmarks whose results it would then lose.
        if why := pending.check():
            raise InvalidArgumentError(f"cannot write --json {out!r}: {why}")
        plot_folders = _plot_folders(plots_dir)
    except MmsbError as e:
        pending.discard()
        print(f"mmsb bench: {e}", file=sys.stderr)
        return EXIT_USAGE

    unwritten = None
    try:
        results = run(quick=args.quick, only=only if args.only else None,
                      progress=False if args.no_progress else None)
        # Files first, the table after: a reader that goes away (`| head`) loses no results.
        plots = _plots(results, plots_dir, out) if plots_dir is not None else []
        try:
            pending.write(json.dumps(results, indent=1, default=_plain) + "\n")  # before the table: --json /dev/stdout
        except OSError as e:  # a full disk, a size limit: an older file is kept whole
            unwritten = e.strerror or str(e)
    finally:
        pending.discard()
        remove_empty_folders(plot_folders)  # made for plots that were never written
    print(results.table(), flush=True)
    for p in plots:
        print(f"wrote {p}")
    if unwritten is not None:
        print(f"mmsb bench: cannot write --json {out!r}: {unwritten} (the results above are not saved)",
              file=sys.stderr)
        return EXIT_USAGE  # as for a path refused before the run: 1 means a wrong result
    print(f"wrote {out} (wall time {results['wall_seconds']:.1f} s)")

    status = 0
    if old is not None:
        cmp = regress.compare(old, results, floor)
        print(f"\ncompared with {args.compare}:\n{regress.format_comparison(cmp)}")
        if args.fail_on_regression and not cmp:
            status = EXIT_REGRESSION
    for cat, error in results.failures():
        print(f"mmsb bench: {cat}: {error}", file=sys.stderr)
    return EXIT_FAILED if results.failures() else status


def _plot_folders(path: Optional[str]) -> list[str]:
    """Makes the plots folder (None: no plots) when missing; returns the folders it made.
    InvalidArgumentError when it cannot be made."""
    if path is None:
        return []
    try:
        return make_folders(path)
    except OSError as e:
        raise InvalidArgumentError(f"cannot make the plots folder {path!r}: {e.strerror or e}") from None


def _plain(o: object) -> object:
    """NumPy scalars and arrays as their plain values; anything else as its string."""
    return o.tolist() if hasattr(o, "tolist") else str(o)


def _plots(results: dict, out_dir: str, json_path: str) -> list[str]:
    """Writes the PNG plots (named after the JSON) and lists them in the results; returns their
    paths. A plot that cannot be made costs the plots, never the results."""
    from .plots import write_plots

    prefix = os.path.splitext(os.path.basename(json_path))[0] + "-"
    try:
        paths = write_plots(results, out_dir, prefix)
    except ImportError as e:
        print(f"mmsb bench: no plots: {e} (pip install 'mmsb[bench]')", file=sys.stderr)
        return []
    except OSError as e:
        print(f"mmsb bench: no plots: {e}", file=sys.stderr)
        return []
    if is_stream(json_path):  # no folder for a path relative to it
        results["plots"] = [os.path.abspath(p) for p in paths]
    else:
        results["plots"] = [os.path.relpath(p, os.path.dirname(os.path.abspath(json_path))) for p in paths]
    return paths
