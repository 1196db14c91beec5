"""mmbert.encode: the packed inference path against transformers' ModernBertModel (same weights, padded, mean
pooled over the attention mask) on real multilingual sentences, invariance to how inputs are batched, the
three poolings, no [L, L] attention mask for long inputs, and every kind of bad input."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, TINY, make_model

from mmbert import encode
from mmbert.checkpoint.hf import save_hf_folder
from mmbert.data import load_tokenizer
from mmbert.downstream.toy import corpus_sentences

LANGS = ("eng_Latn", "rus_Cyrl", "cmn_Hani", "arb_Arab", "tir_Ethi", "fao_Latn", "hin_Deva", "jpn_Jpan")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(REPO / "data" / "tokenizer"))


@pytest.fixture(scope="module")
def model():
    return make_model(
        **TINY, local_attention=16
    ).eval()  # a window shorter than most inputs: local layers bite


@pytest.fixture(scope="module")
def texts() -> list[str]:
    sentences = corpus_sentences(REPO / "data" / "sample")
    # Single sentences and runs of several: 5 to ~150 tokens.
    return [" ".join(sentences[lang][i : i + n]) for lang in LANGS for i, n in ((0, 1), (3, 4), (9, 9))]


def test_mean_pooling_equals_transformers_modernbert(model, tok, texts, tmp_path) -> None:
    from transformers import AutoModel

    hf = AutoModel.from_pretrained(
        save_hf_folder(model, tmp_path / "hf", tokenizer=tok), attn_implementation="sdpa"
    )
    batch = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    framed = [
        [tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id] for t in texts
    ]
    longest = max(map(len, framed))
    ids = torch.tensor([f + [tok.pad_token_id] * (longest - len(f)) for f in framed])
    mask = torch.tensor([[1] * len(f) + [0] * (longest - len(f)) for f in framed])
    with torch.no_grad():
        hidden = hf.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    ours = encode(model, texts, tokenizer=tok, batch_tokens=256)
    assert batch["input_ids"].shape[0] == len(texts) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_results_do_not_depend_on_batching_and_keep_input_order(model, tok, texts) -> None:
    one = torch.stack([encode(model, [t], tokenizer=tok)[0] for t in texts])
    for budget in (1, 64, 16384):
        torch.testing.assert_close(
            encode(model, texts, tokenizer=tok, batch_tokens=budget), one, atol=1e-5, rtol=0
        )


def test_poolings_and_normalisation(model, tok, texts) -> None:
    states = encode(model, texts, tokenizer=tok, pooling="none")
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) + 2 for t in texts]
    assert [s.shape for s in states] == [(n, TINY["hidden_size"]) for n in lengths]
    torch.testing.assert_close(
        encode(model, texts, tokenizer=tok, pooling="cls"), torch.stack([s[0] for s in states])
    )
    torch.testing.assert_close(encode(model, texts, tokenizer=tok), torch.stack([s.mean(0) for s in states]))
    unit = encode(model, texts, tokenizer=tok, normalize=True)
    torch.testing.assert_close(unit, F.normalize(encode(model, texts, tokenizer=tok), dim=-1))
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(len(texts)))


def test_ids_are_used_as_given_and_the_mlm_model_gives_its_encoder(model, tok, texts) -> None:
    ids = [
        [tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id] for t in texts
    ]
    torch.testing.assert_close(encode(model, ids), encode(model.model, texts, tokenizer=tok))
    assert encode(model, [[5, 6, 7]]).shape == (1, TINY["hidden_size"])


def test_the_model_keeps_its_mode(tok) -> None:
    training = make_model(**TINY).train()
    encode(training, ["a"], tokenizer=tok)
    assert training.training and training.model.training


def test_long_inputs_build_no_square_attention_mask(tok, monkeypatch) -> None:
    model = make_model(**TINY, local_attention=128).eval()
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(None if attn_mask is None else tuple(attn_mask.shape))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    lengths = [8192, 6000, 3000]
    ids = [torch.randint(5, TINY["vocab_size"], (n,)) for n in lengths]
    out = encode(model, ids, batch_tokens=8192)
    assert out.shape == (3, TINY["hidden_size"]) and torch.isfinite(out).all()
    # Global layers: a key mask [n, 1, 1, L]; local layers: blocks of 64 queries x 192 keys.
    assert seen and all(shape is None or shape[-1] <= 192 or shape[-2] == 1 for shape in seen), set(seen)


def test_empty_and_short_inputs(model, tok) -> None:
    assert encode(model, [], tokenizer=tok).shape == (0, TINY["hidden_size"])
    assert encode(model, [], pooling="none") == []
    empty_text = encode(model, [""], tokenizer=tok)
    torch.testing.assert_close(empty_text, encode(model, [[tok.bos_token_id, tok.eos_token_id]]))


def test_long_inputs_are_truncated_with_one_warning_or_refused(model, tok, caplog) -> None:
    text = "word " * 100
    with caplog.at_level(logging.WARNING):
        cut = encode(model, [text, text, "short"], tokenizer=tok, max_length=16)
    assert caplog.text.count("2 of 3 inputs are longer than 16 tokens and were truncated") == 1
    framed = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"][:14], tok.eos_token_id]
    torch.testing.assert_close(cut[0], encode(model, [framed])[0])
    with pytest.raises(
        ValueError, match=r"input 0 has \d+ tokens, more than max_length=16; pass truncate=True"
    ):
        encode(model, [text], tokenizer=tok, max_length=16, truncate=False)


@pytest.mark.parametrize(
    ("inputs", "kwargs", "message"),
    [
        ("one text", {}, "not one string: wrap it in a list"),
        (["a text"], {"tokenizer": None}, r"texts need tokenizer="),
        (["a", [1, 2]], {}, "mix texts and token-id sequences"),
        ([[1, 2], []], {}, "input 1 is an empty token-id sequence"),
        ([[1, 9000]], {}, r"input 0 has token id 9000, outside the vocabulary \[0, 8192\)"),
        ([[1, -1]], {}, r"input 0 has token id -1"),
        ([[1, 2]], {"pooling": "max"}, "pooling must be one of"),
        ([[1, 2]], {"batch_tokens": 0}, "batch_tokens must be an integer >= 1"),
        ([[1, 2]], {"pooling": "none", "normalize": True}, "cannot be used with pooling='none'"),
    ],
)
def test_bad_input_is_one_line(model, tok, inputs, kwargs, message) -> None:
    kwargs = {"tokenizer": tok, **kwargs}
    with pytest.raises(ValueError, match=message) as err:
        encode(model, inputs, **kwargs)
    assert "\n" not in str(err.value)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tok) -> None:
    small = make_model(vocab_size=300)
    with pytest.raises(ValueError, match="the tokenizer has 8192 tokens but the model's vocab_size=300"):
        encode(small, ["a"], tokenizer=tok)
    with pytest.raises(TypeError, match="MmBertModel or MmBertForMaskedLM"):
        encode(torch.nn.Linear(2, 2), [[1]])


def test_half_precision_on_a_cpu_without_its_kernels_warns_once(monkeypatch, caplog) -> None:
    import mmbert.model.encode as enc

    monkeypatch.setattr(enc, "_WARNED_SLOW", set())
    monkeypatch.setattr(enc, "cpu_has_fast_kernels", lambda dtype: dtype == torch.float32)
    fp32 = make_model(**TINY).eval()
    bf16 = make_model(**TINY).eval().to(torch.bfloat16)
    with caplog.at_level(logging.WARNING):
        encode(fp32, [[1, 2, 3]])  # float32: nothing to say
        encode(fp32, [[1, 2, 3]], dtype=torch.float32)
        assert "matmul kernels" not in caplog.text
        encode(fp32, [[1, 2, 3]], dtype=torch.bfloat16)  # autocast computes in bf16
        encode(bf16, [[1, 2, 3]], dtype=torch.float32)  # no autocast for float32: bf16 weights compute
        encode(bf16, [[1, 2, 3]])
    assert (
        caplog.text.count("computing in torch.bfloat16 on a CPU without torch.bfloat16 matmul kernels") == 1
    )
    assert "model.float()" in caplog.text
    monkeypatch.setattr(enc, "cpu_has_fast_kernels", lambda dtype: True)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        encode(make_model(**TINY).eval().to(torch.float16), [[1, 2, 3]])
    assert "matmul kernels" not in caplog.text


def test_fast_kernels_agree_with_the_cpu_flags() -> None:
    """oneDNN's answer against the flags the kernel reports: bf16 kernels need AVX-512 (or AMX) on x86."""
    import platform
    from pathlib import Path

    from mmbert.model.encode import cpu_has_fast_kernels

    assert cpu_has_fast_kernels(torch.float32)
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.exists():
        pytest.skip("reads x86 flags from /proc/cpuinfo")
    flags = set(next(ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("flags")).split())
    if {"avx512_bf16", "amx_bf16"} & flags:
        assert cpu_has_fast_kernels(torch.bfloat16)
    if "avx512f" not in flags:
        assert not cpu_has_fast_kernels(torch.bfloat16)
        assert not cpu_has_fast_kernels(torch.float16)
