"""Downstream metrics: accuracy and macro-F1, entity-level F1 over BIO tags, SQuAD exact match and F1,
bitext retrieval accuracy@1 in both directions. Pure functions of predictions and gold values."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor


def accuracy(pred: Sequence[Hashable], gold: Sequence[Hashable]) -> float:
    _same_length(pred, gold)
    return sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)


def macro_f1(pred: Sequence[Hashable], gold: Sequence[Hashable]) -> float:
    """Unweighted mean of the per-class F1 over every class that occurs in the gold values or predictions
    (a class predicted but never gold scores 0, as in scikit-learn's ``average='macro'``)."""
    _same_length(pred, gold)
    scores = []
    for label in set(gold) | set(pred):
        tp = sum(p == label and g == label for p, g in zip(pred, gold, strict=True))
        fp = sum(p == label and g != label for p, g in zip(pred, gold, strict=True))
        fn = sum(p != label and g == label for p, g in zip(pred, gold, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def bio_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of each entity of a BIO sequence, conlleval-style: ``B-X`` opens an entity, ``I-X``
    extends an open ``X`` entity and otherwise opens one (an ``I-`` after ``O`` or after another type)."""
    entities = set()
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, typ = tag.partition("-")
        continues = prefix == "I" and typ == kind
        if kind is not None and not continues:
            entities.add((kind, start, i - 1))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = typ, i
    return entities


def entity_f1(pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over exact entity matches (type and span) of every sentence."""
    _same_length(pred, gold)
    tp = n_pred = n_gold = 0
    for p, g in zip(pred, gold, strict=True):
        if len(p) != len(g):
            raise ValueError(f"a predicted tag sequence has {len(p)} tags, its gold sequence {len(g)}")
        pe, ge = bio_entities(p), bio_entities(g)
        tp += len(pe & ge)
        n_pred += len(pe)
        n_gold += len(ge)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no English articles, single spaces. Punctuation is
    ASCII punctuation and every Unicode punctuation character (as MLQA's evaluation does for other scripts)."""
    text = "".join(
        " " if ch in string.punctuation or unicodedata.category(ch).startswith("P") else ch
        for ch in text.lower()
    )
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return float(max(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best over the gold answers of the F1 of normalised whitespace tokens."""
    best = 0.0
    pred_tokens = normalize_answer(prediction).split()
    for answer in answers:
        gold_tokens = normalize_answer(answer).split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common:
            precision, recall = common / len(pred_tokens), common / len(gold_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean exact match and F1 (fractions in [0, 1])."""
    _same_length(predictions, answers)
    n = len(predictions)
    return {
        "exact_match": sum(exact_match(p, a) for p, a in zip(predictions, answers, strict=True)) / n,
        "f1": sum(token_f1(p, a) for p, a in zip(predictions, answers, strict=True)) / n,
    }


def retrieval_accuracy(source_NH: Tensor, target_NH: Tensor) -> dict[str, float]:
    """Row i of ``source`` translates row i of ``target``. accuracy@1 source->target: the fraction of sources
    whose most cosine-similar target is their translation, strictly (a model that maps every sentence to one
    vector scores 0, it does not win ties by index); target->source likewise; ``accuracy@1`` their mean."""
    if source_NH.shape != target_NH.shape or source_NH.shape[0] < 1:
        raise ValueError(f"source {tuple(source_NH.shape)} and target {tuple(target_NH.shape)} must match")
    s = torch.nn.functional.normalize(source_NH.double(), dim=-1)
    t = torch.nn.functional.normalize(target_NH.double(), dim=-1)
    sim_NN = s @ t.T
    diagonal_N = sim_NN.diagonal().clone()
    others_NN = sim_NN.clone().fill_diagonal_(-torch.inf)
    s2t = (diagonal_N > others_NN.max(dim=1).values).double().mean().item()
    t2s = (diagonal_N > others_NN.max(dim=0).values).double().mean().item()
    return {"accuracy@1_src2tgt": s2t, "accuracy@1_tgt2src": t2s, "accuracy@1": (s2t + t2s) / 2}


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions for {len(b)} gold values")
    if not b:
        raise ValueError("no gold values to score")
