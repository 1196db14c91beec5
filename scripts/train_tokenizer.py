"""Train the sample corpus tokenizer ``data/tokenizer`` and refresh the sample's token-count cache.

Byte-fallback BPE with exactly 8192 ids (the tiny model's vocabulary), Gemma-2-like special ids:
``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, ``<mask>`` 4, then the 256 byte tokens ``<0x00>``..``<0xFF>``
(so any text encodes without ``<unk>``), then the learned pieces. Text is NFC-normalised and split on spaces
(``▁`` marks a word start, SentencePiece style), into single digits and into single Han characters (as BERT
does for Chinese: on a corpus this small, BPE would otherwise learn whole Chinese sentences as tokens).
Pieces are at most 10 characters for the same reason (Japanese kana and Thai runs have no spaces).

The post-processor frames a text as ``<bos> text <eos>`` (pairs: ``<bos> a <eos> b <eos>``), the way the
training pipeline frames every document, so ``tokenizer(text)`` gives exactly what the model saw. Gemma
itself adds only ``<bos>``; the data pipeline does not rely on either (it adds the specials itself).
``<mask>`` strips the space before it, so ``"la capitale de <mask>."`` masks a whole word.

    python scripts/train_tokenizer.py [--counts-only] [CORPUS_DIR [OUT_DIR]]

``--counts-only`` keeps the tokenizer in OUT_DIR and refreshes only the corpus's token counts: the way to
follow a change of the sample corpus without renumbering the token ids that tests, fixtures and notebooks
hold.
"""

from __future__ import annotations

import argparse
import json
import string
from collections.abc import Iterator
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast

from mmbert.checkpoint.formats import make_tokenizer_config_portable

ROOT = Path(__file__).resolve().parents[1]
VOCAB_SIZE = 8192
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]


def corpus_texts(corpus: Path) -> Iterator[str]:
    from mmbert.data import FolderMix

    mix = FolderMix(str(corpus))
    for lang in mix.languages:
        yield from mix.train_source(lang).first_docs(10**9)


def build(corpus: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[\p{N}\p{Han}]"), "isolated"),
            pre_tokenizers.Metaspace("▁", prepend_scheme="first"),
        ]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE - len(BYTES), special_tokens=SPECIALS, min_frequency=2, max_token_length=10,
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(corpus_texts(corpus), trainer)

    # Renumber: specials, the 256 byte-fallback tokens, then the learned vocabulary in training order.
    spec = json.loads(tok.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    order = SPECIALS + BYTES + [t for t, _ in learned if t not in SPECIALS and t not in BYTES]
    if len(order) != VOCAB_SIZE:
        raise SystemExit(
            f"learned vocabulary has {len(order)} ids, not {VOCAB_SIZE}: the corpus is too small"
        )
    spec["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    for added in spec["added_tokens"]:
        added["id"] = SPECIALS.index(added["content"])
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    return tok


def write(corpus: Path, out: Path) -> None:
    tok = build(corpus)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", cls_token="<bos>", sep_token="<eos>", model_max_length=8192,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    make_tokenizer_config_portable(out)
    special_map = {
        "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
        "mask_token": "<mask>", "cls_token": "<bos>", "sep_token": "<eos>",
    }  # fmt: skip
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    print(f"wrote {out}: vocab {tok.get_vocab_size()}, specials {ids}")


def refresh_counts(corpus: Path, tokenizer: Path) -> None:
    from mmbert.data import FolderMix
    from mmbert.data.tokenizer import load_tokenizer

    load_tokenizer.cache_clear()
    counts = FolderMix(str(corpus), tokenizer=str(tokenizer)).token_counts()
    print(
        f"token counts: max {max(counts.values())}, min {min(counts.values())}, total {sum(counts.values())}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=ROOT / "data" / "sample")
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "data" / "tokenizer")
    parser.add_argument("--counts-only", action="store_true", help="keep the tokenizer, refresh the counts")
    args = parser.parse_args()
    if not args.counts_only:
        write(args.corpus, args.out)
    refresh_counts(args.corpus, args.out)
