"""Fixtures of the downstream tests: a tiny random model with the project's tokenizer, the corpus sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REPO, tiny_config

from mmbert.checkpoint.hf import save_hf_folder
from mmbert.downstream.toy import corpus_sentences
from mmbert.model import MmBertForMaskedLM


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer model with the sample corpus's tokenizer, as an HF folder."""
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=8192, num_hidden_layers=2, global_attn_every_n_layers=2)
    return save_hf_folder(
        MmBertForMaskedLM(cfg), tmp_path_factory.mktemp("tiny") / "hf", REPO / "data" / "tokenizer"
    )


@pytest.fixture(scope="module")
def sentences() -> dict[str, list[str]]:
    return corpus_sentences(REPO / "data" / "sample")
