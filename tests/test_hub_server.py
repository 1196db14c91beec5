"""The Hub look-alike (tests/hub_server.py) as the real clients see it: huggingface_hub, datasets and transformers
over HTTP, in-process through ``hub_endpoint`` and once in a subprocess through ``hub_env``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hub_server import (
    HubServer,
    hub_endpoint,
    hub_env,
    make_fineweb2_repo,
    make_model_repo,
    serve_hub,
)
from huggingface_hub import HfApi, get_session, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

DOCS = {
    "rus_Cyrl": {
        "train": [[f"документ {i}" for i in range(20)], ["второй файл", "ещё один"]],
        "test": [["тест"]],
    },
    "fra_Latn": {"train": [["bonjour", "le monde"]]},
}
BLOB = bytes(range(256)) * 4  # 1 kB of every byte value, so a wrong offset shows


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    return make_model_repo(root, dict(files))


def _file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def _transport_error() -> type[Exception]:
    # The base of connection errors in whichever HTTP library the session is built on (httpx2 here): a cut may
    # surface as an incomplete read or as a reset depending on the OS and timing.
    library = importlib.import_module(type(get_session()).__module__.split(".")[0])
    return library.TransportError


def test_main_moves_and_an_old_sha_keeps_serving_its_files(tmp_path):
    folder = _folder(tmp_path / "repo", {"notes.txt": b"first", "keep.txt": b"same"})
    with serve_hub(tmp_path / "cache") as server:
        first = server.add_repo("dataset", "org/ds", folder)
        (folder / "notes.txt").write_bytes(b"second")  # the snapshot taken above must not see this
        assert HfApi().dataset_info("org/ds", revision="main").sha == first
        assert Path(hf_hub_download("org/ds", "notes.txt", repo_type="dataset")).read_bytes() == b"first"

        second = server.add_repo("dataset", "org/ds", folder)
        info = HfApi().dataset_info("org/ds", revision="main")
        assert second != first and len(second) == 40 and info.sha == second
        assert [s.rfilename for s in info.siblings] == ["keep.txt", "notes.txt"]
        assert (info.private, info.gated, info.disabled) == (False, False, False)
        old = hf_hub_download("org/ds", "notes.txt", repo_type="dataset", revision=first)
        new = hf_hub_download("org/ds", "notes.txt", repo_type="dataset", revision=second)
        assert (Path(old).read_bytes(), Path(new).read_bytes()) == (b"first", b"second")
        assert HfApi().dataset_info("org/ds", revision=first).sha == first


def test_tree_listing_follows_pages(tmp_path):
    folder = make_fineweb2_repo(tmp_path / "fw", DOCS)
    with serve_hub(tmp_path / "cache", page_size=2) as server:
        sha = server.add_repo("dataset", "org/fw", folder)
        entries = list(HfApi().list_repo_tree("org/fw", repo_type="dataset", recursive=True, revision=sha))
        files = {e.path: e.size for e in entries if hasattr(e, "size")}
        assert files == _file_sizes(folder)
        directories = {e.path for e in entries if not hasattr(e, "size")}
        assert directories == {"data", "data/rus_Cyrl", "data/rus_Cyrl/train", "data/rus_Cyrl/test"} | {
            "data/fra_Latn",
            "data/fra_Latn/train",
        }
        assert all(e.lfs is not None for e in entries if e.path.endswith(".parquet"))
        tree = server.requests("tree", "org/fw")
        assert len(tree) == -(-len(entries) // 2) and all(r.status == 200 for r in tree)
        assert [r.query.get("cursor") for r in tree[:3]] == [None, "2", "4"]


def test_paths_info_and_files_metadata(tmp_path):
    folder = make_fineweb2_repo(tmp_path / "fw", DOCS)
    with serve_hub(tmp_path / "cache") as server:
        server.add_repo("dataset", "org/fw", folder)
        infos = HfApi().get_paths_info(
            "org/fw", ["README.md", "data/rus_Cyrl", "nope.txt"], repo_type="dataset"
        )
        assert [(i.path, type(i).__name__) for i in infos] == [
            ("README.md", "RepoFile"),
            ("data/rus_Cyrl", "RepoFolder"),
        ]
        info = HfApi().dataset_info("org/fw", files_metadata=True)
        parquet = next(s for s in info.siblings if s.rfilename.endswith(".parquet"))
        assert (
            parquet.lfs is not None
            and parquet.lfs.size == parquet.size == (folder / parquet.rfilename).stat().st_size
        )
        assert [c["config_name"] for c in info.card_data["configs"]] == ["rus_Cyrl", "fra_Latn"]


def test_model_repo_downloads(tmp_path):
    files = {
        "config.json": b'{"model_type": "bert"}',
        "tokenizer.json": b"{}",
        "tokenizer_config.json": b"{}",
    }
    with serve_hub(tmp_path / "cache") as server:
        sha = server.add_repo("model", "org/model", _folder(tmp_path / "model", files))
        assert Path(hf_hub_download("org/model", "config.json")).read_bytes() == files["config.json"]
        snapshot = Path(snapshot_download("org/model"))
        assert snapshot.name == sha
        assert {p.name: p.read_bytes() for p in snapshot.iterdir()} == files
        assert server.count("other") == 0


def test_auto_tokenizer_from_the_hub(tmp_path):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"])
    tokenizer.train_from_iterator(["hello world", "a tiny test corpus"], trainer)
    saved = tmp_path / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        saved
    )
    files: dict[str, Path | bytes] = {p.name: p for p in saved.iterdir()}
    files["config.json"] = b'{"model_type": "bert"}'
    with serve_hub(tmp_path / "cache") as server:
        server.add_repo("model", "org/tok", make_model_repo(tmp_path / "repo", files))
        loaded = AutoTokenizer.from_pretrained("org/tok")
        assert loaded("hello world")["input_ids"] == tokenizer.encode("hello world").ids
        assert server.count("other") == 0 and server.count("resolve") > 0


def test_fineweb2_streaming_and_configs(tmp_path):
    import datasets

    folder = make_fineweb2_repo(tmp_path / "fw", DOCS, row_group_size=4)
    with serve_hub(tmp_path / "cache") as server:
        first = server.add_repo("dataset", "org/fw", folder)
        assert datasets.get_dataset_config_names("org/fw") == ["rus_Cyrl", "fra_Latn"]
        rows = list(datasets.load_dataset("org/fw", "rus_Cyrl", split="train", streaming=True))
        assert [r["text"] for r in rows] == [t for texts in DOCS["rus_Cyrl"]["train"] for t in texts]
        assert {r["language"] for r in rows} == {"rus"} and len({r["id"] for r in rows}) == len(rows)
        builder = datasets.load_dataset_builder("org/fw", "fra_Latn")
        assert builder.config.name == "fra_Latn"

        changed = make_fineweb2_repo(tmp_path / "fw2", {"rus_Cyrl": {"train": [["changed"]]}})
        server.add_repo("dataset", "org/fw", changed)
        latest = datasets.load_dataset("org/fw", "rus_Cyrl", split="train", streaming=True)
        assert [r["text"] for r in latest] == ["changed"]
        pinned = datasets.load_dataset("org/fw", "rus_Cyrl", split="train", streaming=True, revision=first)
        assert [r["text"] for r in pinned] == [t for texts in DOCS["rus_Cyrl"]["train"] for t in texts]
        assert server.requests("other") == []
        assert {r.kind for r in server.requests()} <= {"info", "tree", "paths-info", "resolve"}


def test_missing_repo_revision_and_file_raise_the_hub_errors(tmp_path):
    with serve_hub(tmp_path / "cache") as server:
        server.add_repo("dataset", "org/ds", _folder(tmp_path / "ds", {"a.txt": b"a"}))
        with pytest.raises(RepositoryNotFoundError):
            HfApi().dataset_info("org/missing")
        with pytest.raises(RepositoryNotFoundError):
            HfApi().model_info("org/ds")  # a dataset is not a model
        with pytest.raises(RevisionNotFoundError):
            HfApi().dataset_info("org/ds", revision="v9")
        with pytest.raises(RevisionNotFoundError):
            HfApi().dataset_info("org/ds", revision="refs/convert/parquet")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("org/missing", "a.txt", repo_type="dataset")
        with pytest.raises(RevisionNotFoundError):
            hf_hub_download("org/ds", "a.txt", repo_type="dataset", revision="0" * 40)
        with pytest.raises(EntryNotFoundError):
            hf_hub_download("org/ds", "b.txt", repo_type="dataset")
        with pytest.raises(EntryNotFoundError):
            list(HfApi().list_repo_tree("org/ds", "no/such/dir", repo_type="dataset"))
        assert [r.status for r in server.requests()] == [404] * 8
        unknown = get_session().get(f"{server.url}/api/whoami-v2")
        assert unknown.status_code == 404 and server.requests("other")[0].path == "/api/whoami-v2"


def test_token_makes_a_repo_private_or_gated(tmp_path):
    with serve_hub(tmp_path / "cache") as server:
        server.add_repo("dataset", "org/private", _folder(tmp_path / "p", {"a.txt": b"secret"}))
        server.require_token("org/private", "hf_right")
        with pytest.raises(RepositoryNotFoundError) as private:
            HfApi().dataset_info("org/private")
        assert private.value.response.status_code == 401 and not isinstance(private.value, GatedRepoError)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("org/private", "a.txt", repo_type="dataset", token="hf_wrong")
        assert HfApi(token="hf_right").dataset_info("org/private").private is True
        path = hf_hub_download("org/private", "a.txt", repo_type="dataset", token="hf_right")
        assert Path(path).read_bytes() == b"secret"

        server.require_token("org/private", "hf_right", gated=True)
        for token in (None, "hf_wrong"):
            with pytest.raises(GatedRepoError) as gated:
                HfApi(token=token).dataset_info("org/private")
            assert gated.value.response.status_code == 403
        assert HfApi(token="hf_right").dataset_info("org/private").gated == "auto"


def test_429_with_retry_after_reaches_the_session_as_sent(tmp_path):
    with serve_hub(tmp_path / "cache") as server:
        server.add_repo("model", "org/m", _folder(tmp_path / "m", {"w.bin": BLOB}))
        rule = server.add_fault(kind="resolve", status=429, retry_after=7, nth=1)
        url = f"{server.url}/org/m/resolve/main/w.bin"
        limited = get_session().get(url)
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
        assert get_session().get(url).content == BLOB
        assert rule.fired == 1 and [r.status for r in server.requests()] == [429, 200]


def test_delay_holds_the_answer_back(tmp_path):
    with serve_hub(tmp_path / "cache") as server:
        server.add_repo("model", "org/m", _folder(tmp_path / "m", {"a.txt": b"a"}))
        server.add_fault(kind="info", delay=0.3)
        start = time.perf_counter()
        assert HfApi().model_info("org/m").id == "org/m"
        assert time.perf_counter() - start >= 0.3


def test_reset_after_cuts_the_body(tmp_path):
    with serve_hub(tmp_path / "cache") as server:
        server.add_repo("model", "org/m", _folder(tmp_path / "m", {"w.bin": BLOB}))
        rule = server.add_fault(kind="resolve", reset_after=100, times=1)
        with pytest.raises(_transport_error()):
            get_session().get(f"{server.url}/org/m/resolve/main/w.bin").read()
        cut = server.requests("resolve")[-1]
        assert (cut.status, cut.bytes_sent, rule.fired) == (200, 100, 1)

        # hf_hub_download gets over a cut by downloading again; its HEAD does not use up the rule.
        server.clear_log()
        server.add_fault(kind="resolve", reset_after=100, nth=1)
        assert Path(hf_hub_download("org/m", "w.bin")).read_bytes() == BLOB
        gets = [r.bytes_sent for r in server.requests("resolve") if r.method == "GET"]
        assert gets[0] == 100 and sum(gets[1:]) >= len(BLOB) - 100


def test_nth_every_and_times_pick_exactly_those_requests(tmp_path):
    with serve_hub(tmp_path / "cache") as server:
        server.add_repo("model", "org/m", _folder(tmp_path / "m", {"a.txt": b"a", "b.txt": b"b"}))
        nth = server.add_fault(path_regex=r"/a\.txt$", status=503, nth=3)
        every = server.add_fault(path_regex=r"/b\.txt$", status=500, every=3, times=2)
        server.add_fault(kind="info", status=502)  # another kind: must not touch resolve requests

        def statuses(name: str) -> list[int]:
            return [
                get_session().get(f"{server.url}/org/m/resolve/main/{name}").status_code for _ in range(10)
            ]

        assert statuses("a.txt") == [200, 200, 503, *[200] * 7]
        assert statuses("b.txt") == [200, 200, 500, 200, 200, 500, *[200] * 4]
        assert (nth.fired, nth.matched, every.fired, every.matched) == (1, 10, 2, 10)
        server.clear_faults()
        assert get_session().get(f"{server.url}/api/models/org/m").status_code == 200


def test_ranges_and_headers(tmp_path):
    big = bytes(range(256)) * 60  # over the LFS threshold
    with serve_hub(tmp_path / "cache") as server:
        sha = server.add_repo("model", "org/m", _folder(tmp_path / "m", {"w.bin": BLOB, "big.bin": big}))
        url = f"{server.url}/org/m/resolve/main/w.bin"
        session = get_session()
        for header, status, expected in [
            ("bytes=10-19", 206, BLOB[10:20]),
            ("bytes=-5", 206, BLOB[-5:]),
            ("bytes=1000-", 206, BLOB[1000:]),
            ("bytes=1020-5000", 206, BLOB[1020:]),
        ]:
            response = session.get(url, headers={"Range": header})
            assert (response.status_code, response.content) == (status, expected), header
        assert (
            session.get(url, headers={"Range": "bytes=10-19"}).headers["Content-Range"] == "bytes 10-19/1024"
        )
        assert session.get(url, headers={"Range": "bytes=2000-"}).status_code == 416
        assert server.requests()[0].range == "bytes=10-19"

        head = session.head(url)
        assert head.headers["Content-Length"] == "1024" and head.headers["Accept-Ranges"] == "bytes"
        assert head.headers["X-Repo-Commit"] == sha and head.headers["ETag"].startswith('"')
        assert "X-Linked-Size" not in head.headers
        linked = session.head(f"{server.url}/org/m/resolve/{sha}/big.bin")
        assert linked.headers["X-Linked-Size"] == str(len(big)) and linked.headers[
            "X-Linked-Etag"
        ].startswith('"')


def test_subprocess_reaches_the_server_through_hub_env(tmp_path):
    with HubServer() as server:
        sha = server.add_repo("dataset", "org/ds", _folder(tmp_path / "ds", {"a.txt": b"a"}))
        code = "from huggingface_hub import HfApi; print(HfApi().dataset_info('org/ds').sha)"
        env = hub_env(server.url, tmp_path / "cache")
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == sha
        assert "HF_HUB_OFFLINE" not in env and env["HF_HUB_CACHE"].startswith(str(tmp_path))


def test_hub_endpoint_restores_the_clients(tmp_path):
    import datasets.config
    from huggingface_hub import constants

    before = (
        constants.ENDPOINT,
        constants.HF_HUB_CACHE,
        datasets.config.HF_ENDPOINT,
        os.environ.get("HF_ENDPOINT"),
    )
    with hub_endpoint("http://127.0.0.1:9", tmp_path):
        assert (
            constants.ENDPOINT
            == datasets.config.HF_ENDPOINT
            == os.environ["HF_ENDPOINT"]
            == "http://127.0.0.1:9"
        )
        assert constants.HF_HUB_CACHE.startswith(str(tmp_path)) and not constants.HF_HUB_OFFLINE
    after = (
        constants.ENDPOINT,
        constants.HF_HUB_CACHE,
        datasets.config.HF_ENDPOINT,
        os.environ.get("HF_ENDPOINT"),
    )
    assert after == before
