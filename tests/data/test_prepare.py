"""``mmbert-prepare``: raw text -> MDS shards that the project (and the format) read back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import REPO, run_command, side_env, side_venv, write_many_files

from mmbert.cli.prepare import main, parse_args
from mmbert.data import FolderMix, MdsMix, MLMDataModule, SampleMix
from mmbert.data.counts import CACHE_NAME, measure_tokens
from mmbert.data.mds import ShardReader, find_shards, read_column
from mmbert.data.prepare import PrepareConfig, prepare
from mmbert.data.tokenizer import load_tokenizer
from mmbert.errors import DataError

LANGS = ["eng_Latn", "fao_Latn", "cmn_Hani", "tir_Ethi"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("data/tokenizer")


def read_records(folder: Path) -> list[tuple[str, list[int]]]:
    out = []
    for shard in find_shards(folder):
        reader = ShardReader(shard)
        for i in range(len(reader)):
            raw = reader.raw(i)
            out.append((read_column(shard, raw, "id"), read_column(shard, raw, "input_ids").tolist()))
    return out


def expected_records(mix: FolderMix, lang: str, tok) -> list[list[int]]:
    texts = mix.train_source(lang).first_docs(10**9)
    return [
        [tok.bos_token_id, *e.ids]
        for e in tok.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    ]


def run(tmp: Path, *args: str) -> dict:
    return prepare(parse_args([f"out={tmp}", "tokenizer=data/tokenizer", *args]))


def test_sample_languages_become_release_layout_shards(tmp_path: Path, tok) -> None:
    out = tmp_path / "mds"
    counts = run(out, "source=data/sample", f"languages=[{','.join(LANGS)}]", "workers=2", "size_limit=16384")
    mix = FolderMix("data/sample", languages=LANGS)
    for lang in LANGS:
        records = read_records(out / lang)
        # every usable document once, in file order, <bos> + its tokens (no <eos>, as released)
        assert [ids for _, ids in records] == expected_records(mix, lang, tok)
        assert len({i for i, _ in records}) == len(records)
        # the release's layout: <lang>/<part>/index.json + shard.NNNNN.mds, one part per input file
        parts = sorted(p.name for p in (out / lang).iterdir() if p.is_dir())
        assert parts == [f"{i:05d}" for i in range(len(mix.train_files(lang)))]
        index = json.loads((out / lang / "00000" / "index.json").read_text())
        for s in index["shards"]:
            assert s["column_names"] == ["id", "input_ids"] and s["column_encodings"] == [
                "str",
                "ndarray:uint32",
            ]
            assert s["format"] == "mds" and s["version"] == 2 and s["compression"] is None
            data = (out / lang / "00000" / s["raw_data"]["basename"]).read_bytes()
            n = int(np.frombuffer(data[:4], "<u4")[0])
            offsets = np.frombuffer(data[4 : 8 + 4 * n], "<u4")
            assert n == s["samples"] and offsets[-1] == len(data) == s["raw_data"]["bytes"]
            assert s["raw_data"]["basename"].startswith("shard.") and s["raw_data"]["basename"].endswith(
                ".mds"
            )
        merged = json.loads((out / lang / "index.json").read_text())
        assert sum(s["samples"] for s in merged["shards"]) == len(records)
    # the exact counts, as data_mix=mds (and the folder, exactly) would count them: nothing counts again
    exact = {lang: measure_tokens(mix.train_source(lang), tok)[0] for lang in LANGS}
    assert {lang: c["tokens"] for lang, c in counts.items()} == exact
    shards = MdsMix(str(out), tokenizer="data/tokenizer")
    assert shards.known_counts() == exact
    (out / CACHE_NAME).unlink()
    assert MdsMix(str(out), tokenizer="data/tokenizer").token_counts() == exact


def test_chunked_and_compressed(tmp_path: Path, tok) -> None:
    out = tmp_path / "mds"
    run(out, "source=data/sample", "languages=[rus_Cyrl]", "chunk=48", "compression=zstd", "workers=1")
    records = read_records(out / "rus_Cyrl")
    assert all(1 < len(ids) <= 48 and ids[0] == tok.bos_token_id for _, ids in records)
    assert any(len(ids) == 48 for _, ids in records)  # a full chunk: <bos> + 47 tokens
    assert all(p.name.endswith(".mds.zstd") for p in (out / "rus_Cyrl").rglob("shard.*"))
    # the chunks of a document, in order, are the document
    mix = FolderMix("data/sample", languages=["rus_Cyrl"])
    docs: dict[str, list[int]] = {}
    for rid, ids in records:
        docs.setdefault(rid.split(".")[0], []).extend(ids[1:])
    assert list(docs.values()) == [ids[1:] for ids in expected_records(mix, "rus_Cyrl", tok)]
    # trains: full chunks stay whole rows at seq_len 48
    dm = MLMDataModule(MdsMix(str(out), tokenizer="data/tokenizer"), seq_len=48, rows_per_device=4, tau=1.0,
                       mask_ratio=0.3, val_docs_per_lang=0)  # fmt: skip
    batch = next(dm.train_batches())
    assert batch["num_tokens"] > 0 and int(batch["max_seqlen"]) <= 48


STREAMING = "mosaicml-streaming==0.13.0"
# Every sample of the merged index under argv[1], in index order, read by mosaicml-streaming's
# StreamingDataset (as the mmBERT authors' training reads it); prints its version, then the samples as JSON.
# streaming/__init__.py imports streaming.vision, whose torchvision (PyPI's is a CUDA build) cannot load beside
# the CPU torch, so the package is entered without running that __init__: every module used is streaming's own.
STREAM_READ = """
import importlib.machinery, importlib.metadata, importlib.util, json, sys
package = importlib.util.module_from_spec(importlib.machinery.ModuleSpec("streaming", None, is_package=True))
package.__path__ = importlib.util.find_spec("streaming").submodule_search_locations
sys.modules["streaming"] = package
from streaming.base import StreamingDataset
dataset = StreamingDataset(local=sys.argv[1], shuffle=False, batch_size=1)
print(importlib.metadata.version("mosaicml-streaming"))
print(json.dumps([[dataset[i]["id"], dataset[i]["input_ids"].tolist()] for i in range(dataset.num_samples)]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("settings", [(), ("chunk=48", "compression=zstd")])
def test_mosaicml_streaming_reads_every_sample_as_the_project(tmp_path: Path, tok, settings) -> None:
    out = tmp_path / "mds"
    langs = ["eng_Latn", "cmn_Hani"]
    run(
        out,
        "source=data/sample",
        f"languages=[{','.join(langs)}]",
        "size_limit=16384",
        "workers=1",
        *settings,
    )
    python = side_venv(STREAMING)
    mix = FolderMix("data/sample", languages=langs)
    for lang in langs:
        ours = read_records(out / lang)
        assert len({p.name for p in (out / lang).rglob("shard.*")}) > 1  # several shards and parts
        # streaming decompresses shards beside the originals: it reads a copy
        copy = shutil.copytree(out / lang, tmp_path / "streaming" / lang)
        proc = run_command(python, "-c", STREAM_READ, copy, cwd=tmp_path, env=side_env(), timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        version, samples = proc.stdout.split("\n", 1)
        assert version == STREAMING.split("==")[1]
        assert [(rid, ids) for rid, ids in json.loads(samples)] == ours
        # and the samples of each document, in order, are its tokenized text after one <bos>
        docs: dict[str, list[int]] = {}
        for rid, ids in ours:
            assert ids[0] == tok.bos_token_id
            docs.setdefault(rid.split(".")[0], []).extend(ids[1:])
        assert list(docs.values()) == [ids[1:] for ids in expected_records(mix, lang, tok)]


def test_flat_jsonl_and_parquet_folders(tmp_path: Path, tok) -> None:
    texts = SampleMix(subset="decay-all").train_source("fra_Latn").first_docs(120)
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:60]))
    pq.write_table(pa.table({"text": [*texts[60:], "", None]}), tmp_path / "fr" / "b.parquet")
    counts = run(tmp_path / "out", f"source={tmp_path / 'fr'}", "workers=2")
    assert list(counts) == ["fra_Latn"] and counts["fra_Latn"]["docs"] == 120  # empty and null skipped
    ids = [ids for _, ids in read_records(tmp_path / "out" / "fra_Latn")]
    assert ids == [
        [tok.bos_token_id, *e.ids]
        for e in tok.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    ]
    run(tmp_path / "named", f"source={tmp_path / 'fr'}", "name=custom")
    assert (tmp_path / "named" / "custom" / "index.json").is_file()


def test_a_hub_dataset_source(tmp_path: Path, tok) -> None:
    """``source=hub:REPO`` through ``datasets`` streaming, on a local folder laid out like a hub repository."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    repo, card = tmp_path / "fineweb-2", ["---", "configs:"]
    texts = SampleMix(subset="decay-all").train_source("rus_Cyrl").first_docs(90)
    expected = {}
    for c, config in enumerate(("rus_Cyrl", "fao_Latn")):
        card += [
            f"- config_name: {config}",
            "  data_files:",
            "  - split: train",
            f"    path: data/{config}/train/*",
        ]
        folder = repo / "data" / config / "train"
        folder.mkdir(parents=True)
        mine = texts[c * 45 : (c + 1) * 45]
        for f in range(2):
            pq.write_table(pa.table({"text": mine[f::2]}), folder / f"{f:03d}.parquet", row_group_size=8)
        ordered = mine[0::2] + mine[1::2]
        expected[config] = [
            [tok.bos_token_id, *e.ids]
            for e in tok.backend_tokenizer.encode_batch_fast(ordered, add_special_tokens=False)
        ]
    (repo / "README.md").write_text("\n".join([*card, "---", ""]))
    counts = run(tmp_path / "out", f"source=hub:{repo}", "languages=[rus_Cyrl,fao_Latn]", "workers=2")
    for config, records in expected.items():
        assert [ids for _, ids in read_records(tmp_path / "out" / config)] == records
        assert counts[config] == {"tokens": sum(len(r) + 1 for r in records), "docs": len(records)}


def test_a_rerun_redoes_only_unfinished_parts(tmp_path: Path) -> None:
    out = tmp_path / "mds"
    args = ("source=data/sample", "languages=[eng_Latn,cmn_Hani]", "workers=1")
    run(out, *args)
    reference = {lang: read_records(out / lang) for lang in ("eng_Latn", "cmn_Hani")}
    # as a kill leaves it: one part never renamed (a half-written temporary folder), one not started
    shutil.move(out / "eng_Latn" / "00002", out / "eng_Latn" / ".00002.tmp")
    (out / "eng_Latn" / ".00002.tmp" / "counts.json").unlink()
    shutil.rmtree(out / "cmn_Hani" / "00001")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("counts.json")}
    time.sleep(0.01)
    run(out, *args)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("counts.json")}
    assert {p for p in after if p not in before or after[p] != before[p]} == {
        out / "eng_Latn" / "00002" / "counts.json",
        out / "cmn_Hani" / "00001" / "counts.json",
    }
    assert not list(out.rglob(".*.tmp"))
    assert {lang: read_records(out / lang) for lang in reference} == reference
    with pytest.raises(DataError, match=r"other settings \(chunk: 0 -> 64\)"):
        run(out, *args, "chunk=64")


def test_bad_settings_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DataError, match="source= is required"):
        prepare(PrepareConfig(out=str(tmp_path)))
    with pytest.raises(DataError, match="colour"):
        parse_args(["colour=red"])
    with pytest.raises(DataError, match="compression must be null or zstd"):
        run(tmp_path, "source=data/sample", "compression=gzip")
    with pytest.raises(DataError, match=r"languages .*xxx_Latn"):
        run(tmp_path, "source=data/sample", "languages=[xxx_Latn]")
    with pytest.raises(SystemExit) as exit_:
        main([f"out={tmp_path}", f"source={tmp_path / 'missing'}"])
    assert exit_.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_and_restart_keeps_every_document_exactly_once(tmp_path: Path, tok) -> None:
    usable = write_many_files(tmp_path / "src", 24)
    out = tmp_path / "mds"
    cmd = [sys.executable, "-m", "mmbert.cli.prepare", f"source={tmp_path / 'src'}", f"out={out}",
           "tokenizer=data/tokenizer", "workers=2", "batch=64", "size_limit=65536"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(out.glob("eng_Latn/[0-9]*/counts.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-write
    proc.wait()
    done = len(list(out.glob("eng_Latn/[0-9]*/counts.json")))
    assert 3 <= done < 24, done
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True).returncode == 0
    records = read_records(out / "eng_Latn")
    assert len({rid for rid, _ in records}) == len(records) == len(usable)
    expected = [
        [tok.bos_token_id, *e.ids]
        for e in tok.backend_tokenizer.encode_batch_fast(usable, add_special_tokens=False)
    ]
    assert sorted(ids for _, ids in records) == sorted(expected)
    assert [ids for _, ids in records] == expected  # and in file order
    mix = MdsMix(str(out), tokenizer="data/tokenizer")
    assert mix.known_counts() == {"eng_Latn": sum(len(e) + 1 for e in expected)}


def test_a_relative_out_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not from the repository root, where relative data paths fall back to: prepare's output is new."""
    monkeypatch.chdir(tmp_path)
    prepare(parse_args(["out=prepared", f"source={REPO / 'data/sample'}", "languages=[fao_Latn]"]))
    assert (tmp_path / "prepared" / "fao_Latn" / "index.json").is_file()
    assert not (REPO / "prepared").exists()
