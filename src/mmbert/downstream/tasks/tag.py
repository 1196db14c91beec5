"""Token classification (NER, PAN-X/WikiANN): word-level BIO tags, the label on each word's first sub-token,
entity-level precision, recall and F1 (conlleval rules)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from mmbert.downstream.data import Fields, Split
from mmbert.downstream.heads import EncoderWithHead
from mmbert.downstream.metrics import entity_f1
from mmbert.downstream.packing import batches_by_tokens, pack
from mmbert.downstream.tasks.base import Splits, Task
from mmbert.model import IGNORE_INDEX, MmBertForMaskedLM

OUTSIDE = "O"


@dataclass
class Example:
    ids: Tensor
    labels: Tensor  # tag index on each word's first sub-token, -100 elsewhere
    first_token: dict[int, int]  # word -> position of its first sub-token (words cut by max_len: absent)


class TagTask(Task):
    kind = "tag"
    fields = Fields(required=("tokens", "tags"), lists=("tokens", "tags"))
    main_metric = "f1"

    def __init__(self, *args: Any, tag_names: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # For sources whose tags are integers: the tag of each integer (hub ClassLabels are named already).
        self.tag_names = None if tag_names is None else list(tag_names)
        self.tags: list[str] = []

    def check_rows(self, split: Split) -> None:
        for i, row in enumerate(split.rows):
            tokens, tags = row["tokens"], row["tags"]
            if not isinstance(tokens, list) or not isinstance(tags, list):
                raise split.error(f"row {i}: fields 'tokens' and 'tags' must be lists")
            if len(tokens) != len(tags):
                raise split.error(f"row {i}: {len(tokens)} tokens but {len(tags)} tags")
            if not tokens:
                raise split.error(f"row {i}: field 'tokens' is empty")
            row["tags"] = [self._name(t, split, i) for t in tags]
            bad = [t for t in row["tags"] if t != OUTSIDE and t.partition("-")[0] not in ("B", "I")]
            if bad:
                raise split.error(f"row {i}: field 'tags' has {bad[0]!r}; tags must be O, B-TYPE or I-TYPE")

    def _name(self, tag: Any, split: Split, i: int) -> str:
        if isinstance(tag, int):
            if self.tag_names is None:
                raise split.error(f"row {i}: field 'tags' holds integers; name them with task.tag_names")
            if not 0 <= tag < len(self.tag_names):
                raise split.error(
                    f"row {i}: tag {tag} is outside task.tag_names ({len(self.tag_names)} names)"
                )
            return self.tag_names[tag]
        return str(tag)

    def check_splits(self, splits: Splits) -> None:
        if splits.train is None:
            return
        seen = {t for r in splits.train.rows for t in r["tags"]}
        self.tags = [OUTSIDE, *sorted(seen - {OUTSIDE})]
        splits.refuse_unseen("tags", lambda r: r["tags"], seen)

    def encode(
        self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, train: bool
    ) -> list[Example]:
        index = {t: i for i, t in enumerate(self.tags)}
        enc = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, add_special_tokens=False)
        out = []
        for b, row in enumerate(rows):
            ids = enc["input_ids"][b][: self.max_len - 2]
            word_ids = enc.word_ids(b)[: len(ids)]
            labels = [IGNORE_INDEX] * (len(ids) + 2)
            first: dict[int, int] = {}
            previous = None
            for pos, word in enumerate(word_ids):
                if word is not None and word != previous:
                    first[word] = pos + 1  # after <bos>
                    labels[pos + 1] = index.get(row["tags"][word], 0)
                previous = word
            framed = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
            out.append(Example(torch.tensor(framed), torch.tensor(labels), first))
        return out

    def build(self, mlm: MmBertForMaskedLM) -> nn.Module:
        return EncoderWithHead(mlm, len(self.tags), pooled=False, dropout=self.finetune_cfg.dropout)

    def loss(self, model: nn.Module, examples: list[Example], idx: list[int], device: torch.device) -> Tensor:
        batch = pack([examples[i].ids for i in idx], device)
        labels = torch.cat([examples[i].labels for i in idx]).to(device)
        return nn.functional.cross_entropy(model(batch).float(), labels, ignore_index=IGNORE_INDEX)

    @torch.no_grad()
    def predict(
        self, model: nn.Module, rows: list[dict[str, Any]], examples: list[Example], device: torch.device
    ) -> list[list[str]]:
        """Tags per word; words cut off by ``max_len`` (or without tokens) are predicted O."""
        model.eval()
        out: list[list[str]] = [[] for _ in rows]
        lengths = [len(e.ids) for e in examples]
        for idx in batches_by_tokens(lengths, self.eval_batch_tokens, 4096, range(len(examples))):
            batch = pack([examples[i].ids for i in idx], device)
            pred_T = model(batch).argmax(-1).cpu()
            starts = batch.cu_seqlens_N1.tolist()
            for j, i in enumerate(idx):
                first = examples[i].first_token
                out[i] = [
                    self.tags[int(pred_T[starts[j] + first[w]])] if w in first else OUTSIDE
                    for w in range(len(rows[i]["tokens"]))
                ]
        return out

    def score(self, rows: list[dict[str, Any]], predictions: list[list[str]]) -> dict[str, float]:
        return entity_f1(predictions, [r["tags"] for r in rows])
