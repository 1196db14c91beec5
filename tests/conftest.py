"""Shared fixtures: composing the Hydra train config the way train.py does, inside a tmp run folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from omegaconf import DictConfig

import mmbert.config

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# A run that takes seconds: a few steps of the tiny model on the sample corpus, short rows.
FAST = [
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "phase.seq_len=128",
    "data.num_workers=0",
    "data.val_docs_per_lang=2",
    "callbacks.model_checkpoint.every_n_train_steps=3",
    "callbacks.batch_warmup=null",
    "logger=csv",
]


def compose_train(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Composes conf/train.yaml with Hydra's runtime values set, as `python train.py ...` would."""
    return mmbert.config.compose_train(overrides, output_dir=output_dir, conf_dir=CONF)


@pytest.fixture
def compose_fast(tmp_path):
    def _compose(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_train([*FAST, *overrides], output_dir=output_dir or tmp_path / "run")

    return _compose


@pytest.fixture(scope="session")
def toy_recipe_root(tmp_path_factory) -> Path:
    """A recipe root written by scripts/toy_recipe.py (minutes on a CPU), for the slow tests and notebooks.

    With MMBERT_TOY_RECIPE_ROOT set, the driver runs into that folder instead: a no-op when it is complete,
    so a root kept from an earlier session makes these tests fast.
    """
    import subprocess
    import sys

    given = os.environ.get("MMBERT_TOY_RECIPE_ROOT")
    root = Path(given).resolve() if given else tmp_path_factory.mktemp("toy_recipe") / "root"
    log = tmp_path_factory.mktemp("toy_recipe_log") / "toy_recipe.log"
    command = [sys.executable, str(REPO / "scripts" / "toy_recipe.py"), "--root", str(root)]
    with log.open("w") as out:
        # No progress bars: they would fill the log with carriage returns.
        proc = subprocess.run(
            [*command, "trainer.enable_progress_bar=false"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    assert proc.returncode == 0, (
        f"scripts/toy_recipe.py failed; last lines of {log}:\n{log.read_text()[-4000:]}"
    )
    return root


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of every row of the run's csv/metrics.csv that has `key`, in file order (repeats kept)."""
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").read_text().splitlines())
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip, saying why, where no CUDA device is (``pytest -m gpu`` on a CPU machine)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
