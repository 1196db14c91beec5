"""Write the embedded sample corpus ``data/sample`` (deterministic; no network).

The base text is hand-written: ``scripts/sample_text/{lang}.txt`` (sentences of one language) and
``scripts/sample_text/parallel.json`` (the same 12 sentences in every language). A seeded third of each
language's own sentences is held out: ``test/`` documents are made of those alone and ``train/`` documents of
the rest (the parallel sentences always train), so validation measures text the model has never seen.
Documents are seeded recombinations of their pool's sentences, laid out like FineWeb2:

    data/sample/{iso639_3}_{Script}/train/000_00000.jsonl[.gz] ...   records {"id", "text", "language",
    data/sample/{iso639_3}_{Script}/test/000_00000.jsonl              "language_script"}
    data/sample/parallel.jsonl      one record per parallel sentence: {"id": "p01", "eng_Latn": ..., ...}
    data/sample/languages.json      language names and the phase subsets

Language sizes differ by ~30x in documents (English, Russian, Chinese large; Faroese, Tigrinya tiny) to
mirror the skew of real mixtures. Run ``scripts/train_tokenizer.py --counts-only`` afterwards (token counts
with the committed tokenizer; without the flag it retrains ``data/tokenizer``, which changes every token id).

    python scripts/make_sample_corpus.py [OUT_DIR]
"""

from __future__ import annotations

import gzip
import json
import math
import random
import shutil
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "scripts" / "sample_text"

# language: (English name, training documents)
LANGUAGES: dict[str, tuple[str, int]] = {
    "eng_Latn": ("English", 1200), "rus_Cyrl": ("Russian", 900), "cmn_Hani": ("Mandarin Chinese", 900),
    "spa_Latn": ("Spanish", 350), "deu_Latn": ("German", 350), "fra_Latn": ("French", 350),
    "jpn_Jpan": ("Japanese", 350), "arb_Arab": ("Standard Arabic", 300), "hin_Deva": ("Hindi", 300),
    "ita_Latn": ("Italian", 180), "por_Latn": ("Portuguese", 180), "nld_Latn": ("Dutch", 180),
    "kor_Hang": ("Korean", 180), "tur_Latn": ("Turkish", 180), "vie_Latn": ("Vietnamese", 180),
    "ukr_Cyrl": ("Ukrainian", 180), "pol_Latn": ("Polish", 90), "ind_Latn": ("Indonesian", 90),
    "swe_Latn": ("Swedish", 90), "fin_Latn": ("Finnish", 90), "bul_Cyrl": ("Bulgarian", 90),
    "fas_Arab": ("Persian", 90), "ell_Grek": ("Modern Greek", 90), "heb_Hebr": ("Hebrew", 90),
    "tha_Thai": ("Thai", 90), "fao_Latn": ("Faroese", 30), "tir_Ethi": ("Tigrinya", 30),
}  # fmt: skip
# Mirrors 60 -> 110 -> 1833 languages: pre-training ⊂ mid-training ⊂ all.
PRETRAIN = ["eng_Latn", "rus_Cyrl", "cmn_Hani", "spa_Latn", "deu_Latn", "fra_Latn", "jpn_Jpan", "arb_Arab",
            "hin_Deva"]  # fmt: skip
MIDTRAIN = [*PRETRAIN, "ita_Latn", "por_Latn", "nld_Latn", "kor_Hang", "tur_Latn", "vie_Latn", "ukr_Cyrl"]
SUBSETS = {
    "pretrain": {"languages": PRETRAIN},
    "midtrain": {"languages": MIDTRAIN},
    "decay-eng": {"languages": MIDTRAIN, "upweight": {"eng_Latn": 3.0}},
    "decay-cont": {"languages": MIDTRAIN},
    "decay-all": {"languages": list(LANGUAGES)},
    "decay": {"languages": list(LANGUAGES)},  # the phase name (conf/phase/decay.yaml): Decay-All
}
TEST_DOCS = 40
HELD_OUT_SHARE = 1 / 3  # of a language's own sentences (rounded up): 5 to 6 of its 14 to 18
DOCS_PER_FILE = 300
NO_SPACE = {"cmn_Hani", "jpn_Jpan"}  # sentences are joined without a space


README = """# Sample corpus

A small multilingual corpus for tests, the CPU quickstart and the notebooks: 27 languages in 11 scripts, laid
out like FineWeb2 (`{iso639_3}_{Script}/train/*.jsonl[.gz]` and `test/`, records `{"id", "text", "language",
"language_script"}`). Written by `scripts/make_sample_corpus.py`; do not edit by hand.

- Text: hand-written everyday sentences per language (`scripts/sample_text/{lang}.txt`) plus 12 sentences
  translated into every language (`scripts/sample_text/parallel.json`). Documents are seeded recombinations
  of a language's sentences, so the text is repetitive by design; sizes differ ~20x in tokens between English
  and Faroese/Tigrinya.
- Held out: a seeded third of each language's own sentences (5 or 6; the parallel sentences never) is kept
  for `test/`. Validation documents are made of held-out sentences only and training documents never contain
  one, so `val/loss` and `val/acc` measure sentences the model never trained on: no sentence of any `test/`
  document occurs in a `train/` document of any language (0% overlap; `tests/data/test_corpus.py` checks
  it). Before the split, every sentence of every validation document (100%) also occurred in training.
- The tokenizer `data/tokenizer` predates the split: its BPE was trained on documents that still held every
  sentence, so it kept its ids, and held-out words tokenize as compactly as training words.
- `parallel.jsonl`: the 12 parallel sentences, one record per sentence id, one field per language.
- `languages.json`: language names and the phase subsets (`pretrain` 9 languages, `midtrain`/`decay-cont` 16,
  `decay-eng` 16 with English tokens x3, `decay-all` (= `decay`) 27), used by `conf/data_mix/sample.yaml`.
- `mmbert_token_counts.json`: tokens per language with `data/tokenizer` (the `n_i` of temperature mixing),
  refreshed by `scripts/train_tokenizer.py --counts-only`.

Regenerate: `python scripts/make_sample_corpus.py && python scripts/train_tokenizer.py --counts-only`
(deterministic).
"""


def own_sentences(lang: str) -> list[str]:
    return [s.strip() for s in (TEXT / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if s.strip()]


def split_pools(lang: str, parallel: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """(train pool, held-out pool) of a language. Only its own sentences are held out: the parallel ones
    must stay in training, where the notebooks' retrieval expects the model to have seen them."""
    own = own_sentences(lang)
    k = math.ceil(len(own) * HELD_OUT_SHARE)
    held = set(random.Random(f"mmbert-sample/{lang}/held-out").sample(own, k))
    return [*parallel[lang], *(s for s in own if s not in held)], [s for s in own if s in held]


def document(rng: random.Random, pool: list[str], lang: str) -> str:
    n = min(80, 1 + int(rng.lognormvariate(1.5, 0.9)))  # mostly short documents, a long tail
    sep = "" if lang in NO_SPACE else " "
    text = rng.choice(pool)
    for _ in range(n - 1):
        text += "\n" if rng.random() < 0.2 else sep
        text += rng.choice(pool)
    return text


def record(lang: str, split: str, i: int, text: str) -> str:
    iso, script = lang.split("_")
    doc_id = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'mmbert-sample/{lang}/{split}/{i}')}>"
    rec = {"id": doc_id, "text": text, "language": iso, "language_script": script}
    return json.dumps(rec, ensure_ascii=False) + "\n"


def write_file(path: Path, lines: list[str]) -> None:
    data = "".join(lines).encode("utf-8")
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)


def main(out: Path) -> None:
    parallel = json.loads((TEXT / "parallel.json").read_text(encoding="utf-8"))
    ids = parallel.pop("_ids")
    if set(parallel) != set(LANGUAGES):
        raise SystemExit(f"parallel.json languages differ from LANGUAGES: {set(parallel) ^ set(LANGUAGES)}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for lang, (_, n_train) in LANGUAGES.items():
        train_pool, test_pool = split_pools(lang, parallel)
        for split, n_docs, pool in (("train", n_train, train_pool), ("test", TEST_DOCS, test_pool)):
            rng = random.Random(f"mmbert-sample/{lang}/{split}")
            lines = [record(lang, split, i, document(rng, pool, lang)) for i in range(n_docs)]
            folder = out / lang / split
            folder.mkdir(parents=True)
            # Large pre-training languages are gzipped, as FineWeb2 users often store them.
            suffix = ".jsonl.gz" if split == "train" and lang in PRETRAIN else ".jsonl"
            for f, lo in enumerate(range(0, n_docs, DOCS_PER_FILE)):
                write_file(folder / f"{f:03d}_00000{suffix}", lines[lo : lo + DOCS_PER_FILE])
    with open(out / "parallel.jsonl", "w", encoding="utf-8") as f:
        for k, pid in enumerate(ids):
            rec = {"id": pid, **{lang: parallel[lang][k] for lang in LANGUAGES}}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    meta = {
        "languages": {
            lang: {"name": name, "script": lang.split("_")[1]} for lang, (name, _) in LANGUAGES.items()
        },
        "subsets": SUBSETS,
    }
    (out / "languages.json").write_text(
        json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / "README.md").write_text(README, encoding="utf-8")
    print(f"wrote {out}: {len(LANGUAGES)} languages")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data" / "sample")
