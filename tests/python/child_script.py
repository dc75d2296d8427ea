"""Runs a test's script in a fresh interpreter, for what would hang or kill the test process
itself when it regresses (a deadlock, a signal)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def script_finishes(source: str, hang: str, *, timeout: float, says: str = "done") -> None:
    """Runs `source` with `python -c`; fails the test with `hang` if it runs past `timeout`
    seconds, and unless it exits 0 having printed `says`."""
    try:
        r = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(hang)
    assert r.returncode == 0 and says in r.stdout, r.stderr
