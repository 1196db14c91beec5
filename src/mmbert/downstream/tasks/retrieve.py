"""Bitext retrieval without training: mean-pooled embeddings of sources and targets, and accuracy@1 in both
directions within each language's pool (Tatoeba / FLORES style)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from mmbert.data.tokenizer import encode_framed
from mmbert.downstream.data import Fields, Split
from mmbert.downstream.metrics import retrieval_accuracy
from mmbert.downstream.packing import batches_by_tokens, pack, segment_mean
from mmbert.downstream.tasks.base import Task
from mmbert.model import MmBertForMaskedLM


def embed(
    encoder: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_len: int = 256,
    batch_tokens: int = 16384,
    device: str | torch.device = "cpu",
) -> Tensor:
    """[N, H] float32 mean of each text's last hidden states (``<bos> text <eos>``), packed, no padding."""
    return embed_ids(encoder, encode_framed(tokenizer, texts, max_len), batch_tokens, device)


@torch.no_grad()
def embed_ids(
    encoder: nn.Module, seqs: Sequence[Tensor], batch_tokens: int = 16384, device: str | torch.device = "cpu"
) -> Tensor:
    """[N, H] float32 mean-pooled last hidden states of framed token sequences."""
    out = torch.empty(len(seqs), encoder.config.hidden_size)
    for idx in batches_by_tokens([len(s) for s in seqs], batch_tokens, 4096, range(len(seqs))):
        batch = pack([seqs[i] for i in idx], device)
        hidden_TH = encoder.forward_packed(batch.input_ids_T, batch.cu_seqlens_N1, batch.max_seqlen)
        out[idx] = segment_mean(hidden_TH.float(), batch).cpu()
    return out


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
        model.eval()
        src = embed_ids(model, [e[0] for e in examples], self.eval_batch_tokens, device)
        tgt = embed_ids(model, [e[1] for e in examples], self.eval_batch_tokens, device)
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
