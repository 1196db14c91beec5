"""Builders the tests share: the repository's paths, the train config as train.py composes it, tiny models,
a fast CPU run's overrides, the sample corpus's first micro-batches, a raw jsonl corpus for prepare, a bare
CPU fit, two-process scaffolding, the children a SIGKILLed process leaves, side virtual environments with other
packages' versions.
Tests import it as ``helpers`` (pytest's pythonpath)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import Strategy
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mmbert.data import MLMDataModule, SampleMix
from mmbert.data.batch import StepBatch
from mmbert.data.workers import die_with_parent
from mmbert.model import MmBertConfig, MmBertForMaskedLM
from mmbert.train.config import compose_train as _compose_train

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
FIXTURES = REPO / "tests" / "fixtures"
GOLDEN = REPO / "tests" / "golden"
PYPI = "https://pypi.org/simple/"
# This environment's torch, pinned in every side environment so that pip never swaps in another build.
TORCH = f"torch=={torch.__version__.split('+')[0]}"
# Side environments, kept between runs (one per set of pins) so that a rerun installs nothing.
SIDE_VENVS = Path(os.environ.get("MMBERT_TEST_VENVS", Path.home() / ".cache" / "mmbert-test-venvs"))

# Vocabulary of the tiny model configs that are not tied to the sample tokenizer.
VOCAB = 300
# tiny_config's dimensions, under the names transformers' ModernBertConfig shares.
TINY_DIMS = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=2,
    local_attention=8,
    global_attn_every_n_layers=3,
)
# The model of the training-step, multi-process and conversion tests: the sample tokenizer's vocabulary.
TINY = dict(vocab_size=8192, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2)
# mmBERT-small's dimensions (conf/model/small.yaml); its window is MmBertConfig's default.
SMALL = dict(vocab_size=256000, hidden_size=384, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=6)  # fmt: skip

# The released mmBERT training YAMLs' model_config (every key of configs/mmBERT-base*.yaml of JHU-CLSP/mmBERT;
# the RoPE bases differ by phase) at tiny sizes, plus keys FlexBertConfig.to_dict() adds, as Composer's
# HuggingFaceModel stores it in state["integrations"].
FLEXBERT_CONFIG = {
    "model_type": "flex_bert", "vocab_size": 8192, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 4, "num_attention_heads": 2, "max_position_embeddings": 512, "padding": "unpadded",
    "mlp_layer": "glu", "bert_layer": "prenorm", "embed_norm": True, "final_norm": True, "hidden_act": "gelu",
    "init_method": "full_megatron", "mlp_in_bias": False, "mlp_out_bias": False, "attn_out_bias": False,
    "attn_qkv_bias": False, "compile_model": True, "head_pred_act": "gelu", "loss_function": "fa_cross_entropy",
    "normalization": "layernorm", "rotary_emb_dim": None, "sliding_window": 128, "attention_layer": "rope",
    "embedding_layer": "sans_pos", "rotary_emb_base": 160000.0, "local_attn_rotary_emb_base": 10000.0,
    "unpad_embeddings": True, "masked_prediction": True, "skip_first_prenorm": True,
    "activation_function": "gelu", "attn_out_dropout_prob": 0.1, "rotary_emb_scale_base": None,
    "rotary_emb_interleaved": False, "allow_embedding_resizing": True, "attention_probs_dropout_prob": 0.0,
    "embed_dropout_prob": 0.0, "mlp_dropout_prob": 0.0, "global_attn_every_n_layers": 3,
    "norm_kwargs": {"eps": 1e-05, "bias": False}, "loss_kwargs": {"reduction": "mean"}, "pad_token_id": 0,
    "decoder_bias": True, "tie_word_embeddings": True, "head_pred_norm": True, "use_fa2": True,
    "encoder_layer": "base", "initial_attention_layer": None, "initial_bert_layer": None,
    "initial_mlp_layer": None, "num_initial_layers": 1, "local_attn_rotary_emb_dim": None, "pad_logits": False,
}  # fmt: skip

# A run that takes seconds: a few steps of the tiny model on the sample corpus, short rows.
FAST = [
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "phase.seq_len=128",
    "data.num_workers=0",
    "data.val_docs_per_lang=2",
    "callbacks.model_checkpoint.every_n_train_steps=3",
    "callbacks.batch_warmup=null",
    "logger=csv",
]


def compose_train(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Composes conf/train.yaml with Hydra's runtime values set, as `python train.py ...` would."""
    return _compose_train(overrides, output_dir=output_dir, conf_dir=CONF)


def tiny_config(**overrides: object) -> MmBertConfig:
    """Four layers, hidden 32: layers 0 and 3 global, 1 and 2 local with |i - j| <= 4."""
    return MmBertConfig(**(TINY_DIMS | {"attn_backend": "sdpa"} | overrides))


def make_model(seed: int = 0, **overrides: object) -> MmBertForMaskedLM:
    """A seeded tiny model in eval mode."""
    import torch

    torch.manual_seed(seed)
    return MmBertForMaskedLM(tiny_config(**overrides)).eval()


def release_shaped_tiny() -> MmBertForMaskedLM:
    """The tiny model with the sample tokenizer's vocabulary (its checkpoints name that tokenizer), mmBERT's
    128-token window and RoPE bases: what export and deployment tests convert."""
    return make_model(
        **TINY,
        local_attention=128,
        attn_backend="auto",
        global_rope_theta=160_000.0,
        local_rope_theta=160_000.0,
    )


def save_lightning_checkpoint(net: MmBertForMaskedLM, path: Path) -> Path:
    """What train.py's checkpoints hold for the model: the network's weights, its config, its tokenizer (the
    sample's)."""
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "mmbert_config": dataclasses.asdict(net.config),
            "mmbert_tokenizer": str(REPO / "data" / "tokenizer"),
        },
        path,
    )
    return path


def sample_batches(n: int) -> list[dict]:
    """The first `n` micro-batches of the sample corpus's pretraining mix: two rows of 64 tokens each."""
    dm = MLMDataModule(SampleMix(subset="pretrain"), seq_len=64, rows_per_device=2, tau=0.7, mask_ratio=0.3)
    dm.setup("fit")
    it = dm.train_batches()
    return [next(it) for _ in range(n)]


def write_many_files(root: Path, n_files: int) -> list[str]:
    """A folder of real text in ``n_files`` jsonl files; the usable documents' texts (bad lines among them)."""
    texts = SampleMix(subset="decay-all").train_source("eng_Latn").first_docs(10**9)
    usable = []
    folder = root / "eng_Latn" / "train"
    folder.mkdir(parents=True)
    for f in range(n_files):
        lines = []
        for j in range(300):
            t = f"{f}-{j} " + " ".join(texts[(f * 300 + j + k) % len(texts)] for k in range(6))
            lines.append(json.dumps({"text": t}))
            usable.append(t)
        lines.insert(7, "not json")
        lines.insert(9, json.dumps({"text": "   "}))
        (folder / f"{f:03d}.jsonl").write_text("\n".join(lines) + "\n")
    return usable


def fit_on_cpu(
    module: L.LightningModule,
    data: L.LightningDataModule,
    max_steps: int,
    devices: int = 1,
    strategy: str | Strategy = "auto",
    callbacks: list[L.Callback] | None = None,
) -> L.Trainer:
    """Fits with nothing around the steps (no validation, logger, checkpoints, progress bar or summary); the
    data module hands each rank its own batches, so Lightning adds no distributed sampler."""
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=max_steps,
        use_distributed_sampler=False,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule=data)
    return trainer


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of every row of the run's csv/metrics.csv that has `key`, in file order (repeats kept)."""
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").read_text().splitlines())
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_env(rank: int, world: int, port: int, run_id: str) -> None:
    """What torchrun sets for a process: Lightning then takes the processes as launched."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), GROUP_RANK="0",
        WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), TORCHELASTIC_RUN_ID=run_id,
    )  # fmt: skip


class FixedSteps(L.LightningDataModule):
    """Optimizer steps of `micro` micro-batches over all ranks; rank r of w takes micro-batches r, r + w, ..."""

    def __init__(self, batches: list[dict], micro: int = 2) -> None:
        super().__init__()
        self.batches, self.micro = batches, micro

    def train_dataloader(self) -> DataLoader:
        rank, world, m = self.trainer.global_rank, self.trainer.world_size, self.micro
        steps = [StepBatch(self.batches[i + rank : i + m : world]) for i in range(0, len(self.batches), m)]
        return DataLoader(steps, batch_size=None, shuffle=False)


def spawn_ranks(worker: Callable[..., None], *args: object, world: int = 2) -> None:
    """Runs ``worker(rank, *args)`` in ``world`` spawned processes and waits for them (``mp.spawn``); each
    rank dies with the process that spawned it, so a killed test run leaves no rank waiting in a collective."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_dying_with_parent, args=(worker, *args), nprocs=world, join=True)


def _rank_dying_with_parent(rank: int, worker: Callable[..., None], *args: object) -> None:
    die_with_parent()
    worker(rank, *args)


# Nothing left running: how long the children of a SIGKILLed process may outlive it.
SURVIVAL_S = 3.0  # prctl kills in milliseconds; torch's own watchdog polls every 5 s


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` (every thread's), each with its start time to tell it from reuse."""
    kids = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if start := start_time(int(child)):
                kids[int(child)] = start
    return kids


def start_time(pid: int) -> str | None:
    """``pid``'s start time, or None once it is gone or a zombie (an orphan's reaper may be slow)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in "ZX" else fields[19]


def survivors_of_sigkill(cmd: list[str], n_workers: int, ready: Path | None = None) -> dict[int, str]:
    """Starts ``cmd``, waits for its ``n_workers`` children (and for the file ``ready``, when given: children
    that are still starting die with the parent's pipe anyway), kills it alone; the children alive after that.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline, kids = time.monotonic() + 300, {}
        while time.monotonic() < deadline and proc.poll() is None:
            kids = children(proc.pid)
            if len(kids) >= n_workers and (ready is None or ready.exists()):
                break
            time.sleep(0.05)
        assert len(kids) == n_workers and proc.poll() is None, (kids, proc.returncode)
        proc.kill()  # the parent only, as the OOM killer does
        assert proc.wait() == -signal.SIGKILL
        deadline = time.monotonic() + SURVIVAL_S
        while any(start_time(pid) == s for pid, s in kids.items()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return {pid: s for pid, s in kids.items() if start_time(pid) == s}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever a failing run left behind


def leave_process_group() -> None:
    """End a spawned test worker whose work is done: both ranks tear down together and leave without running
    the interpreter's finalization.

    The cause is in torch (2.13.0+cpu; a core dump of the two-process FSDP2 Lightning worker, 2 aborts in ~75
    runs without ``os._exit`` on a loaded machine): a gloo worker thread (``ProcessGroupGloo::runLoop``) drops
    its last reference to a finished ``AsyncAllgatherCoalescedWork`` only after ``wait()`` has returned in
    Python; the group's threads were still running after destroy_process_group (the core shows three). When the main thread is already in ``Py_FinalizeEx``, the work's destructor
    decrefs a Python-owned tensor, ``gil_scoped_acquire`` meets the finalizing interpreter, which
    ``pthread_exit``s the thread inside a noexcept destructor: "terminate called without an active
    exception", SIGABRT, after the work is done. ``os._exit`` skips finalization, so no thread can meet it.
    Standalone pure-torch candidate reproducer (for filing upstream): scripts/repro_gloo_exit_abort.py.
    """
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen(PYPI + "pip/", timeout=15):
            return True
    except OSError:
        return False


def run_command(
    *cmd: str | Path, cwd: Path, env: dict[str, str], timeout: int
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def pip_install(python: Path, *args: str | Path, cwd: Path, env: dict[str, str]) -> None:
    """``pip install args`` into ``python``'s environment; skips, saying so, where PyPI cannot be reached."""
    proc = run_command(python, "-m", "pip", "install", *args, cwd=cwd, env=env, timeout=1200)
    if proc.returncode != 0 and not pypi_reachable():
        pytest.skip(f"PyPI ({PYPI}) is unreachable and `pip install {' '.join(map(str, args))}` failed")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def side_env() -> dict[str, str]:
    """This process's environment for a side environment's python: the tree under test first on the path
    (whatever mmbert is installed), no user site, offline hub, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    return env | {
        "PYTHONPATH": str(REPO / "src"),
        "PYTHONNOUSERSITE": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def side_venv(*pins: str) -> Path:
    """Python of a venv that sees this environment's packages (``--system-site-packages``) with ``pins``
    installed over them: another tool's version (an older transformers, mosaicml-streaming) without a second
    torch. Built once per pins, Python and torch under SIDE_VENVS; a build cut short is redone."""
    key = hashlib.sha256(json.dumps([sys.version, TORCH, *pins]).encode()).hexdigest()[:16]
    venv = SIDE_VENVS / f"{'_'.join(pins)}-{key}"
    python = venv / "bin" / "python"
    built = venv / "mmbert-pins.json"
    if not built.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300
        )
        pip_install(python, *pins, TORCH, cwd=venv, env=side_env())
        built.write_text(json.dumps(pins) + "\n")
    return python
