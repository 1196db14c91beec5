"""A plain ``pip install -e .`` (no extras) in a clean virtual environment runs ``evaluate.py`` on a classify
task: the commands need none of the optional packages (matplotlib, pandas, ...), which only the notebooks'
analyses and the toy tasks' tables use.

pandas is the one optional package a plain install does bring in (``datasets`` requires it), so the run is
made to fail on any import of an optional package, installed or not; matplotlib, nbformat and wandb must
not be installed at all.

Slow: the environment is built from scratch (torch from the local wheel cache, the rest from the package
indexes): measured 175 s on two shared cores with a cold pip cache, 64 s with a warm one. Skipped, saying
so, where PyPI cannot be reached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from helpers import REPO, tiny_config

from mmbert.checkpoint.hf import save_hf_folder
from mmbert.downstream.toy import corpus_sentences, script_rows, write_splits
from mmbert.model import MmBertForMaskedLM

PYPI = "https://pypi.org/simple/"
TORCH = f"torch=={torch.__version__.split('+')[0]}"
# Imported as if absent (``sys.modules[name] = None`` makes any import of them fail).
BLOCKED = ("matplotlib", "pandas", "wandb", "submitit", "nbformat", "nbclient")
RUN_BLOCKED = (
    "import runpy, sys\n"
    f"sys.modules.update(dict.fromkeys({BLOCKED!r}))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen(PYPI + "pip/", timeout=15):
            return True
    except OSError:
        return False


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _pip_install(python: Path, *args: str | Path, cwd: Path, env: dict[str, str]) -> None:
    proc = _run(python, "-m", "pip", "install", *args, cwd=cwd, env=env, timeout=1200)
    if proc.returncode != 0 and not _pypi_reachable():
        pytest.skip(f"PyPI ({PYPI}) is unreachable and `pip install {' '.join(map(str, args))}` failed")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_evaluate_classify_runs_on_a_plain_editable_install(tmp_path: Path) -> None:
    # The environment of this test run must not leak in: no PYTHONPATH to a source tree, no user site.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env |= {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    _pip_install(python, TORCH, cwd=tmp_path, env=env)
    _pip_install(python, "-e", REPO, cwd=tmp_path, env=env)

    probe = "import importlib.util as u; print(sorted(n for n in ('matplotlib', 'nbformat', 'wandb') if u.find_spec(n)))"
    installed = _run(python, "-c", probe, cwd=tmp_path, env=env, timeout=120)
    assert installed.returncode == 0 and installed.stdout.strip() == "[]", installed.stdout + installed.stderr

    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=8192, num_hidden_layers=2, global_attn_every_n_layers=2)
    model = save_hf_folder(MmBertForMaskedLM(cfg), tmp_path / "hf", REPO / "data" / "tokenizer")
    sentences = corpus_sentences(REPO / "data" / "sample")
    files = write_splits(script_rows({k: sentences[k] for k in ("eng_Latn", "rus_Cyrl")}), tmp_path / "task")
    out = tmp_path / "classify"
    proc = _run(
        python, "-c", RUN_BLOCKED, REPO / "evaluate.py",
        "task=classify", f"model.path={model}", f"task.train_file={files['train']}",
        f"task.test_file={files['test']}", "task.finetune.epochs=1", f"hydra.run.dir={out}",
        cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "classify" and "accuracy" in result["metrics"]
