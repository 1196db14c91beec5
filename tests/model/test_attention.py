"""Packed attention: window edges, document isolation, SDPA layout paths, backend selection, GPU backends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config

import mmbert.model.attention as attention
import mmbert.model.rope as rope
from mmbert.errors import AttentionBackendError
from mmbert.model import BucketLayout, MmBertForMaskedLM, packed_attention, select_attn_backend
from mmbert.model.layers import MmBertAttention, PackedBatch
from mmbert.model.rope import apply_rope_to_qkv, positions_in_documents, rope_cos_sin

HEADS, HEAD_DIM = 2, 16


def cu_seqlens(lengths: list[int]) -> torch.Tensor:
    return F.pad(torch.tensor(lengths).cumsum(0), (1, 0)).to(torch.int32)


def reference_attention(qkv_T3HD: torch.Tensor, lengths: list[int], window: int) -> torch.Tensor:
    """One document at a time with an explicit |i - j| <= window mask (none when global)."""
    outs, start = [], 0
    for n in lengths:
        q, k, v = qkv_T3HD[start : start + n].permute(1, 2, 0, 3)
        pos = torch.arange(n)
        mask = None if window < 0 else (pos[:, None] - pos[None, :]).abs() <= window
        outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(0, 1))
        start += n
    return torch.cat(outs)


def key_influence(lengths: list[int], window: int, query: int) -> torch.Tensor:
    """Boolean [T]: which packed keys/values the output at `query` depends on (non-zero gradient)."""
    torch.manual_seed(0)
    qkv = torch.randn(sum(lengths), 3, HEADS, HEAD_DIM, requires_grad=True)
    out = packed_attention(qkv, cu_seqlens(lengths), max(lengths), window, "sdpa")
    out[query].sum().backward()
    return qkv.grad[:, 1:].abs().sum((1, 2, 3)) > 0


@pytest.mark.parametrize("doc_len", [300, 700])  # band-mask path (<= 512) and blocked path (> 512)
def test_local_window_edge_64_attends_65_does_not(doc_len: int) -> None:
    query = 200
    sees = key_influence([50, doc_len], window=64, query=50 + query)
    seen = sees.nonzero().squeeze(1) - 50
    assert seen.min().item() == query - 64 and seen.max().item() == query + 64
    assert seen.numel() == 129
    assert not sees[:50].any()


def test_global_attention_sees_its_whole_document_only() -> None:
    sees = key_influence([50, 300, 20], window=-1, query=50 + 7)
    assert sees[50:350].all() and not sees[:50].any() and not sees[350:].any()


@pytest.mark.parametrize("kernel", ["sdpa", "matmul"])
@pytest.mark.parametrize("window", [-1, 0, 4, 64])
def test_bucket_layout_matches_per_document_reference(window: int, kernel: str) -> None:
    # Mixed lengths: several buckets, padding inside buckets, a length-0 document, blocked and band paths.
    lengths = [300, 7, 1, 0, 33, 45, 260, 5, 600, 64, 65]
    torch.manual_seed(0)
    qkv = torch.randn(sum(lengths), 3, HEADS, HEAD_DIM, requires_grad=True)
    out = packed_attention(qkv, cu_seqlens(lengths), max(lengths), window, kernel)
    grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    grad = qkv.grad.clone()
    qkv.grad = None
    ref = reference_attention(qkv, [n for n in lengths if n], window)
    (ref * grad_out).sum().backward()
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-6)
    torch.testing.assert_close(grad, qkv.grad, rtol=0, atol=2e-5)
    assert torch.isfinite(grad).all()


def test_layout_buckets_bound_padding_and_block_long_documents() -> None:
    layout = BucketLayout.build(cu_seqlens([100, 90, 80, 10, 1000]), window=64)
    shapes = sorted((b.n_docs, b.length, b.halo) for b in layout.buckets)
    assert shapes == [(1, 10, 0), (1, 1024, 64), (3, 100, 0)]
    assert layout.buckets[2].global_mask is None  # a lone unpadded document needs no key-padding mask
    assert layout.buckets[0].global_mask is not None


@pytest.mark.parametrize("window", [-1, 8])  # 40 tokens are at most 8 windows of 8: the band path
def test_equal_length_documents_use_views_and_one_broadcast_band(window: int) -> None:
    # The fixed-length case (every document as long): no gather or scatter copies, one [1, 1, L, L] band.
    lengths = [40, 40, 40]
    layout = BucketLayout.build(cu_seqlens(lengths), window=max(window, 0))
    assert layout.identity and len(layout.buckets) == 1
    assert layout.buckets[0].local_mask.shape == (1, 1, 40, 40) and layout.buckets[0].global_mask is None
    assert not BucketLayout.build(cu_seqlens([40, 39]), window=4).identity
    torch.manual_seed(0)
    qkv = torch.randn(sum(lengths), 3, HEADS, HEAD_DIM, requires_grad=True)
    out = packed_attention(qkv, cu_seqlens(lengths), 40, window, "sdpa", layout=layout)
    grad_out = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, qkv, grad_out)
    ref = reference_attention(qkv, lengths, window)
    (ref_grad,) = torch.autograd.grad(ref, qkv, grad_out)
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=2e-5)
    # The additive masks are made once per layout and reused by every later layer.
    again = packed_attention(qkv, cu_seqlens(lengths), 40, window, "sdpa", layout=layout)
    assert torch.equal(again, out) and len(layout._additive) == 1


def test_layout_rejects_other_windows_kernels_and_token_counts() -> None:
    layout = BucketLayout.build(cu_seqlens([10, 20]), window=4)
    qkv = torch.randn(30, 3, HEADS, HEAD_DIM)
    with pytest.raises(ValueError, match="window 4"):
        packed_attention(qkv, cu_seqlens([10, 20]), 20, 8, "sdpa", layout=layout)
    with pytest.raises(ValueError, match="built for the sdpa kernel, attention asked for matmul"):
        packed_attention(qkv, cu_seqlens([10, 20]), 20, 4, "matmul", layout=layout)
    with pytest.raises(ValueError, match="built for 30"):
        layout.attend(qkv[:29], local=True)
    with pytest.raises(ValueError, match="kernel must be one of"):
        BucketLayout.build(cu_seqlens([10, 20]), window=4, kernel="flash")
    matmul = BucketLayout.build(cu_seqlens([10, 20]), window=4, kernel="matmul")
    with pytest.raises(AttentionBackendError, match="no attention dropout"):
        matmul.attend(qkv, local=True, dropout_p=0.1)


@pytest.mark.parametrize("window", [-1, 8])
def test_matmul_kernel_chunks_rows_of_documents_larger_than_its_budget(
    monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    # A budget of 3 query rows' scores: 1000 tokens of global attention and 1000 / 8 blocks of local attention
    # both split every document into row chunks; results must not depend on where the chunks fall.
    lengths = [1000, 90, 300]
    torch.manual_seed(0)
    qkv = torch.randn(sum(lengths), 3, HEADS, HEAD_DIM)
    whole = packed_attention(qkv, cu_seqlens(lengths), 1000, window, "matmul")
    monkeypatch.setattr(attention, "_CHUNK_SCORE_BYTES", 3 * 4 * HEADS * 1000)
    chunked = packed_attention(qkv, cu_seqlens(lengths), 1000, window, "matmul")
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    ref = reference_attention(qkv, lengths, window)
    torch.testing.assert_close(chunked, ref, rtol=0, atol=2e-6)


def test_matmul_kernel_in_bf16_is_as_close_to_fp32_as_sdpa() -> None:
    # bf16 rounds the matmul kernel's scores before the softmax, which SDPA's CPU kernel keeps in fp32: its error
    # against fp32 attention stays near SDPA's (on these inputs max 0.9x / 1.4x, mean 1.4x / 1.3x, global / local).
    lengths = [512, 300, 260, 40]
    torch.manual_seed(0)
    qkv = torch.randn(sum(lengths), 3, 6, 64)
    for window in (-1, 64):
        truth = packed_attention(qkv, cu_seqlens(lengths), 512, window, "sdpa")
        errs = {}
        for kernel in ("sdpa", "matmul"):
            out = packed_attention(qkv.bfloat16(), cu_seqlens(lengths), 512, window, kernel)
            assert out.dtype == torch.bfloat16
            errs[kernel] = (out.float() - truth).abs()
        assert errs["matmul"].max() < 2 * errs["sdpa"].max(), window
        assert errs["matmul"].mean() < 2 * errs["sdpa"].mean(), window


def test_attention_module_only_local_layers_are_windowed() -> None:
    cfg = tiny_config(vocab_size=100, num_hidden_layers=2, global_attn_every_n_layers=2, attn_backend="auto")
    lengths = [40]
    cu = cu_seqlens(lengths)
    pos = positions_in_documents(cu, 40)
    rope = rope_cos_sin(pos, cfg.global_rope_theta, cfg.head_dim)
    batch = PackedBatch(cu, 40, "sdpa", rope, rope, BucketLayout.build(cu, cfg.half_window))
    for layer_idx, expected in ((0, 40), (1, 9)):
        torch.manual_seed(0)
        module = MmBertAttention(cfg, layer_idx)
        x = torch.randn(40, 32, requires_grad=True)
        module(x, batch)[20].sum().backward()
        seen = (x.grad.abs().sum(1) > 0).nonzero().squeeze(1)
        assert seen.numel() == expected, layer_idx
        if layer_idx == 1:
            assert (seen.min().item(), seen.max().item()) == (16, 24)


def test_backend_selection() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert select_attn_backend("auto", cpu, torch.bfloat16, dropout=False) == "sdpa"
    assert select_attn_backend("auto", cpu, torch.bfloat16, dropout=False, inference=True) == "matmul"
    assert select_attn_backend("auto", cpu, torch.float16, dropout=False, inference=True) == "matmul"
    assert select_attn_backend("auto", cpu, torch.bfloat16, dropout=True, inference=True) == "sdpa"
    assert select_attn_backend("auto", cpu, torch.float32, dropout=False, inference=True) == "sdpa"
    assert select_attn_backend("auto", cuda, torch.float32, dropout=False) == "sdpa"
    assert select_attn_backend("auto", cuda, torch.float32, dropout=False, inference=True) == "sdpa"
    assert select_attn_backend("sdpa", cuda, torch.bfloat16, dropout=True) == "sdpa"
    assert select_attn_backend("matmul", cpu, torch.float32, dropout=False) == "matmul"
    with pytest.raises(AttentionBackendError, match="matmul' does not support attention_dropout"):
        select_attn_backend("matmul", cpu, torch.float32, dropout=True)
    with pytest.raises(AttentionBackendError, match="needs a CUDA device"):
        select_attn_backend("flash", cpu, torch.bfloat16, dropout=False)
    with pytest.raises(AttentionBackendError, match="needs a CUDA device"):
        select_attn_backend("varlen", cpu, torch.bfloat16, dropout=False)
    with pytest.raises(AttentionBackendError, match="fp16/bf16"):
        select_attn_backend("varlen", cuda, torch.float32, dropout=False)
    with pytest.raises(AttentionBackendError, match="dropout"):
        select_attn_backend("varlen", cuda, torch.bfloat16, dropout=True)
    with pytest.raises(ValueError, match="not one of"):
        select_attn_backend("xformers", cpu, torch.float32, dropout=False)


def test_backend_selection_follows_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(attention, "flash_attn_importable", lambda: False)
    with pytest.raises(AttentionBackendError, match="flash_attn package"):
        select_attn_backend("flash", cuda, torch.bfloat16, dropout=False)
    monkeypatch.setattr(attention, "torch_varlen_supports_window", lambda: True)
    assert select_attn_backend("auto", cuda, torch.bfloat16, dropout=False) == "varlen"
    assert select_attn_backend("auto", cuda, torch.bfloat16, dropout=True) == "sdpa"
    monkeypatch.setattr(attention, "torch_varlen_supports_window", lambda: False)
    assert select_attn_backend("auto", cuda, torch.bfloat16, dropout=False) == "sdpa"
    with pytest.raises(AttentionBackendError, match="window_size"):
        select_attn_backend("varlen", cuda, torch.bfloat16, dropout=False)
    monkeypatch.setattr(attention, "flash_attn_importable", lambda: True)
    assert select_attn_backend("auto", cuda, torch.bfloat16, dropout=False) == "flash"


def test_model_bf16_inference_on_cpu_runs_the_matmul_kernel_and_matches_sdpa(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = tiny_config(vocab_size=100, num_hidden_layers=3, local_attention=16, attn_backend="auto")
    torch.manual_seed(0)
    model = MmBertForMaskedLM(cfg).eval().to(torch.bfloat16)
    lengths = [70, 9, 33]
    ids, cu = torch.randint(5, 100, (sum(lengths),)), cu_seqlens(lengths)
    kernels: list[str] = []
    build = BucketLayout.build

    def spy(*args: object, kernel: str = "sdpa", **kwargs: object) -> BucketLayout:
        kernels.append(kernel)
        return build(*args, kernel=kernel, **kwargs)

    monkeypatch.setattr(BucketLayout, "build", staticmethod(spy))
    with torch.inference_mode():
        inferred = model(ids, cu, max(lengths)).logits
        model.float()
        fp32 = model(ids, cu, max(lengths)).logits
    trained = model.bfloat16()(ids, cu, max(lengths)).logits
    assert kernels == ["matmul", "sdpa", "sdpa"]
    # Both bf16 kernels land as near the fp32 logits.
    err_matmul, err_sdpa = ((x.float() - fp32).abs().max().item() for x in (inferred, trained))
    assert err_matmul < 2 * err_sdpa + 1e-3


def test_model_with_unavailable_backend_raises_clearly() -> None:
    model = MmBertForMaskedLM(
        tiny_config(vocab_size=100, num_hidden_layers=2, local_attention=128, attn_backend="flash")
    )
    with pytest.raises(AttentionBackendError, match="attn_backend='flash' needs a CUDA device"):
        model(torch.randint(5, 100, (10,)), torch.tensor([0, 10], dtype=torch.int32))


GPU_LENGTHS = [700, 33, 1, 129, 300, 64, 1500]


def _gpu_backend_vs_sdpa(backend: str) -> None:
    torch.manual_seed(0)
    lengths = GPU_LENGTHS
    cu = cu_seqlens(lengths).cuda()
    qkv = torch.randn(sum(lengths), 3, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    for window in (-1, 64):
        out = packed_attention(qkv, cu, max(lengths), window, backend)
        ref = packed_attention(qkv, cu, max(lengths), window, "sdpa")
        torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=2e-2)
        grad = torch.autograd.grad(out.float().square().sum(), qkv)[0]
        grad_ref = torch.autograd.grad(ref.float().square().sum(), qkv)[0]
        torch.testing.assert_close(grad.float(), grad_ref.float(), rtol=0.05, atol=5e-2)


def _gpu_model_backend_vs_sdpa(backend: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(
        vocab_size=1000, hidden_size=256, intermediate_size=384, num_attention_heads=4, local_attention=128
    )
    model = MmBertForMaskedLM(cfg).cuda()
    ids = torch.randint(5, 1000, (sum(GPU_LENGTHS),), device="cuda")
    cu = cu_seqlens(GPU_LENGTHS).cuda()
    labels = torch.where(torch.rand(ids.shape, device="cuda") < 0.3, ids, -100)
    outs = []
    for name in ("sdpa", backend):
        model.config.attn_backend = name
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outs.append(model(ids, cu, max(GPU_LENGTHS), labels=labels))
    torch.testing.assert_close(
        outs[1].last_hidden_state.float(), outs[0].last_hidden_state.float(), rtol=0, atol=5e-2
    )
    assert abs(outs[1].loss.item() - outs[0].loss.item()) < 1e-2


@pytest.mark.gpu
def test_gpu_varlen_matches_sdpa_bf16() -> None:
    _gpu_backend_vs_sdpa("varlen")
    _gpu_model_backend_vs_sdpa("varlen")


@pytest.mark.gpu
def test_gpu_flash_matches_sdpa_bf16() -> None:
    pytest.importorskip("flash_attn")
    _gpu_backend_vs_sdpa("flash")
    _gpu_model_backend_vs_sdpa("flash")


@pytest.mark.gpu
def test_gpu_auto_picks_a_varlen_kernel_under_bf16_autocast() -> None:
    expected = "flash" if attention.flash_attn_importable() else "varlen"
    assert select_attn_backend("auto", torch.device("cuda"), torch.bfloat16, dropout=False) == expected


def test_rope_matches_rotate_half_and_its_gradient_is_exact() -> None:
    torch.manual_seed(0)
    pos = positions_in_documents(cu_seqlens([7, 5]), 12)
    assert pos.tolist() == [*range(7), *range(5)]
    cos, sin = rope_cos_sin(pos, 10000.0, HEAD_DIM)
    qkv = torch.randn(12, 3, HEADS, HEAD_DIM, dtype=torch.float64, requires_grad=True)
    cos_full, sin_full = torch.cat([cos, cos], -1)[:, None, :], torch.cat([sin, sin], -1)[:, None, :]

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[..., HEAD_DIM // 2 :], x[..., : HEAD_DIM // 2]], -1)

    out = apply_rope_to_qkv(qkv, cos, sin)
    for i in (0, 1):
        expected = qkv[:, i] * cos_full + rotate_half(qkv[:, i]) * sin_full
        torch.testing.assert_close(out[:, i], expected, rtol=0, atol=1e-6)
    assert torch.equal(out[:, 2], qkv[:, 2])
    assert torch.autograd.gradcheck(lambda x: apply_rope_to_qkv(x, cos.double(), sin.double()), (qkv,))
    fp32 = apply_rope_to_qkv(qkv.detach().float(), cos, sin)
    torch.testing.assert_close(fp32.double(), out.detach(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_on_cpu_in_token_chunks_equals_one_pass(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    pos = positions_in_documents(cu_seqlens([300, 45]), 345)
    cos, sin = rope_cos_sin(pos, 10000.0, HEAD_DIM)
    qkv = torch.randn(345, 3, HEADS, HEAD_DIM, dtype=dtype, requires_grad=True)
    grad_out = torch.randn_like(qkv)
    results = []
    for elements in (1 << 30, 2 * HEADS * HEAD_DIM * 7):  # one pass; chunks of 7 tokens
        monkeypatch.setattr(rope, "_CPU_CHUNK_ELEMENTS", elements)
        out = apply_rope_to_qkv(qkv, cos, sin)
        results.append((out, torch.autograd.grad(out, qkv, grad_out)[0]))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
