"""A plain ``pip install -e .`` (no extras) in a clean virtual environment runs every entry point on tiny
inputs: ``train.py`` (2 steps), ``merge.py``, ``evaluate.py`` (classify and retrieve), convert, plan and
prepare. They need none of the optional packages (matplotlib, pandas, ...), which only the notebooks'
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
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import FAST, REPO, TORCH, pip_install, run_command, tiny_config

from mmbert.checkpoint.hf import save_hf_folder
from mmbert.downstream.toy import corpus_sentences, script_rows, write_rows, write_splits
from mmbert.model import MmBertForMaskedLM

# Imported as if absent (``sys.modules[name] = None`` makes any import of them fail).
BLOCKED = ("matplotlib", "pandas", "wandb", "submitit", "nbformat", "nbclient", "sentence_transformers")
# Runs a script (``RUN_BLOCKED path args``) or a module (``RUN_BLOCKED -m name args``) with those blocked.
RUN_BLOCKED = (
    "import runpy, sys\n"
    f"sys.modules.update(dict.fromkeys({BLOCKED!r}))\n"
    "if sys.argv[1] == '-m':\n"
    "    sys.argv = sys.argv[2:]\n"
    "    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
    "else:\n"
    "    sys.argv = sys.argv[1:]\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
COMMANDS = (
    "mmbert-train",
    "mmbert-merge",
    "mmbert-evaluate",
    "mmbert-convert",
    "mmbert-plan",
    "mmbert-prepare",
)


@dataclass
class PlainEnv:
    """A venv with only ``pip install -e REPO`` (and torch), and how to run a command in it."""

    python: Path
    env: dict[str, str]
    root: Path

    def run(self, *args: str | Path, timeout: int = 600) -> subprocess.CompletedProcess:
        proc = run_command(
            self.python, "-c", RUN_BLOCKED, *args, cwd=self.root, env=self.env, timeout=timeout
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        return proc


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> PlainEnv:
    root = tmp_path_factory.mktemp("plain")
    # The environment of this test run must not leak in: no PYTHONPATH to a source tree, no user site.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env |= {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    pip_install(python, TORCH, cwd=root, env=env)
    pip_install(python, "-e", REPO, cwd=root, env=env)
    return PlainEnv(python, env, root)


@pytest.fixture(scope="module")
def tiny_hf(plain: PlainEnv) -> Path:
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=8192, num_hidden_layers=2, global_attn_every_n_layers=2)
    return save_hf_folder(MmBertForMaskedLM(cfg), plain.root / "hf", REPO / "data" / "tokenizer")


@pytest.mark.slow
def test_no_optional_package_is_installed_and_every_command_is(plain: PlainEnv) -> None:
    probe = "import importlib.util as u; print(sorted(n for n in ('matplotlib', 'nbformat', 'wandb') if u.find_spec(n)))"
    installed = run_command(plain.python, "-c", probe, cwd=plain.root, env=plain.env, timeout=120)
    assert installed.returncode == 0 and installed.stdout.strip() == "[]", installed.stdout + installed.stderr
    missing = [c for c in COMMANDS if not (plain.python.parent / c).is_file()]
    assert not missing, f"console scripts not installed: {missing}"


@pytest.mark.slow
def test_train_then_convert_its_checkpoint(plain: PlainEnv) -> None:
    run = plain.root / "train"
    plain.run(
        REPO / "train.py", *FAST, "trainer.max_steps=2", "trainer.accelerator=cpu", f"hydra.run.dir={run}"
    )
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run / "csv" / "metrics.csv").is_file()
    out = plain.root / "converted"
    plain.run("-m", "mmbert.cli.convert", "to-hf", last, out)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    # The sentence-transformers folder is written without sentence-transformers.
    plain.run("-m", "mmbert.cli.convert", "to-st", last, plain.root / "st")
    assert (plain.root / "st" / "modules.json").is_file()


@pytest.mark.slow
def test_merge(plain: PlainEnv, tiny_hf: Path) -> None:
    out = plain.root / "merged"
    plain.run(REPO / "merge.py", "method=linear", f"models=[{tiny_hf},{tiny_hf}]", f"output_dir={out}")
    assert (out / "model.safetensors").is_file() and (out / "merge.json").is_file()


@pytest.mark.slow
def test_evaluate_classify_and_retrieve(plain: PlainEnv, tiny_hf: Path) -> None:
    sentences = corpus_sentences(REPO / "data" / "sample")
    files = write_splits(
        script_rows({k: sentences[k] for k in ("eng_Latn", "rus_Cyrl")}), plain.root / "task"
    )
    out = plain.root / "classify"
    plain.run(
        REPO / "evaluate.py", "task=classify", f"model.path={tiny_hf}", f"task.train_file={files['train']}",
        f"task.test_file={files['test']}", "task.finetune.epochs=1", f"hydra.run.dir={out}",
    )  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "classify" and "accuracy" in result["metrics"]

    pairs = [{"source": s, "target": s, "language": "eng_Latn"} for s in sentences["eng_Latn"][:8]]
    test_file = write_rows(pairs, plain.root / "retrieve" / "test.jsonl")
    out = plain.root / "retrieve" / "run"
    plain.run(
        REPO / "evaluate.py", "task=retrieve", f"model.path={tiny_hf}", f"task.test_file={test_file}",
        f"hydra.run.dir={out}",
    )  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "retrieve" and result["metrics"]


@pytest.mark.slow
def test_plan_and_prepare(plain: PlainEnv) -> None:
    planned = plain.run("-m", "mmbert.cli.plan", "phase=pretrain", "data_mix=sample", "top=3")
    assert "mixture plan:" in planned.stdout
    corpus = plain.root / "corpus" / "fao_Latn" / "train"
    corpus.mkdir(parents=True)
    sentences = corpus_sentences(REPO / "data" / "sample")["fao_Latn"]
    (corpus / "part.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences))
    shards = plain.root / "shards"
    plain.run(
        "-m", "mmbert.cli.prepare", f"source={corpus.parents[1]}", f"out={shards}",
        f"tokenizer={REPO / 'data' / 'tokenizer'}", "workers=1",
    )  # fmt: skip
    assert list(shards.rglob("index.json"))
