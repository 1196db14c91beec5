"""The fused decoder + cross entropy (mmbert.model.loss) and the MLM outputs built on it, on CPU."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode

import mmbert.model.loss as loss_module
from mmbert.model import MmBertForMaskedLM, linear_cross_entropy
from mmbert.model.loss import linear_logits

N, H, V = 29, 16, 1000


@pytest.fixture
def narrow_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Vocabulary chunks of 64 columns whatever the row count (V = 1000 is not a multiple of 64)."""
    monkeypatch.setattr(loss_module, "_MIN_CHUNK_COLS", 64)
    monkeypatch.setitem(loss_module._CHUNK_ELEMENTS, "cpu", 64)
    return 64


def inputs(seed: int = 0, n: int = N) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, H, generator=gen).requires_grad_()
    w = torch.randn(V, H, generator=gen).requires_grad_()
    b = torch.randn(V, generator=gen).requires_grad_()
    target = torch.randint(0, V, (n,), generator=gen)
    target[::4] = -100
    return x, w, b, target


def grads_of(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


@pytest.mark.parametrize("chunked", [False, True], ids=["one-chunk", "64-col-chunks"])
def test_loss_gradients_and_predictions_match_explicit_logits(chunked: bool, request) -> None:
    if chunked:
        request.getfixturevalue("narrow_chunks")
    x, w, b, target = inputs()
    loss, predictions = linear_cross_entropy(x, w, b, target)
    ref_logits = F.linear(x, w, b)
    ref_loss = F.cross_entropy(ref_logits, target)
    assert loss.dtype == torch.float32 and not predictions.requires_grad
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-5)
    assert torch.equal(predictions, ref_logits.argmax(-1))
    # An upstream scale other than 1, as in the training step's micro-batch weighting.
    fused = grads_of(3.0 * loss, x, w, b)
    ref = grads_of(3.0 * ref_loss, x, w, b)
    # Chunked fp32 sums reduce in another order than one matmul: ~1e-6 relative, by thread count.
    for got, want in zip(fused, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_matches_explicit_autocast_logits(narrow_chunks: int) -> None:
    x, w, b, target = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, predictions = linear_cross_entropy(x, w, b, target)
        ref_logits = F.linear(x, w, b)
        ref_loss = F.cross_entropy(ref_logits.float(), target)
    assert ref_logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-4)
    # bf16 logits tie far more often than fp32 ones: compare the logit of the chosen token.
    chosen = ref_logits.gather(1, predictions[:, None]).squeeze(1)
    assert torch.equal(chosen, ref_logits.max(-1).values)
    fused = grads_of(loss, x, w, b)
    ref = grads_of(ref_loss, x, w, b)
    for got, want in zip(fused, ref, strict=True):
        assert got.dtype == torch.float32
        assert (got - want).norm() / want.norm() < 1e-2


def test_all_rows_ignored_gives_zero_loss_connected_to_the_graph(narrow_chunks: int) -> None:
    x, w, b, target = inputs()
    loss, predictions = linear_cross_entropy(x, w, b, torch.full_like(target, -100))
    assert loss.item() == 0.0 and loss.requires_grad
    assert torch.equal(predictions, F.linear(x, w, b).argmax(-1))
    for grad in grads_of(loss, x, w, b):
        assert grad.abs().max() == 0


def test_no_rows_at_all() -> None:
    x, w, b, target = inputs(n=0)
    loss, predictions = linear_cross_entropy(x, w, b, target)
    assert loss.item() == 0.0 and predictions.shape == (0,)
    assert [g.abs().sum().item() for g in grads_of(loss, x, w, b)] == [0.0, 0.0, 0.0]


class LargestTensors(TorchDispatchMode):
    """Records the element count of every tensor an aten op returns (allocations and `out=` views alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.numels: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = out if isinstance(out, (tuple, list)) else (out,)
        self.numels += [t.numel() for t in tensors if isinstance(t, torch.Tensor)]
        return out


def test_no_tensor_of_n_by_V_elements_is_computed_or_saved(narrow_chunks: int) -> None:
    n = 60  # 64-column chunks of 60 rows: [n, C] buffers of 3840 elements, against n * V = 60000
    x, w, b, target = inputs(n=n)
    with LargestTensors() as forward:
        loss, _ = linear_cross_entropy(x, w, b, target)
    saved = loss.grad_fn.saved_tensors
    with LargestTensors() as backward:
        loss.backward()
    with LargestTensors() as explicit:
        linear_logits(x, w, b, torch.float32)
    assert max(explicit.numels) == n * V  # the recorder does see an [n, V] tensor
    assert max(forward.numels) <= n * narrow_chunks
    assert max(t.numel() for t in saved) == V * H  # the weight itself, not a copy of logits
    # The backward's largest tensor is grad_W [V, H]; its chunk buffers are [n, C] again.
    assert max(backward.numels) <= max(n * narrow_chunks, V * H)


# ---------------------------------------------------------------- the model's outputs

VOCAB = 700


def tiny_model(seed: int = 0, **overrides: object) -> MmBertForMaskedLM:
    torch.manual_seed(seed)
    return MmBertForMaskedLM(
        tiny_config(**({"vocab_size": VOCAB, "num_hidden_layers": 2} | overrides))
    ).eval()


def packed_batch(seed: int = 1, rate: float = 0.3) -> dict[str, torch.Tensor | int]:
    gen = torch.Generator().manual_seed(seed)
    lengths = [23, 9, 31]
    ids = torch.randint(5, VOCAB, (sum(lengths),), generator=gen)
    labels = torch.where(torch.rand(ids.shape, generator=gen) < rate, ids, -100)
    cu = F.pad(torch.tensor(lengths).cumsum(0), (1, 0)).to(torch.int32)
    return dict(input_ids=ids, cu_seqlens=cu, max_seqlen=max(lengths), labels=labels)


@pytest.mark.parametrize("sparse", [True, False])
def test_predictions_are_the_argmax_of_the_labelled_positions(sparse: bool, narrow_chunks: int) -> None:
    model = tiny_model(sparse_prediction=sparse)
    batch = packed_batch()
    labelled = batch["labels"] != -100
    with torch.no_grad():
        out = model(**batch)
        dense = model(**(batch | dict(labels=None)))
    assert dense.predictions is None
    assert out.predictions.shape == (int(labelled.sum()),)
    assert torch.equal(out.predictions, dense.logits[labelled].argmax(-1))
    # The deferred logits equal those of a call without labels.
    want = dense.logits[labelled] if sparse else dense.logits
    torch.testing.assert_close(out.logits, want, rtol=0, atol=1e-5)


def test_padded_predictions_follow_row_major_label_order() -> None:
    model = tiny_model()
    ids = torch.randint(5, VOCAB, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    labels = torch.where((torch.rand(ids.shape) < 0.4) & mask.bool(), ids, -100)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        dense = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(out.predictions, dense[labels != -100].argmax(-1))


def test_labelled_forward_and_backward_never_build_n_by_V_logits(narrow_chunks: int) -> None:
    model = tiny_model().train()
    batch = packed_batch(rate=0.9)  # n > hidden size, so that [n, V] outgrows the [V, H] embedding
    n = int((batch["labels"] != -100).sum())
    with LargestTensors() as recorded:
        out = model(**batch)
        out.loss.backward()
    assert max(recorded.numels) < n * VOCAB
    with LargestTensors() as reading:
        assert out.logits.shape == (n, VOCAB)
    assert max(reading.numels) == n * VOCAB


def test_deferred_logits_keep_the_autocast_dtype_and_the_grad_mode() -> None:
    model = tiny_model()
    batch = packed_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert out.logits.dtype == torch.bfloat16 and out.logits.requires_grad
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.dtype == torch.float32 and not out.logits.requires_grad


def test_few_sgd_steps_match_training_on_explicit_logits(narrow_chunks: int) -> None:
    """Tiny model, four SGD steps: the fused loss against F.cross_entropy on the full logits."""
    fused = tiny_model().train()
    explicit = copy.deepcopy(fused)
    explicit.tie_weights()
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (fused, explicit)]
    losses: list[tuple[float, float]] = []
    for step in range(4):
        batch = packed_batch(seed=10 + step)
        fused_loss = fused(**batch).loss
        labels = batch.pop("labels")
        hidden = explicit.model(**batch)
        explicit_loss = F.cross_entropy(explicit.decoder(explicit.head(hidden)), labels)
        for opt, loss in zip(opts, (fused_loss, explicit_loss), strict=True):
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append((fused_loss.item(), explicit_loss.item()))
    assert losses[-1][0] < losses[0][0] - 0.1  # it trains
    for got, want in losses:
        assert math.isclose(got, want, rel_tol=0, abs_tol=1e-5)
    for (name, p), q in zip(fused.named_parameters(), explicit.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
