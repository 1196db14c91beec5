"""mmbert.hub against the local Hub, in process, with the real huggingface_hub client: a dataset repo listed in
three calls and pinned, its files read by range with every document as in the local copy whatever the faults,
retries counted by kind, permanent errors in one line naming repo and revision, tokenizers by hub name."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from hub_data import DATASET, LANGUAGES, TOKENIZER, fineweb_docs
from hub_server import HubServer, make_fineweb2_repo

from mmbert import hub
from mmbert.checkpoint.hf import load_hf_folder, save_hf_folder
from mmbert.data import HubMix, MLMDataModule, load_tokenizer
from mmbert.errors import DataError, HubError
from mmbert.hub.retry import STATS

COUNTS = {"deu": 100_000, "rus": 200_000, "jpn": 40_000, "fao": 9_000}


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBERT_HUB_BACKOFF_S", "0.05")


def documents(repo: str, lang: str) -> list[str]:
    return HubMix("m", COUNTS, tokenizer=TOKENIZER, repo=repo).train_source(lang).first_docs(10**6)


@pytest.fixture
def moved_commit(tmp_path: Path) -> Path:
    """The same configs with other documents: what the repo holds after it has moved on."""
    docs = fineweb_docs(LANGUAGES)
    for splits in docs.values():
        splits["train"] = [list(reversed(f)) for f in splits["train"]]
    return make_fineweb2_repo(tmp_path / "moved", docs)


def test_a_repo_is_listed_in_three_calls_at_a_pinned_commit(
    server: HubServer, fineweb_folder: Path, moved_commit: Path, tmp_path: Path
) -> None:
    server.page_size = 4  # the listing pages: still one logical listing
    hub.use_folder(tmp_path / "kept")
    snap = hub.snapshot(DATASET)
    assert snap.files == {
        p.relative_to(fineweb_folder).as_posix(): p.stat().st_size
        for p in fineweb_folder.rglob("*")
        if p.is_file()
    }
    assert snap.config_names() == list(LANGUAGES)
    kinds = [r.kind for r in server.requests()]
    assert kinds == ["info", *["tree"] * (len(kinds) - 2), "resolve"] and len(kinds) > 3
    assert hub.pins() == {DATASET: snap.sha}

    moved = server.add_repo("dataset", DATASET, moved_commit)
    hub.use_folder(tmp_path / "kept")  # another process of the same run: the kept snapshot, no call
    server.clear_log()
    assert hub.snapshot(DATASET).sha == snap.sha and server.requests() == []
    hub.use_folder(tmp_path / "other-run")
    assert hub.snapshot(DATASET).sha == moved


def test_range_reads_give_the_local_documents_whatever_the_faults(
    server: HubServer, fineweb_folder: Path
) -> None:
    local = {lang: documents(str(fineweb_folder), lang) for lang in COUNTS}
    assert {lang: len(d) for lang, d in local.items()} == {"deu": 350, "rus": 900, "jpn": 350, "fao": 30}
    assert {lang: documents(DATASET, lang) for lang in COUNTS} == local

    hub.use_folder(None)
    before = Counter(STATS.retries)
    server.add_fault(kind="info", nth=1, status=429, retry_after=1)
    server.add_fault(kind="resolve", path_regex=r"\.parquet$", every=2, reset_after=200)
    server.add_fault(kind="resolve", path_regex=r"\.parquet$", every=3, status=503)
    assert {lang: documents(DATASET, lang) for lang in COUNTS} == local
    retried = Counter(STATS.retries) - before
    assert retried["429"] == 1 and retried["connection"] > 0 and retried["5xx"] > 0


@pytest.mark.parametrize(
    ("setup", "revision", "message"),
    [
        (None, "0" * 40, "at revision 0000000000000000000000000000000000000000: not found"),
        ("private", None, "at revision main: not authorised: log in (`hf auth login`) or set HF_TOKEN"),
        ("gated", None, "at revision main: access refused (a gated repo: accept its conditions"),
    ],
)
def test_permanent_errors_are_one_line_naming_repo_and_revision(
    server: HubServer, setup: str | None, revision: str | None, message: str
) -> None:
    if setup:
        server.require_token(DATASET, "secret", gated=setup == "gated")
    with pytest.raises(HubError) as err:
        hub.snapshot(DATASET, revision)
    assert str(err.value).startswith(f"hub dataset {DATASET!r} at revision ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_language_the_repo_lacks_is_excluded_with_a_warning(
    server: HubServer, caplog: pytest.LogCaptureFixture
) -> None:
    mix = HubMix("m", {**COUNTS, "tir": 5_000}, tokenizer=TOKENIZER, repo=DATASET)
    dm = MLMDataModule(mix, seq_len=64, rows_per_device=2, tau=0.5, mask_ratio=0.3, val_docs_per_lang=2)
    dm.setup("fit")
    assert dm.languages == list(COUNTS) and "has no config for language 'tir'" in dm.excluded["tir"]
    assert "language 'tir' excluded from training" in caplog.text


def test_a_token_opens_a_private_repo(server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.require_token(DATASET, "secret")
    monkeypatch.setenv("HF_TOKEN", "secret")
    assert documents(DATASET, "fao")[:1]


def test_retries_end_in_one_line_after_the_last_try(
    server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMBERT_HUB_RETRIES", "3")
    server.add_fault(kind="info", status=503)
    with pytest.raises(HubError, match=r"at revision main: still failing after 3 tries \(5xx"):
        hub.snapshot(DATASET)
    assert server.count("info") == 3


def test_a_hub_mix_pins_its_commit_in_the_data_state(server: HubServer, moved_commit: Path) -> None:
    def datamodule() -> MLMDataModule:
        mix = HubMix("m", COUNTS, tokenizer=TOKENIZER, repo=DATASET)
        return MLMDataModule(mix, seq_len=64, rows_per_device=2, tau=0.5, mask_ratio=0.3, val_docs_per_lang=0)

    dm = datamodule()
    state = dm.state_dict()
    assert state["ranks"][0]["hub_commits"] == {DATASET: hub.snapshot(DATASET).sha}
    server.add_repo("dataset", DATASET, moved_commit)
    hub.use_folder(None)  # a new process, without the run folder's kept snapshot
    moved = datamodule()
    with pytest.raises(DataError, match="hub_commits was"):
        moved.load_state_dict(state)


def test_a_tokenizer_by_hub_name_is_fetched_once_and_exports(server: HubServer, tmp_path: Path) -> None:
    from helpers import make_model

    load_tokenizer.cache_clear()
    tok = load_tokenizer(TOKENIZER)
    assert tok.get_vocab() == load_tokenizer("data/tokenizer").get_vocab()
    fetched = server.count()
    load_tokenizer.cache_clear()
    load_tokenizer(TOKENIZER)
    out = save_hf_folder(make_model(vocab_size=8192), tmp_path / "hf", tokenizer=TOKENIZER)
    assert server.count() == fetched  # resolved once per process
    _, exported = load_hf_folder(out)
    assert exported.get_vocab() == tok.get_vocab()
    load_tokenizer.cache_clear()


def test_hub_names_that_do_not_exist_fail_in_one_line(server: HubServer) -> None:
    load_tokenizer.cache_clear()
    with pytest.raises(HubError, match="hub model 'jhu-clsp/no-such-model' at revision main: not found"):
        load_tokenizer("jhu-clsp/no-such-model")
    assert os.environ["HF_ENDPOINT"] == server.url


def test_a_hub_mix_takes_a_local_language_at_its_share(server: HubServer, tmp_path: Path) -> None:
    import shutil

    from helpers import REPO

    from mmbert.data.mix.added import AddedMix

    local = shutil.copytree(REPO / "data" / "sample" / "fao_Latn", tmp_path / "fao_Latn")
    base = HubMix("m", COUNTS, tokenizer=TOKENIZER, repo=DATASET)
    mix = AddedMix(base, {"fao_Latn": {"path": str(local), "share": 0.2}})  # replaces the hub's fao
    dm = MLMDataModule(mix, seq_len=128, rows_per_device=8, tau=0.3, mask_ratio=0.3, val_docs_per_lang=2)
    dm.setup("fit")
    assert dm.languages == ["deu", "rus", "jpn", "fao_Latn"] and dm.weights["fao_Latn"] == 0.2
    batches = dm.train_batches()
    while sum(dm.realised_tokens.values()) < 100_000:
        next(batches)
    assert abs(dm.realised_tokens["fao_Latn"] / sum(dm.realised_tokens.values()) - 0.2) <= 0.03
