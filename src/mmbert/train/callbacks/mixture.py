"""The data mixture as trained: ``mixture.json`` beside the checkpoints and per-language token counts logged.

A researcher compares the realised tokens per language against the target weights and the phase's plan;
the counts are summed over ranks, so they are the run's, not one device's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import torch

from mmbert.train.callbacks.datamodule import fitted_datamodule


class MixtureReportCallback(L.Callback):
    """Writes ``mixture.json`` (target weights, the phase's planned tokens and passes, then realised tokens)
    and logs ``data/tokens/<lang>``."""

    def __init__(
        self, output_dir: str, log_every_n_steps: int = 50, budget_tokens: int | None = None
    ) -> None:
        self.output_dir = Path(output_dir)
        self.budget_tokens = budget_tokens
        self.log_every_n_steps = log_every_n_steps
        self.global_tokens: dict[str, int] = {}

    def _reduce(self, trainer, pl_module) -> dict[str, int]:
        dm = fitted_datamodule(trainer)
        local = dm.realised_tokens
        languages = list(dm.languages)
        vec = torch.tensor([float(local.get(lang, 0)) for lang in languages], device=pl_module.device)
        vec = trainer.strategy.reduce(vec, reduce_op="sum")
        return {lang: int(v) for lang, v in zip(languages, vec.tolist(), strict=True)}

    def _write(self, trainer) -> None:
        if not trainer.is_global_zero:
            return
        report = fitted_datamodule(trainer).mixture_report(self.budget_tokens)
        for lang, entry in report["languages"].items():
            entry["realised_tokens"] = self.global_tokens.get(lang, 0)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.output_dir / "mixture.json.tmp"
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True))
        os.replace(tmp, self.output_dir / "mixture.json")

    def on_fit_start(self, trainer, pl_module) -> None:
        self._write(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.global_step % self.log_every_n_steps) != 0:
            return
        self.global_tokens = self._reduce(trainer, pl_module)
        pl_module.log_dict(
            {f"data/tokens/{lang}": float(n) for lang, n in self.global_tokens.items()},
            on_step=True,
            on_epoch=False,
        )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._write(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.global_tokens = self._reduce(trainer, pl_module)
        self._write(trainer)

    def state_dict(self) -> dict:
        return {"global_tokens": dict(self.global_tokens)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.global_tokens = dict(state_dict["global_tokens"])
