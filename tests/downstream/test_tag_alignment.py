"""Word tags on sub-tokens, with the project's tokenizer: each word's label on its first sub-token, -100 on
its other sub-tokens and on <bos>/<eos>; predictions read back from those first sub-tokens, word by word."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from helpers import REPO
from torch import Tensor, nn

from mmbert.data.tokenizer import load_tokenizer
from mmbert.downstream import TagTask
from mmbert.downstream.packing import Packed
from mmbert.downstream.toy import write_rows
from mmbert.model import IGNORE_INDEX

X = IGNORE_INDEX
# "Tórshavn" is six sub-tokens, "." two ("▁", "."), the en dash four bytes (a space and three byte tokens).
FAROESE = {
    "tokens": ["Anna", "Olsen", "býr", "í", "Tórshavn", "."],
    "tags": ["B-PER", "I-PER", "O", "O", "B-LOC", "O"],
}
FAROESE_PIECES = [
    "▁An",
    "na",
    "▁O",
    "l",
    "sen",
    "▁b",
    "ý",
    "r",
    "▁í",
    "▁T",
    "ór",
    "s",
    "h",
    "av",
    "n",
    "▁",
    ".",
]
RUSSIAN = {"tokens": ["Москва", "–", "столица", "России"], "tags": ["B-LOC", "O", "O", "B-LOC"]}
RUSSIAN_PIECES = ["▁Москва", "▁", "<0xE2>", "<0x80>", "<0x93>", "▁столица", "▁России"]
# Training sees B-ORG too: a tag that is no word's gold tag in the two sentences above.
TAGS = ["O", "B-LOC", "B-ORG", "B-PER", "I-PER"]
O, LOC, ORG, PER, IPER = range(5)
FAROESE_LABELS = [X, PER, X, IPER, X, X, O, X, X, O, LOC, X, X, X, X, X, O, X, X]
RUSSIAN_LABELS = [X, LOC, O, X, X, X, O, LOC, X]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(str(REPO / "data" / "tokenizer"))


def _task(tmp_path, max_len: int = 64) -> TagTask:
    rows = [FAROESE, RUSSIAN, {"tokens": ["Acme"], "tags": ["B-ORG"]}]
    path = str(write_rows(rows, tmp_path / "tags.jsonl"))
    task = TagTask("tag", train_file=path, test_file=path, max_len=max_len)
    task.load()
    return task


def test_first_sub_token_carries_the_words_label(tmp_path, tokenizer):
    task = _task(tmp_path)
    assert task.tags == TAGS
    faroese, russian = task.encode([FAROESE, RUSSIAN], tokenizer, train=True)
    for example, row, pieces, labels in (
        (faroese, FAROESE, FAROESE_PIECES, FAROESE_LABELS),
        (russian, RUSSIAN, RUSSIAN_PIECES, RUSSIAN_LABELS),
    ):
        ids = example.ids.tolist()
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == pieces
        assert example.labels.tolist() == labels
        # The same rule from the tokenizer's own word ids: a label where a new word starts, its tag's index.
        word_ids = tokenizer(row["tokens"], is_split_into_words=True, add_special_tokens=False).word_ids()
        starts = {pos + 1: w for pos, w in enumerate(word_ids) if pos == 0 or word_ids[pos - 1] != w}
        assert {p: TAGS[lab] for p, lab in enumerate(labels) if lab != X} == {
            p: row["tags"][w] for p, w in starts.items()
        }
        assert example.first_token == {w: p for p, w in starts.items()}


def test_words_cut_by_max_len_get_no_label(tmp_path, tokenizer):
    (faroese,) = _task(tmp_path, max_len=8).encode([FAROESE], tokenizer, train=False)
    # Six sub-tokens fit: "Anna", "Olsen" and the first piece of "býr"; "í", "Tórshavn" and "." are cut.
    assert faroese.ids.tolist() == [
        tokenizer.bos_token_id,
        2770,
        3200,
        1365,
        337,
        2498,
        1234,
        tokenizer.eos_token_id,
    ]
    assert faroese.labels.tolist() == [X, PER, X, IPER, X, X, O, X]
    assert faroese.first_token == {0: 1, 1: 3, 2: 6}


class FirstPieceOracle(nn.Module):
    """Logits putting each word's gold tag on its first sub-token and B-ORG (no word's tag) everywhere else,
    so that reading any other position of a word shows up as B-ORG. Documents are known by their ids."""

    def __init__(self, labels_by_ids: dict[tuple[int, ...], list[int]]) -> None:
        super().__init__()
        self.targets = {
            ids: torch.tensor([ORG if t == X else t for t in ts]) for ids, ts in labels_by_ids.items()
        }

    def forward(self, batch: Packed) -> Tensor:
        bounds = batch.cu_seqlens_N1.tolist()
        ids = batch.input_ids_T.tolist()
        target = torch.cat([self.targets[tuple(ids[a:b])] for a, b in pairwise(bounds)])
        return nn.functional.one_hot(target, len(TAGS)).float()


@pytest.mark.parametrize("eval_batch_tokens", [4096, 1])  # both sentences packed in one batch; one a batch
def test_predictions_map_back_to_words(tmp_path, tokenizer, eval_batch_tokens):
    task = _task(tmp_path)
    task.eval_batch_tokens = eval_batch_tokens
    rows = [RUSSIAN, FAROESE]  # the Faroese sentence second: its positions are offset in the packed batch
    examples = task.encode(rows, tokenizer, train=False)
    oracle = FirstPieceOracle(
        {
            tuple(e.ids.tolist()): labels
            for e, labels in zip(examples, [RUSSIAN_LABELS, FAROESE_LABELS], strict=True)
        }
    )
    assert task.predict(oracle, rows, examples, torch.device("cpu")) == [RUSSIAN["tags"], FAROESE["tags"]]


def test_words_cut_by_max_len_are_predicted_outside(tmp_path, tokenizer):
    task = _task(tmp_path, max_len=8)
    examples = task.encode([FAROESE], tokenizer, train=False)
    oracle = FirstPieceOracle({tuple(examples[0].ids.tolist()): [X, LOC, X, LOC, X, X, LOC, X]})
    predicted = task.predict(oracle, [FAROESE], examples, torch.device("cpu"))
    assert predicted == [["B-LOC", "B-LOC", "B-LOC", "O", "O", "O"]]
