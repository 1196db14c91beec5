"""Encoding at inference speed: texts or token ids -> embeddings, packed, in one path (``mmbert.encode``).

Inputs are sorted by length and packed into batches of at most ``batch_tokens`` real tokens (one sequence
longer than that is a batch of its own); the encoder runs on the packed tokens with their document boundaries
(``cu_seqlens``), so no batch is padded to its longest input and no [B, L, L] mask is built for it. Texts are
framed as the training data frames them, ``<bos> body <eos>``, and mean pooling averages over every token of
a sequence, ``<bos>`` and ``<eos>`` included (what sentence-transformers' mean pooling over the attention mask
gives on an exported model).

Shape legend: T packed tokens of a batch, N sequences of a batch, H hidden size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.model.modeling import MmBertForMaskedLM, MmBertModel

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Pooling = Literal["mean", "cls", "none"]
POOLINGS = ("mean", "cls", "none")


def encode(
    model: MmBertModel | MmBertForMaskedLM,
    inputs: Sequence[str] | Sequence[Sequence[int]],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    pooling: Pooling = "mean",
    batch_tokens: int = 16384,
    normalize: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    max_length: int | None = None,
    truncate: bool = True,
) -> Tensor | list[Tensor]:
    """Embeddings of ``inputs`` in their order, computed without gradients.

    Args:
        model: the encoder, or the MLM model (its encoder is used); it is run in eval mode.
        inputs: texts (with ``tokenizer``), or token-id sequences used as given (no bos/eos added).
        pooling: ``mean`` (over all tokens) or ``cls`` (the first token): a float32 [N, H] tensor on the CPU;
            ``none``: a list of float32 [L_i, H] tensors, one per input.
        batch_tokens: the most real tokens a forward pass takes.
        normalize: L2-normalise the pooled embeddings.
        device: where to run (default: the model's device); dtype: the compute dtype under autocast (default
            bfloat16 on CUDA, the weights' dtype elsewhere). On a CPU without kernels for the dtype it would
            compute in (bf16 or fp16 without AVX-512 on x86; see cpu_has_fast_kernels) it warns once.
        progress: a progress bar over tokens.
        max_length: the most tokens of an input, framing included (default the model's
            ``max_position_embeddings``); longer inputs are cut with one warning (``truncate=True``) or refused.

    An empty ``inputs`` gives an empty result; an empty text is ``<bos> <eos>``. ValueError, in one line, for
    texts without a tokenizer, a tokenizer larger than the model's vocabulary, an empty or out-of-vocabulary
    id sequence, an input over ``max_length`` with ``truncate=False``, or a bad setting.
    """
    encoder = _encoder(model)
    cfg = encoder.config
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if normalize and pooling == "none":
        raise ValueError("normalize applies to pooled embeddings; it cannot be used with pooling='none'")
    if not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise ValueError(f"batch_tokens must be an integer >= 1, got {batch_tokens!r}")
    limit = cfg.max_position_embeddings if max_length is None else max_length
    if not isinstance(limit, int) or limit < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    seqs = _sequences(inputs, tokenizer, cfg.vocab_size, limit, truncate)
    if not seqs:
        return [] if pooling == "none" else torch.empty(0, cfg.hidden_size)
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    if dtype is None and device.type == "cuda":
        dtype = torch.bfloat16
    # Autocast only for a dtype other than float32; otherwise the weights' dtype computes.
    autocast_dtype = None if dtype in (None, torch.float32) else dtype
    if device.type == "cpu":
        _warn_if_slow_on_this_cpu(autocast_dtype or encoder.embeddings.tok_embeddings.weight.dtype)
    was_training = encoder.training
    encoder.eval()
    try:
        pooled = _run(encoder, seqs, pooling, batch_tokens, device, autocast_dtype, progress)
    finally:
        encoder.train(was_training)
    if pooling == "none":
        return pooled  # type: ignore[return-value]
    out = torch.stack(pooled)  # type: ignore[arg-type]
    return F.normalize(out, dim=-1) if normalize else out


def cpu_has_fast_kernels(dtype: torch.dtype) -> bool:
    """Whether this CPU runs `dtype`'s matmuls with kernels of their own (oneDNN's check for bfloat16 and
    float16: AVX-512 or AMX on x86). Without them bf16 and fp16 are emulated: on a 2-core AVX2 AMD EPYC a
    [1024, 384] x [384, 2304] matmul took 119 ms in bf16 against 21 ms in fp32, and mmBERT-small encoded 122
    tokens/s against 1,068-1,249. float32, and any dtype on a torch too old to tell, count as fast."""
    check = {
        torch.bfloat16: "_is_mkldnn_bf16_supported",
        torch.float16: "_is_mkldnn_fp16_supported",
    }.get(dtype)
    if check is None or not hasattr(torch.ops.mkldnn, check):
        return True
    return bool(getattr(torch.ops.mkldnn, check)())


_WARNED_SLOW: set[torch.dtype] = set()


def _warn_if_slow_on_this_cpu(dtype: torch.dtype) -> None:
    if dtype in _WARNED_SLOW or cpu_has_fast_kernels(dtype):
        return
    _WARNED_SLOW.add(dtype)
    log.warning(
        "encode: computing in %s on a CPU without %s matmul kernels (capability %s): about 10x slower "
        "than float32 on a CPU like that: cast the model with model.float() and pass no dtype",
        dtype,
        dtype,
        torch.backends.cpu.get_cpu_capability(),
    )


def _encoder(model: Any) -> MmBertModel:
    if isinstance(model, MmBertForMaskedLM):
        return model.model
    if isinstance(model, MmBertModel):
        return model
    raise TypeError(f"model must be an MmBertModel or MmBertForMaskedLM, got {type(model).__name__}")


def _sequences(inputs: Any, tokenizer: Any, vocab_size: int, limit: int, truncate: bool) -> list[Tensor]:
    if isinstance(inputs, str | bytes):
        raise ValueError(
            "inputs must be a list of texts or of token-id sequences, not one string: wrap it in a list"
        )
    inputs = list(inputs)
    if not inputs:
        return []
    texts = [isinstance(x, str) for x in inputs]
    if all(texts):
        seqs = _framed(inputs, tokenizer, vocab_size, limit)
    elif any(texts):
        raise ValueError("inputs mix texts and token-id sequences; give one kind")
    else:
        seqs = [_ids(x, i, vocab_size) for i, x in enumerate(inputs)]
    long = [i for i, s in enumerate(seqs) if len(s) > limit]
    if long and not truncate:
        i = long[0]
        raise ValueError(
            f"input {i} has {len(seqs[i])} tokens, more than max_length={limit}; pass truncate=True to cut "
            f"{'it' if len(long) == 1 else f'the {len(long)} such inputs'}"
        )
    if long:
        log.warning(
            "%d of %d inputs are longer than %d tokens and were truncated", len(long), len(seqs), limit
        )
        eos = seqs[long[0]][-1] if all(texts) else None
        for i in long:
            cut = seqs[i][:limit]
            seqs[i] = torch.cat([cut[:-1], cut.new_tensor([eos])]) if eos is not None else cut
    return seqs


def _framed(texts: list[str], tokenizer: Any, vocab_size: int, limit: int) -> list[Tensor]:
    if tokenizer is None:
        raise ValueError("texts need tokenizer=...; or pass token-id sequences")
    if len(tokenizer) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size={vocab_size}")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ValueError("the tokenizer has no bos or eos token to frame texts with")
    bodies = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [torch.tensor([bos, *body, eos], dtype=torch.long) for body in bodies]


def _ids(x: Any, i: int, vocab_size: int) -> Tensor:
    try:
        ids = (
            torch.as_tensor(x, dtype=torch.long).flatten()
            if not isinstance(x, Tensor)
            else x.long().flatten()
        )
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"input {i} is neither a text nor a sequence of token ids: {e}") from e
    if ids.numel() == 0:
        raise ValueError(f"input {i} is an empty token-id sequence")
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        raise ValueError(
            f"input {i} has token id {int(ids[bad][0])}, outside the vocabulary [0, {vocab_size})"
        )
    return ids


def _batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices longest first, grouped into batches of at most ``batch_tokens`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    size = batch_tokens + 1
    for i in order:
        if size + lengths[i] > batch_tokens:
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += lengths[i]
    return batches


@torch.inference_mode()
def _run(
    encoder: MmBertModel,
    seqs: list[Tensor],
    pooling: str,
    batch_tokens: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    progress: bool,
) -> list[Tensor]:
    from tqdm.auto import tqdm

    lengths = [len(s) for s in seqs]
    out: list[Tensor | None] = [None] * len(seqs)
    with tqdm(total=sum(lengths), unit="tok", unit_scale=True, disable=not progress, desc="encode") as bar:
        for idx in _batches(lengths, batch_tokens):
            lens_N = torch.tensor([lengths[i] for i in idx])
            cu_seqlens_N1 = F.pad(lens_N.cumsum(0), (1, 0)).to(device=device, dtype=torch.int32)
            ids_T = torch.cat([seqs[i] for i in idx]).to(device)
            with torch.autocast(
                device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
            ):
                hidden_TH = encoder.forward_packed(ids_T, cu_seqlens_N1, int(lens_N.max()))
            hidden_TH = hidden_TH.float()
            if pooling == "mean":
                doc_T = torch.repeat_interleave(torch.arange(len(idx), device=device), lens_N.to(device))
                sums_NH = hidden_TH.new_zeros(len(idx), hidden_TH.shape[1]).index_add_(0, doc_T, hidden_TH)
                results = list((sums_NH / lens_N.to(device)[:, None]).cpu())
            elif pooling == "cls":
                results = list(hidden_TH[cu_seqlens_N1[:-1].long()].cpu())
            else:
                results = list(hidden_TH.cpu().split(lens_N.tolist()))
            for i, r in zip(idx, results, strict=True):
                out[i] = r
            bar.update(int(lens_N.sum()))
    return out  # type: ignore[return-value]
