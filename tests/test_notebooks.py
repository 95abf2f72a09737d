"""The notebooks under ``notebooks/`` run top to bottom and are stored without outputs.

Each notebook ends with ``assert`` cells that check its own results (the search finds a
configuration meeting the SLA, the replay serves both configurations, BA-UCB's regret is
finite), so executing it is a test of what it shows, not only of the absence of errors.
"""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01_price_configurations.ipynb",
        "02_replay_a_trace.ipynb",
        "03_tuning_on_the_simulator.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{path.name} cell {i} has outputs; clear them before committing"
            )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,  # seconds per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # working directory of the kernel
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert list(tmp_path.iterdir()) == [], "a notebook wrote files into its working directory"
