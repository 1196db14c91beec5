"""Language folder names -> ISO 639-3 code + ISO 15924 script (FineWeb2 style, e.g. ``rus_Cyrl``)."""

from __future__ import annotations

import re

from mmbert.errors import DataError

# Two-letter codes people actually name folders with; FineWeb2's individual-language codes where the
# ISO 639-3 macrolanguage differs (Arabic -> arb, Chinese -> cmn, Persian -> fas as FineWeb2 names it).
_ISO1: dict[str, str] = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "bg": "bul_Cyrl", "bn": "ben_Beng",
    "ca": "cat_Latn", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek",
    "en": "eng_Latn", "es": "spa_Latn", "et": "ekk_Latn", "fa": "fas_Arab", "fi": "fin_Latn",
    "fo": "fao_Latn", "fr": "fra_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn",
    "hu": "hun_Latn", "id": "ind_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan",
    "ka": "kat_Geor", "ko": "kor_Hang", "lt": "lit_Latn", "lv": "lvs_Latn", "nl": "nld_Latn",
    "no": "nob_Latn", "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl",
    "sk": "slk_Latn", "sl": "slv_Latn", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml",
    "th": "tha_Thai", "ti": "tir_Ethi", "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab",
    "vi": "vie_Latn", "zh": "cmn_Hani",
}  # fmt: skip

_FOLDER = re.compile(r"^(?P<lang>[A-Za-z]{2,3})(?:[_-](?P<script>[A-Za-z]{4}))?$")
_SCRIPT = re.compile(r"[a-z]{2,3}_([A-Z][a-z]{3})")


def normalize_language(name: str) -> str | None:
    """``rus_Cyrl``/``RUS-cyrl`` -> ``rus_Cyrl``; ``ru`` -> ``rus_Cyrl``; ``rus`` -> ``rus``; else None.

    A bare 3-letter code keeps no script (the script of most of the 1800 FineWeb2 languages is not knowable
    without the data); ``code`` (the code source of the mixes) is kept as is.
    """
    if name == "code":
        return name
    m = _FOLDER.match(name)
    if m is None:
        return None
    lang, script = m["lang"].lower(), m["script"]
    if script is not None:
        return f"{lang}_{script.capitalize()}"
    if len(lang) == 2:
        if lang not in _ISO1:
            raise DataError(f"unknown 2-letter language code {name!r}: name it {{iso639_3}}_{{Script}}")
        return _ISO1[lang]
    return lang


def iso639_3(language: str) -> str:
    """``rus_Cyrl`` -> ``rus``."""
    return language.split("_", 1)[0]


def language_script(language: str) -> str:
    """``rus_Cyrl`` -> ``Cyrl``; a code without a script -> ``?``."""
    match = _SCRIPT.fullmatch(language)
    return match.group(1) if match else "?"
