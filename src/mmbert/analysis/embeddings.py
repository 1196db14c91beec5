"""Sentence embeddings (mean of the last hidden states over the tokens of a sentence) and how well
translations line up across languages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from mmbert.analysis.models import iter_checkpoints
from mmbert.model import MmBertForMaskedLM
from mmbert.model.encode import encode


def embed_parallel(
    model: MmBertForMaskedLM,
    tokenizer: PreTrainedTokenizerBase,
    parallel: pd.DataFrame,
    batch_tokens: int = 16384,
    max_len: int = 256,
) -> dict[str, pd.DataFrame]:
    """``{language: DataFrame}`` of the mean-pooled embeddings (:func:`mmbert.encode`) of every sentence of
    ``parallel`` (see :func:`mmbert.data.eval_texts.read_parallel`), indexed by sentence id."""
    embedded = {}
    for lang in parallel.columns:
        texts = parallel[lang].dropna()
        vectors = encode(
            model, list(texts), tokenizer=tokenizer, batch_tokens=batch_tokens, max_length=max_len
        )
        embedded[lang] = pd.DataFrame(vectors.numpy(), index=texts.index)
    return embedded


@dataclass
class CrossLingual:
    """Language x language tables (row: source A, column: target B) over the sentences both have:
    ``translation``: mean cosine similarity of a sentence and its translation; ``other``: mean cosine of a
    sentence and the non-translations (the baseline the translation similarity should stand above);
    ``retrieval``: fraction of A's sentences whose nearest B sentence is their translation;
    ``pairs``: how many sentences A and B share."""

    translation: pd.DataFrame
    other: pd.DataFrame
    retrieval: pd.DataFrame
    pairs: pd.DataFrame

    @property
    def gap(self) -> pd.DataFrame:
        """translation - other between distinct languages (NaN on the diagonal, where it is trivial)."""
        return off_diagonal(self.translation - self.other)


def off_diagonal(table: pd.DataFrame) -> pd.DataFrame:
    """A language x language table with its same-language cells set to NaN."""
    same = np.equal.outer(table.index.to_numpy(), table.columns.to_numpy())
    return table.mask(same)


def crosslingual_similarity(embedded: Mapping[str, pd.DataFrame]) -> CrossLingual:
    """Compare every pair of languages of ``{language: embeddings indexed by sentence id}``."""
    langs = list(embedded)
    ids = pd.Index([]).append([embedded[lang].index for lang in langs]).unique()
    # [languages, sentences, H] unit vectors on the union of sentence ids, with a mask of which exist.
    present_LN = np.stack([ids.isin(embedded[lang].index) for lang in langs])
    unit_LNH = np.stack([_unit_rows(embedded[lang].reindex(ids).fillna(0.0).to_numpy()) for lang in langs])
    shape = (len(langs), len(langs))
    translation, other, retrieval = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    pairs = np.zeros(shape, dtype=int)
    for a in range(len(langs)):
        for b in range(len(langs)):
            common = present_LN[a] & present_LN[b]
            n = int(common.sum())
            pairs[a, b] = n
            if n == 0:
                continue
            cos_nn = unit_LNH[a, common] @ unit_LNH[b, common].T
            diagonal = cos_nn.diagonal().copy()  # a view would see the fill below
            translation[a, b] = diagonal.mean()
            if n > 1:
                other[a, b] = (cos_nn.sum() - diagonal.sum()) / (n * n - n)
            # Found only if the translation beats every other candidate strictly: a model that maps all
            # sentences to one vector must score 0, not win ties by index order.
            np.fill_diagonal(cos_nn, -np.inf)
            retrieval[a, b] = (diagonal > cos_nn.max(axis=1)).mean()
    tables = [pd.DataFrame(t, index=langs, columns=langs) for t in (translation, other, retrieval, pairs)]
    return CrossLingual(*tables)


def _unit_rows(x_NH: np.ndarray) -> np.ndarray:
    x_NH = x_NH.astype(np.float64)
    norms = np.linalg.norm(x_NH, axis=1, keepdims=True)
    return x_NH / np.where(norms > 0, norms, 1.0)


def crosslingual_checkpoints(
    checkpoints: Mapping[str, str | Path],
    parallel: pd.DataFrame,
    batch_tokens: int = 16384,
    device: str | torch.device = "cpu",
) -> dict[str, CrossLingual]:
    """:func:`crosslingual_similarity` of every checkpoint's embeddings of the parallel sentences."""
    return {
        name: crosslingual_similarity(embed_parallel(model, tok, parallel, batch_tokens))
        for name, model, tok in iter_checkpoints(checkpoints, device=device)
    }


def summarise(results: Mapping[str, CrossLingual]) -> pd.DataFrame:
    """One row per checkpoint: the means over ordered pairs of distinct languages of the translation and
    non-translation similarities, their gap, and retrieval accuracy."""
    rows = {}
    for name, r in results.items():
        translation = off_diagonal(r.translation).stack().mean()
        other = off_diagonal(r.other).stack().mean()
        rows[name] = {
            "translation": translation,
            "other": other,
            "gap": translation - other,
            "retrieval": off_diagonal(r.retrieval).stack().mean(),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("checkpoint")
