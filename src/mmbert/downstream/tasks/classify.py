"""Sentence and sentence-pair classification: mean-pooled encoder (mmBERT's ``classifier_pooling: mean``),
prediction head, linear layer; accuracy and macro-F1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from mmbert.downstream.data import Fields, Split
from mmbert.downstream.heads import EncoderWithHead
from mmbert.downstream.metrics import accuracy, macro_f1
from mmbert.downstream.packing import batches_by_tokens, pack
from mmbert.downstream.tasks.base import Splits, Task
from mmbert.downstream.tasks.encoding import encode_texts
from mmbert.model import MmBertForMaskedLM


@dataclass
class Example:
    ids: Tensor
    label: int


def label_key(value: Any) -> str:
    """Labels compare as strings, so that 1 in a jsonl file and "1" in a csv file are one label."""
    return str(value)


class ClassifyTask(Task):
    kind = "classify"
    fields = Fields(required=("text", "label"), optional=("text_pair",))
    main_metric = "accuracy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.labels: list[str] = []

    def check_rows(self, split: Split) -> None:
        for i, row in enumerate(split.rows):
            if not isinstance(row["text"], str) or (
                "text_pair" in row and not isinstance(row["text_pair"], str)
            ):
                raise split.error(f"row {i}: field 'text' / 'text_pair' must be a string")
            if isinstance(row["label"], float | list | dict):
                raise split.error(f"row {i}: field 'label' must be an int or a string, got {row['label']!r}")

    def check_splits(self, splits: Splits) -> None:
        if splits.train is None:
            return
        self.labels = sorted({label_key(r["label"]) for r in splits.train.rows}, key=_natural)
        if len(self.labels) < 2:
            raise splits.train.error(f"field 'label' has a single value {self.labels}; nothing to learn")
        splits.refuse_unseen("label", lambda r: [label_key(r["label"])], set(self.labels))

    def encode(
        self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, train: bool
    ) -> list[Example]:
        index = {label: i for i, label in enumerate(self.labels)}
        pairs = [r.get("text_pair") for r in rows]
        ids = encode_texts(tokenizer, [r["text"] for r in rows], pairs, self.max_len)
        return [Example(x, index.get(label_key(r["label"]), -1)) for x, r in zip(ids, rows, strict=True)]

    def build(self, mlm: MmBertForMaskedLM) -> nn.Module:
        return EncoderWithHead(mlm, len(self.labels), pooled=True, dropout=self.finetune_cfg.dropout)

    def loss(self, model: nn.Module, examples: list[Example], idx: list[int], device: torch.device) -> Tensor:
        batch = pack([examples[i].ids for i in idx], device)
        target = torch.tensor([examples[i].label for i in idx], device=device)
        return nn.functional.cross_entropy(model(batch).float(), target)

    @torch.no_grad()
    def predict(
        self, model: nn.Module, rows: list[dict[str, Any]], examples: list[Example], device: torch.device
    ) -> list[str]:
        model.eval()
        lengths = [len(e.ids) for e in examples]
        out: list[str] = [""] * len(examples)
        for idx in batches_by_tokens(lengths, self.eval_batch_tokens, 4096, range(len(examples))):
            pred = model(pack([examples[i].ids for i in idx], device)).argmax(-1).tolist()
            for i, p in zip(idx, pred, strict=True):
                out[i] = self.labels[p]
        return out

    def score(self, rows: list[dict[str, Any]], predictions: list[str]) -> dict[str, float]:
        gold = [label_key(r["label"]) for r in rows]
        return {"accuracy": accuracy(predictions, gold), "macro_f1": macro_f1(predictions, gold)}


def _natural(label: str) -> tuple[int, int | str]:
    """Integer labels in numeric order, then strings."""
    return (0, int(label)) if label.lstrip("-").isdigit() else (1, label)
