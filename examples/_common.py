"""Helpers shared by the example applications: command line, bus directory, state capture, checks.

Every example builds its result through mmsb and then checks it against an independent plain
NumPy/Python computation; a mismatch raises ``CheckFailed`` and ``run`` turns it into exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import mmsb

PageState = Dict[str, Tuple[bytes, int]]


class CheckFailed(AssertionError):
    """An example's result disagrees with its independent recomputation. ``problems`` lists each
    disagreement (the first few are in the message)."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        self.what = what
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{what}: {len(self.problems)} mismatch(es): {shown}{more}")


def check(what: str, problems: Sequence[str]) -> None:
    """Raise CheckFailed naming ``what`` if ``problems`` is not empty."""
    if problems:
        raise CheckFailed(what, problems)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (a clear message otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parser(description: str, size_default: int, size_help: str) -> argparse.ArgumentParser:
    """The options every example takes: --size, --seed, --dir."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", type=positive_int, default=size_default, help=size_help)
    p.add_argument("--seed", type=int, default=0, help="random seed (the run is a pure function of it)")
    p.add_argument("--dir", default=None,
                   help="bus directory to create (must not exist or be empty; default: a temporary one, removed at exit)")
    return p


@contextlib.contextmanager
def bus_directory(path: Optional[str], name: str) -> Iterator[str]:
    """Yield the bus directory to use. A given ``path`` is kept after the run so it can be
    inspected (`mmsb inspect PATH`); ``run`` has checked that it is new or empty, because the
    examples compare their replay with a run that starts from lsn 0."""
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"mmsb-{name}-") as tmp:
        yield os.path.join(tmp, f"{name}.mmsb")


def page_key(page: "mmsb.Page") -> str:
    return page.name if page.name is not None else f"#{page.id}"


def capture(bus: "mmsb.Bus") -> PageState:
    """Bytes and epoch of every live page, keyed by name (or ``#id``)."""
    out: PageState = {}
    for page in bus.pages():
        data, epoch = page.snapshot()
        out[page_key(page)] = (data.tobytes(), epoch)
    return out


def compare_states(expected: Mapping[str, Tuple[bytes, int]], actual: Mapping[str, Tuple[bytes, int]]) -> List[str]:
    """Every page missing, extra, or differing in bytes or epoch between two captures."""
    problems = [f"page {k} missing" for k in expected if k not in actual]
    problems += [f"unexpected page {k}" for k in actual if k not in expected]
    for k in expected:
        if k in actual and expected[k] != actual[k]:
            (eb, ee), (ab, ae) = expected[k], actual[k]
            what = "bytes" if eb != ab else "epoch"
            problems.append(f"page {k}: {what} differ (epoch {ee} expected, {ae} found)")
    return problems


def compare_arrays(what: str, expected: np.ndarray, actual: np.ndarray) -> List[str]:
    """Exact comparison (shape and every element; NaN never matches). The examples keep their
    numbers exactly representable so that bit equality, not a tolerance, is the check."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.shape != actual.shape:
        return [f"{what}: shape {actual.shape} != expected {expected.shape}"]
    bad = np.argwhere(expected != actual)
    if bad.size == 0:
        return []
    idx = tuple(bad[0])
    return [f"{what}: {len(bad)} element(s) differ, first at {idx}: {actual[idx]!r} != expected {expected[idx]!r}"]


def say(text: str = "") -> None:
    """Narration line (flushed so a caller sees progress as it happens)."""
    print(text, flush=True)


def run(main: Callable[[argparse.Namespace], None], build_parser: Callable[[], argparse.ArgumentParser],
        argv: Optional[Sequence[str]]) -> int:
    """Parse ``argv``, run ``main`` and map its outcome to an exit code: 0 when every check
    passed, 1 on CheckFailed (the mismatches are printed), 2 on bad arguments (argparse)."""
    p = build_parser()
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.dir is not None and os.path.exists(args.dir) and (not os.path.isdir(args.dir) or os.listdir(args.dir)):
        p.error(f"--dir {args.dir!r} exists and is not an empty directory")
    try:
        main(args)
    except CheckFailed as e:
        say(f"CHECK FAILED: {e}")
        return 1
    say("all checks passed")
    return 0
