"""train.py on a hub mix, over HTTP against the local Hub: the run ends with its checkpoint and export when its
tokenizer is a hub name, asks the Hub for what it holds a fixed number of times whatever the processes, gives
the same losses step for step under injected faults, and resumes mid-stream at the pinned commit after the repo
has changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FAST, REPO, logged
from hub_data import DATASET, TOKENIZER, fineweb_docs
from hub_server import HubServer, hub_env, make_fineweb2_repo

MIX = f"""\
_target_: mmbert.data.HubMix
name: hub4
tokenizer: {TOKENIZER}
repo: {DATASET}
token_counts: {{deu: 100000, rus: 200000, jpn: 40000, fao: 9000}}
"""
# Calls that are not file reads: repo info, listings. The README, tokenizer files and data are file reads
# (GET on resolve), and HEADs on resolve are the tokenizer download's per-file metadata.
METADATA = ("info", "tree", "paths-info")
STEPS = 12


def _train(
    server: HubServer, tmp: Path, run: str, *overrides: str, ok: bool = True
) -> subprocess.CompletedProcess:
    conf = tmp / "conf" / "data_mix"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "hub4.yaml").write_text(MIX)
    env = hub_env(server.url, tmp / "cache") | {"OMP_NUM_THREADS": "1", "MMBERT_HUB_BACKOFF_S": "0.2"}
    cmd = [
        sys.executable, str(REPO / "train.py"), *FAST, f"hydra.searchpath=[file://{tmp / 'conf'}]",
        "data_mix=hub4", f"trainer.max_steps={STEPS}", "trainer.val_check_interval=6",
        "callbacks.model_checkpoint.every_n_train_steps=6", "data.val_docs_per_lang=4",
        f"hydra.run.dir={tmp / run}", *overrides,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _metadata_calls(server: HubServer) -> int:
    return sum(server.count(kind) for kind in METADATA)


def _losses(run_dir: Path) -> dict[int, float]:
    return dict(logged(run_dir, "train/loss"))


def test_a_hub_run_ends_with_its_checkpoint_and_export_in_few_requests(
    server: HubServer, tmp_path: Path
) -> None:
    _train(server, tmp_path, "run", "data.num_workers=2")
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "hf" / "tokenizer.json").is_file() and (run / "hf" / "model.safetensors").is_file()
    # The dataset and tokenizer repos: revision info and one listing each, whatever the languages and workers.
    calls = [(r.method, r.kind, r.path) for r in server.requests() if r.kind in METADATA]
    assert _metadata_calls(server) == 4, calls
    assert server.count("other") == 0
    kept = sorted(p.name for p in (run / "hub").iterdir())
    assert any(name.startswith("HuggingFaceFW--fineweb-2@main") for name in kept), kept
    assert sum(v for _, v in logged(run, "data/hub_retries")) == 0


def test_an_export_failure_keeps_the_checkpoint_and_exits_nonzero(server: HubServer, tmp_path: Path) -> None:
    proc = _train(server, tmp_path, "run", "callbacks.hf_export.output_dir=/proc/no-such-place", ok=False)
    assert proc.returncode == 2
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(lines) == 1 and "Hugging Face export to /proc/no-such-place failed" in lines[0]
    assert "last.ckpt is written" in lines[0]


def test_a_missing_repo_is_one_line_before_the_first_step(server: HubServer, tmp_path: Path) -> None:
    proc = _train(server, tmp_path, "run", "data_mix.repo=HuggingFaceFW/no-such-data", ok=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "train.py: error: hub dataset 'HuggingFaceFW/no-such-data' at revision main: not found"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_faults_change_nothing_but_the_retry_count_and_the_waits(server: HubServer, tmp_path: Path) -> None:
    # No dataloader workers: a slow read stalls the step itself, which data/wait_s must show.
    _train(server, tmp_path, "clean", "data.num_workers=0")
    server.clear_log()
    server.add_fault(kind="info", every=2, status=429, retry_after=1)
    server.add_fault(kind="tree", nth=1, status=503)
    server.add_fault(kind="resolve", path_regex=r"\.parquet$", every=3, reset_after=100)
    server.add_fault(kind="resolve", path_regex=r"\.parquet$", every=5, status=502)
    server.add_fault(kind="resolve", path_regex=r"\.parquet$", delay=0.5)
    _train(server, tmp_path, "faulted", "data.num_workers=0")
    clean, faulted = _losses(tmp_path / "clean"), _losses(tmp_path / "faulted")
    print(f"\nclean losses {clean}\nfaulted      {faulted}")
    assert len(clean) == STEPS and faulted == clean
    retries = [v for _, v in logged(tmp_path / "faulted", "data/hub_retries")]
    waits = [v for _, v in logged(tmp_path / "faulted", "data/wait_s")]
    print(f"retries logged {retries[-1]:.0f}; slowest step waited {max(waits):.2f} s for data")
    assert retries[-1] > 0 and max(waits) >= 0.5


@pytest.mark.slow
def test_a_resume_reads_the_pinned_commit_from_the_exact_position(server: HubServer, tmp_path: Path) -> None:
    _train(server, tmp_path, "run", "data.num_workers=1")
    full = _losses(tmp_path / "run")
    # The repo moves on: other documents under the same names. A resumed run must not notice.
    changed = fineweb_docs({"deu_Latn": 1, "rus_Cyrl": 1, "jpn_Jpan": 1, "fao_Latn": 1})
    for splits in changed.values():
        splits["train"] = [list(reversed(splits["train"][0]))] * 2
    server.add_repo("dataset", DATASET, make_fineweb2_repo(tmp_path / "moved", changed))
    ckpt = tmp_path / "run" / "checkpoints" / "step-0000006.ckpt"
    _train(server, tmp_path, "run", "data.num_workers=1", f"ckpt_path={ckpt}")
    resumed = _losses(tmp_path / "run")
    print(f"\nuninterrupted {full}\nresumed at 6  {resumed}")
    assert {s: resumed[s] for s in full if s > 6} == {s: full[s] for s in full if s > 6}


@pytest.mark.slow
def test_two_ranks_with_workers_ask_the_hub_no_more_than_one_process(
    server: HubServer, tmp_path: Path
) -> None:
    _train(server, tmp_path, "ddp", "trainer=ddp_cpu", "data.num_workers=2")
    assert _metadata_calls(server) == 4
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").is_file()
