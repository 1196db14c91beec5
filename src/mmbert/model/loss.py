"""Fused MLM decoder + cross entropy over a large vocabulary.

`linear_cross_entropy` returns the logits (x @ W.T + b) and the mean fp32 cross entropy of the labelled rows.
Its backward walks the vocabulary in column chunks: each chunk's softmax gradient lives in a small reused
buffer and goes straight into grad_x, grad_W and grad_b, so no [n, V] gradient (nor a second log-softmax
tensor) is ever allocated. On CPU, with a 256k vocabulary, that is most of the cost of the MLM head.

Shape legend: n rows (predicted positions), H hidden size, V vocabulary, C columns in a vocabulary chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE_INDEX = -100
# Elements of the reused fp32 [n, C] chunk buffer: 32 MB on CPU, where larger blocks are mmap'ed afresh (and
# page-faulted) on every allocation; more on accelerators.
_CHUNK_ELEMENTS = {"cpu": 1 << 23}
_DEFAULT_CHUNK_ELEMENTS = 1 << 26
# Narrower vocabulary chunks would make the per-chunk matmuls inefficient.
_MIN_CHUNK_COLS = 512


def _chunk_elements(device: torch.device) -> int:
    return _CHUNK_ELEMENTS.get(device.type, _DEFAULT_CHUNK_ELEMENTS)


def _logsumexp_rows(logits_nV: Tensor) -> Tensor:
    """Row-wise log-sum-exp in fp32, a block of rows at a time through one reused buffer."""
    n, V = logits_nV.shape
    max_n = logits_nV.amax(dim=-1).float()
    sum_n = torch.empty(n, dtype=torch.float32, device=logits_nV.device)
    rows = max(1, min(n, _chunk_elements(logits_nV.device) // max(V, 1)))
    buffer = torch.empty(rows, V, dtype=torch.float32, device=logits_nV.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        block = buffer[: stop - start]
        torch.sub(logits_nV[start:stop], max_n[start:stop, None], out=block)
        torch.sum(block.exp_(), dim=-1, out=sum_n[start:stop])
    return sum_n.log_().add_(max_n)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x_nH: Tensor,
        weight_VH: Tensor,
        bias_V: Tensor,
        target_n: Tensor,
        compute_dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor]:
        with torch.autocast(x_nH.device.type, enabled=False):
            xc_nH, wc_VH = x_nH.to(compute_dtype), weight_VH.to(compute_dtype)
            logits_nV = torch.addmm(bias_V.to(compute_dtype), xc_nH, wc_VH.t())
            valid_n = target_n != IGNORE_INDEX
            safe_target_n = torch.where(valid_n, target_n, 0)
            lse_n = _logsumexp_rows(logits_nV)
            target_logit_n = logits_nV.gather(1, safe_target_n[:, None]).squeeze(1).float()
            count = valid_n.sum().clamp_min(1)
            loss = torch.where(valid_n, lse_n - target_logit_n, 0.0).sum() / count
        ctx.save_for_backward(xc_nH, wc_VH, logits_nV, lse_n, safe_target_n, valid_n, count)
        ctx.dtypes = (x_nH.dtype, weight_VH.dtype, bias_V.dtype)
        ctx.set_materialize_grads(False)
        return loss, logits_nV

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor | None, grad_logits_nV: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        if grad_loss is None and grad_logits_nV is None:
            return None, None, None, None, None
        xc_nH, wc_VH, logits_nV, lse_n, target_n, valid_n, count = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        n, V = logits_nV.shape
        device = logits_nV.device
        grad_x_nH = torch.zeros(n, xc_nH.shape[1], dtype=torch.float32, device=device)
        grad_w_VH = torch.empty(V, xc_nH.shape[1], dtype=w_dtype, device=device)
        grad_b_V = torch.empty(V, dtype=b_dtype, device=device)
        # d loss / d logits = row_scale * (softmax - one_hot); the one-hot part is applied after the loop.
        row_scale_n = None if grad_loss is None else valid_n.float() * (grad_loss.float() / count)
        step = min(V, max(_MIN_CHUNK_COLS, _chunk_elements(device) // max(n, 1)))
        buffer_nC = torch.empty(n, step, dtype=torch.float32, device=device)
        with torch.autocast(device.type, enabled=False):
            for start in range(0, V, step):
                cols = slice(start, min(start + step, V))
                g_nC = buffer_nC[:, : cols.stop - start]
                if row_scale_n is not None:
                    torch.sub(logits_nV[:, cols], lse_n[:, None], out=g_nC)
                    g_nC.exp_().mul_(row_scale_n[:, None])
                    if grad_logits_nV is not None:
                        g_nC += grad_logits_nV[:, cols]
                else:
                    g_nC.copy_(grad_logits_nV[:, cols])
                g_nC = g_nC.to(xc_nH.dtype)
                if g_nC.dtype == torch.float32:
                    grad_x_nH.addmm_(g_nC, wc_VH[cols])
                else:
                    grad_x_nH += g_nC @ wc_VH[cols]
                if grad_w_VH.dtype == g_nC.dtype:
                    torch.mm(g_nC.t(), xc_nH, out=grad_w_VH[cols])
                else:
                    grad_w_VH[cols] = g_nC.t() @ xc_nH
                grad_b_V[cols] = g_nC.sum(0)
            if row_scale_n is not None:
                grad_x_nH -= row_scale_n[:, None] * wc_VH[target_n].float()
                grad_w_VH.index_add_(0, target_n, (-row_scale_n[:, None] * xc_nH.float()).to(w_dtype))
                grad_b_V.index_add_(0, target_n, (-row_scale_n).to(b_dtype))
        return grad_x_nH.to(x_dtype), grad_w_VH, grad_b_V, None, None


def linear_cross_entropy(
    x_nH: Tensor, weight_VH: Tensor, bias_V: Tensor, target_n: Tensor
) -> tuple[Tensor, Tensor]:
    """(loss, logits) of logits = x @ weight.T + bias against target (rows with -100 are ignored).

    The loss is the fp32 mean over labelled rows (0, still connected to the graph, when there are none, so
    every data-parallel rank runs the same backward). Logits are in the autocast dtype when autocast is on.
    """
    device_type = x_nH.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(x_nH.dtype, weight_VH.dtype)
    return _LinearCrossEntropy.apply(x_nH, weight_VH, bias_V, target_n, compute_dtype)
