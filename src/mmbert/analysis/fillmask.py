"""Fill-mask: mask every token of one word of a sentence and read the model's predictions for them.

Sentences and words are picked from the corpus itself, so every language and script of a corpus gets
examples (see :func:`choose_word`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from mmbert.analysis.models import iter_checkpoints, mlm_logits
from mmbert.data.langcodes import language_script
from mmbert.data.tokenizer import frame
from mmbert.model import MmBertForMaskedLM
from mmbert.model.encode import encode

_SENTENCE_END = re.compile(r"(?<=[.!?。！？।؟۔።፧])\s*|\n+")
# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, CJK ideographs.
_UNSPACED = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"
)
_MIN_WORD, _MAX_WORD, _UNSPACED_PIECE = 3, 12, 2


@dataclass(frozen=True)
class MaskedSentence:
    """A sentence and the character span ``[start, end)`` of the word to mask."""

    language: str
    text: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= len(self.text):
            raise ValueError(
                f"span [{self.start}, {self.end}) is not inside a {len(self.text)}-char sentence"
            )

    @property
    def word(self) -> str:
        return self.text[self.start : self.end]

    def masked_text(self, mask: str = "[MASK]") -> str:
        return self.text[: self.start] + mask + self.text[self.end :]

    @classmethod
    def of_word(cls, language: str, text: str, word: str) -> MaskedSentence:
        """The first occurrence of ``word`` in ``text``."""
        start = text.find(word)
        if start < 0 or not word:
            raise ValueError(f"{word!r} does not occur in {text!r}")
        return cls(language, text, start, start + len(word))


def _words(sentence: str) -> list[tuple[int, int]]:
    """Spans of the whitespace-separated words, without leading/trailing punctuation or symbols (a regex
    ``\\w+`` would cut Indic words at their vowel signs)."""
    spans = []
    for m in re.finditer(r"\S+", sentence):
        start, end = m.span()
        while start < end and unicodedata.category(sentence[start])[0] in "PS":
            start += 1
        while end > start and unicodedata.category(sentence[end - 1])[0] in "PS":
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


def choose_word(sentence: str) -> tuple[int, int] | None:
    """Character span of the word to mask, the suitable one nearest the middle of the sentence: a word of
    3-12 characters that is not a number, or, in scripts written without spaces, two characters from the
    middle of a run of that script."""
    middle = len(sentence) / 2
    unspaced = [m.span() for m in _UNSPACED.finditer(sentence) if m.end() - m.start() >= _UNSPACED_PIECE]
    if unspaced:
        start, end = min(unspaced, key=lambda span: abs((span[0] + span[1]) / 2 - middle))
        lo = (start + end - _UNSPACED_PIECE) // 2
        hi = lo + _UNSPACED_PIECE
        # Never split a character from its combining marks (Thai vowel and tone marks, kana voicing).
        while lo > start and _is_mark(sentence[lo]):
            lo -= 1
        while hi < end and _is_mark(sentence[hi]):
            hi += 1
        return lo, hi
    fitting = [
        (a, b) for a, b in _words(sentence) if _MIN_WORD <= b - a <= _MAX_WORD and not sentence[a:b].isdigit()
    ]
    if not fitting:
        return None
    return min(fitting, key=lambda span: abs((span[0] + span[1]) / 2 - middle))


def pick_masked_sentences(
    texts: Mapping[str, Sequence[str]], per_language: int = 2, min_chars: int = 12, max_chars: int = 300
) -> list[MaskedSentence]:
    """The first ``per_language`` distinct sentences of each language's documents with a word to mask."""
    picked: list[MaskedSentence] = []
    for lang, docs in texts.items():
        seen: set[str] = set()
        sentences = (s.strip() for doc in docs for s in _SENTENCE_END.split(doc))
        for sentence in sentences:
            if len(seen) == per_language:
                break
            if sentence in seen or not min_chars <= len(sentence) <= max_chars:
                continue
            span = choose_word(sentence)
            if span is not None:
                picked.append(MaskedSentence(lang, sentence, *span))
                seen.add(sentence)
    return picked


class MaskedInput(NamedTuple):
    ids: Tensor  # framed input ids with the word's tokens replaced by the mask token
    positions: Tensor  # where the masked tokens are in ``ids``
    targets: Tensor  # the original ids there
    start: int  # character span of the masked tokens in the sentence: it can exceed the word's own span
    end: int


def mask_word(
    tokenizer: PreTrainedTokenizerBase, sentence: MaskedSentence, max_len: int = 256
) -> MaskedInput:
    """Mask the tokens whose character offsets overlap the word; a token that also covers a neighbouring
    character is masked whole."""
    enc = tokenizer(sentence.text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    span = [i for i, (a, b) in enumerate(offsets) if a < sentence.end and b > sentence.start and b > a]
    if not span:
        raise ValueError(f"no token covers {sentence.word!r} in {sentence.text!r}")
    if span[-1] >= max_len - 2:
        raise ValueError(f"{sentence.word!r} lies beyond max_len={max_len} tokens of {sentence.text!r}")
    ids = frame(tokenizer, list(enc["input_ids"]), max_len)
    positions = torch.tensor(span) + 1  # after <bos>
    targets = ids[positions].clone()
    ids[positions] = tokenizer.mask_token_id
    start, end = min(offsets[i][0] for i in span), max(offsets[i][1] for i in span)
    while sentence.text[start].isspace():  # sentencepiece-style tokens can include the space before a word
        start += 1
    return MaskedInput(ids, positions, targets, start, end)


@torch.inference_mode()
def fill_mask(
    model: MmBertForMaskedLM,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[MaskedSentence],
    top_k: int = 5,
    batch_tokens: int = 16384,
) -> pd.DataFrame:
    """One row per sentence: ``language``, ``script``, ``masked`` (the text with [MASK] over the masked tokens'
    characters), ``target`` (the masked tokens, decoded), ``prediction`` (the argmax at every masked position, decoded), ``exact`` (prediction ==
    target), ``target_logprob`` (mean log-probability of the target tokens) and ``top_k`` (the k most likely
    tokens at the first masked position with their probabilities). The hidden states come from
    :func:`mmbert.encode` (``pooling="none"``)."""
    device = next(model.parameters()).device
    masked = [mask_word(tokenizer, s) for s in sentences]
    states = encode(model, [m.ids for m in masked], pooling="none", batch_tokens=batch_tokens)
    rows = []
    for sentence, m, hidden_LH in zip(sentences, masked, states, strict=True):
        targets = m.targets
        logprobs_nV = mlm_logits(model, hidden_LH[m.positions].to(device)).float().log_softmax(-1).cpu()
        best_n = logprobs_nV.argmax(-1)
        top = logprobs_nV[0].exp().topk(min(top_k, logprobs_nV.shape[-1]))
        rows.append(
            {
                "language": sentence.language,
                "script": language_script(sentence.language),
                "masked": sentence.text[: m.start] + "[MASK]" + sentence.text[m.end :],
                "target": tokenizer.decode(targets).strip(),
                "prediction": tokenizer.decode(best_n).strip(),
                "exact": bool(torch.equal(best_n, targets)),
                "target_logprob": float(logprobs_nV.gather(1, targets[:, None]).mean()),
                "top_k": [
                    (tokenizer.decode([int(i)]).strip(), round(float(p), 4))
                    for p, i in zip(top.values, top.indices, strict=True)
                ],
            }
        )
    return pd.DataFrame(rows)


def fill_mask_checkpoints(
    checkpoints: Mapping[str, str | Path],
    sentences: Sequence[MaskedSentence],
    top_k: int = 5,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """:func:`fill_mask` for every checkpoint, with a leading ``checkpoint`` column."""
    frames = []
    for name, model, tok in iter_checkpoints(checkpoints, device=device):
        df = fill_mask(model, tok, sentences, top_k)
        df.insert(0, "checkpoint", name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
