"""The hub path (``datasets`` streaming, FineWeb2 naming) against a local folder laid out like the hub repo."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mmbert.data import HubMix, MLMDataModule
from mmbert.data.doc_stream import DocStream
from mmbert.errors import DataError

CONFIGS = {"rus_Cyrl": 3, "rus_Cyrl_removed": 1, "srp_Cyrl": 1, "srp_Latn": 1, "fao_Latn": 2}


def doc(config: str, f: int, i: int) -> str:
    return f"{config} file {f} document {i} " + "слово word " * (i % 5)


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fineweb-2")
    card = ["---", "configs:"]
    for config, n_files in CONFIGS.items():
        card += [
            f"- config_name: {config}",
            "  data_files:",
            "  - split: train",
            f"    path: data/{config}/train/*",
        ]
        for f in range(n_files):
            folder = root / "data" / config / "train"
            folder.mkdir(parents=True, exist_ok=True)
            texts = [doc(config, f, i) for i in range(40)]
            table = pa.table(
                {"text": texts, "id": [f"{f}-{i}" for i in range(40)], "language": [config[:3]] * 40}
            )
            pq.write_table(table, folder / f"{f:03d}_00000.parquet", row_group_size=16)
        if config == "rus_Cyrl":
            (root / "data" / config / "test").mkdir()
            pq.write_table(
                pa.table({"text": [f"test {i}" for i in range(10)]}),
                root / "data" / config / "test" / "0.parquet",
            )
            card += ["  - split: test", f"    path: data/{config}/test/*"]
    (root / "README.md").write_text("\n".join([*card, "---", ""]))
    return root


def mix(repo: Path, **kw: object) -> HubMix:
    counts = {"rus": 3000, "srp": 1000, "fao_Latn": 500}
    return HubMix(name="hub-test", token_counts=counts, tokenizer="data/tokenizer", repo=str(repo), **kw)


def test_languages_resolve_to_fineweb2_configs(hub_repo: Path) -> None:
    m = mix(hub_repo)
    assert m.configs("rus") == ["rus_Cyrl"]  # not rus_Cyrl_removed
    assert sorted(m.configs("srp")) == ["srp_Cyrl", "srp_Latn"]
    assert m.configs("fao_Latn") == ["fao_Latn"]
    bad = HubMix(name="bad", token_counts={"xyz": 10}, repo=str(hub_repo)).train_source("xyz")
    assert bad.files() == [] and bad.absent.endswith("has no config for language 'xyz'")


def test_a_language_missing_from_the_repo_is_excluded_or_refused(hub_repo: Path) -> None:
    counts = {"rus": 3000, "xyz_Latn": 100}
    dm = MLMDataModule(
        HubMix(name="gap", token_counts=counts, tokenizer="data/tokenizer", repo=str(hub_repo)),
        seq_len=64, rows_per_device=2, tau=0.5, mask_ratio=0.3, val_docs_per_lang=0,
    )  # fmt: skip
    dm.setup("fit")
    assert dm.languages == ["rus"] and "has no config for language 'xyz_Latn'" in dm.excluded["xyz_Latn"]
    strict = HubMix(name="gap", token_counts=counts, tokenizer="data/tokenizer", repo=str(hub_repo))
    with pytest.raises(DataError, match=r"xyz_Latn: .* has no config for language 'xyz_Latn'"):
        MLMDataModule(
            strict, seq_len=64, rows_per_device=2, tau=0.5, mask_ratio=0.3, val_docs_per_lang=0,
            strict_languages=True,
        ).setup("fit")  # fmt: skip


def test_streamed_documents_sharded_exactly_once(hub_repo: Path) -> None:
    source = mix(hub_repo).train_source("rus")
    want = Counter(doc("rus_Cyrl", f, i) for f in range(3) for i in range(40))
    assert Counter(source.first_docs(10**6)) == want
    for shards in (2, 4):  # 3 files: by file for 2 shards, by record for 4
        seen: Counter[str] = Counter()
        for shard in range(shards):
            stream = DocStream(source, shard, shards, seed=1, block_size=16)
            while True:
                d = stream.next_doc()
                if stream.epoch:
                    break
                seen[d] += 1
        assert seen == want


def test_streamed_source_resumes_inside_a_file(hub_repo: Path) -> None:
    source = mix(hub_repo).train_source("srp")
    a = DocStream(source, 0, 1, seed=3, block_size=16)
    for _ in range(21):
        a.next_doc()
    b = DocStream(source, 0, 1, seed=3, block_size=16, state=a.state())
    assert [a.next_doc() for _ in range(100)] == [b.next_doc() for _ in range(100)]


def test_hub_mix_trains_and_validates(hub_repo: Path) -> None:
    dm = MLMDataModule(
        mix(hub_repo), seq_len=64, rows_per_device=2, tau=0.5, mask_ratio=0.3, val_docs_per_lang=4
    )
    # rus validates on its test split; srp and fao have none and hold out their first 4 training records
    assert dm.val_languages == ["rus", "srp", "fao_Latn"]
    held_out = dm.pipeline.sources[dm.languages.index("fao_Latn")]
    assert held_out.holdout == 4 and dm.pipeline.sources[0].holdout == 0
    it = dm.train_batches()
    for _ in range(30):
        batch = next(it)
    assert batch["input_ids"].shape == (128,)
    assert all(n > 0 for n in dm.realised_tokens.values())
