"""Mixing from the first step: realised token shares of packed rows follow the target over short spans.

The corpus is real text (the 27 languages of ``data/sample``) split into pseudo-languages with distinct
codes, sizes spread over about two orders of magnitude and mean document lengths over one (documents are
runs of consecutive sample documents joined together, web-like lengths).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import REPO

from mmbert.data import FolderMix, MLMDataModule
from mmbert.data.counts import CACHE_NAME
from mmbert.data.mix.layout import discover_languages
from mmbert.data.sampling import TokenSampler

SAMPLE = REPO / "data" / "sample"
# Shares of a language's documents given to its 1, 2 or 3 pseudo-languages.
SPLITS = {1: (1.0,), 2: (0.9, 0.1), 3: (0.75, 0.2, 0.05)}


def _texts(folder: Path) -> list[str]:
    from mmbert.data.mix.folder import FileSource

    files = sorted(p for p in folder.iterdir() if p.is_file())
    return [str(d) for d in FileSource(folder.name, files).first_docs(10**9)] if files else []


def _write(folder: Path, docs: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
    (folder / "000_00000.jsonl").write_text(lines)


def _joined(texts: list[str], run: int) -> list[str]:
    return ["\n".join(texts[i : i + run]) for i in range(0, len(texts), run)]


def build_real_text_corpus(root: Path, n_langs: int) -> list[str]:
    """``n_langs`` pseudo-languages (``{iso}_{Script}`` codes, all valid and distinct) of real text."""
    bases = sorted(discover_languages(SAMPLE).items())
    parts = [n_langs // len(bases) + (i < n_langs % len(bases)) for i in range(len(bases))]
    made = []
    for (lang, folder), n_parts in zip(bases, parts, strict=True):
        train, test = _texts(folder / "train"), _texts(folder / "test")
        iso, script = lang.split("_")
        lo = 0
        for p, share in enumerate(SPLITS[n_parts]):
            hi = lo + max(1, round(share * len(train)))
            code = lang if p == 0 else f"{iso}_{script[:3]}{'xyz'[p]}"  # eng_Latn, eng_Laty, eng_Latz
            run = 1 + (len(made) * 7) % 16  # mean document lengths differ ~16x between pseudo-languages
            _write(root / code / "train", _joined(train[lo:hi], run))
            _write(root / code / "test", test[p::n_parts][:4])
            made.append(code)
            lo = hi
    return made


def tv_distances(dm: MLMDataModule, checkpoints: list[int]) -> dict[int, float]:
    """Total-variation distance between realised token shares and the weights after each checkpoint."""
    dm.setup("fit")
    target = np.array([dm.weights[lang] for lang in dm.languages])
    realised = np.zeros(len(target))
    out: dict[int, float] = {}
    batches = dm.train_batches()
    while len(out) < len(checkpoints):
        realised += next(batches)["lang_tokens"].numpy()
        for c in checkpoints:
            if c not in out and realised.sum() >= c:
                out[c] = 0.5 * float(np.abs(realised / realised.sum() - target).sum())
    return out


@pytest.fixture(scope="module")
def corpus60(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real60")
    assert len(set(build_real_text_corpus(root, 60))) == 60
    return root


def make_dm(root: Path, **kw: object) -> MLMDataModule:
    """The defaults of conf/train.yaml's pre-training phase (1024-token rows, tau 0.7, one worker)."""
    args: dict = {"seq_len": 1024, "rows_per_device": 2, "tau": 0.7, "mask_ratio": 0.3, "num_workers": 1}
    return MLMDataModule(FolderMix(str(root)), **{**args, **kw})


@pytest.mark.parametrize("seed", [0, 1])
def test_realised_shares_follow_the_target_from_the_first_steps(corpus60: Path, seed: int) -> None:
    tv = tv_distances(make_dm(corpus60, seed=seed), [20_000, 80_000, 260_000, 1_000_000])
    # measured: ~0.23, 0.08, 0.02, 0.005 (before length priors and greedy picks: 0.5, 0.23, 0.05, 0.02)
    assert tv[80_000] <= 0.15 and tv[1_000_000] <= 0.05, tv


def test_shards_together_follow_the_target(corpus60: Path) -> None:
    tv = tv_distances(make_dm(corpus60, num_workers=2), [80_000, 1_000_000])
    assert tv[80_000] <= 0.15 and tv[1_000_000] <= 0.05, tv  # measured ~0.1, 0.006


def test_counted_mean_document_lengths_reach_the_sampler(corpus60: Path) -> None:
    dm = make_dm(corpus60, val_docs_per_lang=0)
    dm.setup("fit")
    cache = next(iter(json.loads((corpus60 / CACHE_NAME).read_text()).values()))
    want = [cache[lang]["tokens"] / cache[lang]["docs"] for lang in dm.languages]
    assert dm.pipeline.mean_doc_tokens == pytest.approx(want)


def test_first_draws_are_length_corrected_with_known_means() -> None:
    q = np.array([0.5, 0.3, 0.15, 0.05])
    length = np.array([20.0, 400.0, 50.0, 1000.0])

    def tv_after(sampler: TokenSampler, draws: int) -> float:
        tokens = np.zeros(len(q))
        for i in sampler.draw(draws):  # one call: no feedback from observed documents inside it
            tokens[i] += length[i]
        return 0.5 * float(np.abs(tokens / tokens.sum() - q).sum())

    # ~2000 tokens: one 1000-token document of the 5% source is already 2.5x its share (TV 0.06)
    assert tv_after(TokenSampler(q, seed=(0,), mean_doc_tokens=list(length)), 64) < 0.08
    assert tv_after(TokenSampler(q, seed=(0,)), 64) > 0.5  # without lengths it can only count documents


def test_sampler_resumes_exactly_and_shards_stagger() -> None:
    q, rng = [0.6, 0.3, 0.1], np.random.default_rng(0)
    a = TokenSampler(q, seed=(5, 0), mean_doc_tokens=[30.0, None, 300.0])
    for i in a.draw(40):
        a.observe(int(i), int(rng.integers(5, 500)))
    b = TokenSampler(q, seed=(6,), state=a.state(), mean_doc_tokens=[30.0, None, 300.0])
    np.testing.assert_array_equal(a.draw(100), b.draw(100))
    first = [TokenSampler(q, seed=(5, g), shard=g, num_shards=4).offsets for g in range(4)]
    assert all(x.max() < y.min() for x, y in itertools.pairwise(first))  # shard g is due earlier than g + 1
