"""The Python package as users get it when pip builds it from the source distribution: the sdist
holds exactly the files git does not ignore, its wheel compiles from scratch outside the tree, installs into a
fresh virtual environment and works from a folder outside the tree (scripts/test-wheel.sh --sdist).
A full compile takes minutes, so this is `slow`; `make test` runs the same script on the wheel
of the incremental build tree."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_built_from_the_sdist_installs_and_works_outside_the_tree():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout: the sdist is compared with its files")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "test-wheel.sh"), "--sdist"], cwd=ROOT,
                         capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "10/10 PASS" in run.stdout and run.stdout.rstrip().endswith("test-wheel: passed"), run.stdout[-4000:]
