"""The datamodule under a real Lightning Trainer: batch hooks with prefetch, validation, checkpoint resume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import MLMDataModule, SampleMix
from mmbert.data.batch import StepBatch


class Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.train_seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.val_seen: list[tuple[int, torch.Tensor]] = []

    def training_step(self, batch: StepBatch, batch_idx: int) -> torch.Tensor:
        (micro,) = batch.micro_batches  # steps here are one micro-batch
        self.train_seen.append((micro["input_ids"].clone(), micro["labels"].clone()))
        return self.w.sum() * micro["num_tokens"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.val_seen.append((dataloader_idx, batch["labels"].clone()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class ShrinkBatch(L.Callback):
    """Batch-size warmup the way the training code does it: from a hook, for the next batch."""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        if trainer.global_step == 2:
            trainer.datamodule.set_step_rows(2)


def fit(tmp: Path, ckpt: str | None = None) -> tuple[Recorder, MLMDataModule]:
    dm = MLMDataModule(
        SampleMix(subset="pretrain"), seq_len=64, rows_per_device=4, tau=0.7, mask_ratio=0.3, num_workers=1,
        seed=11, val_docs_per_lang=2, snapshot_every=4,
    )  # fmt: skip
    model = Recorder()
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp, every_n_train_steps=4, save_top_k=-1)
    trainer = L.Trainer(
        max_steps=8, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[saver, ShrinkBatch()], val_check_interval=4, check_val_every_n_epoch=None,
        limit_val_batches=1, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    return model, dm


def test_lightning_fit_and_resume_from_checkpoint(tmp_path: Path) -> None:
    full, dm = fit(tmp_path / "a")
    assert [ids.shape[0] for ids, _ in full.train_seen] == [256] * 3 + [128] * 5  # next batch after the hook
    assert {i for i, _ in full.val_seen} == set(range(len(dm.val_languages)))
    first_val = full.val_seen[: len(dm.val_languages)]
    second_val = full.val_seen[len(dm.val_languages) :]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first_val, second_val, strict=True))

    ckpt = next((tmp_path / "a").glob("*step=4.ckpt"))
    resumed, _ = fit(tmp_path / "b", str(ckpt))
    assert len(resumed.train_seen) == 4
    for (ids, labels), (ids2, labels2) in zip(full.train_seen[4:], resumed.train_seen, strict=True):
        assert torch.equal(ids, ids2) and torch.equal(labels, labels2)
