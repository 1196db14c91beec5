"""The shipped sample corpus, its tokenizer, and the data_mix configs."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import FolderMix, HubMix, SampleMix, repo_root
from mmbert.data.counts import CACHE_NAME, CountCache, tokenizer_fingerprint
from mmbert.data.tokenizer import load_tokenizer

ROOT = repo_root()
SAMPLE = ROOT / "data" / "sample"
CONF = ROOT / "conf" / "data_mix"
REAL_MIXES = ["pretrain", "midtrain", "decay-eng", "decay-cont", "decay-all"]


def test_sample_corpus_languages_scripts_and_skew() -> None:
    mix = FolderMix("data/sample")
    langs = mix.languages
    scripts = {lang.split("_")[1] for lang in langs}
    assert len(langs) >= 24 and {"eng_Latn", "fao_Latn", "tir_Ethi"} <= set(langs)
    assert {"Latn", "Cyrl", "Arab", "Deva", "Hani", "Jpan", "Hang", "Grek", "Hebr", "Thai", "Ethi"} <= scripts
    files = [f for lang in langs for f in mix.train_files(lang)]
    assert any(f.name.endswith(".jsonl.gz") for f in files) and any(f.name.endswith(".jsonl") for f in files)
    assert all(mix.val_source(lang) is not None for lang in langs)
    record = json.loads((SAMPLE / "fao_Latn" / "train" / "000_00000.jsonl").open().readline())
    assert set(record) == {"id", "text", "language", "language_script"} and record["language"] == "fao"
    # the committed token counts are current (same tokenizer, same files) ...
    tok = load_tokenizer("data/tokenizer")
    cache = CountCache(SAMPLE)
    assert cache.path == SAMPLE / CACHE_NAME
    key = tokenizer_fingerprint(tok)
    counts = {lang: cache.get(key, lang, [str(f) for f in mix.train_files(lang)]) for lang in langs}
    assert None not in counts.values()
    # ... and the largest language has >= 20x the tokens of the smallest
    assert max(counts.values()) >= 20 * min(counts.values())  # type: ignore[type-var,operator]


def test_sample_size_on_disk_is_small() -> None:
    size = sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file())
    assert 1_000_000 < size < 3_000_000


def test_parallel_sentences_cover_every_language() -> None:
    langs = set(FolderMix("data/sample").languages)
    records = [json.loads(line) for line in (SAMPLE / "parallel.jsonl").read_text().splitlines()]
    assert len(records) >= 10 and len({r["id"] for r in records}) == len(records)
    for r in records:
        assert set(r) - {"id"} == langs and all(r[lang].strip() for lang in langs)
        assert len({r[lang] for lang in langs}) == len(langs)  # really translated


def test_sample_subsets_mirror_the_phases() -> None:
    subsets = {
        name: SampleMix(subset=name)
        for name in ["pretrain", "midtrain", "decay-eng", "decay-cont", "decay-all"]
    }
    pre, mid, full = (set(subsets[n].languages) for n in ("pretrain", "midtrain", "decay-all"))
    assert "eng_Latn" in pre and 8 <= len(pre) <= 10 and pre < mid < full and 14 <= len(mid) <= 18
    assert set(subsets["decay-cont"].languages) == set(subsets["decay-eng"].languages) == mid
    eng, cont = subsets["decay-eng"].token_counts(), subsets["decay-cont"].token_counts()
    assert eng["eng_Latn"] > cont["eng_Latn"] and all(eng[k] == cont[k] for k in cont if k != "eng_Latn")


def test_tokenizer_loads_with_autotokenizer() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ROOT / "data" / "tokenizer"))
    assert len(tok) == 8192 and tok.is_fast
    ids = {t: tok.convert_tokens_to_ids(t) for t in ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]}
    assert ids == {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.mask_token_id) == (0, 1, 2, 4)
    for text in ["Veðrið er gott í dag.", "今天天气很好。", "ሎሚ ኣየር ጽቡቕ እዩ።", "emoji 🙂 and 2024"]:
        enc = tok(text)["input_ids"]
        assert enc[0] == 2 and enc[-1] == 1 and 3 not in enc  # <bos> ... <eos>, byte fallback: no <unk>
        assert tok.decode(enc, skip_special_tokens=True) == text


def test_every_data_mix_config_instantiates_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # Hydra runs in its own directory; relative paths must not depend on it
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        sample = instantiate(compose(config_name="sample", overrides=["subset=pretrain"]))
        assert isinstance(sample, SampleMix) and sample.root == SAMPLE and len(sample.token_counts()) == 9
        folder = instantiate(
            compose(config_name="folder", overrides=[f"path={SAMPLE}", "languages=[fao_Latn]"])
        )
        assert folder.languages == ["fao_Latn"]
        mds = instantiate(compose(config_name="mds"))  # the fixture, with its committed token counts
        assert sorted(mds.languages) == ["eng_Latn", "fao_Latn"]
        cache = CountCache(mds.root)
        assert all(cache.get("mds", k, [str(s.path) for s in v]) is not None for k, v in mds.shards.items())
        real = {name: instantiate(compose(config_name=name)) for name in REAL_MIXES}
    sizes = {name: len(m.languages) for name, m in real.items()}
    assert sizes == {"pretrain": 61, "midtrain": 110, "decay-eng": 110, "decay-cont": 110, "decay-all": 1834}
    assert all(
        isinstance(m, HubMix) and "code" in m.languages and m.tokenizer == "jhu-clsp/mmBERT-small"
        for m in real.values()
    )
    pre, mid = set(real["pretrain"].languages), set(real["midtrain"].languages)
    assert pre < mid < set(real["decay-all"].languages)
    assert set(real["decay-eng"].languages) == set(real["decay-cont"].languages) == mid
    for name in ("decay-eng", "decay-cont"):
        assert set(real[name].overrides) == {"eng", "code"}
    q = {
        name: real[name].meaning.weights(real[name].token_counts(), 0.3)
        for name in ("decay-eng", "decay-cont")
    }
    assert q["decay-eng"]["eng"] > q["decay-cont"]["eng"]
    # the released pre-training counts are dominated by English; they are already sampled, so the phase's
    # own tau keeps their shares (temperature is not applied twice)
    counts = real["pretrain"].token_counts()
    assert Counter(counts).most_common(1)[0][0] == "eng"
    assert real["pretrain"].meaning.weights(counts, 0.7)["eng"] == counts["eng"] / sum(counts.values())


def inventory(lang: str) -> tuple[set[str], set[str]]:
    """(own, parallel) hand-written sentences of a language, the sample corpus's whole vocabulary of text."""
    text = ROOT / "scripts" / "sample_text"
    own = {s.strip() for s in (text / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if s.strip()}
    return own, set(json.loads((text / "parallel.json").read_text(encoding="utf-8"))[lang])


def split_sentences(doc: str, pool: set[str]) -> list[str]:
    """The pool sentences a document is made of. Sentences hold spaces and Chinese/Japanese ones are joined
    without any, so the split is a search over prefixes; AssertionError if the pool cannot make the text."""
    by_start: dict[str, list[str]] = {}
    for s in pool:
        by_start.setdefault(s[0], []).append(s)

    def rest(i: int, dead: set[int]) -> list[str] | None:
        i = len(doc) - len(doc[i:].lstrip())
        if i == len(doc):
            return []
        for s in by_start.get(doc[i], []) if i not in dead else []:
            if doc.startswith(s, i) and (tail := rest(i + len(s), dead)) is not None:
                return [s, *tail]
        dead.add(i)
        return None

    parts = rest(0, set())
    assert parts is not None, f"not made of the inventory's sentences: {doc[:80]!r}"
    return parts


def test_validation_sentences_never_occur_in_training() -> None:
    """Validation must measure unseen text: every language holds out sentences for its test/ documents, and
    no such sentence (nor any parallel one) is inside a train/ document, matched as a substring."""
    mix = FolderMix("data/sample")
    for lang in mix.languages:
        own, parallel = inventory(lang)
        source = mix.val_source(lang)
        assert source is not None
        held = {s for doc in source.first_docs(10**6) for s in split_sentences(str(doc), own | parallel)}
        assert len(held) >= 5 and not held & parallel, lang
        train = "\0".join(str(doc) for doc in mix.train_source(lang).first_docs(10**6))
        assert [s for s in held if s in train] == [], lang
        # the rest of the language's sentences do train (the split withholds nothing else)
        assert all(s in train for s in (own - held) | parallel), lang
