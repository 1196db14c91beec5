"""A synthetic recipe root in the real on-disk formats, to run the analyses without training anything.

It holds a small multi-script corpus (FineWeb2 layout with a parallel-sentence file) of sentences built from
a 12-word lexicon per language, a tokenizer trained on it, and a recipe root whose runs have a
``csv/metrics.csv``, ``mixture.json`` and an ``hf/`` export of a tiny randomly initialised model, plus the
two merges. The models are untrained: numbers computed from them say nothing about the recipe.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mmbert.analysis.discovery import parent_of
from mmbert.checkpoint.hf import save_hf_folder
from mmbert.model import MmBertConfig, MmBertForMaskedLM

# The same 12 concepts in each language (water, house, sun, tree, dog, book, city, river, bread, moon, child,
# road), so that sentences built from one concept sequence are translations of each other.
LEXICON: dict[str, list[str]] = {
    "eng_Latn": [
        "water",
        "house",
        "sun",
        "tree",
        "dog",
        "book",
        "city",
        "river",
        "bread",
        "moon",
        "child",
        "road",
    ],
    "fra_Latn": [
        "eau",
        "maison",
        "soleil",
        "arbre",
        "chien",
        "livre",
        "ville",
        "rivière",
        "pain",
        "lune",
        "enfant",
        "route",
    ],
    "deu_Latn": [
        "Wasser",
        "Haus",
        "Sonne",
        "Baum",
        "Hund",
        "Buch",
        "Stadt",
        "Fluss",
        "Brot",
        "Mond",
        "Kind",
        "Straße",
    ],
    "rus_Cyrl": [
        "вода",
        "дом",
        "солнце",
        "дерево",
        "собака",
        "книга",
        "город",
        "река",
        "хлеб",
        "луна",
        "ребёнок",
        "дорога",
    ],
    "ell_Grek": [
        "νερό",
        "σπίτι",
        "ήλιος",
        "δέντρο",
        "σκύλος",
        "βιβλίο",
        "πόλη",
        "ποτάμι",
        "ψωμί",
        "φεγγάρι",
        "παιδί",
        "δρόμος",
    ],
    "arb_Arab": ["ماء", "بيت", "شمس", "شجرة", "كلب", "كتاب", "مدينة", "نهر", "خبز", "قمر", "طفل", "طريق"],
    "hin_Deva": ["पानी", "घर", "सूरज", "पेड़", "कुत्ता", "किताब", "शहर", "नदी", "रोटी", "चाँद", "बच्चा", "सड़क"],
    "cmn_Hani": ["水", "房子", "太阳", "树", "狗", "书", "城市", "河", "面包", "月亮", "孩子", "路"],
}
_JOINER = {"cmn_Hani": ""}
_FULL_STOP = {"cmn_Hani": "。", "hin_Deva": " ।"}
# Unequal corpus sizes, so that temperature sampling has something to flatten.
TRAIN_DOCS = {"eng_Latn": 24, "fra_Latn": 16, "deu_Latn": 12, "rus_Cyrl": 12, "cmn_Hani": 8, "arb_Arab": 6}
TRAIN_DOCS |= {"ell_Grek": 4, "hin_Deva": 3}
TEST_DOCS = 4
PARALLEL_SENTENCES = 12

# Which languages each run trains on: decay-all adds languages the mid-training mixture did not have.
PHASE_LANGUAGES = {
    "pretrain": ["eng_Latn", "fra_Latn", "rus_Cyrl", "cmn_Hani"],
    "midtrain": ["eng_Latn", "fra_Latn", "rus_Cyrl", "cmn_Hani", "deu_Latn", "arb_Arab"],
}
PHASE_LANGUAGES["decay-eng"] = PHASE_LANGUAGES["midtrain"]
PHASE_LANGUAGES["decay-cont"] = PHASE_LANGUAGES["midtrain"]
PHASE_LANGUAGES["decay-all"] = [*PHASE_LANGUAGES["midtrain"], "ell_Grek", "hin_Deva"]
# (tau, mask ratio, token budget, steps) of each run, shaped like the toy recipe.
_RUN_SETTINGS = {
    "pretrain": (0.7, 0.30, 3_000_000, 30),
    "midtrain": (0.5, 0.15, 2_000_000, 20),
    "decay-eng": (0.3, 0.05, 1_000_000, 10),
    "decay-cont": (0.3, 0.05, 1_000_000, 10),
    "decay-all": (0.3, 0.05, 1_000_000, 10),
}
MERGES = ("merges/ties", "merges/ema")
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0-4, as MmBertConfig expects


def sentence(lang: str, concepts: list[int]) -> str:
    words = [LEXICON[lang][c] for c in concepts]
    return _JOINER.get(lang, " ").join(words) + _FULL_STOP.get(lang, ".")


def _document(lang: str, rng: random.Random) -> str:
    sentences = [sentence(lang, [rng.randrange(12) for _ in range(rng.randint(5, 9))]) for _ in range(4)]
    return "\n".join(sentences)


def write_corpus(folder: str | Path, seed: int = 0) -> Path:
    """``{lang}/{train,test}/000.jsonl`` and ``parallel.jsonl`` under ``folder``."""
    folder = Path(folder)
    rng = random.Random(seed)
    for lang, n_train in TRAIN_DOCS.items():
        for split, n in (("train", n_train), ("test", TEST_DOCS)):
            (folder / lang / split).mkdir(parents=True, exist_ok=True)
            lines = [json.dumps({"text": _document(lang, rng)}, ensure_ascii=False) for _ in range(n)]
            (folder / lang / split / "000.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(folder / "parallel.jsonl", "w", encoding="utf-8") as f:
        for i in range(PARALLEL_SENTENCES):
            concepts = [rng.randrange(12) for _ in range(6)]
            record = {"id": f"s{i:03d}"} | {lang: sentence(lang, concepts) for lang in LEXICON}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return folder


def train_tokenizer(corpus: str | Path, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A small BPE tokenizer (sentencepiece-style word boundaries) trained on the corpus' train splits."""
    texts = [
        json.loads(line)["text"]
        for path in sorted(Path(corpus).glob("*/train/*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.decoder = decoders.Metaspace()
    raw.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def tiny_config(vocab_size: int) -> MmBertConfig:
    return MmBertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        local_attention=16,
        attn_backend="sdpa",
    )


def tiny_model(vocab_size: int, seed: int) -> MmBertForMaskedLM:
    torch.manual_seed(seed)
    return MmBertForMaskedLM(tiny_config(vocab_size)).eval()


def _weights(tokens: Mapping[str, int], tau: float) -> dict[str, float]:
    powered = {lang: n**tau for lang, n in tokens.items()}
    total = sum(powered.values())
    return {lang: p / total for lang, p in powered.items()}


def _lr(run: str, f: float) -> float:
    """Learning rate at fraction f of the run: warmup then constant, constant, or 1-sqrt decay to 0.04x."""
    if run == "pretrain":
        return 2e-3 * min(1.0, f / 0.1)
    if run == "midtrain":
        return 1e-3
    return 1e-3 * (0.04 + 0.96 * (1 - math.sqrt(f)))


def write_metrics_csv(run_dir: Path, run: str, tokens_before: float, rng: random.Random) -> float:
    """A CSVLogger-style sparse metrics.csv (train rows every step, data/tokens every 2, val every 5);
    returns the cumulative tokens at the end of the run."""
    tau, mask_ratio, budget, steps = _RUN_SETTINGS[run]
    langs = PHASE_LANGUAGES[run]
    weights = _weights({lang: TRAIN_DOCS[lang] for lang in langs}, tau)
    rows: list[dict[str, float]] = []
    for step in range(1, steps + 1):
        tokens = budget * step / steps
        loss = 2.0 + 6.0 * math.exp(-(tokens_before + tokens) / 2e6) + rng.uniform(-0.1, 0.1)
        train = {"train/loss": loss, "train/lr": _lr(run, step / steps), "train/mask_ratio": mask_ratio}
        rows.append({"step": step - 1, "epoch": 0, **train, "train/tokens": tokens})
        if step % 2 == 0:
            rows.append(
                {"step": step - 1} | {f"data/tokens/{lang}": tokens * w for lang, w in weights.items()}
            )
        if step % 5 == 0:
            val = {f"val/loss/{lang}": loss + 0.2 * i for i, lang in enumerate(langs)}
            rows.append({"step": step - 1, "epoch": 0, "val/loss": loss, "val/acc": 1 / loss} | val)
    (run_dir / "csv").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(run_dir / "csv" / "metrics.csv", index=False)
    return tokens_before + budget


def write_mixture_json(run_dir: Path, run: str, rng: random.Random) -> None:
    tau, _, budget, _ = _RUN_SETTINGS[run]
    tokens = {lang: 1000 * TRAIN_DOCS[lang] for lang in PHASE_LANGUAGES[run]}
    weights = _weights(tokens, tau)
    report = {
        "tau": tau,
        "languages": {
            lang: {
                "tokens": n,
                "weight": weights[lang],
                "realised_tokens": int(budget * weights[lang] * rng.uniform(0.9, 1.1)),
            }
            for lang, n in tokens.items()
        },
    }
    (run_dir / "mixture.json").write_text(json.dumps(report, indent=2, sort_keys=True))


def write_run_root(root: str | Path, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> Path:
    """The toy recipe's layout under ``root``: five runs and two merges, each checkpoint a differently seeded
    tiny model with ``tokenizer``."""
    root = Path(root)
    rng = random.Random(seed)
    cum_tokens: dict[str, float] = {}
    for i, run in enumerate(_RUN_SETTINGS):
        run_dir = root / run
        parent = parent_of(run)
        cum_tokens[run] = write_metrics_csv(run_dir, run, cum_tokens[parent] if parent else 0.0, rng)
        write_mixture_json(run_dir, run, rng)
        save_hf_folder(tiny_model(len(tokenizer), seed + i), run_dir / "hf", tokenizer=tokenizer)
    for j, merge in enumerate(MERGES):
        folder = save_hf_folder(tiny_model(len(tokenizer), seed + 100 + j), root / merge, tokenizer=tokenizer)
        (folder / "merge.json").write_text(json.dumps({"method": merge.split("/")[1], "synthetic": True}))
    return root


def write_synthetic_recipe(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Corpus (``folder/corpus``) and recipe root (``folder/recipe``); returns both."""
    folder = Path(folder)
    corpus = write_corpus(folder / "corpus", seed)
    root = write_run_root(folder / "recipe", train_tokenizer(corpus), seed)
    return corpus, root
