"""mmbert.analysis: MLM evaluation, fill-mask and sentence embeddings on a tiny random model."""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd
import pytest
import torch

from mmbert import encode
from mmbert.analysis import (
    MaskedSentence,
    build_eval_set,
    choose_word,
    crosslingual_similarity,
    embed_parallel,
    evaluate_checkpoints,
    evaluate_model,
    fill_mask,
    find_checkpoints,
    improvement_kept,
    mask_word,
    matching_languages,
    one_per_script,
    pick_masked_sentences,
    read_parallel,
    read_test_texts,
    summarise,
)
from mmbert.analysis.synthetic import tiny_model, train_tokenizer, write_corpus, write_synthetic_recipe
from mmbert.checkpoint.hf import save_hf_folder
from mmbert.data.masking import IGNORE_INDEX


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer(corpus)


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(len(tok), seed=0)


def _single_token(tok, word: str) -> int:
    ids = tok(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{word!r} is not a single token: {ids}"
    return ids[0]


def _biased(tok, word: str, seed: int = 0):
    """A tiny model that predicts ``word`` everywhere with probability ~1."""
    m = tiny_model(len(tok), seed)
    with torch.no_grad():
        m.decoder.bias[_single_token(tok, word)] = 100.0
    return m


def test_eval_set_is_deterministic_per_language(tok):
    texts = {
        "eng_Latn": [" ".join(["water house sun tree"] * 50)],
        "fra_Latn": [" ".join(["eau maison"] * 50)],
    }
    a = build_eval_set(texts, tok, seed=3)
    b = build_eval_set({"eng_Latn": texts["eng_Latn"]}, tok, seed=3)
    c = build_eval_set(texts, tok, seed=4)
    assert torch.equal(a.inputs["eng_Latn"][0], b.inputs["eng_Latn"][0])
    assert torch.equal(a.labels["eng_Latn"][0], b.labels["eng_Latn"][0])
    assert not torch.equal(a.labels["eng_Latn"][0], c.labels["eng_Latn"][0])

    labels = a.labels["eng_Latn"][0]
    assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX  # <bos>, <eos> are never masked
    assert len(labels) == 200 + 2
    assert 0.08 < (labels != IGNORE_INDEX).float().mean() < 0.22
    masked = a.inputs["eng_Latn"][0] == tok.mask_token_id
    assert masked.any() and (labels[masked] != IGNORE_INDEX).all()


def test_eval_set_truncates_to_max_len(tok):
    s = build_eval_set({"eng_Latn": [" ".join(["water"] * 100)]}, tok, max_len=16)
    ids = s.inputs["eng_Latn"][0]
    assert len(ids) == 16 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


def test_perfect_predictor_scores_accuracy_one(tok):
    texts = {
        "eng_Latn": [" ".join(["water"] * 60), " ".join(["water"] * 20)],
        "fra_Latn": [" ".join(["eau"] * 40)],
    }
    result = evaluate_model(_biased(tok, "water"), build_eval_set(texts, tok), progress=False)
    assert result.loc["eng_Latn", "accuracy"] == 1.0
    assert result.loc["eng_Latn", "loss"] < 1e-6
    assert result.loc["fra_Latn", "accuracy"] == 0.0
    assert result.loc["fra_Latn", "loss"] > 50
    assert result.loc["eng_Latn", "masked_tokens"] > 0


def test_evaluation_does_not_depend_on_batching(tok, model, corpus):
    eval_set = build_eval_set(read_test_texts(corpus, ["eng_Latn", "cmn_Hani"]), tok)
    one = evaluate_model(model, eval_set, batch_size=1, progress=False)
    many = evaluate_model(model, eval_set, batch_size=16, progress=False)
    pd.testing.assert_frame_equal(one, many, rtol=1e-5)
    assert one["loss"].between(np.log(len(tok)) - 1, np.log(len(tok)) + 1).all()  # random model: ~uniform


def test_evaluate_checkpoints_uses_the_same_masks_for_every_checkpoint(tmp_path, tok, corpus):
    save_hf_folder(_biased(tok, "water"), tmp_path / "pretrain" / "hf", tokenizer=tok)
    save_hf_folder(tiny_model(len(tok), seed=1), tmp_path / "merges" / "ties", tokenizer=tok)
    (tmp_path / "pretrain" / "csv").mkdir()
    texts = read_test_texts(corpus, ["eng_Latn", "rus_Cyrl"], max_docs=4)
    result = evaluate_checkpoints(find_checkpoints(tmp_path), texts, progress=False)

    assert list(result.index) == ["pretrain", "merges/ties"]
    assert set(result.columns.get_level_values(0)) == {"loss", "accuracy", "masked_tokens"}
    assert list(result["loss"].columns) == ["eng_Latn", "rus_Cyrl"]
    counts = result["masked_tokens"]
    assert (counts.loc["pretrain"] == counts.loc["merges/ties"]).all() and (counts > 0).all().all()
    # The always-"water" model gets exactly the masked "water"s right, on the same masks as a direct build.
    labels = torch.cat(build_eval_set(texts, tok).labels["eng_Latn"])
    labels = labels[labels != IGNORE_INDEX]
    expected = float((labels == _single_token(tok, "water")).float().mean())
    assert 0 < expected < 1
    assert result.loc["pretrain", ("accuracy", "eng_Latn")] == pytest.approx(expected)
    assert result.loc["pretrain", ("masked_tokens", "eng_Latn")] == len(labels)
    assert result.loc["pretrain", ("accuracy", "rus_Cyrl")] == 0


def test_evaluate_checkpoints_rejects_mixed_vocabularies(tmp_path, tok, corpus):
    other = train_tokenizer(corpus, vocab_size=300)
    save_hf_folder(tiny_model(len(tok), 0), tmp_path / "a", tokenizer=tok)
    save_hf_folder(tiny_model(len(other), 0), tmp_path / "b", tokenizer=other)
    with pytest.raises(ValueError, match="vocabulary"):
        evaluate_checkpoints(
            {"a": tmp_path / "a", "b": tmp_path / "b"}, {"eng_Latn": ["water"]}, progress=False
        )


def test_improvement_kept():
    loss = pd.DataFrame(
        {"new": [4.0, 2.0, 3.0, 5.0], "old": [1.0, 1.0, 1.0, 1.0]},
        index=["midtrain", "decay-all", "merges/ties", "merges/ema"],
    )
    kept = improvement_kept(loss, "midtrain", "decay-all")
    assert kept["new"].tolist() == [0.0, 1.0, 0.5, -0.5]
    assert kept["old"].isna().all()  # decay-all did not improve: nothing to keep


@pytest.mark.parametrize(
    ("sentence", "word"),
    [
        ("The quick brown fox, jumps over 1234 dogs.", "jumps"),
        ("शहर कुत्ता सड़क पेड़ घर।", "सड़क"),
        ("これは日本語の文です。", "本語"),
        ("狗水月亮太阳书。", "月亮"),
    ],
)
def test_choose_word(sentence, word):
    start, end = choose_word(sentence)
    assert sentence[start:end] == word


def test_choose_word_keeps_combining_marks_with_their_letter():
    sentence = "ข้าวเหนียวมะม่วงเป็นขนมที่อร่อยมาก"
    start, end = choose_word(sentence)
    assert end - start >= 2
    assert not unicodedata.category(sentence[start]).startswith("M")
    assert end == len(sentence) or not unicodedata.category(sentence[end]).startswith("M")


def test_choose_word_needs_a_word():
    assert choose_word("a b 12345 c") is None


def test_pick_masked_sentences_splits_sentences_and_skips_repeats():
    texts = {"tir_Ethi": ["ሓብተይ ኣብ ዩኒቨርስቲ ሕክምና ትመሃር። ሓብተይ ኣብ ዩኒቨርስቲ ሕክምና ትመሃር። መቐለ ዓባይ ከተማ እያ።"]}
    picked = pick_masked_sentences(texts, per_language=5, min_chars=5)
    assert [s.text for s in picked] == ["ሓብተይ ኣብ ዩኒቨርስቲ ሕክምና ትመሃር።", "መቐለ ዓባይ ከተማ እያ።"]


def test_pick_masked_sentences(corpus):
    picked = pick_masked_sentences(
        read_test_texts(corpus, ["eng_Latn", "cmn_Hani"], max_docs=2), per_language=3
    )
    assert [s.language for s in picked] == ["eng_Latn"] * 3 + ["cmn_Hani"] * 3
    for s in picked:
        assert s.word in s.text and "\n" not in s.text and s.masked_text().count("[MASK]") == 1


def test_mask_word_masks_exactly_the_word(tok):
    sentence = MaskedSentence.of_word("fra_Latn", "le chien mange du pain.", "chien")
    ids, positions, targets, start, end = mask_word(tok, sentence)
    assert sentence.text[start:end] == "chien"
    body = tok(sentence.text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == len(body) + 2
    assert (ids[positions] == tok.mask_token_id).all()
    assert (ids == tok.mask_token_id).sum() == len(positions)
    assert tok.decode(targets).strip() == "chien"
    with pytest.raises(ValueError):
        MaskedSentence.of_word("fra_Latn", "le chien", "chat")


def test_mask_word_reports_the_characters_its_tokens_cover(tok):
    # The synthetic tokenizer has "太阳" as one token in this sentence: masking "阳书" masks "太" too.
    sentence = MaskedSentence.of_word("cmn_Hani", "狗水太阳书。", "阳书")
    masked = mask_word(tok, sentence)
    assert tok.convert_ids_to_tokens(masked.targets.tolist()) == ["太阳", "书"]
    assert sentence.text[masked.start : masked.end] == "太阳书"


def test_fill_mask_reports_the_prediction(tok):
    sentences = [
        MaskedSentence.of_word("eng_Latn", "dog water house.", "water"),
        MaskedSentence.of_word("rus_Cyrl", "дом вода дом.", "вода"),
    ]
    df = fill_mask(_biased(tok, "water"), tok, sentences, top_k=3)
    assert df["language"].tolist() == ["eng_Latn", "rus_Cyrl"]
    assert df["script"].tolist() == ["Latn", "Cyrl"]
    assert df["masked"].tolist()[0] == "dog [MASK] house."
    assert df["exact"].tolist() == [True, False]
    assert df.loc[0, "target_logprob"] > -1e-3 and df.loc[1, "target_logprob"] < -50
    assert [len(k) for k in df["top_k"]] == [3, 3]
    assert df.loc[0, "top_k"][0][0] == "water" and df.loc[0, "top_k"][0][1] == pytest.approx(1.0)
    assert df.loc[1, "prediction"].startswith("water")


def test_mean_pooling_ignores_padding(tok, model):
    texts = ["water", "dog water house tree sun moon river bread child road city book"]
    batched = encode(model, texts, tokenizer=tok, batch_tokens=8)
    alone = torch.cat([encode(model, [t], tokenizer=tok) for t in texts])
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)
    ids = torch.tensor(
        [[tok.bos_token_id, *tok("water", add_special_tokens=False)["input_ids"], tok.eos_token_id]]
    )
    with torch.no_grad():
        expected = model.model(ids, attention_mask=torch.ones_like(ids)).mean(1)
    torch.testing.assert_close(batched[:1], expected, rtol=1e-4, atol=1e-5)


def test_identical_sentences_have_similarity_one(tok, model, corpus):
    parallel = read_parallel(corpus / "parallel.jsonl")
    same = pd.DataFrame({"eng_Latn": parallel["eng_Latn"], "copy": parallel["eng_Latn"]})
    same.loc[same.index[0], "copy"] = None  # a sentence without translation is left out of the pair
    result = crosslingual_similarity(embed_parallel(model, tok, same))
    assert result.translation.loc["eng_Latn", "copy"] == pytest.approx(1.0)
    assert result.retrieval.loc["eng_Latn", "copy"] == 1.0
    assert result.pairs.loc["eng_Latn", "copy"] == len(parallel) - 1
    assert result.pairs.loc["eng_Latn", "eng_Latn"] == len(parallel)
    assert result.other.loc["eng_Latn", "copy"] < 1.0


def test_crosslingual_similarity_of_crafted_embeddings():
    ids = ["a", "b", "c"]
    embedded = {
        "x": pd.DataFrame(np.eye(3), index=ids),
        "y": pd.DataFrame([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], index=ids),  # b and c swapped
        "z": pd.DataFrame(np.ones((3, 3)), index=ids),  # every sentence the same vector
    }
    r = crosslingual_similarity(embedded)
    assert r.translation.loc["x", "y"] == pytest.approx(1 / 3)
    assert r.retrieval.loc["x", "y"] == pytest.approx(1 / 3)
    assert r.other.loc["x", "y"] == pytest.approx(2 / 6)
    assert r.translation.loc["z", "z"] == pytest.approx(1.0)
    assert r.retrieval.loc["z", "z"] == 0.0  # ties are not retrievals
    assert np.isnan(r.gap.loc["x", "x"]) and r.gap.loc["x", "y"] == pytest.approx(1 / 3 - 2 / 6)
    summary = summarise({"ckpt": r})
    # Pairs (x,y), (y,x), (x,z), (z,x), (y,z), (z,y): translations 1/3, 1/3 and four of 1/sqrt(3).
    assert summary.loc["ckpt", "translation"] == pytest.approx((2 / 3 + 4 / np.sqrt(3)) / 6)
    assert summary.loc["ckpt", "gap"] == pytest.approx(
        summary.loc["ckpt", "translation"] - summary.loc["ckpt", "other"]
    )


def test_one_per_script():
    langs = ["rus_Cyrl", "eng_Latn", "fra_Latn", "ukr_Cyrl", "cmn_Hani", "code"]
    assert one_per_script(langs) == ["cmn_Hani", "code", "eng_Latn", "rus_Cyrl"]
    assert one_per_script(langs, per_script=2) == [
        "cmn_Hani",
        "code",
        "eng_Latn",
        "fra_Latn",
        "rus_Cyrl",
        "ukr_Cyrl",
    ]


def test_matching_languages():
    available = ["ell_Grek", "eng_Latn", "hin_Deva", "srp_Cyrl", "srp_Latn"]
    assert matching_languages(available, ["hin_Deva", "srp", "xyz"]) == ["hin_Deva", "srp_Cyrl", "srp_Latn"]


def test_synthetic_recipe_is_discoverable_and_loadable(tmp_path):
    corpus, root = write_synthetic_recipe(tmp_path)
    checkpoints = find_checkpoints(root)
    assert list(checkpoints) == [
        "pretrain",
        "midtrain",
        "decay-eng",
        "decay-cont",
        "decay-all",
        "merges/ties",
        "merges/ema",
    ]
    texts = read_test_texts(corpus, max_docs=1)
    assert len(texts) == 8 and all(len(docs) == 1 for docs in texts.values())
    result = evaluate_checkpoints(dict(list(checkpoints.items())[:2]), texts, progress=False)
    assert result["loss"].notna().all().all()
