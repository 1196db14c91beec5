"""A local stand-in for the Hugging Face Hub, so tests run the real clients (huggingface_hub, datasets,
transformers) over HTTP on 127.0.0.1 instead of against huggingface.co.

Serves only what those clients call (found by logging their requests), for ``models`` and ``datasets``:

- repo info: ``GET /api/{type}s/{org}/{name}`` and ``GET /api/{type}s/{org}/{name}/revision/{rev}``
  (``?blobs=true`` adds size, blob id and LFS metadata to the siblings; ``cardData`` is the README's YAML);
- tree: ``GET /api/{type}s/{org}/{name}/tree/{rev}[/{path}]`` with ``recursive`` and ``expand``, in pages of
  ``server.page_size`` entries linked by a ``Link: <...&cursor=N>; rel="next"`` header, as the Hub pages;
- paths-info: ``POST /api/{type}s/{org}/{name}/paths-info/{rev}`` (form or JSON ``paths``, ``expand``);
- files: ``GET``/``HEAD /{org}/{name}/resolve/{rev}/{path}`` and ``/datasets/{org}/{name}/resolve/...``, with
  single ``Range`` requests (``a-b``, ``a-``, ``-n``) and the headers huggingface_hub reads (``ETag``,
  ``X-Repo-Commit``, ``Content-Length``, ``Accept-Ranges``, ``X-Linked-Size``/``X-Linked-Etag`` for LFS files).

``add_repo`` snapshots a folder as a new commit (a deterministic sha) and moves ``main`` to it; older shas keep
serving their own files. Revisions are ``main`` or a full sha of the repo. Errors carry the Hub's ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``) so huggingface_hub raises its own
exception types; ``require_token`` makes a repo private (401) or gated (403) without the right bearer token.

Every request lands in a thread-safe log (``requests()``, ``count()``, ``clear_log()``) with its kind: "info",
"tree", "paths-info", "resolve", or "other" for anything unknown (answered 404), so a test can assert that a client
needed nothing more. ``add_fault`` rules inject deterministic failures into matching requests: a status (429 with
``Retry-After``, 5xx), a delay, or a connection cut after N body bytes; ``nth``/``every``/``times`` choose which
matching requests a rule hits, and ``rule.fired`` counts its hits.

``make_fineweb2_repo`` and ``make_model_repo`` build repo folders; ``hub_endpoint`` points the in-process clients
(their import-time constants included) at a server and a throwaway cache, ``hub_env`` does the same for a
subprocess's environment, and ``serve_hub`` combines a server with ``hub_endpoint``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

RequestKind = Literal["info", "tree", "paths-info", "resolve", "other"]
RepoType = Literal["dataset", "model"]

# The Hub stores these in LFS; huggingface_hub then reads X-Linked-* headers and `lfs` metadata for them.
LFS_MIN_SIZE = 10_000
LFS_SUFFIXES = (".parquet",)

_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z: commit dates count up from it so they are deterministic


@dataclass
class RequestRecord:
    """One request. ``path`` is the raw (still percent-encoded) path, without the query; ``status`` stays 0
    until the answer is decided, and ``bytes_sent`` counts body bytes (those before a cut)."""

    method: str
    path: str
    query: dict[str, str]
    kind: RequestKind
    repo_id: str | None
    status: int = 0
    range: str | None = None
    bytes_sent: int = 0


@dataclass
class FaultRule:
    """Which requests to hit (kind, path regex, which of the matching ones) and how (status, delay, cut)."""

    kind: RequestKind | None = None
    path_regex: str | None = None
    status: int | None = None
    retry_after: int | None = None
    delay: float | None = None
    reset_after: int | None = None
    nth: int | None = None
    every: int | None = None
    times: int | None = None
    matched: int = 0
    fired: int = 0

    def hits(self, method: str, kind: RequestKind, path: str) -> bool:
        """Count a matching request and say whether the rule fires on it (called under the server's lock)."""
        # A HEAD has no body to cut, so it must not use up a cutting rule's nth/every/times.
        if self.reset_after is not None and method != "GET":
            return False
        if self.kind is not None and self.kind != kind:
            return False
        if self.path_regex is not None and not re.search(self.path_regex, path):
            return False
        self.matched += 1
        fires = (
            (self.nth is None or self.matched == self.nth)
            and (self.every is None or self.matched % self.every == 0)
            and (self.times is None or self.fired < self.times)
        )
        self.fired += fires
        return fires


@dataclass(frozen=True)
class _Blob:
    data: bytes
    oid: str  # git's blob id of what git stores: the content, or the LFS pointer for LFS files
    sha256: str | None = None  # set for LFS files only
    pointer_size: int | None = None

    @property
    def etag(self) -> str:
        return self.sha256 or self.oid


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _blob(path: str, data: bytes) -> _Blob:
    if not (path.endswith(LFS_SUFFIXES) or len(data) > LFS_MIN_SIZE):
        return _Blob(data, _git_oid(data))
    sha256 = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    return _Blob(data, _git_oid(pointer), sha256, len(pointer))


@dataclass(frozen=True)
class _Commit:
    sha: str
    date: str
    files: dict[str, _Blob]
    directories: frozenset[str]

    def tree_oid(self, directory: str) -> str:
        prefix = f"{directory}/"
        listing = "".join(f"{p} {b.oid}\n" for p, b in sorted(self.files.items()) if p.startswith(prefix))
        return hashlib.sha1(listing.encode()).hexdigest()

    def card_data(self) -> dict[str, Any] | None:
        readme = self.files.get("README.md")
        if readme is None:
            return None
        match = re.match(r"---\n(.*?)\n---\s*\n", readme.data.decode(), re.DOTALL)
        return yaml.safe_load(match.group(1)) if match else None


@dataclass
class _Repo:
    commits: dict[str, _Commit] = field(default_factory=dict)
    head: str = ""
    token: str | None = None
    gated: bool = False

    def commit(self, revision: str | None) -> _Commit | None:
        return self.commits.get(self.head if revision in (None, "main") else revision)


@dataclass
class _Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(
        status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()
    )


def _error(status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> _Reply:
    # Header values must be latin-1; messages may echo a client's revision.
    error_headers = {
        "X-Error-Message": message.encode("ascii", "backslashreplace").decode(),
        **(headers or {}),
    }
    if code is not None:
        error_headers["X-Error-Code"] = code
    return _json_reply(status, {"error": message}, error_headers)


@dataclass(frozen=True)
class _Target:
    """What a request path names; ``repo_id`` is None for paths the server does not know."""

    kind: RequestKind
    repo_type: RepoType | None = None
    repo_id: str | None = None
    revision: str | None = None
    path: str = ""


def _parse_target(method: str, raw_path: str) -> _Target:
    # Split before unquoting: clients percent-encode "/" inside revisions and tree paths.
    seg = raw_path.strip("/").split("/")
    if len(seg) >= 4 and seg[0] == "api" and seg[1] in ("models", "datasets"):
        repo_type: RepoType = "model" if seg[1] == "models" else "dataset"
        repo_id = f"{unquote(seg[2])}/{unquote(seg[3])}"
        rest = seg[4:]
        if method == "GET" and not rest:
            return _Target("info", repo_type, repo_id)
        if method == "GET" and len(rest) == 2 and rest[0] == "revision":
            return _Target("info", repo_type, repo_id, unquote(rest[1]))
        if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
            return _Target("tree", repo_type, repo_id, unquote(rest[1]), unquote("/".join(rest[2:])))
        if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            return _Target("paths-info", repo_type, repo_id, unquote(rest[1]))
        return _Target("other")
    repo_type = "model"
    if seg[0] == "datasets":
        repo_type, seg = "dataset", seg[1:]
    if method in ("GET", "HEAD") and len(seg) >= 5 and seg[2] == "resolve":
        repo_id = f"{unquote(seg[0])}/{unquote(seg[1])}"
        return _Target("resolve", repo_type, repo_id, unquote(seg[3]), unquote("/".join(seg[4:])))
    return _Target("other")


@dataclass(frozen=True)
class _Request:
    path: str  # raw, without the query
    query: dict[str, str]
    headers: Any  # the request's header mapping (case-insensitive lookups)
    body: bytes
    target: _Target


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive byte bounds of a single ``bytes=`` range, or None when it cannot be satisfied."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end and start < size else None


class HubServer(ThreadingHTTPServer):
    """The Hub look-alike: serves from a daemon thread as soon as it is built; ``stop()`` or leave the ``with``."""

    daemon_threads = True

    def __init__(self, page_size: int = 1000) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.page_size = page_size
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._lock = threading.Lock()
        self._repos: dict[tuple[RepoType, str], _Repo] = {}
        self._log: list[RequestRecord] = []
        self._faults: list[FaultRule] = []
        self._commit_count = 0
        self._connections: set[socket.socket] = set()
        # A short poll keeps stop() quick: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"hub-server-{self.url}",
            daemon=True,
        )
        self._thread.start()

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.shutdown()
        # Clients keep connections alive: end them so their handler threads return instead of lingering.
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()
        self._thread.join()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    # Repositories

    def add_repo(self, repo_type: RepoType, repo_id: str, folder: Path) -> str:
        """Snapshot ``folder`` as a new commit of the repo, move ``main`` to it and return its sha."""
        if repo_type not in ("dataset", "model"):
            raise ValueError(f"repo_type must be 'dataset' or 'model', not {repo_type!r}")
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
        }
        blobs = {path: _blob(path, data) for path, data in files.items()}
        directories = frozenset(
            parent.as_posix() for path in blobs for parent in PurePosixPath(path).parents if parent.name
        )
        with self._lock:
            self._commit_count += 1
            digest = hashlib.sha1(f"{repo_type}:{repo_id}:{self._commit_count}\n".encode())
            for path, blob in sorted(blobs.items()):
                digest.update(f"{path} {blob.oid}\n".encode())
            sha = digest.hexdigest()
            date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(_EPOCH + self._commit_count))
            repo = self._repos.setdefault((repo_type, repo_id), _Repo())
            repo.commits[sha] = _Commit(sha, date, blobs, directories)
            repo.head = sha
        return sha

    def require_token(self, repo_id: str, token: str, gated: bool = False) -> None:
        """Answer the repo (every type) only to ``Authorization: Bearer <token>``: 401 as private, 403 if gated."""
        with self._lock:
            repos = [repo for (_, known_id), repo in self._repos.items() if known_id == repo_id]
            if not repos:
                raise KeyError(f"no repo {repo_id!r} was added")
            for repo in repos:
                repo.token, repo.gated = token, gated

    # Request log

    def requests(self, kind: RequestKind | None = None, repo_id: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [
                r
                for r in self._log
                if (kind is None or r.kind == kind) and (repo_id is None or r.repo_id == repo_id)
            ]

    def count(self, kind: RequestKind | None = None, repo_id: str | None = None) -> int:
        return len(self.requests(kind, repo_id))

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    # Faults

    def add_fault(
        self,
        kind: RequestKind | None = None,
        path_regex: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        delay: float | None = None,
        reset_after: int | None = None,
        nth: int | None = None,
        every: int | None = None,
        times: int | None = None,
    ) -> FaultRule:
        """Add a rule for requests of ``kind`` whose raw path matches ``path_regex`` (both optional).

        Among those, it fires on the ``nth`` one only (1-based), on every ``every``-th one, and at most ``times``
        times. It answers ``status`` (with ``Retry-After: retry_after`` when given) after sleeping ``delay``
        seconds, or cuts a GET's body after ``reset_after`` bytes (only GETs count towards such a rule).
        """
        rule = FaultRule(kind, path_regex, status, retry_after, delay, reset_after, nth, every, times)
        with self._lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _firing_rules(self, method: str, kind: RequestKind, path: str) -> list[FaultRule]:
        with self._lock:
            # Every rule sees every request, so each keeps its own count of matches.
            return [rule for rule in self._faults if rule.hits(method, kind, path)]

    # Answers

    def answer(self, request: _Request) -> _Reply:
        """The reply to a request, before faults."""
        target = request.target
        if target.repo_id is None or target.repo_type is None:
            return _error(404, None, "Sorry, we can't find the page you are looking for.")
        with self._lock:
            repo = self._repos.get((target.repo_type, target.repo_id))
            if repo is None:
                return _error(404, "RepoNotFound", "Repository not found")
            denied = self._deny(repo, target.repo_id, request.headers.get("Authorization"))
            if denied is not None:
                return denied
            commit = repo.commit(target.revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {target.revision}")
        if target.kind == "info":
            return _json_reply(
                200, self._info(target.repo_id, repo, commit, request.query.get("blobs") == "true")
            )
        if target.kind == "tree":
            return self._tree(request, commit)
        if target.kind == "paths-info":
            return self._paths_info(commit, request.body, request.headers.get("Content-Type", ""))
        return self._resolve(target.path, commit, request.headers.get("Range"))

    @staticmethod
    def _deny(repo: _Repo, repo_id: str, authorization: str | None) -> _Reply | None:
        if repo.token is None or authorization == f"Bearer {repo.token}":
            return None
        if repo.gated:
            return _error(
                403,
                "GatedRepo",
                f"Access to {repo_id} is restricted and you are not in the authorized list.",
            )
        # The Hub answers a private repo as if it did not exist, with 401 when no valid token came.
        return _error(401, "RepoNotFound", "Invalid username or password.")

    @staticmethod
    def _info(repo_id: str, repo: _Repo, commit: _Commit, blobs: bool) -> dict[str, Any]:
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=len(blob.data), blobId=blob.oid)
                if blob.sha256 is not None:
                    sibling["lfs"] = {
                        "size": len(blob.data),
                        "sha256": blob.sha256,
                        "pointerSize": blob.pointer_size,
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "id": repo_id,
            "sha": commit.sha,
            "lastModified": commit.date,
            "private": repo.token is not None and not repo.gated,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        card_data = commit.card_data()
        if card_data is not None:
            info["cardData"] = card_data
        return info

    @staticmethod
    def _entry(commit: _Commit, path: str, expand: bool) -> dict[str, Any]:
        blob = commit.files.get(path)
        if blob is None:
            entry: dict[str, Any] = {"type": "directory", "oid": commit.tree_oid(path), "path": path}
        else:
            entry = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
            if blob.sha256 is not None:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": blob.pointer_size}
        if expand:
            entry["lastCommit"] = {"id": commit.sha, "title": f"Commit {commit.sha[:7]}", "date": commit.date}
        return entry

    def _tree(self, request: _Request, commit: _Commit) -> _Reply:
        query = request.query
        root = request.target.path.strip("/")
        if root and root not in commit.directories:
            return _error(404, "EntryNotFound", f"{root} does not exist on {request.target.revision}")
        prefix = f"{root}/" if root else ""
        under = sorted(p for p in [*commit.files, *commit.directories] if p.startswith(prefix))
        if query.get("recursive") != "true":
            under = [p for p in under if "/" not in p[len(prefix) :]]
        start = int(query.get("cursor", "0"))
        page = under[start : start + self.page_size]
        expand = query.get("expand") == "true"
        headers = {}
        if start + self.page_size < len(under):
            next_query = urlencode({**query, "cursor": str(start + self.page_size)})
            headers["Link"] = f'<{self.url}{request.path}?{next_query}>; rel="next"'
        return _json_reply(200, [self._entry(commit, p, expand) for p in page], headers)

    def _paths_info(self, commit: _Commit, body: bytes, content_type: str) -> _Reply:
        if content_type.startswith("application/json"):
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[-1].lower() == "true"
        known = [
            p.strip("/") for p in paths if p.strip("/") in commit.files or p.strip("/") in commit.directories
        ]
        return _json_reply(200, [self._entry(commit, p, expand) for p in known])

    @staticmethod
    def _resolve(path: str, commit: _Commit, range_header: str | None) -> _Reply:
        blob = commit.files.get(path)
        if blob is None:
            # huggingface_hub caches "this file does not exist at this commit" from X-Repo-Commit.
            return _error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
        size = len(blob.data)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{blob.etag}"',
            "X-Repo-Commit": commit.sha,
        }
        if blob.sha256 is not None:
            headers.update({"X-Linked-Size": str(size), "X-Linked-Etag": f'"{blob.sha256}"'})
        if range_header is None:
            return _Reply(200, headers, blob.data)
        bounds = _parse_range(range_header, size)
        if bounds is None:
            return _Reply(416, {**headers, "Content-Range": f"bytes */{size}"})
        start, end = bounds
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return _Reply(206, headers, blob.data[start : end + 1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' pooled connections expect
    # Headers and body leave in separate writes: with Nagle on, the body would wait for a delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server: HubServer

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the server's request log replaces stderr lines."""

    def _handle(self) -> None:
        split = urlsplit(self.path)
        target = _parse_target(self.command, split.path)
        query = {key: values[-1] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = _Request(split.path, query, self.headers, body, target)
        record = RequestRecord(
            self.command, split.path, query, target.kind, target.repo_id, range=self.headers.get("Range")
        )
        # Logged on arrival and filled in before the first byte leaves: a client that has its answer always
        # finds the request complete in the log.
        self.server._record(record)
        rules = self.server._firing_rules(self.command, target.kind, split.path)
        time.sleep(sum(rule.delay or 0 for rule in rules))
        reply = self._fault_reply(rules) or self.server.answer(request)
        cut = next((rule.reset_after for rule in rules if rule.reset_after is not None), None)
        self._send(reply, record, cut)

    @staticmethod
    def _fault_reply(rules: list[FaultRule]) -> _Reply | None:
        rule = next((rule for rule in rules if rule.status is not None), None)
        if rule is None or rule.status is None:
            return None
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        return _error(rule.status, None, f"Injected fault: HTTP {rule.status}", headers)

    def _send(self, reply: _Reply, record: RequestRecord, cut: int | None) -> None:
        body = b"" if self.command == "HEAD" else reply.body[:cut]
        record.status, record.bytes_sent = reply.status, len(body)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(body)
        if cut is not None:
            # Closing (FIN) rather than resetting makes sure the first bytes arrive before the client sees the
            # connection end short of Content-Length.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


# Repo builders


def make_fineweb2_repo(
    folder: Path, docs: dict[str, dict[str, list[list[str]]]], row_group_size: int = 16
) -> Path:
    """Write a FineWeb2-layout dataset repo: ``docs[config][split]`` is a list of files, each a list of texts.

    Files are ``data/{config}/{split}/{i:03d}_00000.parquet`` with columns ``text``, ``id`` and ``language`` (the
    config's language code, as FineWeb2 has it); the README's YAML lists each config's splits as ``data_files``.
    """
    configs = []
    for config, splits in docs.items():
        for split, files in splits.items():
            split_dir = folder / "data" / config / split
            split_dir.mkdir(parents=True, exist_ok=True)
            for i, texts in enumerate(files):
                table = pa.table(
                    {
                        "text": texts,
                        "id": [f"<urn:uuid:{config}-{split}-{i:03d}-{j:06d}>" for j in range(len(texts))],
                        "language": [config.split("_")[0]] * len(texts),
                    }
                )
                pq.write_table(table, split_dir / f"{i:03d}_00000.parquet", row_group_size=row_group_size)
        data_files = [{"split": split, "path": f"data/{config}/{split}/*"} for split in splits]
        configs.append({"config_name": config, "data_files": data_files})
    card = yaml.safe_dump({"configs": configs}, sort_keys=False, allow_unicode=True)
    (folder / "README.md").write_text(f"---\n{card}---\n\n# FineWeb2-layout test dataset\n", encoding="utf-8")
    return folder


def make_model_repo(folder: Path, files: dict[str, Path | bytes]) -> Path:
    """Write a model repo folder: each repo path gets the given bytes or a copy of the given file."""
    for name, source in files.items():
        destination = folder / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
    return folder


# Pointing the clients at a server


_UNSET_VARIABLES = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    # The user's credentials must not reach the test server, nor change what it answers.
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_OIDC_RESOURCE",
    # Deprecated spellings that would otherwise point back at the user's cache.
    "HUGGINGFACE_HUB_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HUGGINGFACE_CO_STAGING",
    # mmbert's kept Hub listings of an earlier run in this process (mmbert.hub.snapshot).
    "MMBERT_HUB_DIR",
)


def _hub_variables(url: str, cache_dir: Path) -> dict[str, str | None]:
    """Environment for the clients: the server's endpoint, caches under ``cache_dir``; None means unset."""
    home = Path(cache_dir) / "hf_home"
    variables: dict[str, str | None] = {
        "HF_ENDPOINT": url.rstrip("/"),
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_MODULES_CACHE": str(home / "modules"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    variables.update(dict.fromkeys(_UNSET_VARIABLES))
    return variables


def hub_env(url: str, cache_dir: Path) -> dict[str, str]:
    """``os.environ`` for a subprocess whose clients talk to ``url`` and cache under ``cache_dir``."""
    env = dict(os.environ)
    for name, value in _hub_variables(url, cache_dir).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _constant_patches(url: str, cache_dir: Path) -> list[tuple[object, str, object]]:
    """(module or object, attribute, value) for every copy of the endpoint, offline flags and cache paths that
    the clients took at import time; private names absent from a version are left out."""
    variables = _hub_variables(url, cache_dir)
    home, hub_cache = variables["HF_HOME"], variables["HF_HUB_CACHE"]
    endpoint = url.rstrip("/")
    constants = importlib.import_module("huggingface_hub.constants")
    http = importlib.import_module("huggingface_hub.utils._http")
    hf_api = importlib.import_module("huggingface_hub.hf_api")
    hffs = importlib.import_module("huggingface_hub.hf_file_system").hffs
    datasets_config = importlib.import_module("datasets.config")
    datasets_home = Path(str(variables["HF_DATASETS_CACHE"]))
    patches: list[tuple[object, str, object]] = [
        (constants, "ENDPOINT", endpoint),
        (constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"),
        (constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {urlsplit(endpoint).hostname}),
        (constants, "HF_HUB_OFFLINE", False),
        (constants, "HF_HUB_DISABLE_TELEMETRY", True),
        (constants, "HF_HOME", home),
        (constants, "HF_HUB_CACHE", hub_cache),
        (constants, "HUGGINGFACE_HUB_CACHE", hub_cache),
        (constants, "HF_ASSETS_CACHE", variables["HF_ASSETS_CACHE"]),
        (constants, "HF_XET_CACHE", variables["HF_XET_CACHE"]),
        (constants, "HF_TOKEN_PATH", variables["HF_TOKEN_PATH"]),
        (constants, "HF_STORED_TOKENS_PATH", os.path.join(str(home), "stored_tokens")),
        # The module-level HfApi behind `huggingface_hub.dataset_info` & co. took the endpoint when created.
        (hf_api.api, "endpoint", endpoint),
        # So did the module-level `huggingface_hub.hffs` and its own HfApi.
        (hffs, "endpoint", endpoint),
        (hffs._api, "endpoint", endpoint),
        (datasets_config, "HF_ENDPOINT", endpoint),
        (datasets_config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"),
        (datasets_config, "HF_HUB_OFFLINE", False),
        (datasets_config, "HF_DATASETS_OFFLINE", False),
        (datasets_config, "HF_CACHE_HOME", home),
        (datasets_config, "HF_DATASETS_CACHE", datasets_home),
        (datasets_config, "HF_MODULES_CACHE", Path(str(variables["HF_MODULES_CACHE"]))),
        (datasets_config, "DOWNLOADED_DATASETS_PATH", datasets_home / "downloads"),
        (datasets_config, "EXTRACTED_DATASETS_PATH", datasets_home / "downloads" / "extracted"),
    ]
    if hasattr(http, "_HUB_ORIGINS") and hasattr(http, "_url_origin"):
        # Redirects are followed with credentials only to these origins.
        patches.append((http, "_HUB_ORIGINS", http._HUB_ORIGINS | {http._url_origin(endpoint)}))
    if importlib.util.find_spec("transformers") is not None:
        transformers_hub = importlib.import_module("transformers.utils.hub")
        patches.append((transformers_hub, "HF_MODULES_CACHE", variables["HF_MODULES_CACHE"]))
        # Transformers' shared HfApi is created lazily with the endpoint of its first use: make it start afresh.
        if hasattr(transformers_hub, "_hf_api"):
            patches.append((transformers_hub, "_hf_api", None))
    return patches


def _clear_filesystem_cache() -> None:
    # fsspec reuses HfFileSystem instances, with their listings and "repo exists" answers, across calls.
    file_system = importlib.import_module("huggingface_hub.hf_file_system")
    file_system.HfFileSystem.clear_instance_cache()
    file_system.hffs.invalidate_cache()


@contextlib.contextmanager
def hub_endpoint(url: str, cache_dir: Path) -> Iterator[None]:
    """Point the in-process clients at ``url`` with caches under ``cache_dir``; restore everything on exit.

    Sets the environment as ``hub_env`` does and patches the constants huggingface_hub, datasets and transformers
    computed from it at import time.
    """
    variables = _hub_variables(url, cache_dir)
    saved_env = {name: os.environ.get(name) for name in variables}
    patches = _constant_patches(url, cache_dir)
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches if hasattr(owner, name)]
    _set_environ(variables)
    for owner, name, value in patches:
        if hasattr(owner, name):
            setattr(owner, name, value)
    _clear_filesystem_cache()
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)
        _set_environ(saved_env)
        _clear_filesystem_cache()


def _set_environ(variables: dict[str, str | None]) -> None:
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def serve_hub(cache_dir: Path, page_size: int = 1000) -> Iterator[HubServer]:
    """A running ``HubServer`` with the in-process clients pointed at it (``hub_endpoint``)."""
    with HubServer(page_size) as server, hub_endpoint(server.url, cache_dir):
        yield server
