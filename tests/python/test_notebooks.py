"""The tutorial notebooks (notebooks/01-03) run top to bottom without an error in a fresh kernel
of this very Python, so they never rot; and they are saved without outputs, so they stay clean in
version control."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = ["01_quickstart.ipynb", "02_replay_and_time_travel.ipynb", "03_propagation.ipynb"]
CELL_TIMEOUT_S = 60


def load(name):
    return nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)


@pytest.fixture(scope="module")
def python3_kernel(tmp_path_factory):
    """A `python3` kernelspec that starts this interpreter (the one with mmsb installed),
    found first through JUPYTER_PATH, so a global `python3` kernel of another Python is never
    picked up."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (mmsb tests)", "language": "python",
    }))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        yield "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_saved_without_outputs(name):
    nb = load(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{name}: cells {dirty} carry outputs or execution counts; clear them before saving"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, python3_kernel, tmp_path, record_property, capsys):
    nb = load(name)
    # One extra cell, in memory only: proves the kernel was this interpreter.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=python3_kernel,
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
    seconds = time.perf_counter() - t0
    record_property("seconds", round(seconds, 2))
    with capsys.disabled():
        print(f"\n{name}: ran in {seconds:.1f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    errors = [(i, o.get("ename")) for i, c in enumerate(code) for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert code[-1].outputs[0]["text"].strip() == sys.executable
