"""Evaluating one checkpoint on one task: what ``evaluate.py`` runs and the notebooks call."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from mmbert.downstream.loading import load_encoder
from mmbert.downstream.results import write_results
from mmbert.downstream.tasks.base import Task
from mmbert.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA device is available")
    return torch.device(device)


def evaluate(
    task: Task,
    model_path: str | Path,
    *,
    tokenizer: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Check the task's data (before loading or training anything), load the checkpoint, fine-tune if the
    task trains, test; returns the result and writes ``out_dir/results.json`` when given."""
    start = time.monotonic()
    dev = resolve_device(device)
    splits = task.load()
    mlm, tok = load_encoder(model_path, tokenizer)
    log.info(
        "task %s (%s, %s): %s train / %s dev / %d test rows; model %s",
        task.name,
        task.kind,
        task.protocol,
        len(splits.train.rows) if splits.train else 0,
        len(splits.dev.rows) if splits.dev else 0,
        len(splits.test.rows),
        model_path,
    )
    outcome = task.run(mlm, tok, splits, seed=seed, device=dev)
    result = {
        "task": task.name,
        "type": task.kind,
        "model": str(model_path),
        "seed": seed,
        "protocol": task.protocol,
        "train_languages": splits.train.languages if splits.train else None,
        "metrics": outcome["metrics"],
        "training": outcome["training"],
        "seconds": round(time.monotonic() - start, 2),
    }
    if out_dir is not None:
        path = write_results(result, out_dir)
        log.info("wrote %s", path)
    main = task.main_metric
    log.info("%s on %s: %s=%.4f", task.name, model_path, main, result["metrics"][main])
    return result
