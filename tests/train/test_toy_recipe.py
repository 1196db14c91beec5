"""The toy recipe end to end (slow): scripts/toy_recipe.py writes a recipe root once per session (the
``toy_recipe_root`` fixture in conftest.py), and these tests check what each phase and merge left there."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO

from mmbert.merge import open_checkpoint

pytestmark = pytest.mark.slow

PHASES = ("pretrain", "midtrain", "decay-eng", "decay-cont", "decay-all")
DECAYS = PHASES[2:]
MERGES = ("merges/ties", "merges/ema")
TAU = {"pretrain": 0.7, "midtrain": 0.5, "decay-eng": 0.3, "decay-cont": 0.3, "decay-all": 0.3}
SENTENCE = "The cat sits on the [MASK] and looks out of the window."


def _val_losses(run_dir: Path) -> list[float]:
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").read_text().splitlines())
    return [float(r["val/loss"]) for r in rows if r.get("val/loss")]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF folder or a Lightning checkpoint, under HF names (the tied decoder left out)."""
    reader = open_checkpoint(path)
    try:
        return {name: reader.read(name) for name in reader.tensors if name != "decoder.weight"}
    finally:
        reader.close()


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


def _merge_inputs(merge_dir: Path) -> list[Path]:
    record = json.loads((merge_dir / "merge.json").read_text())
    base = [Path(record["base"]["path"])] if record.get("base") else []
    return base + [Path(model["path"]) for model in record["models"]]


def _logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model, info = AutoModelForMaskedLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = tokenizer(SENTENCE.replace("[MASK]", tokenizer.mask_token), return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], model.config.vocab_size)
    return logits


@pytest.mark.parametrize("name", PHASES + MERGES)
def test_every_model_loads_with_transformers_and_gives_finite_logits(toy_recipe_root, name):
    folder = toy_recipe_root / name / ("" if name in MERGES else "hf")
    assert torch.isfinite(_logits(folder)).all()


@pytest.mark.parametrize("name", PHASES)
def test_every_phase_validates_and_checkpoints_a_few_times(toy_recipe_root, name):
    assert len(_val_losses(toy_recipe_root / name)) >= 3
    assert len(list((toy_recipe_root / name / "checkpoints").glob("step-*.ckpt"))) >= 3


def _metric(run_dir: Path, name: str) -> list[float]:
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").read_text().splitlines())
    return [float(r[name]) for r in rows if r.get(name)]


def test_pretraining_memorises_its_training_text(toy_recipe_root):
    # Validation holds sentences no training document contains, so the tiny model's falling train loss is
    # memorisation of its ~20 training sentences per language: measured (toy recipe, sample corpus) train/loss
    # 9.0 over the first five logs -> 0.3-0.5 over the last five, while val/loss rose 9.06 -> 12.04.
    losses = _metric(toy_recipe_root / "pretrain", "train/loss")
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.15 * first, (first, last)


def test_pretraining_held_out_accuracy_rises_above_its_first_value(toy_recipe_root):
    # Something generalises to unseen sentences: measured val/acc 0.004 at the first validation (step 99),
    # 0.127 at its best (step 699), 0.114 at the end.
    accuracy = _metric(toy_recipe_root / "pretrain", "val/acc")
    assert max(accuracy) > accuracy[0] + 0.05, accuracy


@pytest.mark.parametrize("name", PHASES)
def test_context_extension_raises_rope_theta_from_mid_training_on(toy_recipe_root, name):
    config = json.loads((toy_recipe_root / name / "hf" / "config.json").read_text())
    theta = 10_000.0 if name == "pretrain" else 160_000.0
    assert config["global_rope_theta"] == theta == config["local_rope_theta"]


@pytest.mark.parametrize("name", PHASES)
def test_mixture_temperature_follows_the_phase(toy_recipe_root, name):
    report = json.loads((toy_recipe_root / name / "mixture.json").read_text())
    assert report["tau"] == TAU[name]
    assert sum(entry["realised_tokens"] for entry in report["languages"].values()) > 0


def test_decay_eng_trains_on_more_english_than_decay_cont(toy_recipe_root):
    def english_shares(name: str) -> tuple[float, float]:
        languages = json.loads((toy_recipe_root / name / "mixture.json").read_text())["languages"]
        weight = languages["eng_Latn"]["weight"] / sum(e["weight"] for e in languages.values())
        tokens = languages["eng_Latn"]["realised_tokens"] / sum(
            e["realised_tokens"] for e in languages.values()
        )
        return weight, tokens

    eng, cont = english_shares("decay-eng"), english_shares("decay-cont")
    assert eng[0] > cont[0] and eng[1] > cont[1], (eng, cont)


def test_decay_variants_differ_from_each_other_and_from_mid_training(toy_recipe_root):
    weights = {name: _weights(toy_recipe_root / name / "hf") for name in ("midtrain", *DECAYS)}
    names = list(weights)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert _max_diff(weights[a], weights[b]) > 1e-4, (a, b)


def test_ties_merges_the_three_decay_variants_over_mid_training(toy_recipe_root):
    ties = toy_recipe_root / "merges" / "ties"
    inputs = _merge_inputs(ties)
    assert [p.resolve() for p in inputs] == [
        (toy_recipe_root / n / "hf").resolve() for n in ("midtrain", *DECAYS)
    ]
    merged = _weights(ties)
    for path in inputs:
        assert _max_diff(merged, _weights(path)) > 1e-4, path


def test_ema_averages_decay_all_checkpoints_oldest_first(toy_recipe_root):
    ema = toy_recipe_root / "merges" / "ema"
    inputs = _merge_inputs(ema)
    steps = [int(path.stem.removeprefix("step-")) for path in inputs]
    assert len(inputs) >= 3 and steps == sorted(steps)
    assert {path.parent.resolve() for path in inputs} == {
        (toy_recipe_root / "decay-all" / "checkpoints").resolve()
    }
    # The last input is Decay-All's final step: the weights it exported.
    assert _max_diff(_weights(inputs[-1]), _weights(toy_recipe_root / "decay-all" / "hf")) == 0.0
    merged = _weights(ema)
    stacked = [_weights(path) for path in inputs]
    for weights in stacked:
        assert _max_diff(merged, weights) > 1e-6
    for name, tensor in merged.items():  # a weighted average stays within its inputs, entry by entry
        values = torch.stack([weights[name] for weights in stacked])
        assert (values.amin(0) - 1e-6 <= tensor).all() and (tensor <= values.amax(0) + 1e-6).all(), name


def test_a_second_run_skips_every_stage(toy_recipe_root):
    outputs = [toy_recipe_root / name / "hf" / "model.safetensors" for name in PHASES]
    outputs += [toy_recipe_root / name / "model.safetensors" for name in MERGES]
    before = {path: path.stat().st_mtime_ns for path in outputs}
    checkpoints = sorted(toy_recipe_root.glob("*/checkpoints/*.ckpt"))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "toy_recipe.py"), "--root", str(toy_recipe_root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert elapsed < 60, f"a run with nothing to do took {elapsed:.0f}s"
    assert "$ python" not in proc.stdout, "a command ran"
    table = proc.stdout[proc.stdout.index("== summary") :]
    assert table.count(" skipped ") == len(PHASES + MERGES), table
    assert {path: path.stat().st_mtime_ns for path in outputs} == before
    assert sorted(toy_recipe_root.glob("*/checkpoints/*.ckpt")) == checkpoints
