"""The other command lines on hub names, in subprocesses against the local Hub: ``prepare source=hub:...`` with a
hub tokenizer, ``evaluate.py`` on a hub dataset (through a 429), ``convert to-hf --tokenizer`` a hub name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from helpers import REPO, make_model
from hub_data import DATASET, TOKENIZER, sample_texts
from hub_server import HubServer, hub_env

from mmbert.checkpoint.hf import save_hf_folder
from mmbert.data.prepare import part_counts
from mmbert.downstream.toy import retrieve_rows


def _run(server: HubServer, tmp: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = hub_env(server.url, tmp / "cache") | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *cmd], cwd=tmp, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_prepare_reads_a_hub_dataset_with_a_hub_tokenizer(server: HubServer, tmp_path: Path) -> None:
    out = tmp_path / "mds"
    _run(
        server, tmp_path, "-m", "mmbert.cli.prepare", f"source=hub:{DATASET}", f"out={out}",
        f"tokenizer={TOKENIZER}", "languages=[fao_Latn,jpn_Jpan]", "workers=2",
    )  # fmt: skip
    for lang in ("fao_Latn", "jpn_Jpan"):
        assert part_counts(out, lang)[1] == len(sample_texts(lang, "train"))
    assert server.count("other") == 0


def test_evaluate_retrieves_on_a_hub_dataset_through_a_429(server: HubServer, tmp_path: Path) -> None:
    model = save_hf_folder(
        make_model(vocab_size=8192), tmp_path / "model", tokenizer=REPO / "data" / "tokenizer"
    )
    bitext = tmp_path / "bitext"
    (bitext / "data").mkdir(parents=True)
    rows = retrieve_rows(REPO / "data" / "sample" / "parallel.jsonl")
    pq.write_table(pa.Table.from_pylist(rows), bitext / "data" / "test-00000-of-00001.parquet")
    server.add_repo("dataset", "org/bitext", bitext)
    server.add_fault(kind="info", nth=1, status=429, retry_after=1)
    out = tmp_path / "retrieve"
    _run(
        server, tmp_path, str(REPO / "evaluate.py"), "task=retrieve", f"model.path={model}",
        f"model.tokenizer={TOKENIZER}", "task.test_file={hub: org/bitext, split: test}", f"hydra.run.dir={out}",
    )  # fmt: skip
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert sum(m["n"] for m in metrics["per_language"].values()) == len(rows)


def test_convert_takes_a_hub_tokenizer(server: HubServer, tmp_path: Path) -> None:
    source = save_hf_folder(make_model(vocab_size=8192), tmp_path / "untokenized")
    out = tmp_path / "hf"
    _run(
        server, tmp_path, "-m", "mmbert.cli.convert", "to-hf", str(source), str(out), "--tokenizer", TOKENIZER
    )
    assert json.loads((out / "tokenizer.json").read_text()) == json.loads(
        (REPO / "data" / "tokenizer" / "tokenizer.json").read_text()
    )
