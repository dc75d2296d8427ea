"""notebooks/04_performance.ipynb runs top to bottom in a fresh kernel of this very Python (the
quick bench in-process, its table, the throughput and tick-latency plots inline, the Markdown
table), and is saved without outputs so it stays clean in version control. Run the same way as
notebooks 01-03 (tests/python/test_notebooks.py, whose kernel fixture this reuses)."""

from __future__ import annotations

import os
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

from test_notebooks import CELL_TIMEOUT_S, python3_kernel  # noqa: E402,F401  (python3_kernel: a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, "notebooks", "04_performance.ipynb")


def test_saved_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    dirty = [c.get("id") for c in code if c.outputs or c.execution_count is not None]
    assert not dirty, f"cells {dirty} carry outputs or execution counts; clear them before saving"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_runs_and_shows_the_table_and_both_plots(python3_kernel, tmp_path, capsys):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))  # in memory only
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=python3_kernel,
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
    seconds = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n04_performance.ipynb: ran in {seconds:.1f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert code[-1].outputs[0]["text"].strip() == sys.executable
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "every result verified: True" in text
    for figure in ("mmsb apply_batch, 1 thread", "tick p99, history on", "python hop: mmsb ops.copy"):
        assert figure in text, f"the table lacks {figure!r}"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2, f"expected the throughput and tick-latency plots, got {len(images)} images"
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert markdown and "| category | figure |" in markdown[0]
