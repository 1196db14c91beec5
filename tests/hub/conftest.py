"""A local Hub (tests/hub_server.py) holding what the released mixes name: ``HuggingFaceFW/fineweb-2`` with four
languages of real text (the sample corpus's documents as FineWeb2 parquet files) and ``jhu-clsp/mmBERT-small``
holding the sample tokenizer (the tiny model's vocabulary), so the real hub path runs at toy size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO
from hub_data import DATASET, LANGUAGES, TOKENIZER, fineweb_docs
from hub_server import HubServer, make_fineweb2_repo, make_model_repo, serve_hub

from mmbert import hub


@pytest.fixture(scope="session")
def fineweb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fineweb2_repo(
        tmp_path_factory.mktemp("fineweb-2"), fineweb_docs(LANGUAGES), row_group_size=32
    )


@pytest.fixture(scope="session")
def tokenizer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = {p.name: p for p in (REPO / "data" / "tokenizer").iterdir()}
    return make_model_repo(tmp_path_factory.mktemp("mmBERT-small"), files)


@pytest.fixture
def server(tmp_path: Path, fineweb_folder: Path, tokenizer_folder: Path) -> Iterator[HubServer]:
    """A fresh server and client cache per test, with this process's Hub state (kept snapshots) reset."""
    with serve_hub(tmp_path / "cache") as srv:
        srv.add_repo("dataset", DATASET, fineweb_folder)
        srv.add_repo("model", TOKENIZER, tokenizer_folder)
        hub.use_folder(None)
        hub.model_folder.cache_clear()
        yield srv
    hub.use_folder(None)
    hub.model_folder.cache_clear()
