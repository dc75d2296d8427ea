"""Helpers of `mmsb demo`: the narrating, self-checking Tour, the NumPy reference models every
claim is checked against, the crashing child process and the provenance tree printer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any, List, NamedTuple, Optional, TextIO, Tuple

import numpy as np

from .errors import InvalidArgumentError


class Sizes(NamedTuple):
    """How big each step is: `quick` shrinks them for CI and tests."""

    rows: int  # deltas in the columnar batch
    batch_pages: int  # 4 KiB pages the batch is spread over
    acks: int  # commits the crashing child acknowledges before it is killed
    checkpoint_at: int  # the child checkpoints after this many deltas


# How much the batch step's peak memory grows per row (measured: the 64-byte payload, the page
# and slot drawn for it, the batch's id, offset and length columns, and the in-memory bus's log of
# both passes). A --rows that cannot fit is refused before the tour starts, not as a NumPy
# MemoryError halfway through it.
BATCH_BYTES_PER_ROW = 370


def physical_memory() -> Optional[int]:
    """This machine's memory in bytes; None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def sizes(rows: Optional[int], quick: bool) -> Sizes:
    """The step sizes for `mmsb demo [--quick] [--rows N]` (an explicit `rows` wins)."""
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise InvalidArgumentError(f"rows must be a positive int; got {rows!r}")
    memory = physical_memory()
    if rows is not None and memory is not None and rows * BATCH_BYTES_PER_ROW > memory:
        raise InvalidArgumentError(f"rows = {rows:,} needs about {rows * BATCH_BYTES_PER_ROW / 2**30:,.0f} GiB in "
                                   f"the batch step; this machine has {memory / 2**30:,.0f} GiB")
    if quick:
        return Sizes(rows or 50_000, 1_024, 120, 50)
    return Sizes(rows or 1_000_000, 16_384, 300, 100)


_ANSI = {"head": "\033[1;36m", "ok": "\033[32m", "bad": "\033[1;31m", "end": "\033[0m"}


class Tour:
    """Writes the narration and records every check: `failures` lists the claims that did not hold.
    Colors only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        isatty = getattr(out, "isatty", None)
        self.color = bool(isatty and isatty()) and not os.environ.get("NO_COLOR")
        self.checks = 0
        self.failures: List[str] = []

    def _paint(self, kind: str, text: str) -> str:
        return f"{_ANSI[kind]}{text}{_ANSI['end']}" if self.color else text

    def heading(self, title: str) -> None:
        self.out.write("\n" + self._paint("head", f"== {title}") + "\n")

    def say(self, text: str) -> None:
        """Narration: what the step shows and why it matters (plain text: it is what a newcomer reads)."""
        self.out.write(text + "\n")

    def show(self, text: str) -> None:
        """A value read back from the bus."""
        self.out.write(f"   {text}\n")

    def check(self, claim: str, ok: bool, detail: str = "") -> bool:
        """Print ✓ claim, or ✗ claim with what differed; a failed claim makes the demo exit 1."""
        self.checks += 1
        if ok:
            self.out.write(f"   {self._paint('ok', '✓')} {claim}\n")
        else:
            self.failures.append(claim)
            self.out.write(f"   {self._paint('bad', '✗')} {claim}" + (f": {detail}" if detail else "") + "\n")
        return ok

    def same(self, claim: str, got: Any, want: Any, rtol: float = 0.0) -> bool:
        """Check that two arrays are equal (within `rtol` for floats), naming the first difference."""
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            return self.check(claim, False, f"shape {got.shape} != expected {want.shape}")
        equal = np.isclose(got, want, rtol=rtol, atol=0.0) if rtol else got == want
        bad = np.argwhere(~equal)
        if bad.size == 0:
            return self.check(claim, True)
        at = tuple(int(i) for i in bad[0])
        return self.check(claim, False, f"{len(bad)} of {got.size} elements differ; first at index "
                                        f"{at[0] if len(at) == 1 else at}: got {got[at]!r}, expected {want[at]!r}")

    def summary(self, elapsed_s: float) -> int:
        """The closing line; the exit status: 0 if every check held, else 1."""
        if self.failures:
            self.out.write(self._paint("bad", f"\n✗ {len(self.failures)} of {self.checks} checks failed "
                                              f"({elapsed_s:.1f} s):") + "\n")
            for claim in self.failures:
                self.out.write(f"   - {claim}\n")
            return 1
        self.out.write(f"\n{self._paint('ok', '✓')} all {self.checks} checks held ({elapsed_s:.1f} s)\n")
        return 0


# NumPy reference models: the demo recomputes what the bus claims, independently of the engine.

def min_plus_reference(parents: List[np.ndarray], weights: List[float]) -> np.ndarray:
    """Tropical ⊕ = min, ⊗ = +: child = min_i(w_i + parent_i), elementwise."""
    return np.min([w + p for w, p in zip(weights, parents)], axis=0)


def sum_product_reference(parents: List[np.ndarray], weights: List[float]) -> np.ndarray:
    """Ordinary ⊕ = +, ⊗ = ×: child = Σ_i w_i · parent_i, elementwise."""
    return np.sum([w * p for w, p in zip(weights, parents)], axis=0)


def batch_reference(n_pages: int, page_index: np.ndarray, slots: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Pages (n_pages × 4096 bytes, zero at start) after 64-byte rows written to (page, slot) in
    order: the last write of each slot wins."""
    key = page_index * 64 + slots
    last = np.full(n_pages * 64, -1, np.int64)
    np.maximum.at(last, key, np.arange(key.size))  # ufunc.at: defined for repeated indices
    model = np.zeros((n_pages * 64, 64), np.uint8)
    hit = last >= 0
    model[hit] = rows[last[hit]]
    return model.reshape(n_pages, 4096)


def counter_reference(k: int) -> np.ndarray:
    """The crashing child's page after its first k deltas: delta i writes float64 i into slot
    i % 64, so slot s holds the last i <= k with i ≡ s (mod 64), or 0."""
    s = np.arange(64)
    last = k - (k - s) % 64
    return np.where(last >= 1, last, 0).astype(np.float64)


# The child writes delta i, prints "ack LSN" once the commit has returned (with durability="flush"
# the record has been handed to the OS, so it survives the process being killed), and would go on
# for a long time: the parent kills it mid-run.
_CHILD = r"""
import sys
import numpy as np
import mmsb
path, checkpoint_at = sys.argv[1], int(sys.argv[2])
bus = mmsb.Bus(path, durability="flush")
page = bus.create_page(shape=(64,), dtype="float64", name="counter")
print("ready", bus.lsn, flush=True)
for i in range(1, 10_000_000):
    page.write(8 * (i % 64), np.float64(i).tobytes())
    if i == checkpoint_at:
        bus.checkpoint()
    print("ack", bus.lsn, flush=True)
"""


class CrashRun(NamedTuple):
    pid: int
    returncode: Optional[int]
    base_lsn: int  # the lsn once the page exists: delta i has lsn base_lsn + i
    acked: List[int]  # every lsn the child printed, in order
    stderr: str


def crash_child(path: str, acks: int, checkpoint_at: int, timeout_s: float = 60.0) -> CrashRun:
    """Start a child that commits to a bus at `path`, read `acks` acknowledgements, SIGKILL it, and
    collect every acknowledgement it printed before it died."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, path, str(checkpoint_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(timeout_s, proc.kill)  # a hung child must not hang the demo
    guard.start()
    lines: List[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if len(lines) > acks:  # "ready" plus `acks` acknowledgements
                break
        proc.send_signal(signal.SIGKILL)
        # Read through the same buffered stream: lines it has read ahead are acknowledgements too
        # (communicate() would read the raw pipe and miss them).
        lines += proc.stdout.read().splitlines()
        err = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    finally:
        guard.cancel()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    words = [line.split() for line in lines if line.strip()]
    base = int(words[0][1]) if words and words[0][0] == "ready" else 0
    acked = [int(w[1]) for w in words if len(w) == 2 and w[0] == "ack"]
    return CrashRun(proc.pid, proc.returncode, base, acked, err.strip())


def provenance_tree(prov: Any, name_of: Any) -> List[str]:
    """The provenance DAG as indented lines from the root: page, epoch, lsn, source; a node
    reached twice is printed once and then referred to."""
    lines: List[str] = []
    seen = set()

    def walk(key: Tuple[int, int], prefix: str, last: bool, root: bool) -> None:
        node = prov.nodes.get(key)
        branch = "" if root else ("└─ " if last else "├─ ")
        label = f"{name_of(key[0])} (page {key[0]}) @ epoch {key[1]}"
        if node is None:
            lines.append(f"{prefix}{branch}{label}  (beyond max_depth)")
            return
        again = key in seen
        lines.append(f"{prefix}{branch}{label}  lsn {node.lsn}  {node.source}" + ("  (see above)" if again else ""))
        seen.add(key)
        if again:
            return
        child_prefix = prefix + ("" if root else ("   " if last else "│  "))
        for i, parent in enumerate(node.inputs):
            walk(parent, child_prefix, i == len(node.inputs) - 1, False)

    walk(prov.root, "", True, True)
    return lines
