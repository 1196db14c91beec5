"""Attention over packed (unpadded) documents: backend selection and the four backends.

Shape legend: T packed tokens, N documents (cu_seqlens has N + 1 entries), H heads, D head dim,
n documents in one length bucket, L padded length of a bucket, nb blocks of B tokens (blocked local attention),
Q / K query / key positions of one attention call.

`window` is the largest |i - j| a query may attend to (64 for mmBERT's 128-token local window); -1 means global.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import math
from dataclasses import dataclass, field
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.errors import AttentionBackendError
from mmbert.model.config import ATTN_BACKENDS

# Documents whose length is within this fraction of a bucket's longest document share its padded batch.
_BUCKET_FILL = 0.75
# Local layers on buckets longer than this many windows attend block by block instead of through a full band
# mask: on CPU the full mask costs SDPA the same up to ~8 windows and grows quadratically after. The matmul
# kernel keeps the threshold: from 4 windows on blocks compute fewer scores, but at 512 tokens the blocked
# layout's gather and scatter cost what that saves.
_BLOCKED_MIN_WINDOWS = 8
# Without autograd, documents of this many windows attend one at a time (see BucketLayout): from 4 windows on
# that beats a padded bucket on a CPU (no padding, no gather or scatter, no mask in global layers; measured on
# mmBERT-small's heads at 256 and 378 tokens: 10-30% faster in bf16 and fp32), below it the calls cost more
# than the padding. Past 8 windows local layers attend block by block instead.
_SOLO_MIN_WINDOWS = 4
# The resolved backends that attend through a BucketLayout.
BUCKET_KERNELS = ("sdpa", "matmul")
# The matmul kernel's scores for one chunk of documents (or of one document's rows): small enough to stay in a
# core's cache between the two matmuls and the softmax, which is what makes it faster than SDPA on a CPU.
_CHUNK_SCORE_BYTES = 4 << 20


@cache
def flash_attn_importable() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


@cache
def torch_varlen_supports_window() -> bool:
    """torch.nn.attention.varlen.varlen_attn exists and accepts window_size (needed on local layers)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return False
    return "window_size" in inspect.signature(varlen_attn).parameters


def select_attn_backend(
    requested: str, device: torch.device, dtype: torch.dtype, *, dropout: bool, inference: bool = False
) -> str:
    """Resolve `attn_backend` for a forward pass on `device` with activations of `dtype`.

    `auto` prefers flash-attn, then torch's varlen_attn (both CUDA with fp16/bf16 only); on a CPU with fp16/bf16
    activations and no autograd (`inference`) the matmul kernel, else SDPA. Training on a CPU keeps SDPA, whose
    backward holds no [L, L] probabilities; fp32 keeps it too (the matmul kernel is no faster at 512 tokens in
    fp32 and slower at 8,192, where its row chunks get small). An explicit choice that cannot run raises AttentionBackendError saying why. `dropout`
    is whether attention-probability dropout (attention_dropout) is active: torch's varlen_attn and the matmul
    kernel have none. The attention-output dropout (attention_output_dropout) runs after Wo, outside every
    kernel, and does not count here.
    """
    if requested not in ATTN_BACKENDS:
        raise ValueError(f"attn_backend={requested!r} is not one of {ATTN_BACKENDS}")
    half = dtype in (torch.float16, torch.bfloat16)
    cuda = device.type == "cuda"
    if requested == "auto":
        if cuda and half and flash_attn_importable():
            return "flash"
        if cuda and half and not dropout and torch_varlen_supports_window():
            return "varlen"
        if device.type == "cpu" and half and inference and not dropout:
            return "matmul"
        return "sdpa"
    if requested == "sdpa":
        return requested
    if requested == "matmul":
        if dropout:
            raise AttentionBackendError("attn_backend='matmul' does not support attention_dropout > 0")
        return requested
    # flash and varlen: CUDA kernels for half-precision activations, each with its own requirement.
    if not cuda:
        raise AttentionBackendError(f"attn_backend={requested!r} needs a CUDA device, got {device.type}")
    if requested == "flash" and not flash_attn_importable():
        raise AttentionBackendError(
            "attn_backend='flash' needs the flash_attn package (pip install flash-attn)"
        )
    if requested == "varlen" and not torch_varlen_supports_window():
        raise AttentionBackendError(
            f"attn_backend='varlen': torch {torch.__version__} has no varlen_attn with window_size"
        )
    if not half:
        raise AttentionBackendError(
            f"attn_backend={requested!r} needs fp16/bf16 activations (autocast), got {dtype}"
        )
    if requested == "varlen" and dropout:
        raise AttentionBackendError("attn_backend='varlen' does not support attention_dropout > 0")
    return requested


def packed_attention(
    qkv_T3HD: Tensor,
    cu_seqlens_N1: Tensor,
    max_seqlen: int,
    window: int,
    backend: str,
    *,
    dropout_p: float = 0.0,
    layout: BucketLayout | None = None,
    workspace: Workspace | None = None,
) -> Tensor:
    """Bidirectional attention inside each document of a packed batch; returns [T, H, D].

    `backend` is a resolved name (see select_attn_backend). The SDPA and matmul backends take a prebuilt
    `layout` so that its index and mask tensors are shared by all layers of a forward pass, and, without
    autograd, a `workspace` whose buffers they reuse (the result is then one of them, see Workspace).
    """
    if backend == "flash":
        from flash_attn import flash_attn_varlen_qkvpacked_func

        return flash_attn_varlen_qkvpacked_func(
            qkv_T3HD,
            cu_seqlens_N1,
            max_seqlen,
            dropout_p=dropout_p,
            causal=False,
            window_size=(window, window),
        )
    if backend == "varlen":
        from torch.nn.attention.varlen import varlen_attn

        if dropout_p > 0:
            raise AttentionBackendError("attn_backend='varlen' does not support attention_dropout > 0")
        q_THD, k_THD, v_THD = qkv_T3HD.unbind(1)
        return varlen_attn(
            q_THD,
            k_THD,
            v_THD,
            cu_seqlens_N1,
            cu_seqlens_N1,
            max_seqlen,
            max_seqlen,
            window_size=(window, window),
        )
    if backend in BUCKET_KERNELS:
        if layout is None:
            layout = BucketLayout.build(cu_seqlens_N1, max(window, 0), kernel=backend)
        elif layout.kernel != backend:
            raise ValueError(
                f"layout was built for the {layout.kernel} kernel, attention asked for {backend}"
            )
        elif window >= 0 and window != layout.window:
            raise ValueError(f"layout was built for window {layout.window}, attention asked for {window}")
        return layout.attend(qkv_T3HD, local=window >= 0, dropout_p=dropout_p, workspace=workspace)
    raise ValueError(f"unknown resolved attention backend {backend!r}")


class Workspace:
    """Buffers that the layers of one forward pass without autograd reuse, one per name.

    On a CPU an allocation of tens of MiB comes fresh from the kernel each time (glibc maps every allocation
    over 32 MiB anew) and is page-faulted in on its first write: for mmBERT-small's [16384, 3, 6, 64] bf16
    queries, keys and values and their bucketed copy, in every layer, that cost ~20% of a forward (measured
    against a run with glibc told to keep its memory). A buffer stays valid until its name is taken again:
    only for intermediates consumed before the next layer asks.
    """

    def __init__(self) -> None:
        self._flat: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of `shape` with `like`'s dtype and device, stored under `name`."""
        if torch.is_grad_enabled():
            raise RuntimeError("a Workspace is for forward passes without autograd")
        numel = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < numel or flat.dtype != like.dtype or flat.device != like.device:
            flat = self._flat[name] = like.new_empty(numel)
        return flat[:numel].view(shape)


@dataclass(frozen=True)
class _Bucket:
    """Documents of similar length, padded to one length."""

    n_docs: int
    length: int  # L: padded query length
    halo: int  # masked padding each side of a document for blocked local attention (B), else 0
    global_mask: Tensor | None  # [n, 1, 1, L] key validity; None when no padding
    # [n, 1, L, L] band mask ([1, 1, L, L] when no document is padded), or [n, nb, 1, B, 3B] blocked band mask
    local_mask: Tensor | None


@dataclass(frozen=True)
class BucketLayout:
    """How a packed batch maps to padded per-bucket batches, and the kernel that attends inside them.

    Built once per forward on the host (it reads cu_seqlens) and reused by every layer. Padding is bounded by
    bucketing similar lengths; local layers on long buckets attend block by block (each block of B = window
    queries sees its own and both neighbouring key blocks), so their cost is linear in length. `kernel`:
    ``sdpa`` (torch's scaled_dot_product_attention on each bucket; any device, autograd) or ``matmul``
    (matmul, softmax, matmul over cache-sized chunks of documents; no dropout: on a CPU in bf16 about 2.3x faster
    than SDPA's CPU kernel, whose bf16 path runs no faster than its fp32 one; no faster in fp32).

    Built with ``solo=True`` (inference: the result is assembled in place, so no autograd), documents of 4 to 8
    windows skip the buckets: each is attended alone, straight from the packed rows, unpadded.
    """

    buckets: tuple[_Bucket, ...]
    # Rows of the packed qkv that fill every bucket's [n, halo + L + halo] slots, buckets one after another.
    # Pad slots read row 0: every mask keeps pad keys away from real queries, and pad queries' outputs are
    # dropped, so those copies get exactly zero weight and zero gradient.
    gather: Tensor
    scatter: Tensor  # [T] row of each packed token in the concatenated bucket outputs
    window: int
    num_tokens: int
    kernel: str = "sdpa"
    # gather and scatter are both arange(T) (one bucket of equal-length documents, no halo): views do.
    identity: bool = False
    # (start, length) of the documents attended alone; with any, `scatter` lists only the bucketed tokens'
    # slots and `bucket_rows` their packed rows.
    solo: tuple[tuple[int, int], ...] = ()
    bucket_rows: Tensor | None = None
    # Boolean masks as additive ones (0 / -inf) per (bucket, local, dtype), and the solo documents' band per
    # dtype, made on first use: SDPA would otherwise convert a boolean mask again in every layer.
    _additive: dict = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def build(
        cu_seqlens_N1: Tensor,
        window: int,
        device: torch.device | None = None,
        *,
        kernel: str = "sdpa",
        solo: bool = False,
    ) -> BucketLayout:
        if kernel not in BUCKET_KERNELS:
            raise ValueError(f"kernel must be one of {BUCKET_KERNELS}, got {kernel!r}")
        device = cu_seqlens_N1.device if device is None else device
        cu = cu_seqlens_N1.tolist()
        num_tokens = cu[-1]
        lengths = [end - start for start, end in itertools.pairwise(cu)]

        def alone(n: int) -> bool:
            return solo and window > 0 and _SOLO_MIN_WINDOWS * window <= n <= _BLOCKED_MIN_WINDOWS * window

        solos = tuple((cu[i], n) for i, n in enumerate(lengths) if alone(n))
        order = sorted(
            (i for i, n in enumerate(lengths) if n > 0 and not alone(n)), key=lambda i: -lengths[i]
        )
        groups: list[list[int]] = []
        for i in order:
            if groups and lengths[i] >= _BUCKET_FILL * lengths[groups[-1][0]]:
                groups[-1].append(i)
            else:
                groups.append([i])

        buckets: list[_Bucket] = []
        gathers: list[Tensor] = []
        rows_list: list[Tensor] = []
        slots_list: list[Tensor] = []
        offset = 0
        for group in groups:
            bucket, gather, rows, slots = _build_bucket(
                torch.tensor([cu[i] for i in group]),
                torch.tensor([lengths[i] for i in group]),
                window,
            )
            buckets.append(bucket)
            gathers.append(gather)
            rows_list.append(rows)
            slots_list.append(slots + offset)
            offset += bucket.n_docs * bucket.length
        empty = torch.zeros(0, dtype=torch.long)
        gather = torch.cat(gathers) if gathers else empty
        rows = torch.cat(rows_list) if rows_list else empty
        slots = torch.cat(slots_list) if slots_list else empty
        if solos:
            scatter, bucket_rows = slots, rows.to(device)
        else:
            scatter = torch.empty(num_tokens, dtype=torch.long)
            scatter[rows] = slots
            bucket_rows = None
        arange_T = torch.arange(num_tokens)
        identity = not solos and torch.equal(gather, arange_T) and torch.equal(scatter, arange_T)
        return BucketLayout(
            buckets=tuple(_bucket_to(b, device) for b in buckets),
            gather=gather.to(device),
            scatter=scatter.to(device),
            window=window,
            num_tokens=num_tokens,
            kernel=kernel,
            identity=identity,
            solo=solos,
            bucket_rows=bucket_rows,
        )

    def _mask(self, index: int, local: bool, dtype: torch.dtype) -> Tensor | None:
        key = (index, local, dtype)
        if key not in self._additive:
            b = self.buckets[index]
            mask = b.local_mask if local else b.global_mask
            self._additive[key] = None if mask is None else _additive_mask(mask, dtype)
        return self._additive[key]

    def _band(self, length: int, dtype: torch.dtype) -> Tensor:
        """The additive local mask of one unpadded document, [1, 1, length, length]: the top-left corner of the
        longest solo document's band (it depends on i - j only), so one tensor serves every length."""
        key = ("band", dtype)
        if key not in self._additive:
            longest = max(n for _, n in self.solo)
            band = _band_mask(longest, self.window, self.gather.device)
            self._additive[key] = _additive_mask(band, dtype)[None, None]
        return self._additive[key][..., :length, :length]

    def attend(
        self, qkv_T3HD: Tensor, *, local: bool, dropout_p: float = 0.0, workspace: Workspace | None = None
    ) -> Tensor:
        T, _, H, D = qkv_T3HD.shape
        if self.num_tokens != T:
            raise ValueError(f"qkv has {T} tokens but the attention layout was built for {self.num_tokens}")
        if not self.buckets and not self.solo:  # no token at all
            return qkv_T3HD.new_zeros(T, H, D)
        if not self.solo:
            out_SF = self._attend_buckets(qkv_T3HD, local, dropout_p, workspace)
            if self.identity:
                return out_SF.view(T, H, D)
            if workspace is None:
                return _GatherRows.apply(out_SF, self.scatter).view(T, H, D)
            result_TF = workspace.take("attn_result", (T, H * D), out_SF)
            return torch.index_select(out_SF, 0, self.scatter, out=result_TF).view(T, H, D)

        if torch.is_grad_enabled():
            raise RuntimeError("a BucketLayout built with solo=True is for attention without autograd")
        shape = (T, H * D)
        result_TF = (
            qkv_T3HD.new_empty(shape) if workspace is None else workspace.take("attn_result", shape, qkv_T3HD)
        )
        if self.buckets:
            out_SF = self._attend_buckets(qkv_T3HD, local, dropout_p, workspace)
            result_TF.index_copy_(0, self.bucket_rows, out_SF.index_select(0, self.scatter))
        result_THD = result_TF.view(T, H, D)
        for start, n in self.solo:
            q, k, v = qkv_T3HD[None, start : start + n].permute(2, 0, 3, 1, 4).unbind(0)  # [1, H, n, D]
            mask = self._band(n, qkv_T3HD.dtype) if local else None
            dest_1nHD = result_THD[None, start : start + n]
            if self.kernel == "matmul":
                _matmul_attention(q, k, v, mask, dropout_p, out=dest_1nHD)
            else:
                dest_1nHD.copy_(_sdpa_attention(q, k, v, mask, dropout_p).transpose(1, 2))
        return result_THD

    def _attend_buckets(
        self, qkv_T3HD: Tensor, local: bool, dropout_p: float, workspace: Workspace | None
    ) -> Tensor:
        """The bucketed documents' outputs, [sum of n * L, H * D]: each bucket's padded rows in turn."""
        T, _, H, D = qkv_T3HD.shape
        # One gather and one split for all buckets: on a CPU shared with other processes, every extra
        # parallel op can cost a scheduler time slice.
        rows_TF = qkv_T3HD.reshape(T, 3 * H * D)
        sizes = [b.n_docs * (b.length + 2 * b.halo) for b in self.buckets]
        if self.identity:
            padded_SF = rows_TF
        elif workspace is None:
            padded_SF = _GatherRows.apply(rows_TF, self.gather)
        else:
            padded_SF = workspace.take("attn_in", (sum(sizes), 3 * H * D), rows_TF)
            torch.index_select(rows_TF, 0, self.gather, out=padded_SF)
        out_sizes = [b.n_docs * b.length for b in self.buckets]
        out_SF = None if workspace is None else workspace.take("attn_out", (sum(out_sizes), H * D), rows_TF)
        matmul = self.kernel == "matmul"
        outs: list[Tensor] = []
        for i, (b, rows_F) in enumerate(zip(self.buckets, padded_SF.split(sizes), strict=True)):
            mask = self._mask(i, local, qkv_T3HD.dtype)
            n, L, halo = b.n_docs, b.length, b.halo
            x_nL3HD = rows_F.view(n, L + 2 * halo, 3, H, D)
            if local and halo:
                nb = L // halo
                q = x_nL3HD[:, halo : halo + L, 0].reshape(n, nb, halo, H, D).transpose(2, 3)
                # unfold gives [n, nb, H, D, 3B]: each block's keys are its own block and both neighbours.
                k = x_nL3HD[:, :, 1].unfold(1, 3 * halo, halo).transpose(-1, -2)
                v = x_nL3HD[:, :, 2].unfold(1, 3 * halo, halo).transpose(-1, -2)
            else:
                if halo:
                    x_nL3HD = x_nL3HD[:, halo : halo + L]
                q, k, v = x_nL3HD.permute(2, 0, 3, 1, 4).unbind(0)
            # dest: this bucket's [n * L, H * D] rows of the workspace's output, [n, (nb,) Q, H, D] in shape.
            dest = (
                None if out_SF is None else out_SF.split(out_sizes)[i].view(*q.shape[:-3], q.shape[-2], H, D)
            )
            if matmul:
                o = _matmul_attention(q, k, v, mask, dropout_p, out=dest)
            else:
                o = _sdpa_attention(q, k, v, mask, dropout_p)
                if dest is not None:
                    dest.copy_(o.transpose(-2, -3))
            if out_SF is None:
                outs.append(o.transpose(-2, -3).reshape(n * L, H * D))
        if out_SF is None:
            out_SF = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out_SF


def _band_mask(length: int, window: int, device: torch.device | None = None) -> Tensor:
    """[length, length] boolean: query i may attend to key j, |i - j| <= window."""
    pos = torch.arange(length, device=device)
    return (pos[:, None] - pos[None, :]).abs() <= window


def _additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """0 where allowed, -inf elsewhere: the values SDPA derives from a boolean mask, so outputs stay
    bit-identical."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, -math.inf)


def _sdpa_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def _matmul_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, *, out: Tensor | None = None
) -> Tensor:
    """softmax(q kᵀ / √D + mask) v for q [n, ..., Q, D], k and v [n, ..., K, D] and an additive mask that
    broadcasts to [n, ..., Q, K]; returns q's shape, as a view of a [n, ..., Q, H, D] tensor (the layout the
    caller reshapes to): `out` if given.

    A chunk of documents at a time (of one document's rows when one document is more than a chunk: query rows
    of [n, H, L, D], blocks of [n, nb, H, B, D]), so that each chunk's scores stay in cache.
    """
    if dropout_p > 0:
        raise AttentionBackendError("the matmul attention kernel has no attention dropout")
    *lead, H, Q, D = q.shape
    out = (q.new_empty(*lead, Q, H, D) if out is None else out).transpose(-2, -3)
    n, K = q.shape[0], k.shape[-2]
    row_dim = 2 if q.dim() == 4 else 1
    rows = q.shape[row_dim]
    scores_per_row = math.prod(q.shape[1:-1]) // rows * K
    budget = max(1, _CHUNK_SCORE_BYTES // q.element_size() // scores_per_row)  # rows a chunk holds
    if budget >= rows:
        step = budget // rows
        chunks = [(slice(i, i + step), slice(None)) for i in range(0, n, step)]
    else:
        chunks = [(slice(i, i + 1), slice(r, r + budget)) for i in range(n) for r in range(0, rows, budget)]
    scale = q.shape[-1] ** -0.5
    copied = None
    for docs, part in chunks:
        q_rows = (docs,) + (slice(None),) * (row_dim - 1) + (part,)
        # Key and mask dims of length 1 broadcast; only the blocks of [n, nb, ...] slice with the query rows.
        kv_rows = q_rows if row_dim == 1 else (docs,)
        if kv_rows != copied:
            # Copied out of the strided layout once, not by matmul again for every row chunk of a document.
            copied, k_c, v_c = kv_rows, k[kv_rows].contiguous(), v[kv_rows].contiguous()
        # Scaling the queries (which matmul copies from the strided layout anyway) instead of the scores:
        # L / D times fewer multiplies.
        s = torch.matmul(q[q_rows] * scale, k_c.transpose(-1, -2))
        if mask is not None:
            m = mask[docs] if mask.shape[0] > 1 else mask
            s.add_(m[(slice(None), *q_rows[1:])] if m.shape[row_dim] > 1 else m)
        out[q_rows] = torch.matmul(s.softmax(-1), v_c)
    return out


class _GatherRows(torch.autograd.Function):
    """x[index] whose backward is one index_add_ (torch's own index_select backward is several times slower
    on CPU)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x_NF: Tensor, index_S: Tensor) -> Tensor:
        ctx.save_for_backward(index_S)
        ctx.num_rows = x_NF.shape[0]
        return x_NF.index_select(0, index_S)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_SF: Tensor) -> tuple[Tensor, None]:
        (index_S,) = ctx.saved_tensors
        grad_NF = grad_SF.new_zeros(ctx.num_rows, grad_SF.shape[1])
        return grad_NF.index_add_(0, index_S, grad_SF), None


def _build_bucket(starts_n: Tensor, lengths_n: Tensor, window: int) -> tuple[_Bucket, Tensor, Tensor, Tensor]:
    """Masks of one bucket; the packed row (0 for padding) of each of its [n, halo + L + halo] slots; the packed
    rows its valid slots hold; and those slots' flat positions in the bucket's [n * L] output."""
    n, longest = lengths_n.numel(), int(lengths_n.max())
    blocked = window > 0 and longest > _BLOCKED_MIN_WINDOWS * window
    halo = window if blocked else 0
    L = math.ceil(longest / window) * window if blocked else longest
    pos_P = torch.arange(-halo, L + halo)
    valid_nP = (pos_P >= 0) & (pos_P < lengths_n[:, None])
    gather_nP = torch.where(valid_nP, starts_n[:, None] + pos_P, 0)
    valid_nL = valid_nP[:, halo : halo + L]
    rows = gather_nP[:, halo : halo + L][valid_nL]
    slots = torch.arange(n * L).view(n, L)[valid_nL]

    unpadded = bool(valid_nL.all())
    global_mask = None if unpadded else valid_nL[:, None, None, :]
    # Pad query rows may attend to anything: their outputs are dropped, and a row with no allowed key would
    # give NaN (and NaN gradients) in SDPA.
    if blocked:
        nb = L // halo
        q_pos_bB = torch.arange(L).view(nb, halo)
        k_pos_bK = pos_P.unfold(0, 3 * halo, halo)
        band_bBK = (q_pos_bB[:, :, None] - k_pos_bK[:, None, :]).abs() <= window
        k_valid_nbK = valid_nP.unfold(1, 3 * halo, halo)
        q_pad_nbB = ~valid_nL.view(n, nb, halo)
        local_mask = (k_valid_nbK[:, :, None, :] & band_bBK) | q_pad_nbB[..., None]
        local_mask = local_mask[:, :, None]
    else:
        band_LL = _band_mask(L, window)
        if unpadded:
            local_mask = band_LL[None, None]  # the same band for every document: SDPA broadcasts it
        else:
            local_mask = ((valid_nL[:, None, :] & band_LL) | ~valid_nL[:, :, None])[:, None]
    bucket = _Bucket(
        n_docs=n,
        length=L,
        halo=halo,
        global_mask=global_mask,
        local_mask=local_mask,
    )
    return bucket, gather_nP.reshape(-1), rows, slots


def _bucket_to(b: _Bucket, device: torch.device) -> _Bucket:
    def move(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(device, non_blocking=True)

    return _Bucket(
        n_docs=b.n_docs,
        length=b.length,
        halo=b.halo,
        global_mask=move(b.global_mask),
        local_mask=move(b.local_mask),
    )
