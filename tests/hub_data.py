"""The released mixes' hub names and their toy stand-ins: four FineWeb2 languages of real text (the sample
corpus's documents) and the sample tokenizer, for the local Hub of tests/hub_server.py."""

from __future__ import annotations

import gzip
import json

from helpers import REPO

DATASET = "HuggingFaceFW/fineweb-2"
TOKENIZER = "jhu-clsp/mmBERT-small"
LANGUAGES = {"deu_Latn": 2, "rus_Cyrl": 2, "jpn_Jpan": 1, "fao_Latn": 1}  # configs and their train files
SAMPLE = REPO / "data" / "sample"


def sample_texts(config: str, split: str) -> list[str]:
    folder = SAMPLE / config / split
    texts = []
    for path in sorted(folder.iterdir()):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    return texts


def fineweb_docs(languages: dict[str, int]) -> dict[str, dict[str, list[list[str]]]]:
    """Each language's sample documents split over its train files, and its test split."""
    docs = {}
    for config, n_files in languages.items():
        train = sample_texts(config, "train")
        docs[config] = {
            "train": [train[i::n_files] for i in range(n_files)],
            "test": [sample_texts(config, "test")],
        }
    return docs
