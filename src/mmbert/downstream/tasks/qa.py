"""Extractive QA in SQuAD format (TyDiQA-GoldP, TiQuAD, FoQA): ``<bos> question <eos> context window <eos>``
with long contexts in overlapping windows, start/end logits per token, the best span over all windows of a
question; SQuAD exact match and F1.

Shape legend: T packed tokens, N windows, W context tokens of a window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from mmbert.downstream.data import Fields, Split
from mmbert.downstream.heads import EncoderWithHead
from mmbert.downstream.metrics import squad_scores
from mmbert.downstream.packing import Packed, batches_by_tokens, pack
from mmbert.downstream.tasks.base import Task
from mmbert.errors import ConfigError
from mmbert.model import MmBertForMaskedLM

TEXT, START = "answers.text", "answers.answer_start"


@dataclass
class Window:
    row: int
    ids: Tensor
    context_from: int  # position of the window's first context token in ids
    offsets: list[tuple[int, int]]  # character span in the context of each context token of the window
    start: int  # answer start / end position in ids; 0 (<bos>) where the answer is not inside the window
    end: int


class QaTask(Task):
    kind = "qa"
    fields = Fields(required=("context", "question", TEXT, START), lists=(TEXT, START))
    main_metric = "f1"

    def __init__(
        self,
        *args: Any,
        doc_stride: int = 128,
        max_question_tokens: int = 64,
        max_answer_tokens: int = 30,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if max_question_tokens < 1 or self.max_len - max_question_tokens - 3 < 8:
            raise ConfigError(
                f"task.max_question_tokens={max_question_tokens} leaves fewer than 8 context tokens of "
                f"task.max_len={self.max_len}"
            )
        if doc_stride < 0:
            raise ConfigError(f"task.doc_stride must be >= 0, got {doc_stride}")
        self.doc_stride = doc_stride
        self.max_question_tokens = max_question_tokens
        self.max_answer_tokens = max_answer_tokens

    def check_rows(self, split: Split) -> None:
        for i, row in enumerate(split.rows):
            texts = row[TEXT] if isinstance(row[TEXT], list) else [row[TEXT]]
            starts = row[START] if isinstance(row[START], list) else [row[START]]
            if not texts or len(texts) != len(starts):
                raise split.error(f"row {i}: {len(texts)} answer texts but {len(starts)} answer starts")
            context = row["context"]
            for text, start in zip(texts, starts, strict=True):
                if not isinstance(start, int) or isinstance(start, bool):
                    raise split.error(f"row {i}: field {START!r} must hold integers, got {start!r}")
                if not text or context[start : start + len(text)] != text:
                    raise split.error(
                        f"row {i}: answer {text!r} is not at {START}={start} of its context "
                        f"(there: {context[start : start + len(text)]!r})"
                    )
            row[TEXT], row[START] = list(texts), list(starts)

    def encode(
        self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, train: bool
    ) -> list[Window]:
        questions = tokenizer([r["question"] for r in rows], add_special_tokens=False)["input_ids"]
        contexts = tokenizer(
            [r["context"] for r in rows], add_special_tokens=False, return_offsets_mapping=True
        )
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        windows = []
        for r, row in enumerate(rows):
            q = questions[r][: self.max_question_tokens]
            ctx_ids, offsets = contexts["input_ids"][r], contexts["offset_mapping"][r]
            width = self.max_len - len(q) - 3
            step = max(1, width - self.doc_stride)
            answer = (row[START][0], row[START][0] + len(row[TEXT][0]))
            first = 0
            while True:
                span_ids, span_off = ctx_ids[first : first + width], offsets[first : first + width]
                ids = torch.tensor([bos, *q, eos, *span_ids, eos])
                context_from = len(q) + 2
                start, end = _answer_positions(span_off, answer, context_from)
                windows.append(Window(r, ids, context_from, [tuple(o) for o in span_off], start, end))
                if first + width >= len(ctx_ids):
                    break
                first += step
        return windows

    def build(self, mlm: MmBertForMaskedLM) -> nn.Module:
        return EncoderWithHead(mlm, 2, pooled=False, dropout=self.finetune_cfg.dropout)

    def loss(self, model: nn.Module, examples: list[Window], idx: list[int], device: torch.device) -> Tensor:
        batch = pack([examples[i].ids for i in idx], device)
        logits_T2 = model(batch).float()
        begin = batch.cu_seqlens_N1[:-1].long()
        starts = begin + torch.tensor([examples[i].start for i in idx], device=device)
        ends = begin + torch.tensor([examples[i].end for i in idx], device=device)
        lse_N2 = _segment_logsumexp(logits_T2, batch)
        loss_start = (lse_N2[:, 0] - logits_T2[starts, 0]).mean()
        loss_end = (lse_N2[:, 1] - logits_T2[ends, 1]).mean()
        return (loss_start + loss_end) / 2

    @torch.no_grad()
    def predict(
        self, model: nn.Module, rows: list[dict[str, Any]], examples: list[Window], device: torch.device
    ) -> list[str]:
        model.eval()
        best: list[tuple[float, str]] = [(-float("inf"), "") for _ in rows]
        lengths = [len(w.ids) for w in examples]
        for idx in batches_by_tokens(lengths, self.eval_batch_tokens, 4096, range(len(examples))):
            batch = pack([examples[i].ids for i in idx], device)
            logits_T2 = model(batch).float().cpu()
            starts = batch.cu_seqlens_N1.tolist()
            for j, i in enumerate(idx):
                w = examples[i]
                lo = starts[j] + w.context_from
                span = logits_T2[lo : lo + len(w.offsets)]
                score, a, b = self._best_span(span[:, 0], span[:, 1])
                if score > best[w.row][0]:
                    text = rows[w.row]["context"][w.offsets[a][0] : w.offsets[b][1]]
                    best[w.row] = (score, text)
        return [text for _, text in best]

    def _best_span(self, start_W: Tensor, end_W: Tensor) -> tuple[float, int, int]:
        """Highest start + end logit over spans a <= b < a + max_answer_tokens."""
        n = start_W.numel()
        scores_WW = start_W[:, None] + end_W[None, :]
        a = torch.arange(n)
        allowed = (a[None, :] >= a[:, None]) & (a[None, :] < a[:, None] + self.max_answer_tokens)
        flat = scores_WW.masked_fill(~allowed, -float("inf")).flatten()
        k = int(flat.argmax())
        return float(flat[k]), k // n, k % n

    def score(self, rows: list[dict[str, Any]], predictions: list[str]) -> dict[str, float]:
        return squad_scores(predictions, [r[TEXT] for r in rows])


def _answer_positions(offsets: list[tuple[int, int]], answer: tuple[int, int], shift: int) -> tuple[int, int]:
    """(start, end) token positions (plus ``shift``) of the answer's characters, or (0, 0) where the window does
    not hold the whole answer."""
    begin, end = answer
    first = next((k for k, (s, e) in enumerate(offsets) if e > begin), None)
    last = next((k for k in range(len(offsets) - 1, -1, -1) if offsets[k][0] < end), None)
    if first is None or last is None or offsets[first][0] > begin or offsets[last][1] < end or last < first:
        return 0, 0
    return first + shift, last + shift


def _segment_logsumexp(x_TC: Tensor, batch: Packed) -> Tensor:
    """[N, C] log-sum-exp of each document's rows of ``x``."""
    doc_T = batch.doc_index_T()
    n, c = batch.num_docs, x_TC.shape[1]
    max_NC = x_TC.new_full((n, c), -float("inf")).scatter_reduce(
        0, doc_T[:, None].expand(-1, c), x_TC, reduce="amax"
    )
    sums_NC = x_TC.new_zeros(n, c).index_add_(0, doc_T, (x_TC - max_NC[doc_T]).exp())
    return sums_NC.log() + max_NC
