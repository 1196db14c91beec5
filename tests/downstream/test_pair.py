"""Sentence-pair classification (XNLI-like premise / hypothesis) end to end: the pair framed as
``[CLS] a [SEP] b [SEP]`` (the project tokenizer's ``<bos> a <eos> b <eos>``) and cut as the tokenizer cuts
pairs; a pair task learned with ``task=xnli`` on files the test writes, through what ``evaluate.py`` runs
(and, slow, the command line itself)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmbert.data.langcodes import language_script
from mmbert.data.tokenizer import load_tokenizer
from mmbert.downstream import ClassifyTask, evaluate
from mmbert.downstream.tasks.encoding import encode_texts
from mmbert.downstream.toy import split_of, write_rows

XNLI_COLUMNS = {"text": "premise", "text_pair": "hypothesis", "label": "label"}
FINETUNE = {"epochs": 4, "lr": 2e-3, "batch_tokens": 1024, "warmup_ratio": 0.0}


def pair_rows(sentences: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Each sentence of a Latin-script language twice as a premise: with itself as the hypothesis (``same``)
    and with a sentence of another script from the same split (``unrelated``). Each premise comes with both
    labels, so the premise alone tells nothing: only a model that reads the hypothesis can beat chance."""
    rng = random.Random(0)
    split = {s: split_of(i) for sents in sentences.values() for i, s in enumerate(sents)}
    foreign: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for lang, sents in sentences.items():
        if language_script(lang) != "Latn":
            for s in sents:
                foreign[split[s]].append(s)
    rows = []
    for lang, sents in sentences.items():
        if language_script(lang) == "Latn":
            for s in sents:
                for label, hypothesis in (("same", s), ("unrelated", rng.choice(foreign[split[s]]))):
                    row = {"premise": s, "hypothesis": hypothesis, "label": label, "language": lang}
                    rows.append({**row, "split": split[s]})
    return rows


@pytest.fixture(scope="module")
def pair_files(sentences, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    rows = pair_rows(sentences)
    return {
        name: write_rows([r for r in rows if r["split"] == name], root / f"{name}.jsonl")
        for name in ("train", "dev", "test")
    }


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(str(REPO / "data" / "tokenizer"))


def test_a_pair_is_cls_a_sep_b_sep(tokenizer):
    a, b = "The library is closed on Sunday.", "Библиотека закрыта."
    (ids,) = encode_texts(tokenizer, [a], [b], max_len=64)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert (cls, sep) == (tokenizer.bos_token_id, tokenizer.eos_token_id) == (2, 1)
    assert ids.tolist() == [cls, 1289, 2021, 1269, 1564, 1299, 1671, sep, 1427, 2124, 2268, 275, sep]
    assert ids.tolist() == tokenizer(a, b)["input_ids"]  # the tokenizer's own pair template


def test_pairs_of_the_xnli_task_are_encoded_and_cut_like_the_tokenizers(pair_files, tokenizer):
    files = {f"{name}_file": str(path) for name, path in pair_files.items()}
    task = ClassifyTask("xnli", columns=XNLI_COLUMNS, **files)
    rows = task.load().test.rows[:40]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for row, example in zip(rows, task.encode(rows, tokenizer, False), strict=True):
        a, b = (tokenizer(row[f], add_special_tokens=False)["input_ids"] for f in ("text", "text_pair"))
        assert example.ids.tolist() == [cls, *a, sep, *b, sep]
        assert example.label == task.labels.index(row["label"])
    # Cut to max_len, a pair loses tokens as transformers' longest_first truncation takes them.
    for max_len in (8, 9, 16, 23):
        task.max_len = max_len
        for row, example in zip(rows, task.encode(rows, tokenizer, False), strict=True):
            want = tokenizer(row["text"], row["text_pair"], truncation="longest_first", max_length=max_len)
            assert example.ids.tolist() == want["input_ids"], (max_len, row)


def _overrides(tiny_hf: Path, pair_files: dict[str, Path]) -> list[str]:
    return [
        "task=xnli",
        f"model.path={tiny_hf}",
        *(f"task.{name}_file={path}" for name, path in pair_files.items()),
        "task.max_len=128",
        *(f"task.finetune.{key}={value}" for key, value in FINETUNE.items()),
    ]


@pytest.fixture(scope="module")
def xnli_result(tiny_hf, pair_files) -> dict[str, Any]:
    """What ``evaluate.py`` runs, in this process: conf/task/xnli.yaml (its premise / hypothesis columns)
    composed with the test's files and instantiated, then ``evaluate``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=_overrides(tiny_hf, pair_files))
    GlobalHydra.instance().clear()
    task = instantiate(OmegaConf.to_container(cfg.task, resolve=True), _convert_="all")
    assert task.columns["text_pair"] == "hypothesis"
    return evaluate(task, cfg.model.path, seed=int(cfg.seed))


def test_a_tiny_model_learns_the_pair_task(xnli_result, tiny_hf, pair_files):
    """Measured: test accuracy 0.786 (chance 0.5); the same model reading the premise alone scores 0.5."""
    metrics = xnli_result["metrics"]
    assert xnli_result["task"] == "xnli" and xnli_result["type"] == "classify"
    assert metrics["n"] == len(pair_files["test"].read_text().splitlines())
    assert metrics["accuracy"] >= 0.7, metrics
    assert {language_script(lang) for lang in metrics["per_language"]} == {"Latn"}
    # Both rows of a premise are one input without the hypothesis: one of them is right, exactly.
    files = {f"{name}_file": str(path) for name, path in pair_files.items()}
    premise_only = ClassifyTask(
        "premise", columns={"text": "premise"}, finetune=FINETUNE, max_len=128, **files
    )
    assert evaluate(premise_only, tiny_hf)["metrics"]["accuracy"] == 0.5


@pytest.mark.slow
def test_evaluate_py_gives_the_same_result(xnli_result, tiny_hf, pair_files, tmp_path):
    """The command line in its own process: the same metrics and training history, to the last digit."""
    out = tmp_path / "xnli"
    command = [
        sys.executable,
        "-m",
        "mmbert.cli.evaluate",
        *_overrides(tiny_hf, pair_files),
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["metrics"] == xnli_result["metrics"]
    assert result["training"] == xnli_result["training"]
