"""Bitext retrieval without training: mean-pooled embeddings of sources and targets (:func:`mmbert.encode`),
and accuracy@1 in both directions within each language's pool (Tatoeba / FLORES style)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from mmbert.data.tokenizer import encode_framed
from mmbert.downstream.data import Fields, Split
from mmbert.downstream.metrics import retrieval_accuracy
from mmbert.downstream.tasks.base import Task
from mmbert.model import MmBertForMaskedLM
from mmbert.model.encode import encode


class RetrieveTask(Task):
    kind = "retrieve"
    fields = Fields(required=("source", "target"))
    main_metric = "accuracy@1"
    trains = False

    def check_rows(self, split: Split) -> None:
        for i, row in enumerate(split.rows):
            if not isinstance(row["source"], str) or not isinstance(row["target"], str):
                raise split.error(f"row {i}: fields 'source' and 'target' must be strings")

    def build(self, mlm: MmBertForMaskedLM) -> nn.Module:
        return mlm.model

    def encode(
        self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, train: bool
    ) -> list[tuple[Tensor, Tensor]]:
        """(framed source ids, framed target ids) of each row."""
        sources = encode_framed(tokenizer, [r["source"] for r in rows], self.max_len)
        targets = encode_framed(tokenizer, [r["target"] for r in rows], self.max_len)
        return list(zip(sources, targets, strict=True))

    def predict(
        self,
        model: nn.Module,
        rows: list[dict[str, Any]],
        examples: list[tuple[Tensor, Tensor]],
        device: torch.device,
    ) -> list[tuple[Tensor, Tensor]]:
        """(source embedding, target embedding) of each row."""

        def embed(seqs: list[Tensor]) -> Tensor:
            return encode(
                model, seqs, batch_tokens=self.eval_batch_tokens, device=device, dtype=torch.float32
            )

        src, tgt = embed([e[0] for e in examples]), embed([e[1] for e in examples])
        return list(zip(src, tgt, strict=True))

    def score(self, rows: list[dict[str, Any]], predictions: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """Each language's rows are one pool; over several languages, the row-weighted mean."""
        pools: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            pools.setdefault(row["language"], []).append(i)
        totals = {"accuracy@1_src2tgt": 0.0, "accuracy@1_tgt2src": 0.0}
        for idx in pools.values():
            acc = retrieval_accuracy(
                torch.stack([predictions[i][0] for i in idx]), torch.stack([predictions[i][1] for i in idx])
            )
            for key in totals:
                totals[key] += acc[key] * len(idx)
        result = {key: value / len(rows) for key, value in totals.items()}
        result["accuracy@1"] = (result["accuracy@1_src2tgt"] + result["accuracy@1_tgt2src"]) / 2
        return result
