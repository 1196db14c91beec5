"""A small real-text corpus from the gettext catalogs of a Debian machine (``/usr/share/locale``).

Each ``<locale>/LC_MESSAGES/<domain>.mo`` maps English messages of free software (``msgid``) to their
translations: real sentences, aligned with English, in the languages the machine's packages are translated
into. :func:`build_locale_corpus` writes them in FineWeb2 layout (``<out>/<lang>/{train,test}/000.jsonl``,
field ``text``; English from the msgids) plus a parallel file for the retrieval task (``retrieve.jsonl``:
``source`` English, ``target`` its translation, ``language``), read by ``evaluate.py task=retrieve``.

- A document is ``messages_per_doc`` consecutive messages of one catalog, joined by spaces.
- Messages go to train or test by a seeded hash of their normalised msgid, the same for every language, so
  neither a test sentence nor its translation into another language is in any training document; a training
  message whose text equals a test message's (two msgids, one translation) is dropped.
- Format strings, markup, untranslated, very short and very long messages are left out (:func:`usable`).
"""

from __future__ import annotations

import json
import random
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmbert.errors import DataError

LOCALE_DIR = Path("/usr/share/locale")
ENGLISH = "eng_Latn"
# The project's languages (those of the sample tokenizer, data/sample/languages.json) and their gettext
# locales; English comes from the msgids of the other languages' catalogs.
LOCALES: dict[str, str] = {
    "arb_Arab": "ar",
    "bul_Cyrl": "bg",
    "cmn_Hani": "zh_CN",
    "deu_Latn": "de",
    "ell_Grek": "el",
    "fao_Latn": "fo",
    "fas_Arab": "fa",
    "fin_Latn": "fi",
    "fra_Latn": "fr",
    "heb_Hebr": "he",
    "hin_Deva": "hi",
    "ind_Latn": "id",
    "ita_Latn": "it",
    "jpn_Jpan": "ja",
    "kor_Hang": "ko",
    "nld_Latn": "nl",
    "pol_Latn": "pl",
    "por_Latn": "pt",
    "rus_Cyrl": "ru",
    "spa_Latn": "es",
    "swe_Latn": "sv",
    "tha_Thai": "th",
    "tir_Ethi": "ti",
    "tur_Latn": "tr",
    "ukr_Cyrl": "uk",
    "vie_Latn": "vi",
}
RETRIEVE_FILE = "retrieve.jsonl"
MANIFEST_FILE = "corpus.json"

_MO_MAGIC = {b"\xde\x12\x04\x95": "<", b"\x95\x04\x12\xde": ">"}
# printf (%s, %1$d, %'.2f), Python ({name}, %(name)s), shell (${x}, $1) placeholders and markup: code, not
# sentences, and the tokenizer would learn them as such.
_CODE = re.compile(r"%[-+ #'0-9.*$hlqjztL]*[a-zA-Z%]|%\(\w+\)|\{[\w.:]*\}|\$\{?\w|<[/a-zA-Z][^>]*>|\\|\t")
_MNEMONIC = re.compile(r"(?<!\w)_(?=\w)")  # GTK's "_Open": the underscore marks the access key
_SPACE = re.compile(r"\s+")
_KEY_DROP = re.compile(r"[\W_]+")


def read_mo(path: Path) -> dict[str, str]:
    """``{msgid: translation}`` of a compiled gettext catalog: the singular form of plural entries, message
    context (``ctx\\x04msgid``) removed, the header left out. Decoded with the catalog's charset; a catalog
    whose bytes do not decode as it says (some old ones) is skipped as empty."""
    data = path.read_bytes()
    order = _MO_MAGIC.get(data[:4])
    if order is None or len(data) < 28:
        raise DataError(f"{path}: not a gettext .mo file")
    n, ids_at, strs_at = struct.unpack(order + "3I", data[8:20])

    def entry(table: int, i: int) -> bytes:
        length, offset = struct.unpack(order + "2I", data[table + 8 * i : table + 8 * i + 8])
        return data[offset : offset + length]

    pairs = [(entry(ids_at, i), entry(strs_at, i)) for i in range(n)]
    header = dict(pairs).get(b"", b"").decode("ascii", "replace")
    charset = re.search(r"charset=([\w-]+)", header)
    try:
        encoding = charset.group(1) if charset else "utf-8"
        decoded = [(k.decode(encoding), v.decode(encoding)) for k, v in pairs if k]
    except (LookupError, UnicodeDecodeError):
        return {}
    return {k.split("\x04")[-1].split("\x00")[0]: v.split("\x00")[0] for k, v in decoded}


def clean(message: str) -> str:
    """One line: access-key underscores removed, whitespace runs (line breaks too) as single spaces."""
    return _SPACE.sub(" ", _MNEMONIC.sub("", message)).strip()


def usable(english: str, translation: str, min_words: int = 3, max_chars: int = 300) -> bool:
    """Whether a cleaned message pair is a sentence worth training on: no placeholders or markup, at least
    ``min_words`` English words, at most ``max_chars`` characters (long ones are mostly ``--help`` texts), and
    actually translated."""
    return (
        len(english.split()) >= min_words
        and len(english) <= max_chars
        and 0 < len(translation) <= 2 * max_chars
        and not _CODE.search(english)
        and not _CODE.search(translation)
        and translation != english
    )


def split_key(msgid: str) -> str:
    """What decides a message's split: near-identical msgids ("Open file", "_Open File...") share it."""
    return _KEY_DROP.sub(" ", msgid.casefold()).strip()


def is_test(msgid: str, seed: int, test_fraction: float) -> bool:
    return zlib.crc32(f"{seed}\x00{split_key(msgid)}".encode()) % 10_000 < test_fraction * 10_000


def catalogs(locale_dir: Path, locale: str) -> list[Path]:
    return sorted((locale_dir / locale / "LC_MESSAGES").glob("*.mo"))


def locale_messages(locale_dir: Path, locale: str) -> dict[str, dict[str, str]]:
    """``{domain: {msgid: translation}}`` of one locale's usable messages (cleaned), catalogs and messages in
    file order."""
    out = {}
    for path in catalogs(locale_dir, locale):
        pairs = ((clean(k), clean(v)) for k, v in read_mo(path).items())
        out[path.stem] = {k: v for k, v in pairs if usable(k, v)}
    return out


@dataclass
class LanguageText:
    """One language's messages by split, each split a list of catalogs' message lists (in order)."""

    train: list[list[str]] = field(default_factory=list)
    test: list[list[str]] = field(default_factory=list)

    def count(self, split: str) -> int:
        return sum(map(len, getattr(self, split)))


def _split_language(
    by_domain: Mapping[str, Mapping[str, str]], side: str, seed: int, test_fraction: float
) -> tuple[LanguageText, dict[str, str]]:
    """One language's deduplicated messages by split (``side``: ``msgid`` for English, else the translation),
    and its test messages by msgid."""
    seen: set[str] = set()
    kept: dict[str, list[tuple[str, str]]] = {}
    for domain, messages in by_domain.items():
        for msgid, translation in messages.items():
            text = msgid if side == "msgid" else translation
            if text not in seen:
                seen.add(text)
                kept.setdefault(domain, []).append((msgid, text))
    test_by_id = {m: t for pairs in kept.values() for m, t in pairs if is_test(m, seed, test_fraction)}
    test_texts = set(test_by_id.values())
    out = LanguageText()
    for pairs in kept.values():
        out.test.append([t for m, t in pairs if m in test_by_id])
        out.train.append([t for m, t in pairs if m not in test_by_id and t not in test_texts])
    return out, test_by_id


def documents(catalog_messages: Iterable[list[str]], messages_per_doc: int) -> list[str]:
    return [
        " ".join(messages[i : i + messages_per_doc])
        for messages in catalog_messages
        for i in range(0, len(messages), messages_per_doc)
    ]


def _write_jsonl(path: Path, rows: Iterable[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def retrieval_pairs(
    test_ids: Mapping[str, Mapping[str, str]], languages: Sequence[str], pairs: int, seed: int
) -> list[dict[str, str]]:
    """``pairs`` test messages translated into every one of ``languages`` (the same English sources in each
    pool, so the pools compare), with sources and targets unique within a language's pool."""
    common = sorted(set.intersection(*(set(test_ids[lang]) for lang in languages)))
    random.Random(seed).shuffle(common)
    chosen: list[str] = []
    targets: dict[str, set[str]] = {lang: set() for lang in languages}
    for msgid in common:
        if len(chosen) == pairs:
            break
        if all(test_ids[lang][msgid] not in targets[lang] for lang in languages):
            chosen.append(msgid)
            for lang in languages:
                targets[lang].add(test_ids[lang][msgid])
    return [
        {"source": msgid, "target": test_ids[lang][msgid], "language": lang}
        for lang in languages
        for msgid in chosen
    ]


@dataclass
class LocaleCorpus:
    """What :func:`build_locale_corpus` wrote (also ``<out>/corpus.json``)."""

    root: str
    locale_dir: str
    seed: int
    messages: dict[str, dict[str, int]]  # language -> {"train": n, "test": n}
    documents: dict[str, dict[str, int]]
    retrieve_pairs: int


def build_locale_corpus(
    out: str | Path,
    languages: Sequence[str],
    retrieve_languages: Sequence[str] = (),
    locale_dir: str | Path = LOCALE_DIR,
    seed: int = 0,
    test_fraction: float = 0.1,
    messages_per_doc: int = 8,
    min_test_messages: int = 100,
    retrieve_pairs: int = 200,
) -> LocaleCorpus:
    """Write ``languages``' messages (``eng_Latn`` from the msgids of the others' catalogs) as a FineWeb2-layout
    corpus in ``out``, and ``retrieve_pairs`` English -> language test pairs for each of
    ``retrieve_languages`` to ``out/retrieve.jsonl``. A language with fewer than ``min_test_messages`` test
    messages (or fewer retrieval pairs than asked) is a DataError naming its catalog folder."""
    out, locale_dir = Path(out), Path(locale_dir)
    unknown = [lang for lang in [*languages, *retrieve_languages] if lang != ENGLISH and lang not in LOCALES]
    if unknown:
        raise DataError(f"no gettext locale known for {unknown}; known: {', '.join(sorted(LOCALES))}")
    translated = [lang for lang in dict.fromkeys([*languages, *retrieve_languages]) if lang != ENGLISH]
    by_lang = {lang: locale_messages(locale_dir, LOCALES[lang]) for lang in translated}
    if ENGLISH in languages:
        english: dict[str, dict[str, str]] = {}
        for by_domain in by_lang.values():
            for domain, messages in by_domain.items():
                english.setdefault(domain, {}).update((m, m) for m in messages)
        by_lang[ENGLISH] = english

    texts, test_ids = {}, {}
    for lang, by_domain in by_lang.items():
        side = "msgid" if lang == ENGLISH else "translation"
        texts[lang], test_ids[lang] = _split_language(by_domain, side, seed, test_fraction)
        if texts[lang].count("test") < min_test_messages:
            # English comes from the msgids of the other languages' catalogs
            folder = locale_dir / LOCALES.get(lang, "*") / "LC_MESSAGES"
            raise DataError(
                f"{folder}: {texts[lang].count('test')} usable test messages for {lang} (of "
                f"{texts[lang].count('train') + texts[lang].count('test')} in all), fewer than "
                f"min_test_messages={min_test_messages}: install more translated packages or pick another language"
            )

    doc_counts = {}
    for lang in languages:
        counts = doc_counts[lang] = {}
        for split in ("train", "test"):
            docs = documents(getattr(texts[lang], split), messages_per_doc)
            _write_jsonl(out / lang / split / "000.jsonl", ({"text": d} for d in docs))
            counts[split] = len(docs)

    rows = []
    targets = [lang for lang in retrieve_languages if lang != ENGLISH]
    if targets:
        rows = retrieval_pairs(test_ids, targets, retrieve_pairs, seed)
        found = len(rows) // len(targets)
        if found < retrieve_pairs:
            raise DataError(
                f"{locale_dir}: only {found} test messages are translated into all of {targets}, fewer than "
                f"retrieve_pairs={retrieve_pairs}"
            )
        _write_jsonl(out / RETRIEVE_FILE, rows)

    corpus = LocaleCorpus(
        root=str(out),
        locale_dir=str(locale_dir),
        seed=seed,
        messages={lang: {s: texts[lang].count(s) for s in ("train", "test")} for lang in languages},
        documents=doc_counts,
        retrieve_pairs=len(rows) // len(targets) if targets else 0,
    )
    (out / MANIFEST_FILE).write_text(json.dumps(asdict(corpus), indent=1) + "\n")
    return corpus
