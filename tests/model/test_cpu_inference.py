"""CPU inference: the per-token steps run in row blocks with buffers reused across layers, and give exactly the
values of the whole-batch path (the one autograd runs); documents of 4 to 8 windows attend alone, unpadded, and
give its values within rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config

import mmbert.model.attention as attention
import mmbert.model.modeling as modeling
from mmbert.model import BucketLayout, MmBertModel, packed_attention
from mmbert.model.attention import Workspace
from mmbert.model.layers import CPU_INFERENCE_ROW_BLOCK, MmBertEncoderLayer

# Several buckets, padding inside them, a one-token document, one past 8 windows of the tiny model's
# |i - j| <= 4 (blocked local attention with halos) and two of 4 to 8 windows (attended alone in inference):
# every gather and scatter path of the layout.
LENGTHS = [70, 9, 33, 1, 30, 17]
SOLO = ((113, 30), (143, 17))  # (start, length) of the documents of 16 to 32 tokens


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    cu = F.pad(torch.tensor(LENGTHS).cumsum(0), (1, 0)).to(torch.int32)
    return torch.randint(5, 100, (sum(LENGTHS),)), cu


@pytest.mark.parametrize("kernel", ["sdpa", "matmul"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_blocks_give_the_whole_batch_values_exactly(
    kernel: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = MmBertModel(tiny_config(vocab_size=100, attn_backend=kernel)).eval().to(dtype)
    ids, cu = _inputs()
    whole = model(ids, cu).detach()  # autograd on: whole-batch ops

    blocks: list[int] = []
    by_rows = MmBertEncoderLayer._forward_by_row_blocks

    def spy(self: MmBertEncoderLayer, x: torch.Tensor, batch: object, rows: int) -> torch.Tensor:
        blocks.append(rows)
        return by_rows(self, x, batch, rows)

    monkeypatch.setattr(MmBertEncoderLayer, "_forward_by_row_blocks", spy)
    # Every document through the buckets, as in the whole-batch path (solo documents: the test below).
    monkeypatch.setattr(attention, "_SOLO_MIN_WINDOWS", 100)
    # 160 tokens in blocks of 24, the last one short. (An fp32 BLAS may round a block whose rows are not a
    # multiple of its 8-row tile differently: measured 1e-7 with blocks of 7 rows.)
    monkeypatch.setattr(modeling, "CPU_INFERENCE_ROW_BLOCK", 24)
    with torch.inference_mode():
        rows = model(ids, cu)
        again = model(ids, cu)  # a second forward gets a fresh workspace
    assert blocks == [24] * (2 * model.config.num_hidden_layers)
    assert torch.equal(rows, whole)
    assert torch.equal(again, whole)


def test_only_cpu_inference_in_eval_mode_takes_row_blocks() -> None:
    model = MmBertModel(tiny_config(vocab_size=100))
    _, cu = _inputs()
    T = sum(LENGTHS)

    def batch() -> tuple[int | None, bool]:
        b = model._packed_batch(cu, T, None)
        return b.row_block, b.workspace is not None

    model.eval()
    with torch.no_grad():
        assert batch() == (CPU_INFERENCE_ROW_BLOCK, True)
    assert batch() == (None, False)  # autograd: activations are kept for the backward anyway
    model.train()
    with torch.no_grad():
        assert batch() == (None, False)  # dropout stays on the whole-batch path


@pytest.mark.parametrize("kernel", ["sdpa", "matmul"])
@pytest.mark.parametrize("window", [-1, 4])
def test_attention_with_a_workspace_equals_attention_without(kernel: str, window: int) -> None:
    torch.manual_seed(0)
    qkv = torch.randn(sum(LENGTHS), 3, 2, 16)
    cu = F.pad(torch.tensor(LENGTHS).cumsum(0), (1, 0)).to(torch.int32)
    layout = BucketLayout.build(cu, 4, kernel=kernel)
    with torch.no_grad():
        plain = packed_attention(qkv, cu, max(LENGTHS), window, kernel, layout=layout)
        workspace = Workspace()
        first = packed_attention(qkv, cu, max(LENGTHS), window, kernel, layout=layout, workspace=workspace)
        assert torch.equal(first, plain)
        second = packed_attention(
            qkv * 2, cu, max(LENGTHS), window, kernel, layout=layout, workspace=workspace
        )
    # The documented contract: a workspace's result is overwritten by the next call that uses it.
    assert second.data_ptr() == first.data_ptr()
    assert not torch.equal(second, plain)


def test_workspace_reuses_a_buffer_per_name_and_refuses_autograd() -> None:
    like = torch.zeros(1)
    workspace = Workspace()
    with pytest.raises(RuntimeError, match="without autograd"):
        workspace.take("x", (2, 3), like)
    with torch.no_grad():
        big = workspace.take("x", (4, 5), like)
        small = workspace.take("x", (2, 3), like)
        other = workspace.take("y", (2, 3), like)
        half = workspace.take("x", (2, 3), like.bfloat16())
        larger = workspace.take("x", (30,), like.bfloat16())
    assert small.shape == (2, 3) and small.data_ptr() == big.data_ptr()
    assert other.data_ptr() != big.data_ptr()
    assert half.dtype == torch.bfloat16 and half.data_ptr() != big.data_ptr()
    assert larger.numel() == 30 and larger.data_ptr() != half.data_ptr()


@pytest.mark.parametrize("kernel", ["sdpa", "matmul"])
@pytest.mark.parametrize("window", [-1, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_documents_attended_alone_give_the_bucketed_values(
    kernel: str, window: int, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    qkv = torch.randn(sum(LENGTHS), 3, 2, 16).to(dtype)
    cu = F.pad(torch.tensor(LENGTHS).cumsum(0), (1, 0)).to(torch.int32)
    solo = BucketLayout.build(cu, 4, kernel=kernel, solo=True)
    assert solo.solo == SOLO
    assert sum(b.n_docs for b in solo.buckets) == len(LENGTHS) - len(SOLO)
    tol = {torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    with torch.no_grad():
        plain = packed_attention(
            qkv, cu, max(LENGTHS), window, kernel, layout=BucketLayout.build(cu, 4, kernel=kernel)
        )
        alone = packed_attention(qkv, cu, max(LENGTHS), window, kernel, layout=solo)
        in_workspace = packed_attention(
            qkv, cu, max(LENGTHS), window, kernel, layout=solo, workspace=Workspace()
        )
    torch.testing.assert_close(alone, plain, atol=tol, rtol=tol)
    assert torch.equal(in_workspace, alone)
    # Against attention computed document by document from the definition.
    pos = torch.arange(max(LENGTHS))
    for start, n in SOLO:
        q, k, v = qkv[start : start + n].float().permute(1, 2, 0, 3)  # [H, n, D]
        allowed = (pos[:n, None] - pos[None, :n]).abs() <= (window if window >= 0 else n)
        scores = (q @ k.transpose(-1, -2) / 16**0.5).masked_fill(~allowed, -torch.inf)
        expected = (scores.softmax(-1) @ v).transpose(0, 1)
        torch.testing.assert_close(alone[start : start + n].float(), expected, atol=tol, rtol=tol)


def test_documents_attended_alone_only_without_autograd() -> None:
    cu = F.pad(torch.tensor(LENGTHS).cumsum(0), (1, 0)).to(torch.int32)
    layout = BucketLayout.build(cu, 4, kernel="matmul", solo=True)
    with pytest.raises(RuntimeError, match="without autograd"):
        layout.attend(torch.randn(sum(LENGTHS), 3, 2, 16), local=True)
    assert BucketLayout.build(cu, 4, kernel="matmul").solo == ()  # training and validation with autograd
    model = MmBertModel(tiny_config(vocab_size=100)).eval()
    with torch.no_grad():
        assert model._packed_batch(cu, sum(LENGTHS), None).layout.solo == SOLO


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inference_with_documents_alone_matches_the_whole_batch_path(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = MmBertModel(tiny_config(vocab_size=100)).eval().to(dtype)
    ids, cu = _inputs()
    whole = model(ids, cu).detach()
    with torch.inference_mode():
        fast = model(ids, cu)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(fast.float(), whole.float(), atol=tol, rtol=tol)
