"""Fixtures shared by every test folder; plain builders live in helpers.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FAST, REPO, compose_train
from omegaconf import DictConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def compose_fast(tmp_path):
    def _compose(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_train([*FAST, *overrides], output_dir=output_dir or tmp_path / "run")

    return _compose


def _run_driver(script: str, env_var: str, tmp_path_factory) -> Path:
    """Runs scripts/<script>.py into a fresh root, or into ``$env_var`` when set (a no-op when that root is
    complete, so a root kept from an earlier session makes the tests that use it fast); returns the root."""
    given = os.environ.get(env_var)
    root = Path(given).resolve() if given else tmp_path_factory.mktemp(script) / "root"
    log = tmp_path_factory.mktemp(f"{script}_log") / f"{script}.log"
    command = [sys.executable, str(REPO / "scripts" / f"{script}.py"), "--root", str(root)]
    with log.open("w") as out:
        # No progress bars: they would fill the log with carriage returns.
        proc = subprocess.run(
            [*command, "trainer.enable_progress_bar=false"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    assert proc.returncode == 0, (
        f"scripts/{script}.py failed; last lines of {log}:\n{log.read_text()[-4000:]}"
    )
    return root


@pytest.fixture(scope="session")
def toy_recipe_root(tmp_path_factory) -> Path:
    """A recipe root written by scripts/toy_recipe.py (minutes on a CPU), for the slow tests and notebooks;
    MMBERT_TOY_RECIPE_ROOT reuses one."""
    return _run_driver("toy_recipe", "MMBERT_TOY_RECIPE_ROOT", tmp_path_factory)


@pytest.fixture(scope="session")
def add_language_study_root(tmp_path_factory) -> Path:
    """A root written by scripts/add_language_study.py (about 7 minutes on a 2-core CPU), for its slow test
    and notebook 06; MMBERT_STUDY_ROOT reuses one. Skipped where /usr/share/locale, its text, is absent."""
    if not Path("/usr/share/locale").is_dir():
        pytest.skip("no /usr/share/locale here: the study's text is the gettext catalogs of a Debian machine")
    return _run_driver("add_language_study", "MMBERT_STUDY_ROOT", tmp_path_factory)


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip, saying why, where no CUDA device is (``pytest -m gpu`` on a CPU machine)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
