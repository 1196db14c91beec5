"""Per-language MLM loss and accuracy of checkpoints on identical masked inputs.

The masked inputs are built once (15% of the non-special tokens, 80/10/10 as in training, a fixed seed) and
reused for every checkpoint, so differences between checkpoints are differences between models, not masks.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from mmbert.analysis.models import (
    batches_by_length,
    iter_checkpoints,
    mlm_logits,
    padded_batch,
    same_vocabulary,
)
from mmbert.data.masking import IGNORE_INDEX, Masker, special_ids_table
from mmbert.data.tokenizer import encode_framed
from mmbert.model import MmBertForMaskedLM

EVAL_MASK_RATIO = 0.15


@dataclass
class MaskedEvalSet:
    """Masked documents of each language: ``inputs[lang][i]`` and ``labels[lang][i]`` (-100: not scored)."""

    inputs: dict[str, list[Tensor]]
    labels: dict[str, list[Tensor]]
    tokenizer: PreTrainedTokenizerBase
    mask_ratio: float
    seed: int

    @property
    def languages(self) -> list[str]:
        return list(self.inputs)


def build_eval_set(
    texts: Mapping[str, list[str]],
    tokenizer: PreTrainedTokenizerBase,
    mask_ratio: float = EVAL_MASK_RATIO,
    seed: int = 0,
    max_len: int = 256,
) -> MaskedEvalSet:
    """Frame, truncate and mask every document once."""
    masker = Masker(special_ids_table(tokenizer), tokenizer.mask_token_id)
    inputs: dict[str, list[Tensor]] = {}
    labels: dict[str, list[Tensor]] = {}
    for lang, docs in texts.items():
        # A random stream per language, seeded from its name: a language's masks do not depend on which other
        # languages are evaluated alongside it.
        rng = np.random.default_rng([seed, zlib.crc32(lang.encode())])
        pairs = [masker(ids, mask_ratio, rng) for ids in encode_framed(tokenizer, docs, max_len)]
        inputs[lang] = [p[0] for p in pairs]
        labels[lang] = [p[1] for p in pairs]
    return MaskedEvalSet(inputs, labels, tokenizer, mask_ratio, seed)


@torch.inference_mode()
def evaluate_model(
    model: MmBertForMaskedLM,
    eval_set: MaskedEvalSet,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "",
) -> pd.DataFrame:
    """Index: language; columns ``loss`` (mean cross-entropy per masked token), ``accuracy`` (top-1) and
    ``masked_tokens``."""
    device = next(model.parameters()).device
    pad_id = eval_set.tokenizer.pad_token_id
    work = [(lang, b) for lang in eval_set.languages for b in _batches(eval_set, lang, batch_size)]
    totals = {lang: [0.0, 0, 0] for lang in eval_set.languages}  # loss sum, correct, count
    for lang, idx in tqdm(work, desc=desc or "MLM eval", disable=not progress):
        ids_BL, mask_BL, labels_BL = padded_batch(
            [eval_set.inputs[lang][i] for i in idx], pad_id, [eval_set.labels[lang][i] for i in idx], device
        )
        assert labels_BL is not None
        scored_BL = labels_BL != IGNORE_INDEX
        if not bool(scored_BL.any()):
            continue
        hidden_BLH = model.model(ids_BL, attention_mask=mask_BL)
        logits_nV = mlm_logits(model, hidden_BLH[scored_BL]).float()
        target_n = labels_BL[scored_BL]
        totals[lang][0] += float(F.cross_entropy(logits_nV, target_n, reduction="sum"))
        totals[lang][1] += int((logits_nV.argmax(-1) == target_n).sum())
        totals[lang][2] += int(target_n.numel())
    rows = {
        lang: {
            "loss": loss / n if n else float("nan"),
            "accuracy": correct / n if n else float("nan"),
            "masked_tokens": n,
        }
        for lang, (loss, correct, n) in totals.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("language")


def _batches(eval_set: MaskedEvalSet, lang: str, batch_size: int) -> list[list[int]]:
    return batches_by_length([len(s) for s in eval_set.inputs[lang]], batch_size)


def evaluate_checkpoints(
    checkpoints: Mapping[str, str | Path],
    texts: Mapping[str, list[str]],
    mask_ratio: float = EVAL_MASK_RATIO,
    seed: int = 0,
    max_len: int = 256,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """MLM loss and accuracy of each checkpoint on each language's texts.

    Index: checkpoint (in the given order); columns: a (metric, language) MultiIndex, so ``result["loss"]`` and
    ``result["accuracy"]`` are checkpoint x language tables. All checkpoints must share one vocabulary: the
    masked inputs are built once with the first checkpoint's tokenizer.
    """
    eval_set: MaskedEvalSet | None = None
    per_checkpoint = {}
    for name, model, tok in iter_checkpoints(checkpoints, device=device):
        if eval_set is None:
            eval_set = build_eval_set(texts, tok, mask_ratio, seed, max_len)
        elif not same_vocabulary(tok, eval_set.tokenizer):
            raise ValueError(f"checkpoint {name!r} has another vocabulary than the first checkpoint")
        per_checkpoint[name] = evaluate_model(model, eval_set, batch_size, progress, desc=name)
    if not per_checkpoint:
        raise ValueError("no checkpoints to evaluate")
    # unstack() turns a language x metric frame into a (metric, language) series: one row per checkpoint.
    wide = pd.DataFrame({name: df.unstack() for name, df in per_checkpoint.items()}).T
    wide.index.name = "checkpoint"
    return wide


def improvement_kept(loss: pd.DataFrame, base: str, target: str) -> pd.DataFrame:
    """For each checkpoint and language, the fraction of ``target``'s loss improvement over ``base`` that the
    checkpoint has: 0 = no better than ``base``, 1 = as good as ``target`` (e.g. how much of Decay-All's gain on
    its new languages a merge keeps). NaN where ``target`` did not improve on ``base``."""
    gain = loss.loc[base] - loss.loc[target]
    return (loss.loc[base] - loss).div(gain.where(gain > 0), axis=1)
