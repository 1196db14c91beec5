"""Training-step throughput: packed MmBertForMaskedLM vs transformers' ModernBertForMaskedLM (padded, SDPA).

Both models get the SAME variable-length documents and masked-LM labels; one step = forward, backward and an
AdamW step. Throughput counts real (non-padding) tokens. mmbert runs the documents packed (cu_seqlens);
transformers runs them as a padded [B, L] batch with attention_mask and sparse prediction on.

    python bench/bench_model.py                       # CPU, mmBERT-small dims, fp32, docs of 64..512 tokens
    python bench/bench_model.py --device cuda --dtype bf16 --size base --max-doc-len 8192 --batch-tokens 65536

``--json FILE`` also writes the figures (tokens/s best and median, MFU, peak step memory above the resident
model and optimizer state on CUDA) for bench/gpu_check.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass

import torch
from benchlib import SIZES, bench_parser
from tqdm import tqdm

from mmbert.checkpoint.hf_config import hf_config_dict
from mmbert.model import MmBertConfig, MmBertForMaskedLM
from mmbert.train.throughput import device_peak_flops, flops_per_token


@dataclass
class Batch:
    docs: list[torch.Tensor]
    labels: list[torch.Tensor]

    @property
    def num_tokens(self) -> int:
        return sum(d.numel() for d in self.docs)


def make_batches(cfg: MmBertConfig, args: argparse.Namespace, count: int, batch_tokens: int) -> list[Batch]:
    gen = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(count):
        docs, labels, tokens = [], [], 0
        while tokens < batch_tokens:
            n = int(torch.randint(args.min_doc_len, args.max_doc_len + 1, (1,), generator=gen))
            ids = torch.randint(5, cfg.vocab_size, (n,), generator=gen)
            masked = torch.rand(n, generator=gen) < args.mask_rate
            docs.append(ids)
            labels.append(torch.where(masked, ids, -100))
            tokens += n
        batches.append(Batch(docs, labels))
    return batches


def packed_inputs(batch: Batch, device: torch.device) -> dict[str, object]:
    lengths = torch.tensor([d.numel() for d in batch.docs])
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    return dict(
        input_ids=torch.cat(batch.docs).to(device),
        cu_seqlens=cu.to(device),
        max_seqlen=int(lengths.max()),
        labels=torch.cat(batch.labels).to(device),
    )


def padded_inputs(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    B, L = len(batch.docs), max(d.numel() for d in batch.docs)
    ids = torch.zeros(B, L, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    for i, (d, lab) in enumerate(zip(batch.docs, batch.labels, strict=True)):
        ids[i, : d.numel()], mask[i, : d.numel()], labels[i, : d.numel()] = d, 1, lab
    return dict(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))


class Trainer:
    """One model, its AdamW and its inputs; `step(i)` runs training step i and returns its seconds."""

    def __init__(
        self, model: torch.nn.Module, inputs: list[dict], args: argparse.Namespace, device: torch.device
    ):
        self.model = model.train()
        self.inputs = inputs
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5, fused=True)
        self.bf16 = args.dtype == "bf16"
        self.device = device
        self.peak_bytes = 0  # most memory a step took above what was resident before it (CUDA only)

    def step(self, i: int) -> float:
        self._sync()
        if self.device.type == "cuda":
            resident = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(**self.inputs[i]).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._sync()
        seconds = time.perf_counter() - start
        if self.device.type == "cuda":
            step_peak = torch.cuda.max_memory_allocated(self.device) - resident
            self.peak_bytes = max(self.peak_bytes, step_peak)
        return seconds

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--min-doc-len", type=int, default=64)
    parser.add_argument("--max-doc-len", "--seq-len", type=int, default=512, help="longest document")
    parser.add_argument(
        "--batch-tokens", type=int, default=2048, help="real tokens per step (whole documents)"
    )
    parser.add_argument("--mask-rate", type=float, default=0.3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps on short batches first")
    parser.add_argument("--steps", type=int, default=3, help="timed steps; best and median are reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attn-backend", default="auto", help="mmbert attention backend")
    parser.add_argument("--hf-attn", default="sdpa", help="transformers attn_implementation")
    parser.add_argument("--skip-hf", action="store_true", help="time mmbert only")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    cfg = MmBertConfig(**SIZES[args.size], attn_backend=args.attn_backend)
    # Warm-up (lazy initialisation, optimizer state) does not need full batches.
    warmup = make_batches(cfg, args, args.warmup, min(args.batch_tokens, 4 * args.min_doc_len))
    timed = make_batches(cfg, args, args.steps, args.batch_tokens)
    batches = warmup + timed
    tokens = [b.num_tokens for b in timed]
    mean_len = sum(sum(d.numel() ** 2 for d in b.docs) / b.num_tokens for b in timed) / len(timed)

    trainers = {
        "mmbert (packed)": Trainer(
            MmBertForMaskedLM(cfg).to(device), [packed_inputs(b, device) for b in batches], args, device
        )
    }
    if not args.skip_hf:
        from transformers import ModernBertConfig, ModernBertForMaskedLM

        hf_cfg = ModernBertConfig.from_dict(hf_config_dict(cfg) | {"sparse_prediction": True})
        hf_model = ModernBertForMaskedLM._from_config(hf_cfg, attn_implementation=args.hf_attn).to(device)
        trainers[f"transformers ({args.hf_attn}, padded)"] = Trainer(
            hf_model, [padded_inputs(b, device) for b in batches], args, device
        )
    # Steps alternate between the models (and which goes first) so that load from other processes on the
    # machine hits both alike; the best step is the least disturbed one.
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    for i in tqdm(range(len(batches)), desc="steps"):
        for name in list(trainers) if i % 2 == 0 else list(reversed(trainers)):
            seconds = trainers[name].step(i)
            if i >= args.warmup:
                rates[name].append(tokens[i - args.warmup] / seconds)

    peak = device_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    # Global layers attend over the document: the mean length a token sees stands in for the row length.
    flops = flops_per_token(cfg, round(mean_len), args.mask_rate)
    print(
        f"\n{args.size} dims, {args.device} {args.dtype}, docs {args.min_doc_len}..{args.max_doc_len} tokens, "
        f"{statistics.mean(tokens):.0f} real tokens/step, mask rate {args.mask_rate}, {args.steps} timed steps"
    )
    header = f"{'real tokens/s':34s} {'best':>10s} {'median':>10s}"
    print(header + ("  MFU (best)" if peak else ""))
    for name, values in rates.items():
        mfu = f"  {100 * max(values) * flops / peak:10.1f}%" if peak else ""
        print(f"{name:34s} {max(values):10.0f} {statistics.median(values):10.0f}{mfu}")
    if len(rates) == 2:
        ours, theirs = rates.values()
        print(
            f"{'speed-up (mmbert / transformers)':34s} {max(ours) / max(theirs):9.2f}x "
            f"{statistics.median(ours) / statistics.median(theirs):9.2f}x"
        )
    if args.json:
        figures = {
            name: {
                "tokens_per_s_best": max(values),
                "tokens_per_s_median": statistics.median(values),
                "mfu_best": max(values) * flops / peak if peak else None,
                "peak_step_bytes": trainers[name].peak_bytes if device.type == "cuda" else None,
            }
            for name, values in rates.items()
        }
        setup = {k: v for k, v in vars(args).items() if k != "json"}
        with open(args.json, "w") as f:
            json.dump({"setup": setup, "device": str(device), "results": figures}, f, indent=1)


if __name__ == "__main__":
    main()
