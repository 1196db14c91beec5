"""MmBertConfig validation and MmBertForMaskedLM behaviour on CPU (tiny configs)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import VOCAB, make_model, tiny_config

from mmbert.model import MaskedLMOutput, MmBertConfig, MmBertForMaskedLM, MmBertModel


def packed(docs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    lengths = torch.tensor([d.numel() for d in docs])
    cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    return torch.cat(docs), cu, int(lengths.max())


def padded(docs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(d.numel() for d in docs)
    ids = torch.zeros(len(docs), L, dtype=torch.long)
    mask = torch.zeros(len(docs), L, dtype=torch.long)
    for i, d in enumerate(docs):
        ids[i, : d.numel()], mask[i, : d.numel()] = d, 1
    return ids, mask


def random_docs(lengths: list[int], seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(5, VOCAB, (n,), generator=gen) for n in lengths]


def random_labels(ids: torch.Tensor, rate: float = 0.3, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(ids.shape, generator=gen) < rate, ids, -100)


# Lengths cover the band-mask path (<= 32 = 8 windows) and the blocked path (> 32), in several buckets.
LENGTHS = [45, 7, 30, 1, 33, 12, 70]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(hidden_size=30), "num_attention_heads"),
        (dict(local_attention=7), "local_attention"),
        (dict(attn_backend="triton"), "attn_backend"),
        (dict(mask_token_id=VOCAB), "mask_token_id"),
        (dict(attention_dropout=1.0), "attention_dropout"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(num_hidden_layers=True), "num_hidden_layers"),
        (dict(global_rope_theta=-1.0), "global_rope_theta"),
        (dict(hidden_size=6, num_attention_heads=2), "RoPE"),
        (dict(sparse_prediction="yes"), "sparse_prediction"),
    ],
)
def test_config_validation_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_state_dict_names_match_transformers_modernbert() -> None:
    model = make_model()
    names = list(model.state_dict())
    assert names[:2] == ["model.embeddings.tok_embeddings.weight", "model.embeddings.norm.weight"]
    assert "model.layers.0.attn_norm.weight" not in names
    layer1 = {
        "model.layers.1.attn_norm.weight",
        "model.layers.1.attn.Wqkv.weight",
        "model.layers.1.attn.Wo.weight",
        "model.layers.1.mlp_norm.weight",
        "model.layers.1.mlp.Wi.weight",
        "model.layers.1.mlp.Wo.weight",
    }
    assert layer1 <= set(names)
    assert names[-5:] == [
        "model.final_norm.weight",
        "head.dense.weight",
        "head.norm.weight",
        "decoder.weight",
        "decoder.bias",
    ]
    assert not any("rotary" in n or "inv_freq" in n for n in names)
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    assert model.model.layers[1].attn.Wqkv.weight.shape == (96, 32)
    assert model.model.layers[1].mlp.Wi.weight.shape == (96, 32)


def test_init_statistics_follow_the_recipe() -> None:
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=20000, hidden_size=128, intermediate_size=256, num_attention_heads=4)
    model = MmBertForMaskedLM(cfg)
    # A normal truncated at +-2 std keeps this fraction of its std.
    kept = math.sqrt(1 - 2 * 2 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2)))
    std_in, std_out = 0.02, 0.02 / math.sqrt(2 * cfg.num_hidden_layers)
    families = {
        "model.embeddings.tok_embeddings.weight": std_in,
        "attn.Wqkv.weight": std_in,
        "mlp.Wi.weight": std_in,
        "attn.Wo.weight": std_out,
        "mlp.Wo.weight": std_out,
        "head.dense.weight": std_out,
    }
    params = dict(model.named_parameters())
    for suffix, std in families.items():
        values = torch.cat([p.detach().flatten() for n, p in params.items() if n.endswith(suffix)])
        assert values.std().item() == pytest.approx(kept * std, rel=0.05), suffix
        assert values.abs().max().item() <= 2 * std + 1e-9, suffix
        assert values.abs().max().item() > 1.9 * std, suffix
    for name, p in params.items():
        if name.endswith("norm.weight"):
            assert torch.equal(p, torch.ones_like(p)), name
    assert torch.equal(model.decoder.bias, torch.zeros(cfg.vocab_size))


def test_packed_and_padded_forward_agree() -> None:
    model = make_model()
    docs = random_docs(LENGTHS)
    ids_T, cu, max_len = packed(docs)
    ids_BL, mask_BL = padded(docs)
    with torch.no_grad():
        out_T = model(input_ids=ids_T, cu_seqlens=cu, max_seqlen=max_len)
        out_BL = model(input_ids=ids_BL, attention_mask=mask_BL)
        hidden_bare = model.model(input_ids=ids_BL, attention_mask=mask_BL)
    valid = mask_BL.bool()
    assert isinstance(out_BL, MaskedLMOutput)
    assert out_BL.logits.shape == (len(docs), max_len, VOCAB)
    torch.testing.assert_close(out_BL.logits[valid], out_T.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_BL.last_hidden_state[valid], out_T.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(hidden_bare, out_BL.last_hidden_state, rtol=0, atol=0)
    assert out_BL.last_hidden_state[~valid].abs().max() == 0


def test_padded_labels_give_sparse_logits_in_label_order() -> None:
    model = make_model()
    docs = random_docs(LENGTHS)
    ids_BL, mask_BL = padded(docs)
    labels_BL = torch.where(mask_BL.bool(), random_labels(ids_BL), -100)
    with torch.no_grad():
        out_BL = model(input_ids=ids_BL, attention_mask=mask_BL, labels=labels_BL)
        dense = model(input_ids=ids_BL, attention_mask=mask_BL).logits
    labelled = labels_BL != -100
    assert out_BL.logits.shape == (int(labelled.sum()), VOCAB)
    torch.testing.assert_close(out_BL.logits, dense[labelled], rtol=0, atol=1e-5)
    expected = F.cross_entropy(dense[labelled], labels_BL[labelled])
    torch.testing.assert_close(out_BL.loss, expected, rtol=0, atol=1e-5)


def test_changing_one_document_never_changes_another() -> None:
    model = make_model()
    docs = random_docs([40, 25, 9])
    changed_tokens = [docs[0], torch.randint(5, VOCAB, (25,)), docs[2]]
    changed_length = [docs[0], torch.randint(5, VOCAB, (60,)), docs[2]]
    with torch.no_grad():
        base = model(*packed(docs)[:2]).last_hidden_state
        for other in (changed_tokens, changed_length):
            out = model(*packed(other)[:2]).last_hidden_state
            torch.testing.assert_close(out[:40], base[:40], rtol=0, atol=1e-6)
            torch.testing.assert_close(out[-9:], base[-9:], rtol=0, atol=1e-6)
        changed = model(*packed(changed_tokens)[:2]).last_hidden_state
    assert not torch.allclose(changed[40:65], base[40:65], atol=1e-3)


def test_positions_restart_in_every_document() -> None:
    model = make_model()
    doc = random_docs([20])[0]
    with torch.no_grad():
        alone = model(*packed([doc])[:2]).last_hidden_state
        after_other = model(*packed([random_docs([13], seed=5)[0], doc])[:2]).last_hidden_state[13:]
    torch.testing.assert_close(after_other, alone, rtol=0, atol=1e-6)


def test_sparse_and_dense_prediction_give_the_same_loss_and_gradients() -> None:
    docs = random_docs(LENGTHS)
    ids_T, cu, max_len = packed(docs)
    labels_T = random_labels(ids_T)
    grads, losses = [], []
    for sparse in (True, False):
        model = make_model(sparse_prediction=sparse)
        out = model(input_ids=ids_T, cu_seqlens=cu, max_seqlen=max_len, labels=labels_T)
        assert out.logits.shape[0] == (int((labels_T != -100).sum()) if sparse else ids_T.numel())
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-6)
    for name, g in grads[0].items():
        assert g.layout == torch.strided, name
        torch.testing.assert_close(g, grads[1][name], rtol=1e-5, atol=1e-7, msg=name)


def test_training_gradients_match_plain_autograd() -> None:
    """The fused decoder + cross entropy and the sparse embedding gradient equal the textbook computation."""
    model = make_model()
    ids_T, cu, max_len = packed(random_docs(LENGTHS))
    labels_T = random_labels(ids_T)
    model(input_ids=ids_T, cu_seqlens=cu, max_seqlen=max_len, labels=labels_T).loss.backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    hidden = model.model(input_ids=ids_T, cu_seqlens=cu, max_seqlen=max_len)
    F.cross_entropy(model.decoder(model.head(hidden)), labels_T).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(fused[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_no_labelled_position_gives_zero_loss_and_zero_gradient() -> None:
    model = make_model()
    ids_T, cu, _ = packed(random_docs([12, 9]))
    out = model(input_ids=ids_T, cu_seqlens=cu, labels=torch.full_like(ids_T, -100))
    assert out.logits.shape == (0, VOCAB)
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.parameters())


def test_set_rope_theta_updates_config_and_outputs() -> None:
    model = make_model()
    ids_T, cu, _ = packed(random_docs([40]))
    with torch.no_grad():
        before = model(ids_T, cu).logits
        model.set_rope_theta(160000.0, 160000.0)
        after = model(ids_T, cu).logits
    assert (model.config.global_rope_theta, model.config.local_rope_theta) == (160000.0, 160000.0)
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match="local_rope_theta"):
        model.set_rope_theta(1e4, 0.0)


def test_dropout_is_off_by_default_and_active_when_set() -> None:
    ids_T, cu, _ = packed(random_docs([30, 20]))
    for p, differs in ((0.0, False), (0.3, True)):
        model = make_model(
            embedding_dropout=p, attention_dropout=p, attention_output_dropout=p, mlp_dropout=p
        ).train()
        with torch.no_grad():
            a, b = model(ids_T, cu).logits, model(ids_T, cu).logits
        assert (not torch.equal(a, b)) is differs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(cu_seqlens=torch.tensor([0, 5, 12])), "int32"),
        (dict(cu_seqlens=torch.tensor([1, 5, 12], dtype=torch.int32)), "start at 0"),
        (dict(cu_seqlens=torch.tensor([0, 5, 11], dtype=torch.int32)), "len\\(input_ids\\)=12"),
        (dict(cu_seqlens=torch.tensor([0, 7, 5, 12], dtype=torch.int32)), "non-decreasing"),
        (dict(), "cu_seqlens"),
        (
            dict(cu_seqlens=torch.tensor([0, 12], dtype=torch.int32), labels=torch.full((12,), VOCAB)),
            "vocab_size",
        ),
        (
            dict(
                cu_seqlens=torch.tensor([0, 12], dtype=torch.int32), labels=torch.zeros(11, dtype=torch.long)
            ),
            "shape",
        ),
    ],
)
def test_bad_packed_inputs_fail_early(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_model()(input_ids=torch.randint(5, VOCAB, (12,)), **kwargs)


def test_bad_padded_inputs_fail_early() -> None:
    model = make_model()
    ids_BL, mask_BL = padded(random_docs([10, 6]))
    labels_BL = ids_BL.clone()  # labelled padding
    with pytest.raises(ValueError, match="-100 wherever attention_mask is 0"):
        model(input_ids=ids_BL, attention_mask=mask_BL, labels=labels_BL)
    holes = mask_BL.clone()
    holes[0, 3] = 0
    with pytest.raises(ValueError, match="contiguous"):
        model(input_ids=ids_BL, attention_mask=holes)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(input_ids=ids_BL, attention_mask=mask_BL[:, :5])
    with pytest.raises(ValueError, match="cu_seqlens is for packed"):
        model(input_ids=ids_BL, cu_seqlens=torch.tensor([0, 10], dtype=torch.int32))


def test_left_padding_equals_right_padding() -> None:
    model = make_model()
    docs = random_docs([10, 6])
    right_ids, right_mask = padded(docs)
    left_ids, left_mask = right_ids.clone(), right_mask.clone()
    left_ids[1] = torch.cat([torch.zeros(4, dtype=torch.long), docs[1]])
    left_mask[1] = torch.tensor([0] * 4 + [1] * 6)
    with torch.no_grad():
        right = model(input_ids=right_ids, attention_mask=right_mask).last_hidden_state
        left = model(input_ids=left_ids, attention_mask=left_mask).last_hidden_state
    torch.testing.assert_close(left[1, 4:], right[1, :6], rtol=0, atol=1e-6)


def test_config_can_come_as_a_mapping_such_as_a_hydra_dictconfig() -> None:
    from omegaconf import OmegaConf

    fields = tiny_config().to_dict()
    structured = OmegaConf.structured(tiny_config())
    for config in (fields, OmegaConf.create({"_target_": "mmbert.model.MmBertConfig", **fields}), structured):
        assert MmBertForMaskedLM(config).config == tiny_config()
    with pytest.raises(ValueError, match="hidden_sise"):
        MmBertConfig.coerce(fields | {"hidden_sise": 3})


def test_bare_encoder_is_initialised_on_its_own() -> None:
    torch.manual_seed(0)
    encoder = MmBertModel(tiny_config(vocab_size=5000))
    emb = encoder.embeddings.tok_embeddings.weight
    assert torch.isfinite(emb).all() and emb.abs().max() <= 0.04
    assert emb.std().item() == pytest.approx(0.0176, rel=0.05)
    with torch.no_grad():
        hidden = encoder(*packed(random_docs([9, 4]))[:2])
    assert hidden.shape == (13, 32) and torch.isfinite(hidden).all()


def test_bf16_autocast_training_step_tracks_fp32() -> None:
    """The autocast branches of the fused loss and RoPE (the GPU training path) on CPU."""
    ids_T, cu, max_len = packed(random_docs(LENGTHS))
    labels_T = random_labels(ids_T)
    results = []
    for autocast in (False, True):
        model = make_model()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids_T, cu_seqlens=cu, max_seqlen=max_len, labels=labels_T)
        out.loss.backward()
        assert out.loss.dtype == torch.float32
        assert out.logits.dtype == (torch.bfloat16 if autocast else torch.float32)
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())
        results.append(
            (out.loss.detach(), model.model.layers[1].attn.Wqkv.weight.grad, model.decoder.weight.grad)
        )
    (loss32, wqkv32, dec32), (loss16, wqkv16, dec16) = results
    assert abs(loss16.item() - loss32.item()) < 0.02
    for g16, g32 in ((wqkv16, wqkv32), (dec16, dec32)):
        cosine = F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cosine > 0.99
