"""Fused MLM decoder + cross entropy over a large vocabulary that never holds the [n, V] logits.

`linear_cross_entropy` returns the mean fp32 cross entropy of logits = x @ W.T + b over the labelled rows and,
without grad, each row's argmax token. Its forward walks the vocabulary in column chunks keeping, per row, a
running (online) log-sum-exp, a running max with its index and the target logit; its backward recomputes each
chunk's logits from x and W, turns them into the softmax gradient in the same small reused buffer and adds it
straight into grad_x, grad_W and grad_b. Only [n, C] chunk buffers are ever allocated, in the forward as in
the backward; nothing of size [n, V] is computed or saved. `linear_logits` gives the explicit logits the loss
is computed from, for callers that do need them.

Shape legend: n rows (predicted positions), H hidden size, V vocabulary, C columns in a vocabulary chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

IGNORE_INDEX = -100
# Elements of the reused fp32 [n, C] chunk buffer: 32 MB on CPU, where larger blocks are mmap'ed afresh (and
# page-faulted) on every allocation; more on accelerators.
_CHUNK_ELEMENTS = {"cpu": 1 << 23}
_DEFAULT_CHUNK_ELEMENTS = 1 << 26
# Narrower vocabulary chunks would make the per-chunk matmuls inefficient. On CPU, wider ones slow the [n, C]
# logits matmul down by about a third (its output rows no longer stay in cache).
_MIN_CHUNK_COLS = 512
_MAX_CHUNK_COLS = {"cpu": 4096}


def _chunk_elements(device: torch.device) -> int:
    return _CHUNK_ELEMENTS.get(device.type, _DEFAULT_CHUNK_ELEMENTS)


def compute_dtype(x_nH: Tensor, weight_VH: Tensor) -> torch.dtype:
    """The decoder's matmul dtype: the autocast dtype under autocast, else the promoted input dtype."""
    device_type = x_nH.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(x_nH.dtype, weight_VH.dtype)


def linear_logits(x_nH: Tensor, weight_VH: Tensor, bias_V: Tensor, dtype: torch.dtype) -> Tensor:
    """Explicit [n, V] logits in `dtype`, computed as each chunk of `linear_cross_entropy` computes them."""
    with torch.autocast(x_nH.device.type, enabled=False):
        return torch.addmm(bias_V.to(dtype), x_nH.to(dtype), weight_VH.to(dtype).t())


class _ChunkBuffers:
    """Flat storage reused by every vocabulary chunk: the chunk's logits (compute dtype) and an fp32 work area
    for their exponentials (the same storage when computing in fp32)."""

    def __init__(self, n: int, cols: int, dtype: torch.dtype, device: torch.device) -> None:
        self.n = n
        self.logits = torch.empty(n * cols, dtype=dtype, device=device)
        self.work = (
            self.logits
            if dtype == torch.float32
            else torch.empty(n * cols, dtype=torch.float32, device=device)
        )

    def logits_nC(self, width: int) -> Tensor:
        # Contiguous views of the flat storage, so the last, narrower chunk needs no strided `out=`.
        return self.logits[: self.n * width].view(self.n, width)

    def work_nC(self, width: int) -> Tensor:
        return self.work[: self.n * width].view(self.n, width)


def _vocab_chunks(n: int, V: int, device: torch.device) -> tuple[int, Iterator[slice]]:
    """(chunk width C, the column slices covering [0, V))."""
    widest = min(V, _MAX_CHUNK_COLS.get(device.type, V))
    step = min(widest, max(_MIN_CHUNK_COLS, _chunk_elements(device) // max(n, 1)))
    return step, (slice(start, min(start + step, V)) for start in range(0, V, step))


def _chunk_logits(xc_nH: Tensor, wc_VH: Tensor, bc_V: Tensor, cols: slice, buffers: _ChunkBuffers) -> Tensor:
    out_nC = buffers.logits_nC(cols.stop - cols.start)
    return torch.addmm(bc_V[cols], xc_nH, wc_VH[cols].t(), out=out_nC)


def _chunk_probs(
    xc_nH: Tensor, wc_VH: Tensor, bc_V: Tensor, lse_n: Tensor, cols: slice, buffers: _ChunkBuffers
) -> Tensor:
    """fp32 softmax probabilities exp(logits - lse) of one vocabulary chunk."""
    width = cols.stop - cols.start
    if xc_nH.dtype == torch.float32:
        # lse goes into the matmul's bias, saving a pass over the chunk.
        shifted_nC = torch.sub(bc_V[cols], lse_n[:, None], out=buffers.work_nC(width))
        return shifted_nC.addmm_(xc_nH, wc_VH[cols].t()).exp_()
    # Reduced precision: the forward's lse came from the rounded logits, so subtract it after rounding.
    logits_nC = _chunk_logits(xc_nH, wc_VH, bc_V, cols, buffers)
    return torch.sub(logits_nC, lse_n[:, None], out=buffers.work_nC(width)).exp_()


def _online_softmax_stats(
    xc_nH: Tensor, wc_VH: Tensor, bc_V: Tensor, target_n: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(log-sum-exp, target logit, argmax) of every row of x @ W.T + b, one vocabulary chunk at a time.

    The log-sum-exp and target logit are fp32; the argmax keeps the first maximum when chunks tie.
    """
    n, V, device = xc_nH.shape[0], wc_VH.shape[0], xc_nH.device
    max_n = torch.full((n,), -torch.inf, dtype=torch.float32, device=device)
    sum_n = torch.zeros(n, dtype=torch.float32, device=device)
    target_logit_n = torch.zeros(n, dtype=torch.float32, device=device)
    argmax_n = torch.zeros(n, dtype=torch.long, device=device)
    step, chunks = _vocab_chunks(n, V, device)
    buffers = _ChunkBuffers(n, step, xc_nH.dtype, device)
    for cols in chunks:
        width = cols.stop - cols.start
        logits_nC = _chunk_logits(xc_nH, wc_VH, bc_V, cols, buffers)
        chunk_max_n, chunk_arg_n = logits_nC.max(dim=1)
        chunk_max_n = chunk_max_n.float()
        argmax_n = torch.where(chunk_max_n > max_n, chunk_arg_n + cols.start, argmax_n)
        in_chunk_n = (target_n >= cols.start) & (target_n < cols.stop)
        local_target_n1 = (target_n - cols.start).clamp(0, width - 1)[:, None]
        chunk_target_n = logits_nC.gather(1, local_target_n1).squeeze(1).float()
        target_logit_n = torch.where(in_chunk_n, chunk_target_n, target_logit_n)
        # Rescale the running sum to the new running max; NaN logits propagate into the loss.
        new_max_n = torch.maximum(max_n, chunk_max_n)
        exp_nC = torch.sub(logits_nC, new_max_n[:, None], out=buffers.work_nC(width)).exp_()
        sum_n.mul_(torch.exp(max_n - new_max_n)).add_(exp_nC.sum(dim=1))
        max_n = new_max_n
    return sum_n.log_().add_(max_n), target_logit_n, argmax_n


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x_nH: Tensor,
        weight_VH: Tensor,
        bias_V: Tensor,
        target_n: Tensor,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor]:
        with torch.autocast(x_nH.device.type, enabled=False):
            xc_nH, wc_VH, bc_V = x_nH.to(dtype), weight_VH.to(dtype), bias_V.to(dtype)
            valid_n = target_n != IGNORE_INDEX
            safe_target_n = torch.where(valid_n, target_n, 0)
            lse_n, target_logit_n, predictions_n = _online_softmax_stats(xc_nH, wc_VH, bc_V, safe_target_n)
            count = valid_n.sum().clamp_min(1)
            loss = torch.where(valid_n, lse_n - target_logit_n, 0.0).sum() / count
        ctx.save_for_backward(xc_nH, wc_VH, bc_V, lse_n, safe_target_n, valid_n, count)
        ctx.dtypes = (x_nH.dtype, weight_VH.dtype, bias_V.dtype)
        ctx.mark_non_differentiable(predictions_n)
        ctx.set_materialize_grads(False)
        return loss, predictions_n

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor | None, _grad_predictions: None
    ) -> tuple[Tensor | None, ...]:
        if grad_loss is None:
            return None, None, None, None, None
        xc_nH, wc_VH, bc_V, lse_n, target_n, valid_n, count = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        (n, H), V, device = xc_nH.shape, wc_VH.shape[0], xc_nH.device
        # d loss / d logits = row_scale * (softmax - one_hot). The row scale goes onto the [n, H] factors
        # (x for grad_W, the finished grad_x) rather than onto every [n, C] chunk; the one-hot part is applied
        # after the loop.
        row_scale_n = valid_n.float() * (grad_loss.float() / count)
        xs_nH = (xc_nH.float() * row_scale_n[:, None]).to(xc_nH.dtype)
        grad_x_nH = torch.zeros(n, H, dtype=torch.float32, device=device)
        grad_w_VH = torch.empty(V, H, dtype=w_dtype, device=device)
        grad_b_V = torch.empty(V, dtype=b_dtype, device=device)
        step, chunks = _vocab_chunks(n, V, device)
        buffers = _ChunkBuffers(n, step, xc_nH.dtype, device)
        with torch.autocast(device.type, enabled=False):
            for cols in chunks:
                probs_nC = _chunk_probs(xc_nH, wc_VH, bc_V, lse_n, cols, buffers)
                grad_b_V[cols] = row_scale_n @ probs_nC
                if probs_nC.dtype != xc_nH.dtype:
                    probs_nC = buffers.logits_nC(probs_nC.shape[1]).copy_(probs_nC)
                if probs_nC.dtype == torch.float32:
                    grad_x_nH.addmm_(probs_nC, wc_VH[cols])
                else:
                    grad_x_nH += probs_nC @ wc_VH[cols]
                if grad_w_VH.dtype == probs_nC.dtype:
                    torch.mm(probs_nC.t(), xs_nH, out=grad_w_VH[cols])
                else:
                    grad_w_VH[cols] = probs_nC.t() @ xs_nH
            grad_x_nH.mul_(row_scale_n[:, None]).sub_(row_scale_n[:, None] * wc_VH[target_n].float())
            grad_w_VH.index_add_(0, target_n, (-row_scale_n[:, None] * xc_nH.float()).to(w_dtype))
            grad_b_V.index_add_(0, target_n, (-row_scale_n).to(b_dtype))
        return grad_x_nH.to(x_dtype), grad_w_VH, grad_b_V, None, None


def linear_cross_entropy(
    x_nH: Tensor, weight_VH: Tensor, bias_V: Tensor, target_n: Tensor
) -> tuple[Tensor, Tensor]:
    """(loss, predictions) of logits = x @ weight.T + bias against target (rows with -100 are ignored).

    The loss is the fp32 mean over labelled rows (0, still connected to the graph, when there are none, so
    every data-parallel rank runs the same backward). predictions [n] (long, no grad) is every row's argmax
    token, ignored rows included. The logits are computed in the autocast dtype under autocast (else in the
    promoted dtype of x and weight) one vocabulary chunk at a time and never kept: `linear_logits` gives them.
    """
    return _LinearCrossEntropy.apply(x_nH, weight_VH, bias_V, target_n, compute_dtype(x_nH, weight_VH))
