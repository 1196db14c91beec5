"""Decay-All's start-up against a local Hub holding all its 1832 FineWeb2 languages (one small file each), its
English (fineweb-edu) and its code (codeparrot-clean, JSON lines in .json.gz): the released mix config as it
is, set up with validation, then trained on for a few batches. Each repo is asked for its revision once and
listed once (plus the listing's continuation pages), however many languages the mix takes from it."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import hydra
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import CONF
from hub_data import DATASET
from hub_server import HubServer, make_fineweb2_repo

from mmbert.data import MLMDataModule

DECAY_ALL = yaml.safe_load((CONF / "data_mix" / "decay-all.yaml").read_text())
FINEWEB_LANGUAGES = [lang for lang in DECAY_ALL["token_counts"] if lang not in DECAY_ALL["sources"]]


def _docs(lang: str) -> list[str]:
    return [
        f"{lang} document {i}: " + "the quick brown fox jumps over the lazy dog " * (i + 1) for i in range(3)
    ]


@pytest.fixture
def decay_all_hub(server: HubServer, tmp_path: Path) -> HubServer:
    docs = {f"{lang}_Latn": {"train": [_docs(lang)]} for lang in FINEWEB_LANGUAGES}
    server.add_repo("dataset", DATASET, make_fineweb2_repo(tmp_path / "fineweb-2", docs))
    edu = tmp_path / "fineweb-edu"  # its layout: data/<dump>/train-NNNNN-of-NNNNN.parquet, one config
    (edu / "data" / "CC-MAIN-2024-10").mkdir(parents=True)
    pq.write_table(
        pa.table({"text": _docs("eng")}), edu / "data" / "CC-MAIN-2024-10" / "train-00000-of-00001.parquet"
    )
    card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/*/*\n---\n"
    (edu / "README.md").write_text(card)
    server.add_repo("dataset", "HuggingFaceFW/fineweb-edu", edu)
    code = tmp_path / "codeparrot-clean"
    code.mkdir()
    lines = "".join(json.dumps({"content": f"def f{i}():\n    return {i}\n"}) + "\n" for i in range(5))
    (code / "file-000000000001.json.gz").write_bytes(gzip.compress(lines.encode()))
    server.add_repo("dataset", "codeparrot/codeparrot-clean", code)
    server.clear_log()
    return server


@pytest.mark.slow
def test_decay_all_starts_with_a_fixed_number_of_listing_calls(decay_all_hub: HubServer) -> None:
    server = decay_all_hub
    mix = hydra.utils.instantiate(DECAY_ALL)
    dm = MLMDataModule(mix, seq_len=64, rows_per_device=2, tau=0.3, mask_ratio=0.15, val_docs_per_lang=1)
    dm.setup("fit")
    assert len(dm.languages) == 1834 and not dm.excluded
    batches = dm.train_batches()
    for _ in range(4):
        next(batches)
    repos = [DATASET, "HuggingFaceFW/fineweb-edu", "codeparrot/codeparrot-clean", "jhu-clsp/mmBERT-small"]
    info = [r.repo_id for r in server.requests("info")]
    first_pages = [r.repo_id for r in server.requests("tree") if "cursor" not in r.query]
    assert sorted(info) == sorted(first_pages) == sorted(repos)
    listed = len(FINEWEB_LANGUAGES) * 3 + 2  # a folder, a train folder and a file per config; data/, README
    assert server.count("tree", DATASET) == math.ceil(listed / server.page_size)
    assert server.count("other") == 0
    print(
        f"\nDecay-All start-up: {server.count('info') + server.count('tree')} listing calls "
        f"({server.count('tree', DATASET)} pages for FineWeb2), {server.count('resolve')} file reads, "
        f"{len(server.requests())} requests"
    )
