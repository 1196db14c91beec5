"""Fine-tuning: early stopping after ``patience`` epochs without a better dev score, the best dev epoch's
weights restored for testing (a dev score scripted per epoch, so that the best epoch is known), and seeds:
the same seed gives the same numbers, another seed others."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mmbert.downstream import ClassifyTask, evaluate, load_encoder
from mmbert.downstream.finetune import FinetuneConfig, finetune
from mmbert.downstream.toy import script_rows, write_splits

State = dict[str, Tensor]
FAST = {"lr": 2e-3, "batch_tokens": 1024, "warmup_ratio": 0.0}
LANGS = ["eng_Latn", "rus_Cyrl", "arb_Arab", "ell_Grek"]


def _snapshot(model: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: State, b: State) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("scores", "patience", "best", "epochs_run"),
    [
        ([0.2, 0.9, 0.5, 0.9, 0.99], 2, 1, 4),  # a tie is no improvement: two epochs after the best, stop
        ([0.2, 0.9, 0.5, 0.95, 0.1, 0.1, 0.99], 2, 3, 6),  # a better epoch starts the count again
        ([0.5, 0.4, 0.3], 1, 0, 2),
        ([0.1, 0.2, 0.3], 5, 2, 3),  # never stops early: the last epoch is the best
    ],
)
def test_finetune_stops_after_patience_and_restores_the_best_epoch(scores, patience, best, epochs_run):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = torch.randn(12, 4), torch.randn(12, 1)
    snapshots: list[State] = []

    def dev_score() -> float:
        assert not model.training  # scored in eval mode
        snapshots.append(_snapshot(model))
        return scores[len(snapshots) - 1]

    cfg = FinetuneConfig(epochs=len(scores), lr=0.05, patience=patience, batch_tokens=4, warmup_ratio=0.0)
    history = finetune(
        model, [1] * 12, lambda idx: nn.functional.mse_loss(model(x[idx]), y[idx]), cfg, dev_score=dev_score
    )
    assert history.epochs_run == epochs_run == len(snapshots)
    assert history.steps == 3 * epochs_run  # 12 one-token examples, 4 tokens a step
    assert history.dev_scores == scores[:epochs_run]
    assert history.best_epoch == best and history.dev_scores[best] == max(history.dev_scores)
    assert _same(_snapshot(model), snapshots[best])
    # Training moved the weights after the best epoch, so restoring them is not a no-op.
    assert best == epochs_run - 1 or not _same(snapshots[best], snapshots[-1])


class ScriptedDev(ClassifyTask):
    """A classify task whose dev score is ``dev_scores[epoch]`` (the dev split recognised by its texts) and
    which keeps the weights each prediction ran with: the dev ones per epoch, then the test one."""

    def __init__(self, *args: Any, dev_texts: Sequence[str], dev_scores: Sequence[float], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dev_texts = list(dev_texts)
        self.dev_scores = list(dev_scores)
        self.weights: list[State] = []
        self.dev_calls = 0

    def predict(self, model: nn.Module, rows: list, examples: list, device: torch.device) -> list[str]:
        self.weights.append(_snapshot(model))
        return super().predict(model, rows, examples, device)

    def score(self, rows: list[dict[str, Any]], predictions: list[str]) -> dict[str, float]:
        real = super().score(rows, predictions)
        if [r["text"] for r in rows] != self.dev_texts:
            return real
        self.dev_calls += 1
        return {**real, self.main_metric: self.dev_scores[self.dev_calls - 1]}


def _script_files(sentences: dict[str, list[str]], root: Path) -> dict[str, str]:
    rows = script_rows({k: sentences[k] for k in LANGS})
    return {f"{s}_file": str(p) for s, p in write_splits(rows, root, "jsonl").items()}


def test_the_test_split_is_predicted_with_the_best_dev_epochs_weights(tiny_hf, sentences, tmp_path):
    files = _script_files(sentences, tmp_path / "script")
    dev_texts = [r["text"] for r in ClassifyTask("c", **files).load().dev.rows]
    task = ScriptedDev(
        "script",
        dev_texts=dev_texts,
        dev_scores=[0.3, 0.8, 0.6, 0.7, 0.9, 0.9],
        finetune={**FAST, "epochs": 6, "patience": 2},
        max_len=64,
        **files,
    )
    result = evaluate(task, tiny_hf, seed=0)
    training = result["training"][0]
    # Best at epoch 1, no better dev score at epochs 2 and 3: stopped there, epochs 4 and 5 never ran.
    assert training["epochs_run"] == 4 and training["dev_scores"] == [0.3, 0.8, 0.6, 0.7]
    assert training["best_epoch"] == 1 and training["dev_scores"][1] == 0.8
    dev_weights, test_weights = task.weights[:-1], task.weights[-1]
    assert len(dev_weights) == 4
    assert _same(test_weights, dev_weights[1])
    assert not _same(dev_weights[1], dev_weights[3])
    # The reported test accuracy is that of a fresh model given the best epoch's weights.
    plain = ClassifyTask("script", max_len=64, **files)
    test = plain.load().test
    mlm, tok = load_encoder(tiny_hf)
    model = plain.build(mlm)
    model.load_state_dict(dev_weights[1])
    predictions = plain.predict(model, test.rows, plain.encode(test.rows, tok, False), torch.device("cpu"))
    assert result["metrics"]["accuracy"] == plain.score(test.rows, predictions)["accuracy"]


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_hf, sentences, tmp_path):
    files = _script_files(sentences, tmp_path / "script")

    def run(seed: int) -> dict[str, Any]:
        task = ClassifyTask("script", finetune={**FAST, "epochs": 2, "patience": 2}, max_len=64, **files)
        result = evaluate(task, tiny_hf, seed=seed)
        return {"metrics": result["metrics"], "training": result["training"]}

    first, again, other = run(0), run(0), run(1)
    assert first == again  # exactly equal floats, per language too
    assert first["training"][0]["train_loss"] != other["training"][0]["train_loss"]
    assert first["training"][0]["dev_scores"] != other["training"][0]["dev_scores"]
