"""The real-text corpus from gettext catalogs (mmbert.analysis.locale_corpus): on small catalogs written here
(the .mo format by hand, so that no gettext tools are needed), and on the machine's own /usr/share/locale."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from mmbert.analysis.locale_corpus import (
    LOCALE_DIR,
    MANIFEST_FILE,
    RETRIEVE_FILE,
    build_locale_corpus,
    read_mo,
)
from mmbert.errors import DataError


def write_mo(path: Path, messages: dict[str, str], charset: str = "UTF-8") -> None:
    """A little-endian .mo file (revision 0) of ``messages`` plus the header entry, keys sorted as msgfmt
    sorts them."""
    entries = {"": f"Content-Type: text/plain; charset={charset}\n", **messages}
    keys = sorted(entries, key=lambda k: k.encode(charset))
    ids = [k.encode(charset) for k in keys]
    strs = [entries[k].encode(charset) for k in keys]
    n, start = len(keys), 28 + 16 * len(keys)
    blob, table = b"", []
    for data in [*ids, *strs]:
        table.append((len(data), start + len(blob)))
        blob += data + b"\x00"
    head = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + b"".join(struct.pack("<2I", *t) for t in table) + blob)


GREEK_WORDS = ["αρχείο", "φάκελος", "δίσκος", "χρήστης", "κωδικός", "πακέτο"]


def fake_locale(root: Path, messages: int = 300) -> Path:
    """German and Greek translations of ``messages`` sentences in two catalogs, plus what must be left out."""
    for locale, word in (("de", "Datei"), ("el", None)):
        for n, domain in enumerate(("alpha", "beta")):
            catalog = {
                f"The {domain} tool could not open file number {i} today": (
                    f"Das Werkzeug {domain} konnte {word} {i} heute nicht öffnen"
                    if word
                    else f"Το εργαλείο {domain} δεν άνοιξε {GREEK_WORDS[i % 6]} {i} σήμερα"
                )
                # Numbers unique over both catalogs: a number names one message.
                for i in range(1000 * n, 1000 * n + messages // 2)
            }
            catalog |= {
                "Could not open %s for reading": "nope %s",  # format string
                "Unknown {name} given here": "nope {name}",  # Python placeholder
                "Press <b>OK</b> to go on": "nope <b>OK</b>",  # markup
                "Quit": "Beenden",  # too short
                "This one is left untranslated here": "This one is left untranslated here",
                "Please _save the document first": "Bitte zuerst das Dokument speichern",
                "menu\x04Open the recent files list": "Liste der letzten Dateien öffnen",
                "One file was removed from disk\x00%d files were removed": "Eine Datei wurde entfernt\x00%d",
            }
            write_mo(root / locale / "LC_MESSAGES" / f"{domain}.mo", catalog)
    return root


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def test_read_mo_takes_the_singular_of_plurals_and_drops_contexts(tmp_path):
    write_mo(tmp_path / "x.mo", {"ctx\x04Open it": "Öffnen", "One\x00Many": "Eins\x00Viele"})
    assert read_mo(tmp_path / "x.mo") == {"Open it": "Öffnen", "One": "Eins"}


def test_the_corpus_is_fineweb2_layout_split_by_message_and_clean(tmp_path):
    locale = fake_locale(tmp_path / "locale")
    langs = ["eng_Latn", "deu_Latn", "ell_Grek"]
    corpus = build_locale_corpus(
        tmp_path / "out", langs, ["ell_Grek"], locale_dir=locale, min_test_messages=10, retrieve_pairs=10
    )
    out = tmp_path / "out"
    assert json.loads((out / MANIFEST_FILE).read_text())["messages"] == corpus.messages
    for lang in langs:
        train, test = (
            read_texts(out / lang / "train" / "000.jsonl"),
            read_texts(out / lang / "test" / "000.jsonl"),
        )
        assert train and test
        everything = " ".join(train + test)
        for left_out in ("%", "{name}", "<b>", "nope", "Beenden", "untranslated", "\x00", "\x04", "_save"):
            assert left_out not in everything
        # No test message is inside a training document: the split is by message, the same in every language.
        numbers = [{int(w) for doc in docs for w in doc.split() if w.isdigit()} for docs in (train, test)]
        assert numbers[0] and numbers[1] and not numbers[0] & numbers[1]
    assert corpus.messages["deu_Latn"]["test"] >= 10
    assert "Bitte zuerst das Dokument speichern" in " ".join(
        read_texts(out / "deu_Latn" / "train" / "000.jsonl")
    )

    rows = [json.loads(line) for line in (out / RETRIEVE_FILE).read_text().splitlines()]
    assert len(rows) == 10 and {r["language"] for r in rows} == {"ell_Grek"}
    greek_test = " ".join(read_texts(out / "ell_Grek" / "test" / "000.jsonl"))
    assert all(r["target"] in greek_test for r in rows)

    again = build_locale_corpus(
        tmp_path / "again", langs, ["ell_Grek"], locale_dir=locale, min_test_messages=10, retrieve_pairs=10
    )
    assert again.messages == corpus.messages
    assert (tmp_path / "again" / RETRIEVE_FILE).read_text() == (out / RETRIEVE_FILE).read_text()


def test_too_little_text_names_the_catalog_folder(tmp_path):
    locale = fake_locale(tmp_path / "locale", messages=40)
    with pytest.raises(DataError, match=r"locale/el/LC_MESSAGES: \d+ usable test messages for ell_Grek"):
        build_locale_corpus(tmp_path / "out", ["ell_Grek"], locale_dir=locale, min_test_messages=100)
    with pytest.raises(DataError, match="no gettext locale known for \\['xyz_Latn'\\]"):
        build_locale_corpus(tmp_path / "out", ["xyz_Latn"], locale_dir=locale)


@pytest.mark.skipif(
    not LOCALE_DIR.is_dir(),
    reason=f"no {LOCALE_DIR} here (the gettext catalogs of a Debian machine's packages)",
)
def test_the_machines_catalogs_give_thousands_of_real_sentences(tmp_path):
    langs = ["eng_Latn", "deu_Latn", "ell_Grek"]
    # One message a document, so that the splits compare message by message.
    corpus = build_locale_corpus(tmp_path, langs, ["ell_Grek"], messages_per_doc=1, retrieve_pairs=100)
    for lang in langs:
        assert corpus.messages[lang]["train"] > 2000 and corpus.messages[lang]["test"] > 200, corpus.messages
        train = set(read_texts(tmp_path / lang / "train" / "000.jsonl"))
        test = set(read_texts(tmp_path / lang / "test" / "000.jsonl"))
        assert not train & test
    pairs = [json.loads(line) for line in (tmp_path / RETRIEVE_FILE).read_text().splitlines()]
    assert len(pairs) == 100 and {p["target"] for p in pairs} <= test
