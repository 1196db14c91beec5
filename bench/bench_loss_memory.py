"""Peak memory of one MLM forward + backward: mmbert's fused decoder + loss vs transformers' ModernBertForMaskedLM.

Both sides get the same weights (2 encoder layers at mmBERT-small dims by default, the full 256k vocabulary) and
the same batch: 8 documents of 1024 tokens, 30% of them labelled; mmbert runs them packed (cu_seqlens),
transformers as an [8, 1024] batch with sparse prediction on (the head and decoder only on labelled positions).
Reported: the peak memory of one forward + backward above what the process held with the model and the batch
built, so the weights count on neither side and their gradients on both.

How it is measured on CPU: each side runs in a fresh subprocess, which reads its resident set before the step
(VmRSS), resets the kernel's peak-RSS mark (`echo 5 > /proc/self/clear_refs`), runs the step and reads the
peak back (VmHWM). glibc's mmap threshold is pinned (MALLOC_MMAP_THRESHOLD_) so that every freed tensor goes
back to the system at once and the resident set follows the live tensors (plus library scratch space) rather
than the allocator's caching. On CUDA it is torch.cuda.max_memory_allocated above memory_allocated.

    python bench/bench_loss_memory.py                       # CPU, fp32
    python bench/bench_loss_memory.py --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from benchlib import bench_parser

from mmbert.checkpoint.hf_config import hf_config_dict
from mmbert.model import MmBertConfig, MmBertForMaskedLM

SIDES = ("mmbert", "transformers")
GIB = 1 << 30
# Freed blocks of 128 KiB and more are unmapped at once, whatever glibc's adaptive threshold would do.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}


def model_config(args: argparse.Namespace) -> MmBertConfig:
    return MmBertConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        attn_backend="auto",
    )


def make_batch(cfg: MmBertConfig, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """[B, L] token ids and labels: a `mask_rate` share of the positions labelled, their input the mask token."""
    gen = torch.Generator().manual_seed(args.seed)
    ids_BL = torch.randint(5, cfg.vocab_size, (args.rows, args.seq_len), generator=gen)
    masked_BL = torch.rand(ids_BL.shape, generator=gen) < args.mask_rate
    return {
        "input_ids": torch.where(masked_BL, cfg.mask_token_id, ids_BL),
        "labels": torch.where(masked_BL, ids_BL, -100),
    }


def side_inputs(side: str, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, object]:
    ids_BL, labels_BL = batch["input_ids"].to(device), batch["labels"].to(device)
    if side == "transformers":
        return {"input_ids": ids_BL, "attention_mask": torch.ones_like(ids_BL), "labels": labels_BL}
    B, L = ids_BL.shape
    cu_seqlens = torch.arange(0, (B + 1) * L, L, dtype=torch.int32, device=device)
    return {
        "input_ids": ids_BL.flatten(),
        "cu_seqlens": cu_seqlens,
        "max_seqlen": L,
        "labels": labels_BL.flatten(),
    }


def build_model(side: str, cfg: MmBertConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    if side == "mmbert":
        model = MmBertForMaskedLM(cfg)
    else:
        from transformers import ModernBertConfig, ModernBertForMaskedLM

        hf_cfg = ModernBertConfig.from_dict(hf_config_dict(cfg) | {"sparse_prediction": True})
        model = ModernBertForMaskedLM._from_config(hf_cfg, attn_implementation="sdpa")
    model.load_state_dict(state, strict=True)
    return model.train()


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_side(args: argparse.Namespace) -> None:
    """Child process: one forward + backward of `args.side`; prints {"peak": bytes, "loss": float} as JSON."""
    device = torch.device(args.device)
    saved = torch.load(args.inputs, weights_only=True)
    cfg = model_config(args)
    model = build_model(args.side, cfg, saved["state"]).to(device)
    inputs = side_inputs(args.side, saved["batch"], device)
    del saved
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _proc_status_kib("VmRSS") << 10
        Path("/proc/self/clear_refs").write_text("5")
    with autocast:
        loss = model(**inputs).loss
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = (_proc_status_kib("VmHWM") << 10) - before
    print(json.dumps({"peak": peak, "loss": loss.item()}))


def run_side(side: str, args: argparse.Namespace, inputs_path: Path) -> dict[str, float]:
    argv = [sys.executable, __file__, "--side", side, "--inputs", str(inputs_path)]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("side", "inputs")]
    out = subprocess.run(argv, env=os.environ | MALLOC_ENV, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = bench_parser(__doc__, sizes=False)
    parser.add_argument("--vocab", type=int, default=256000)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--intermediate", type=int, default=1152)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=8, help="documents (one per row)")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--mask-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.side is not None:
        measure_side(args)
        return

    torch.manual_seed(args.seed)
    cfg = model_config(args)
    batch = make_batch(cfg, args)
    with tempfile.TemporaryDirectory() as tmp:
        inputs_path = Path(tmp) / "inputs.pt"
        torch.save({"state": MmBertForMaskedLM(cfg).state_dict(), "batch": batch}, inputs_path)
        results = {side: run_side(side, args, inputs_path) for side in SIDES}
    labelled = int((batch["labels"] != -100).sum())
    print(
        f"\n{args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, {args.rows} x {args.seq_len} tokens, "
        f"{labelled} labelled, {args.device} {args.dtype}: peak memory of forward + backward above the model"
    )
    print(f"{'':30s} {'peak GiB':>9s} {'loss':>9s}")
    for side, name in zip(SIDES, ("mmbert (fused, packed)", "transformers (sparse pred.)"), strict=True):
        print(f"{name:30s} {results[side]['peak'] / GIB:9.2f} {results[side]['loss']:9.4f}")
    ratio = results["mmbert"]["peak"] / results["transformers"]["peak"]
    print(f"{'ratio (mmbert / transformers)':30s} {ratio:9.2f}")


if __name__ == "__main__":
    main()
