"""A Hub model repo's files as a local folder, fetched once: kept in the run's ``hub/`` folder when one is set
(every rank and dataloader worker of the run, and a resumed run, use that copy), else in the HF cache."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from mmbert.hub.retry import retrying
from mmbert.hub.snapshot import store_folder


def _download(repo: str, revision: str | None, patterns: Sequence[str]) -> Path:
    from huggingface_hub import snapshot_download

    what = f"hub model {repo!r} at revision {revision or 'main'}"
    return Path(
        retrying(
            what, lambda: snapshot_download(repo_id=repo, revision=revision, allow_patterns=list(patterns))
        )
    )


@cache
def model_folder(repo: str, revision: str | None, patterns: tuple[str, ...]) -> Path:
    """The files of ``repo`` matching ``patterns`` at ``revision`` (None: main), as a local folder."""
    kept = store_folder()
    if kept is None:
        return _download(repo, revision, patterns)
    from filelock import FileLock

    target = kept / "models" / f"{repo.replace('/', '--')}@{(revision or 'main').replace('/', '--')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_dir():
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(_download(repo, revision, patterns), tmp)
            tmp.rename(target)
    return target
