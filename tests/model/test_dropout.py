"""Attention-output dropout (after Wo) versus attention-probability dropout, on every backend."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import VOCAB, tiny_config

import mmbert.model.modeling as modeling
from mmbert.model import MmBertForMaskedLM

# Documents longer than the local window (|i - j| <= 4), one past the blocked-attention threshold (8 windows).
LENGTHS = [45, 7, 30, 1, 33, 12, 70]


def make_model(seed: int = 0, **overrides: object) -> MmBertForMaskedLM:
    torch.manual_seed(seed)
    return MmBertForMaskedLM(tiny_config(**overrides))


def packed_batch(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (sum(LENGTHS),), generator=gen)
    labels = torch.where(torch.rand(ids.shape, generator=gen) < 0.3, ids, -100)
    cu = F.pad(torch.tensor(LENGTHS).cumsum(0), (1, 0)).to(torch.int32)
    return ids.to(device), cu.to(device), max(LENGTHS), labels.to(device)


def attention_and_wo_outputs(model: MmBertForMaskedLM) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each layer's attention-block output and its Wo output, from one forward."""
    attn_outs: list[torch.Tensor] = []
    wo_outs: list[torch.Tensor] = []
    hooks = []
    for layer in model.model.layers:
        hooks.append(layer.attn.register_forward_hook(lambda m, i, o: attn_outs.append(o)))
        hooks.append(layer.attn.Wo.register_forward_hook(lambda m, i, o: wo_outs.append(o)))
    ids, cu, max_len, _ = packed_batch()
    with torch.no_grad():
        model(ids, cu, max_len)
    for hook in hooks:
        hook.remove()
    return attn_outs, wo_outs


@pytest.mark.parametrize("p", [-0.1, 1.0, "0.1", True])
def test_attention_output_dropout_must_be_a_probability(p: object) -> None:
    with pytest.raises(ValueError, match="attention_output_dropout"):
        make_model(attention_output_dropout=p)


def test_output_dropout_is_random_in_training_and_off_in_eval() -> None:
    model = make_model(attention_output_dropout=0.1)
    ids, cu, max_len, _ = packed_batch()
    with torch.no_grad():
        a, b = model.train()(ids, cu, max_len).logits, model(ids, cu, max_len).logits
        c, d = model.eval()(ids, cu, max_len).logits, model(ids, cu, max_len).logits
    assert not torch.equal(a, b)
    assert torch.equal(c, d)


def test_zero_dropout_training_is_bit_identical_to_eval_and_draws_no_random_numbers() -> None:
    model = make_model()
    ids, cu, max_len, labels = packed_batch()
    results = []
    for training in (False, True):
        model.train(training).zero_grad(set_to_none=True)
        rng = torch.get_rng_state()
        out = model(ids, cu, max_len, labels=labels)
        out.loss.backward()
        assert torch.equal(torch.get_rng_state(), rng)
        results.append((out.logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (logits_eval, grads_eval), (logits_train, grads_train) = results
    assert torch.equal(logits_train, logits_eval)
    assert all(torch.equal(g, h) for g, h in zip(grads_train, grads_eval, strict=True))


def test_output_dropout_zeroes_wo_outputs_at_its_rate_and_rescales_the_rest() -> None:
    p = 0.1
    attn_outs, wo_outs = attention_and_wo_outputs(make_model(attention_output_dropout=p).train())
    attn, wo = torch.cat(attn_outs), torch.cat(wo_outs)
    kept = attn != 0
    assert bool((wo != 0).all())
    # 4 layers x 198 tokens x 32 features: the dropped fraction's std is ~0.002.
    assert (~kept).float().mean().item() == pytest.approx(p, abs=0.01)
    torch.testing.assert_close(attn[kept], wo[kept] / (1 - p), rtol=1e-6, atol=0)


def test_probability_dropout_leaves_the_output_projection_undropped() -> None:
    attn_outs, wo_outs = attention_and_wo_outputs(make_model(attention_dropout=0.3).train())
    assert all(torch.equal(a, w) for a, w in zip(attn_outs, wo_outs, strict=True))


@pytest.mark.parametrize("backend", ["auto", "sdpa"])
def test_packed_training_step_with_output_dropout_runs_on_cpu_backends(backend: str) -> None:
    model = make_model(attention_output_dropout=0.1, attn_backend=backend).train()
    ids, cu, max_len, labels = packed_batch()
    out = model(ids, cu, max_len, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("overrides", "probability_dropout"),
    [(dict(attention_output_dropout=0.1), False), (dict(attention_dropout=0.1), True)],
)
def test_only_probability_dropout_reaches_backend_selection(
    monkeypatch: pytest.MonkeyPatch, overrides: dict, probability_dropout: bool
) -> None:
    """torch's varlen kernel has no probability dropout; the output dropout must not rule it (or any) out."""
    seen: list[bool] = []

    def spy(
        requested: str, device: torch.device, dtype: torch.dtype, *, dropout: bool, inference: bool
    ) -> str:
        seen.append(dropout)
        return "sdpa"

    monkeypatch.setattr(modeling, "select_attn_backend", spy)
    ids, cu, max_len, _ = packed_batch()
    make_model(**overrides).train()(ids, cu, max_len)
    assert seen == [probability_dropout]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["varlen", "flash"])
def test_gpu_output_dropout_trains_on_kernel_backends(backend: str) -> None:
    if backend == "flash":
        pytest.importorskip("flash_attn")
    model = make_model(attention_output_dropout=0.1, attn_backend=backend).cuda().train()
    ids, cu, max_len, labels = packed_batch("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        first = model(ids, cu, max_len, labels=labels)
        second = model(ids, cu, max_len, labels=labels)
    first.loss.backward()
    assert torch.isfinite(first.loss)
    assert not torch.equal(first.logits, second.logits)
