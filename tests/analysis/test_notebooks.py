"""The analysis notebooks: committed without outputs, and each runs top to bottom on a recipe root.

The execution tests (slow) run on the real output of scripts/toy_recipe.py on the sample corpus: the
``toy_recipe_root`` fixture (conftest.py) writes it once per session, or reuses ``MMBERT_TOY_RECIPE_ROOT``;
notebook 06 also on scripts/add_language_study.py's root (``add_language_study_root``, ``MMBERT_STUDY_ROOT``).
"""

from __future__ import annotations

import time

import nbformat
import pytest
from helpers import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = [
    "01_training_curves.ipynb",
    "02_per_language_mlm.ipynb",
    "03_fill_mask.ipynb",
    "04_crosslingual_embeddings.ipynb",
    "05_mixture.ipynb",
    "06_downstream.ipynb",
]
CELL_TIMEOUT_S = 300
# Notebooks with a section on scripts/add_language_study.py's root (conftest.py's add_language_study_root).
STUDY_NOTEBOOKS = {"06_downstream.ipynb"}


def test_the_six_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_takes_the_run_root_as_parameter(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    assert 'RUN_ROOT = os.environ.get("MMBERT_RUN_ROOT", "outputs/toy_recipe")' in first.source
    assert "import mmbert.analysis" in "".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="session")
def recipe_env(toy_recipe_root) -> dict[str, str]:
    """Environment for the notebook kernels: where the recipe root and the corpus it was trained on are."""
    return {"MMBERT_RUN_ROOT": str(toy_recipe_root), "MMBERT_CORPUS": str(REPO / "data" / "sample")}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, recipe_env, monkeypatch, tmp_path, request):
    from nbclient import NotebookClient

    for key, value in recipe_env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    if path.name in STUDY_NOTEBOOKS:  # the study takes longer than a cell may: its fixture runs it first
        monkeypatch.setenv("MMBERT_STUDY_ROOT", str(request.getfixturevalue("add_language_study_root")))
    monkeypatch.setenv("MPLBACKEND", "agg")
    # One torch thread: on a shared CPU, intra-op threads that wait for each other at every op made the
    # notebooks over ten times slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()
    NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    elapsed = time.monotonic() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any(
        o.output_type in ("display_data", "execute_result") for c in nb.cells for o in c.get("outputs", [])
    )
    print(f"{path.name}: {elapsed:.1f}s")
