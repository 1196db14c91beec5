"""Inference throughput as the paper's Figure 3 measures it (ModernBERT's efficiency protocol), and a check.

8,192 synthetic samples of random token ids per scenario: ``fixed-512`` / ``fixed-8192`` (every sample that
long) and ``variable-512`` / ``variable-8192`` (lengths drawn from N(256, 64) clipped to [16, 512], N(4096,
1024) clipped to [16, 8192]). Every model has random weights (no hub) and gets the same samples; tokens/s
counts real tokens, the embeddings (mean over each sample's tokens) are brought back to the host:

- mmBERT-<size> (mmbert.encode): the project's packed path, ``mmbert.encode(model, ids, pooling="mean",
  batch_tokens=B)`` on batches of sorted samples holding at most B real tokens;
- mmBERT-<size> (transformers, sdpa | flash_attention_2): transformers' ``ModernBertModel`` with the SAME
  weights, run padded with an attention_mask and mean-pooled over it; flash_attention_2 only on CUDA with
  flash_attn installed and a half dtype;
- XLM-R base, mDistilBERT, multilingual MiniLM (transformers, sdpa, padded like the above) from their public
  config values; they have 512 positions and skip the 8192 scenarios ("-").

Padded models run in one or both of two orders (``--padded-orders``), each a row of its own:

- ``input`` (Figure 3's protocol): the samples in the order they come, a fixed number of rows per batch (the
  batch size found for the scenario's longest sample), each batch padded to its longest. The paper's padded
  baselines run at half their fixed-512 rate at variable-512 (XLM-R 63k -> 32k, mDistilBERT 119k -> 59k,
  MiniLM 104k -> 51k tokens/s): each sample costs them a full-length row;
- ``sorted``: longest first, as many rows as fit the batch's tokens (rows x longest), which is what a careful
  user does (sentence-transformers sorts by length) and the best a padded model can do.

Batch size: each model at the largest batch that fits. On CUDA it is searched for (doubling, then bisection,
on a batch of the longest samples, catching torch.cuda.OutOfMemoryError, once per model and sample length)
up to ``--max-batch-tokens``; on a CPU memory is not what limits it, and every model gets ``--cpu-batch-tokens``.
Each (model, scenario) runs one untimed warm-up batch first, then ``--repeats`` timed passes over its batches
(the models take turns, pass by pass), each in a seeded random order so that a pass cut short by ``--budget-s``
has timed a fair sample of them (the figures say so). tokens/s is the real tokens over the sum of every
batch's best time: on a machine shared with other processes, the least disturbed run of each batch. With few
``--samples`` (on a CPU) a variable scenario's sorted batches mix more lengths than at 8,192 samples, and
small batches in input order pad less than the paper's large ones: the table prints how much each order pads.

Checks in the same run (the exit status is 1 if one fails):

- embeddings: mmbert.encode's mean embeddings against transformers' ModernBertModel mean-pooled over the mask,
  in fp32 on the same samples (the first ``--check-tokens`` tokens' worth of every scenario), max abs diff <=
  ``--check-tol``;
- memory: the warm-up batch of every 8192 scenario runs under a dispatch mode that sees every op's output; no
  output of the project's path may have two dimensions as long as the batch's longest sample (an [B, L, L]
  mask or [B, H, L, L] scores would). transformers' figures are shown for contrast.

With a half ``--dtype`` the run also prints, as figures (not checks), how far mmbert.encode's and transformers'
embeddings at that dtype move from their own fp32 ones on the check's samples (smallest cosine similarity,
largest difference): the price of the speed. On a CPU with bf16 instructions (avx512_bf16, AMX) ``--dtype bf16``
is what ``mmbert.encode(..., dtype=torch.bfloat16)`` gives there.

    python bench/bench_inference.py --samples 64 --scenarios fixed-512 variable-512        # CPU, fp32
    python bench/bench_inference.py --samples 64 --scenarios fixed-512 variable-512 --dtype bf16  # CPU, bf16
    python bench/bench_inference.py --samples 4 --scenarios fixed-8192 variable-8192 --models mmbert transformers
    python bench/bench_inference.py --device cuda --dtype bf16 --budget-s 600 --json inference.json  # full size

``--json FILE`` writes the setup, every cell (tokens/s, batch, samples timed), the ratios, the goals and the
checks.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
from benchlib import SIZES, bench_parser, cpu_name
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from tqdm import tqdm

import mmbert
from mmbert.checkpoint.hf_config import hf_config_dict
from mmbert.model import MmBertConfig, MmBertModel
from mmbert.model.attention import flash_attn_importable
from mmbert.model.encode import _batches, cpu_has_fast_kernels

# name: (longest sample, (mean, std) of a variable length or None for fixed)
SCENARIOS: dict[str, tuple[int, tuple[float, float] | None]] = {
    "fixed-512": (512, None),
    "variable-512": (512, (256.0, 64.0)),
    "fixed-8192": (8192, None),
    "variable-8192": (8192, (4096.0, 1024.0)),
}
MIN_LEN = 16
FAMILIES = ("mmbert", "transformers", "transformers-fa2", "xlmr", "mdistilbert", "minilm")
PADDED_ORDERS = ("input", "sorted")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The released mmBERT models' RoPE bases (random weights do not care; the tables' cost is the same).
ROPE_THETA = 160000.0
INIT_STD = 0.02
# The paper's H100 figure for mmBERT-small at variable-512, tokens/s.
GPU_GOAL_SMALL_VARIABLE_512 = 232_000
# CPU goals: (scenario, what is compared, at least this ratio).
CPU_GOALS = (
    ("variable-512", "transformers", 2.0),
    ("variable-512", "xlmr", 3.0),
    ("fixed-512", "transformers", 1.1),
)


# ---------------------------------------------------------------------------------------------- inputs


def make_samples(name: str, count: int, high: int, seed: int) -> list[Tensor]:
    """The scenario's samples: random ids in [5, high) (above every model's special tokens)."""
    longest, dist = SCENARIOS[name]
    gen = torch.Generator().manual_seed(seed * 1000 + list(SCENARIOS).index(name))
    if dist is None:
        lengths = [longest] * count
    else:
        drawn = torch.normal(dist[0], dist[1], (count,), generator=gen)
        lengths = drawn.round().clamp(MIN_LEN, longest).long().tolist()
    return [torch.randint(5, high, (n,), generator=gen) for n in lengths]


def plan_batches(lengths: list[int], budget: int, order: str, longest: int = 0) -> list[list[int]]:
    """Sample indices in batches of at most ``budget`` tokens, by ``order``:

    - ``packed``: mmbert.encode's own grouping (longest first, at most ``budget`` real tokens a batch);
    - ``sorted``: longest first, at most ``budget`` padded tokens (rows x the batch's longest);
    - ``input``: in sample order, ``budget // longest`` rows a batch (a batch size in rows, as found for the
      scenario's ``longest`` sample).

    A sample over the budget is a batch alone.
    """
    if order == "packed":
        return _batches(lengths, budget)
    if order == "input":
        rows = max(1, budget // longest)
        return [list(range(i, min(i + rows, len(lengths)))) for i in range(0, len(lengths), rows)]
    if order != "sorted":
        raise ValueError(f"unknown batch order {order!r}")
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        # The batch's first sample is its longest: one more row costs that many padded tokens.
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


# ---------------------------------------------------------------------------------------------- models


def _fill_random_(model: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights, quickly (the recipes' truncated-normal inits take tens of seconds at a 256k
    vocabulary on a CPU): N(0, INIT_STD) matrices, LayerNorm weight 1 and every bias 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.dim() >= 2:
                    p.normal_(0.0, INIT_STD, generator=gen)
                elif isinstance(module, nn.LayerNorm) and name == "weight":
                    p.fill_(1.0)
                else:
                    p.zero_()
    return model


@contextlib.contextmanager
def _no_hf_init():
    """transformers' no_init_weights (its module moved in 5.x): the weights are filled or loaded after."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        yield


def mmbert_encoder(size: str, seed: int) -> MmBertModel:
    cfg = MmBertConfig(**SIZES[size], global_rope_theta=ROPE_THETA, local_rope_theta=ROPE_THETA)
    with torch.device("meta"):
        encoder = MmBertModel(cfg)
    return _fill_random_(encoder.to_empty(device="cpu"), seed).eval()


def hf_modernbert(encoder: MmBertModel, attn: str) -> nn.Module:
    """transformers' ModernBertModel holding ``encoder``'s weights (the same tensors, not a copy)."""
    from transformers import ModernBertConfig, ModernBertModel

    with _no_hf_init():
        hf = ModernBertModel._from_config(
            ModernBertConfig.from_dict(hf_config_dict(encoder.config)), attn_implementation=attn
        )
    hf.load_state_dict(encoder.state_dict(), strict=True, assign=True)
    return hf.eval()


# The multilingual baselines, from their public config.json values: (row label, transformers model class,
# its config class, the config). They have 512 token positions (XLM-R's 514 include two offset slots).
REFERENCES: dict[str, tuple[str, str, str, dict]] = {
    "xlmr": (  # FacebookAI/xlm-roberta-base
        "XLM-R base", "XLMRobertaModel", "XLMRobertaConfig",
        dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
             intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
             pad_token_id=1, bos_token_id=0, eos_token_id=2),
    ),
    "mdistilbert": (  # distilbert/distilbert-base-multilingual-cased
        "mDistilBERT", "DistilBertModel", "DistilBertConfig",
        dict(vocab_size=119547, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512),
    ),
    "minilm": (  # microsoft/Multilingual-MiniLM-L12-H384
        "multilingual MiniLM", "BertModel", "BertConfig",
        dict(vocab_size=250037, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
             intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2),
    ),
}  # fmt: skip
REFERENCE_LABELS = {family: spec[0] for family, spec in REFERENCES.items()}
REFERENCE_MAX_LEN = 512


def reference_model(family: str, seed: int) -> nn.Module:
    """A baseline of REFERENCES with random weights, SDPA attention and no pooler (mean pooling is used)."""
    import transformers

    _, model_class, config_class, values = REFERENCES[family]
    cls = getattr(transformers, model_class)
    config = getattr(transformers, config_class)(**values)
    kwargs = {} if family == "mdistilbert" else {"add_pooling_layer": False}
    with _no_hf_init():
        model = cls._from_config(config, attn_implementation="sdpa", **kwargs)
    return _fill_random_(model, seed).eval()


@dataclass
class Runner:
    """One row of the table: how it encodes a batch of samples into [N, H] fp32 mean embeddings on the host."""

    key: str
    label: str
    family: str
    size: str | None
    model: nn.Module
    order: str  # "packed" (mmbert.encode) or a padded order of PADDED_ORDERS
    max_len: int
    widths: int  # its widest per-token activation (the memory check needs longer samples than this)
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    pad_id: int = 0
    attn: str | None = None  # an attention implementation to switch to once on the device

    @property
    def packed(self) -> bool:
        return self.order == "packed"

    def __call__(self, seqs: list[Tensor], budget: int) -> Tensor:
        if self.packed:
            return mmbert.encode(
                self.model, seqs, pooling="mean", batch_tokens=budget, device=self.device, dtype=self.dtype
            )
        return self._padded(seqs)

    @torch.inference_mode()
    def _padded(self, seqs: list[Tensor]) -> Tensor:
        B, L = len(seqs), max(len(s) for s in seqs)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        mask = torch.zeros(B, L, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = s, 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask[..., None].float()
        return ((hidden * m).sum(1) / m.sum(1)).cpu()

    def to(self, device: torch.device, dtype: torch.dtype) -> Runner:
        """Weights to ``device`` and ``dtype``; then the attention implementation (flash_attention_2 needs
        half weights on CUDA first)."""
        self.model.to(device=device, dtype=dtype)
        self.device, self.dtype = device, dtype
        if self.attn is not None:
            if hasattr(self.model, "set_attn_implementation"):
                self.model.set_attn_implementation(self.attn)
            else:
                self.model.config._attn_implementation = self.attn
        return self


ORDER_LABELS = {"input": "input order", "sorted": "sorted"}


def _padded_key(key: str, order: str) -> str:
    """A padded row's key: Figure 3's input order keeps the model's name, the sorted row adds "-sorted"."""
    return key if order == "input" else f"{key}-sorted"


def build_runners(
    args: argparse.Namespace, device: torch.device, dtype: torch.dtype, notes: list[str]
) -> tuple[list[Runner], dict]:
    """The rows, in table order, and each size's (mmbert encoder, transformers sdpa model) for the check."""
    runners, pairs = [], {}
    fa2 = device.type == "cuda" and dtype != torch.float32 and flash_attn_importable()
    if "transformers-fa2" in args.models and not fa2:
        notes.append(
            "transformers-fa2 (flash_attention_2) not run: it needs CUDA, a half --dtype and flash_attn"
        )
    project = {"mmbert", "transformers", "transformers-fa2"} & set(args.models)
    for size in args.sizes if project else []:
        encoder = mmbert_encoder(size, args.seed)
        cfg, name = encoder.config, f"mmBERT-{size}"
        hf = hf_modernbert(encoder, "sdpa")
        pairs[size] = (encoder, hf)
        common = dict(
            size=size,
            max_len=cfg.max_position_embeddings,
            widths=max(3 * cfg.hidden_size, 2 * cfg.intermediate_size),
            pad_id=cfg.pad_token_id,
        )
        if "mmbert" in args.models:
            runners.append(Runner(f"mmbert-{size}", f"{name} (mmbert.encode)", "mmbert", model=encoder,
                                  order="packed", **common))  # fmt: skip
        # The same weights again, switched to flash_attention_2 once they are half on the device.
        hf_fa2 = hf_modernbert(encoder, "sdpa") if "transformers-fa2" in args.models and fa2 else None
        for order in args.padded_orders:
            if "transformers" in args.models:
                runners.append(Runner(_padded_key(f"transformers-{size}", order),
                                      f"{name} (transformers, sdpa, {ORDER_LABELS[order]})", "transformers",
                                      model=hf, order=order, **common))  # fmt: skip
            if hf_fa2 is not None:
                runners.append(Runner(_padded_key(f"transformers-fa2-{size}", order),
                                      f"{name} (transformers, flash_attention_2, {ORDER_LABELS[order]})",
                                      "transformers-fa2", model=hf_fa2, order=order, attn="flash_attention_2",
                                      **common))  # fmt: skip
    for family, label in REFERENCE_LABELS.items():
        if family in args.models:
            model = reference_model(family, args.seed)
            for order in args.padded_orders:
                runners.append(Runner(_padded_key(family, order),
                                      f"{label} (transformers, sdpa, {ORDER_LABELS[order]})", family, None,
                                      model, order=order, max_len=REFERENCE_MAX_LEN,
                                      widths=4 * model.config.hidden_size,
                                      pad_id=model.config.pad_token_id or 0))  # fmt: skip
    return runners, pairs


# ---------------------------------------------------------------------------------------------- checks


def check_samples(samples: dict[str, list[Tensor]], args: argparse.Namespace) -> list[Tensor]:
    """The checks' samples: the first ``--check-tokens`` tokens' worth of every scenario."""
    seqs = []
    for name in args.scenarios:
        taken = 0
        for s in samples[name]:
            if taken and taken + len(s) > args.check_tokens:
                break
            seqs.append(s)
            taken += len(s)
    return seqs


def _embed(runner: Runner, seqs: list[Tensor], budget: int) -> Tensor:
    """``runner``'s mean embeddings of ``seqs`` in their order (padded rows in sorted batches)."""
    if runner.packed:
        return runner(seqs, budget)
    plan = plan_batches([len(s) for s in seqs], budget, "sorted")
    out = torch.empty(len(seqs), runner.model.config.hidden_size)
    for batch in plan:
        out[batch] = runner([seqs[i] for i in batch], 0)
    return out


def embedding_check(pairs: dict, seqs: list[Tensor], args: argparse.Namespace) -> tuple[dict, dict]:
    """fp32, on the host's weights before any cast: mmbert.encode vs transformers' ModernBertModel (sdpa).

    Also returns both sides' fp32 embeddings by runner key, for the precision figures of a half --dtype."""
    check, fp32 = {}, {}
    for size, (encoder, hf) in pairs.items():
        common = dict(size=size, max_len=0, widths=0)
        ours = _embed(
            Runner("", "", "mmbert", model=encoder, order="packed", **common), seqs, args.cpu_batch_tokens
        )
        theirs = _embed(
            Runner("", "", "transformers", model=hf, order="sorted", **common), seqs, args.cpu_batch_tokens
        )
        fp32[f"mmbert-{size}"], fp32[f"transformers-{size}"] = ours, theirs
        diff = float((ours - theirs).abs().max())
        check[size] = {
            "max_abs_diff": diff,
            "ok": diff <= args.check_tol,
            "samples": len(seqs),
            "tokens": sum(len(s) for s in seqs),
        }
    return check, fp32


def precision_figures(runners: list[Runner], seqs: list[Tensor], fp32: dict, budget: int) -> dict:
    """How far each of the project's rows moves from its own fp32 embeddings at the run's half dtype
    (what a user trades for the speed): the smallest cosine similarity and the largest difference."""
    figures = {}
    for r in runners:
        if r.key in fp32 and r.dtype != torch.float32:
            ref, low = fp32[r.key], _embed(r, seqs, budget)
            figures[r.key] = {
                "min_cosine": float(torch.nn.functional.cosine_similarity(low, ref, dim=-1).min()),
                "max_abs_diff": float((low - ref).abs().max()),
                "mean_abs": float(ref.abs().mean()),
                "samples": len(seqs),
            }
    return figures


class OpOutputs(TorchDispatchMode):
    """Every op's output shapes: the largest, and those with two dimensions >= ``longest``."""

    def __init__(self, longest: int) -> None:
        super().__init__()
        self.longest = longest
        self.largest: tuple[int, str, tuple[int, ...]] = (0, "", ())
        self.quadratic: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                nbytes = t.numel() * t.element_size()
                if nbytes > self.largest[0]:
                    self.largest = (nbytes, str(func), tuple(t.shape))
                if sum(d >= self.longest for d in t.shape) >= 2 and len(self.quadratic) < 8:
                    self.quadratic.append((str(func), tuple(t.shape)))
        return out

    def report(self, widths: int) -> dict:
        conclusive = self.longest > widths
        return {
            "longest_sample": self.longest,
            "largest_output": {
                "op": self.largest[1],
                "shape": list(self.largest[2]),
                "mib": self.largest[0] / 2**20,
            },
            "quadratic_outputs": [{"op": op, "shape": list(shape)} for op, shape in self.quadratic],
            "conclusive": conclusive,
            "ok": not self.quadratic if conclusive else None,
        }


# ---------------------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def largest_batch(runner: Runner, longest: int, start: int, cap: int, high: int, until: float | None) -> int:
    """The most tokens (whole rows of ``longest`` tokens) one batch of the longest samples may have on CUDA:
    doubling from ``start`` while it fits, then bisection to within an eighth, up to ``cap``. Past the time
    ``until`` (perf_counter) the search stops at the largest batch found to fit so far."""
    row = torch.randint(5, high, (longest,))

    def fits(budget: int) -> bool:
        rows = budget // longest
        try:
            runner([row] * rows, budget)
            _sync(runner.device)
            return True
        except torch.cuda.OutOfMemoryError:
            pass
        gc.collect()  # outside the except block: the error's frames no longer hold the failed batch's tensors
        torch.cuda.empty_cache()
        return False

    def late() -> bool:
        return until is not None and time.perf_counter() > until

    cap = max(longest, cap // longest * longest)
    budget = min(cap, max(longest, start // longest * longest))
    while not fits(budget):
        if budget == longest:
            raise RuntimeError(f"{runner.label}: one sample of {longest} tokens does not fit")
        budget = max(longest, budget // 2 // longest * longest)
    good, bad = budget, None
    while bad is None and good < cap and not late():
        budget = min(cap, 2 * good)
        if fits(budget):
            good = budget
        else:
            bad = budget
    while bad is not None and bad - good > max(longest, good // 8) and not late():
        mid = (good + bad) // 2 // longest * longest
        if mid <= good:
            break
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


class Cell:
    """One model on one scenario's samples: its batches, an untimed warm-up, then timed passes.

    Every pass runs the batches in the same seeded random order (a pass cut short by its deadline has timed a
    fair sample of them) and times each batch. The figure is the real tokens of the batches run over the sum
    of each batch's best time across passes: on a machine shared with other processes, the least disturbed
    run of every batch. The median pass rate is kept too.
    """

    def __init__(self, runner: Runner, seqs: list[Tensor], budget: int, longest: int, seed: int) -> None:
        self.runner, self.seqs, self.budget = runner, seqs, budget
        self.lengths = [len(s) for s in seqs]
        self.plan = plan_batches(self.lengths, budget, runner.order, longest)
        self.order = list(range(len(self.plan)))
        random.Random(seed).shuffle(self.order)
        self.times: dict[int, list[float]] = {}
        self.pass_rates: list[float] = []

    def _batch(self, k: int) -> Tensor:
        return self.runner([self.seqs[i] for i in self.plan[k]], self.budget)

    def warm_up(self, probe: OpOutputs | None) -> None:
        """The first (longest) batch, untimed; under ``probe`` if given (the memory check)."""
        if probe is not None:
            probe.longest = max(self.lengths[i] for i in self.plan[0])
        with probe if probe is not None else contextlib.nullcontext():
            self._batch(0)
        _sync(self.runner.device)

    def timed_pass(self, deadline: float | None) -> None:
        tokens, seconds = 0, 0.0
        for k in tqdm(self.order, desc=self.runner.key, leave=False, file=sys.stderr):
            _sync(self.runner.device)
            start = time.perf_counter()
            self._batch(k)  # ends with the embeddings on the host, which waits for the device
            _sync(self.runner.device)
            elapsed = time.perf_counter() - start
            self.times.setdefault(k, []).append(elapsed)
            tokens, seconds = tokens + sum(self.lengths[i] for i in self.plan[k]), seconds + elapsed
            if deadline is not None and time.perf_counter() > deadline:
                break
        self.pass_rates.append(tokens / seconds)

    def figures(self) -> dict:
        run = sorted(self.times)
        tokens = sum(self.lengths[i] for k in run for i in self.plan[k])
        samples = sum(len(self.plan[k]) for k in run)
        computed = sum(len(self.plan[k]) * max(self.lengths[i] for i in self.plan[k]) for k in run)
        best = sum(min(self.times[k]) for k in run)
        return {
            "tokens_per_s": tokens / best,
            "tokens_per_s_median_pass": statistics.median(self.pass_rates),
            "passes": len(self.pass_rates),
            "seconds_best": best,
            "tokens": tokens,
            "samples": samples,
            "batches": len(run),
            "batches_planned": len(self.plan),
            "complete": len(run) == len(self.plan),
            "batch_tokens": self.budget,
            "rows_per_batch": samples / len(run),
            # Tokens a padded model computes per real token (the padding of its batches); 1 if packed.
            "padding_factor": computed / tokens if not self.runner.packed else 1.0,
        }


# ---------------------------------------------------------------------------------------------- report


def _rate(results: dict, key: str, scenario: str) -> float | None:
    cell = results.get(key, {}).get(scenario)
    return cell["tokens_per_s"] if cell else None


def ratios(
    results: dict, sizes: list[str], scenarios: list[str], orders: list[str]
) -> dict[str, dict[str, float | None]]:
    pairs = {}
    for size in sizes:
        for order in orders:
            how = ORDER_LABELS[order]
            for attn, family in (("sdpa", "transformers"), ("fa2", "transformers-fa2")):
                pairs[f"mmBERT-{size}: encode / transformers ({attn}, {how})"] = (
                    f"mmbert-{size}",
                    _padded_key(f"{family}-{size}", order),
                )
            for family, label in REFERENCE_LABELS.items():
                if family == "xlmr" or size == "small":
                    pairs[f"mmBERT-{size} / {label} ({how})"] = (f"mmbert-{size}", _padded_key(family, order))
    out = {}
    for name, (a, b) in pairs.items():
        row = {}
        for s in scenarios:
            ra, rb = _rate(results, a, s), _rate(results, b, s)
            row[s] = ra / rb if ra and rb else None
        if any(v is not None for v in row.values()):
            out[name] = row
    return out


def goals(
    results: dict, device: torch.device, device_name: str, sizes: list[str], orders: list[str]
) -> list[dict]:
    """The issue's goals, each met / not met / n/a with the figure it was judged on, against every padded order
    run (Figure 3's input order first)."""
    listed = []
    for scenario, versus, at_least in CPU_GOALS:
        for size in sizes if versus == "transformers" else ["small"]:
            other = f"transformers-{size}" if versus == "transformers" else versus
            label = "transformers ModernBertModel" if versus == "transformers" else REFERENCE_LABELS[versus]
            ours = _rate(results, f"mmbert-{size}", scenario)
            for order in orders:
                text = (
                    f"CPU {scenario}: mmBERT-{size} encode >= {at_least:g}x {label} ({ORDER_LABELS[order]})"
                )
                theirs = _rate(results, _padded_key(other, order), scenario)
                if device.type != "cpu":
                    status, value = "n/a (a CPU goal)", None
                elif ours is None or theirs is None:
                    status, value = "n/a (not measured)", None
                else:
                    value = ours / theirs
                    status = "met" if value >= at_least else "not met"
                listed.append({"goal": text, "status": status, "value": value, "unit": "x"})
    ours = _rate(results, "mmbert-small", "variable-512")
    text = f"GPU variable-512: mmBERT-small encode >= {GPU_GOAL_SMALL_VARIABLE_512:,} tokens/s on an H100"
    if device.type != "cuda":
        status = "n/a (needs an H100)"
    elif ours is None:
        status = "n/a (not measured)"
    elif "H100" not in device_name:
        status = f"n/a (ran on {device_name})"
    else:
        status = "met" if ours >= GPU_GOAL_SMALL_VARIABLE_512 else "not met"
    listed.append({"goal": text, "status": status, "value": ours, "unit": "tokens/s"})
    return listed


def print_report(report: dict, runners: list[Runner], scenarios: list[str]) -> None:
    s = report["setup"]
    print(
        f"\ninference tokens/s (real tokens; best time of each batch over {s['repeats']} pass(es)), "
        f"{report['device']} {s['dtype']}, {s['samples']} samples per scenario, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    for note in report["notes"]:
        print(f"note: {note}")
    width = max(len(r.label) for r in runners) + 2
    print(f"{'model':{width}s}" + "".join(f"{sc:>15s}" for sc in scenarios) + "   batch (tokens)")
    for r in runners:
        cells = report["results"].get(r.key, {})
        row = "".join(
            f"{cells[sc]['tokens_per_s']:15,.0f}" if cells.get(sc) else f"{'-':>15s}" for sc in scenarios
        )
        partial = any(c and not c["complete"] for c in cells.values())
        batch = sorted({c["batch_tokens"] for c in cells.values() if c})
        print(
            f"{r.label:{width}s}{row}   {'/'.join(map(str, batch))}{'  (partial: budget)' if partial else ''}"
        )
    padding: dict[str, dict[str, float]] = {}  # the most any padded row pads, per order and scenario
    for r in runners:
        for sc, cell in report["results"].get(r.key, {}).items():
            if cell and not r.packed:
                worst = padding.setdefault(r.order, {})
                worst[sc] = max(worst.get(sc, 0.0), cell["padding_factor"])
    for order, worst in padding.items():
        print(
            f"padded rows ({ORDER_LABELS[order]}) compute at most "
            + ", ".join(f"{v:.2f}x the real tokens at {sc}" for sc, v in worst.items())
        )
    if report["ratios"]:
        print()
        width = max(len(k) for k in report["ratios"]) + 2
        print(f"{'ratio':{width}s}" + "".join(f"{sc:>15s}" for sc in scenarios))
        for name, row in report["ratios"].items():
            print(
                f"{name:{width}s}"
                + "".join(f"{row[sc]:14.2f}x" if row[sc] else f"{'-':>15s}" for sc in scenarios)
            )
    print("\ngoals:")
    for g in report["goals"]:
        value = (
            ""
            if g["value"] is None
            else (f": {g['value']:.2f}x" if g["unit"] == "x" else f": {g['value']:,.0f} tokens/s")
        )
        print(f"  [{g['status']}] {g['goal']}{value}")
    print(
        f"\nembedding check (fp32, max |mmbert.encode - transformers ModernBertModel| of mean embeddings, "
        f"tolerance {s['check_tol']:g}):"
    )
    for size, c in report["embedding_check"].items():
        print(
            f"  mmBERT-{size}: {c['max_abs_diff']:.2e} on {c['samples']} samples ({c['tokens']} tokens) "
            f"-> {'ok' if c['ok'] else 'FAILED'}"
        )
    if report["precision"]:
        print(f"\n{s['dtype']} against fp32 (each row's own mean embeddings of the check's samples):")
    for key, p in report["precision"].items():
        print(
            f"  {report['labels'][key]}: min cosine {p['min_cosine']:.6f}, max |diff| {p['max_abs_diff']:.2e}"
            f" (mean |embedding| {p['mean_abs']:.2e}, {p['samples']} samples)"
        )
    if report["memory_check"]:
        print(
            "\nmemory check (warm-up batch, every op's output; quadratic = two dims >= the longest sample):"
        )
    for key, scen in report["memory_check"].items():
        for sc, m in scen.items():
            big = m["largest_output"]
            verdict = {True: "ok, none quadratic", False: "QUADRATIC", None: "inconclusive (short samples)"}[
                m["ok"]
            ]
            quad = (
                f" e.g. {m['quadratic_outputs'][0]['op']} {m['quadratic_outputs'][0]['shape']}"
                if m["quadratic_outputs"]
                else ""
            )
            print(
                f"  {key} {sc} (longest {m['longest_sample']}): largest output {big['shape']} "
                f"{big['mib']:.0f} MiB ({big['op']}); {verdict}{quad}"
            )


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(
        __doc__,
        sizes=False,
        dtypes=tuple(DTYPES),
        dtype_help="the weights' dtype (also mmbert.encode's compute dtype)",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        choices=sorted(SIZES),
        default=["small", "base"],
        help="the project's shapes (mmbert and transformers rows)",
    )
    parser.add_argument("--models", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument(
        "--padded-orders",
        nargs="+",
        choices=PADDED_ORDERS,
        default=list(PADDED_ORDERS),
        help="how padded models get their samples: input (Figure 3's protocol) and/or sorted by length",
    )
    parser.add_argument("--samples", type=int, default=8192, help="samples per scenario (the paper: 8192)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cpu-batch-tokens",
        type=int,
        default=16384,
        help="batch size on a CPU, in tokens (padded tokens for padded models)",
    )
    parser.add_argument("--batch-tokens", type=int, help="use this batch size on CUDA too (no search)")
    parser.add_argument("--max-batch-tokens", type=int, default=2**20, help="where the CUDA search stops")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed passes over every cell's batches (best time per batch)"
    )
    parser.add_argument("--budget-s", type=float, help="time for all cells; a pass's share may cut it short")
    parser.add_argument(
        "--check-tokens",
        type=int,
        default=4096,
        help="tokens of every scenario's first samples for the embedding check",
    )
    parser.add_argument("--check-tol", type=float, default=1e-4)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.repeats < 1:
        parser.error("--samples and --repeats must be >= 1")
    args.padded_orders = list(dict.fromkeys(args.padded_orders))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 check compares fp32
        torch.backends.cudnn.allow_tf32 = False
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_name()})"

    notes: list[str] = []
    if device.type == "cpu" and not cpu_has_fast_kernels(dtype):
        notes.append(
            f"this CPU has no {args.dtype} matmul kernels: every model runs it emulated, far below fp32"
        )
    runners, pairs = build_runners(args, device, dtype, notes)
    if not runners:
        parser.error("no model to run (--models / --sizes)")
    high = min(min(SIZES[s]["vocab_size"] for s in args.sizes), 119547)
    samples = {name: make_samples(name, args.samples, high, args.seed) for name in args.scenarios}

    seqs = check_samples(samples, args)
    check, fp32 = embedding_check(pairs, seqs, args)
    for r in list(runners):
        try:
            r.to(device, dtype)
        except (RuntimeError, ValueError, ImportError) as e:  # e.g. flash_attention_2 refused
            notes.append(f"{r.label} not run: {e}")
            runners.remove(r)
    del pairs
    precision = precision_figures(runners, seqs, fp32, args.cpu_batch_tokens)

    results: dict[str, dict[str, dict | None]] = {r.key: {sc: None for sc in args.scenarios} for r in runners}
    memory: dict[str, dict[str, dict]] = {}
    # Per model object and sample length: the rows of one model in both orders share a CUDA batch size.
    budgets: dict[tuple[int, int], int] = {}
    rows = {sc: [r for r in runners if SCENARIOS[sc][0] <= r.max_len] for sc in args.scenarios}
    passes_left = args.repeats * sum(len(row) for row in rows.values())

    def deadline() -> float | None:
        """Now plus an even share of what is left of --budget-s for each timed pass still to run."""
        if args.budget_s is None:
            return None
        now = time.perf_counter()
        return now + max(0.0, args.budget_s - (now - started)) / max(1, passes_left)

    for si, sc in enumerate(tqdm(args.scenarios, desc="scenarios", file=sys.stderr)):
        longest = SCENARIOS[sc][0]
        # The model order alternates from scenario to scenario and pass to pass: load from other processes
        # on the machine hits every model alike.
        row = rows[sc] if si % 2 == 0 else rows[sc][::-1]
        cells = {}
        for r in row:
            if device.type != "cuda":
                budget = args.cpu_batch_tokens
            elif args.batch_tokens:
                budget = args.batch_tokens
            else:
                if (id(r.model), longest) not in budgets:
                    # Once per model and sample length, on rows of the longest samples (the fixed scenario's
                    # shape, which no variable batch of the same budget exceeds), in at most a pass's share.
                    cap = min(args.max_batch_tokens, args.samples * longest)
                    budgets[id(r.model), longest] = largest_batch(
                        r, longest, args.cpu_batch_tokens, cap, high, deadline()
                    )
                budget = budgets[id(r.model), longest]
            cells[r.key] = Cell(r, samples[sc], budget, longest, args.seed)
            probe = OpOutputs(longest) if longest > 512 else None
            cells[r.key].warm_up(probe)
            if probe is not None:
                memory.setdefault(r.key, {})[sc] = probe.report(r.widths)
        for rep in range(args.repeats):
            for r in row if rep % 2 == 0 else row[::-1]:
                cells[r.key].timed_pass(deadline())
                passes_left -= 1
        for r in row:
            results[r.key][sc] = cells[r.key].figures()

    report = {
        "setup": {k: v for k, v in vars(args).items() if k != "json"},
        "device": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "labels": {r.key: r.label for r in runners},
        "results": results,
        "ratios": ratios(results, args.sizes, args.scenarios, args.padded_orders),
        "goals": goals(results, device, device_name, args.sizes, args.padded_orders),
        "embedding_check": check,
        "precision": precision,
        "memory_check": memory,
        "notes": notes,
    }
    failed = [f"embedding check mmBERT-{s}" for s, c in check.items() if not c["ok"]]
    failed += [
        f"memory check {k} {sc}"
        for k, m in memory.items()
        if k.startswith("mmbert")
        for sc, v in m.items()
        if v["ok"] is False
    ]
    report["failed_checks"] = failed
    print_report(report, runners, args.scenarios)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
