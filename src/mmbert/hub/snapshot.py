"""What a Hub repo holds at one commit, asked for once per run and kept in the run folder.

A :class:`RepoSnapshot` is the commit sha of the asked revision, every file with its size, and the dataset
card's ``configs`` (which files make which config and split). Fetching one costs the same few calls whatever
a mix takes from the repo: the revision's info (its sha), the recursive file listing at that sha (a page per
1000 files) and the README. Per-language listings, ``datasets``' builder resolution and its per-file info
calls, which grow with the languages and repeat in every rank and worker, are not made at all.

:class:`SnapshotStore` keeps snapshots in a folder (a run's ``hub/``), under a file lock, so the ranks of a
job and a resumed run read the very files, at the very commit, that the first process listed, even if the
repo has changed since. A local folder laid out like the repo (a mirror) is read the same way, without the
network.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmbert.errors import HubError
from mmbert.hub.retry import retrying

README = "README.md"
DEFAULT_CONFIG = "default"
# Files a config without card patterns is made of (as datasets' automatic layout finds data files).
DATA_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".txt")
_SPLIT_WORDS = {"test": ("test", "eval"), "validation": ("validation", "valid", "dev", "val")}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A datasets-style glob (``*`` within a path segment, ``**`` across them) as a full-match regex."""
    out = []
    for part in re.split(r"(\*\*/?|\*|\?)", pattern.lstrip("/")):
        if part.startswith("**"):
            out.append("(?:.*/)?" if part.endswith("/") else ".*")
        elif part == "*":
            out.append("[^/]*")
        elif part == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def _card_configs(text: str, where: str) -> dict[str, dict[str, list[str]]] | None:
    """``{config: {split: [patterns]}}`` from a dataset card's YAML front matter; None without ``configs``."""
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except (yaml.YAMLError, IndexError) as e:
        raise HubError(f"{where}: unreadable YAML header in {README} ({e})") from e
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not configs:
        return None
    out: dict[str, dict[str, list[str]]] = {}
    for entry in configs:
        files = entry.get("data_files", [])
        if isinstance(files, str | list) and not (
            isinstance(files, list) and files and isinstance(files[0], dict)
        ):
            splits = {"train": [files] if isinstance(files, str) else list(files)}
        else:
            splits = {}
            for item in files:
                paths = item["path"]
                splits.setdefault(item.get("split", "train"), []).extend(
                    [paths] if isinstance(paths, str) else paths
                )
        out[str(entry.get("config_name", DEFAULT_CONFIG))] = splits
    return out


def _auto_split(path: str) -> str:
    words = set(re.split(r"[/_.\-]", path.lower()))
    for split, names in _SPLIT_WORDS.items():
        if words & set(names):
            return split
    return "train"


@dataclass(frozen=True)
class RepoSnapshot:
    """``repo`` (a hub dataset id, or a local mirror folder) as it was at ``sha`` (None: local)."""

    repo: str
    revision: str | None
    sha: str | None
    files: dict[str, int]  # path in the repo -> size in bytes
    configs: dict[str, dict[str, list[str]]] | None  # card configs: config -> split -> patterns
    local: bool = False
    _matched: dict[tuple[str, str], list[str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"hub dataset {self.repo!r}" + (f" at {self.sha[:12]}" if self.sha else "")

    def config_names(self) -> list[str]:
        return list(self.configs) if self.configs is not None else [DEFAULT_CONFIG]

    def data_files(self, config: str | None, split: str) -> list[str]:
        """The files of ``config``'s ``split`` in sorted order ([] when the config or split does not exist)."""
        config = config or DEFAULT_CONFIG
        key = (config, split)
        if key not in self._matched:
            if self.configs is None:
                found = [p for p in self.files if p.endswith(DATA_SUFFIXES) and _auto_split(p) == split]
                found = found if config == DEFAULT_CONFIG else []
            else:
                regexes = [_pattern_regex(p) for p in self.configs.get(config, {}).get(split, [])]
                found = [p for p in self.files if any(r.fullmatch(p) for r in regexes)]
            self._matched[key] = sorted(found)
        return self._matched[key]

    def url(self, path: str) -> str:
        if self.local:
            return str(Path(self.repo) / path)
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo, path, repo_type="dataset", revision=self.sha)

    def to_json(self) -> dict[str, Any]:
        return {"repo": self.repo, "revision": self.revision, "sha": self.sha, "files": self.files,
                "configs": self.configs, "local": self.local}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoSnapshot:
        return cls(data["repo"], data["revision"], data["sha"], dict(data["files"]), data["configs"],
                   bool(data.get("local", False)))  # fmt: skip


def local_snapshot(folder: Path) -> RepoSnapshot:
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }
    card = folder / README
    configs = _card_configs(card.read_text(encoding="utf-8"), str(folder)) if card.is_file() else None
    return RepoSnapshot(str(folder), None, None, files, configs, local=True)


def fetch_snapshot(repo: str, revision: str | None = None) -> RepoSnapshot:
    """Three kinds of call whatever the repo's size: the revision's sha, the listing at it, its README."""
    from huggingface_hub import HfApi

    from mmbert.hub.remote import open_remote

    api = HfApi()
    asked = f"hub dataset {repo!r} at revision {revision or 'main'}"
    sha = retrying(asked, lambda: api.dataset_info(repo, revision=revision).sha)
    where = f"hub dataset {repo!r} at {sha}"

    def listing() -> dict[str, int]:
        entries = api.list_repo_tree(repo, recursive=True, revision=sha, repo_type="dataset")
        return {e.path: e.size for e in entries if getattr(e, "size", None) is not None}

    files = retrying(where, listing)
    configs = None
    if README in files:
        url = RepoSnapshot(repo, revision, sha, files, None).url(README)
        with open_remote(url, files[README], f"{where}: {README}") as f:
            configs = _card_configs(f.read().decode("utf-8"), where)
    return RepoSnapshot(repo, revision, sha, files, configs)


class SnapshotStore:
    """Snapshots by (repo, revision): remembered in the process, and kept in ``folder`` when one is set."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memo: dict[tuple[str, str | None], RepoSnapshot] = {}
        self._lock = threading.Lock()  # sources are inspected in threads: one fetch, not one per thread

    def get(self, repo: str, revision: str | None = None) -> RepoSnapshot:
        key = (repo, revision)
        with self._lock:
            if key not in self._memo:
                self._memo[key] = self._get(repo, revision)
            return self._memo[key]

    def _get(self, repo: str, revision: str | None) -> RepoSnapshot:
        local = Path(repo).expanduser()
        if local.is_dir():
            return local_snapshot(local)
        if self.folder is None:
            return fetch_snapshot(repo, revision)
        return self._kept(repo, revision)

    def _kept(self, repo: str, revision: str | None) -> RepoSnapshot:
        from filelock import FileLock

        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{repo.replace('/', '--')}@{(revision or 'main').replace('/', '--')}.json"
        path = self.folder / name
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                return RepoSnapshot.from_json(json.loads(path.read_text()))
            snap = fetch_snapshot(repo, revision)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(snap.to_json()))
            os.replace(tmp, path)
            return snap

    def pins(self) -> dict[str, str]:
        """The commit each hub repo was read at."""
        return {snap.repo: snap.sha for snap in self._memo.values() if snap.sha is not None}


# How the folder reaches processes started afresh (ddp_spawn ranks, spawned workers): they inherit it.
FOLDER_ENV = "MMBERT_HUB_DIR"
_STORE = SnapshotStore()


def use_folder(folder: str | Path | None) -> None:
    """Keep this process's snapshots (and the processes it starts) in ``folder`` (a run's ``hub/``): every
    rank and worker of the run and a resumed run then read the same commit's files. Forgets the snapshots
    this process has seen."""
    global _STORE
    if folder is None:
        os.environ.pop(FOLDER_ENV, None)
    else:
        os.environ[FOLDER_ENV] = str(folder)
    _STORE = SnapshotStore(Path(folder) if folder is not None else None)


def _store() -> SnapshotStore:
    global _STORE
    folder = os.environ.get(FOLDER_ENV)
    if _STORE.folder != (Path(folder) if folder else None):
        _STORE = SnapshotStore(Path(folder) if folder else None)
    return _STORE


def store_folder() -> Path | None:
    return _store().folder


def snapshot(repo: str, revision: str | None = None) -> RepoSnapshot:
    return _store().get(repo, revision)


def pins() -> dict[str, str]:
    return _store().pins()
