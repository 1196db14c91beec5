"""Retrying Hub calls: transient failures wait and try again, permanent ones become one :class:`HubError`.

Transient: 429 (waiting what ``Retry-After`` says, within ``max_wait_s``), 500/502/503/504, timeouts and broken
connections (a reset, a body cut short). Waits grow exponentially from ``base_s`` to ``max_wait_s`` with
+-50% jitter, so that the ranks and workers of a job that all met the same 429 do not come back together.
Permanent: 401 (no or a wrong token), 403 (a gated repo), 404 (no such repo, revision, config or file).

Every retry is counted per kind in :data:`STATS` (per process: dataloader workers send theirs along with their
rows) and the first of each kind is logged; ``MMBERT_HUB_RETRIES`` / ``MMBERT_HUB_BACKOFF_S`` change the number
of tries and the first wait.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx2

from mmbert.errors import HubError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
PERMANENT_STATUS = {
    401: "not authorised: log in (`hf auth login`) or set HF_TOKEN",
    403: "access refused (a gated repo: accept its conditions on the Hub and use a token that may read it)",
    404: "not found",
}
# huggingface_hub's own names for a 404 (and for a 401 it reports as a missing repo).
_NOT_FOUND = (
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "EntryNotFoundError",
    "RemoteEntryNotFoundError",
)


@dataclass
class RetryPolicy:
    attempts: int = 8
    base_s: float = 1.0
    max_wait_s: float = 60.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(
            attempts=int(os.environ.get("MMBERT_HUB_RETRIES", cls.attempts)),
            base_s=float(os.environ.get("MMBERT_HUB_BACKOFF_S", cls.base_s)),
        )

    def wait(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_wait_s)
        return min(self.base_s * 2**attempt, self.max_wait_s) * rng.uniform(0.5, 1.5)


@dataclass
class HubStats:
    """Retries by kind and seconds spent waiting on the Hub (requests and backoff) in this process."""

    retries: Counter[str] = field(default_factory=Counter)
    wait_s: float = 0.0
    _logged: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_wait(self, seconds: float) -> None:
        with self._lock:
            self.wait_s += seconds

    def retried(self, kind: str, what: str, err: object, wait: float) -> None:
        with self._lock:
            self.retries[kind] += 1
            first = kind not in self._logged
            self._logged.add(kind)
        if first:
            log.warning(
                "Hub %s on %s (%s); retrying in %.1f s (later %s retries are counted in data/hub_retries)",
                kind, what, err, wait, kind,
            )  # fmt: skip

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {**{f"retries/{k}": float(v) for k, v in self.retries.items()}, "wait_s": self.wait_s}


STATS = HubStats()
_RNG = random.Random()  # its own generator: jitter must not move any seeded stream of the run


def _status(err: BaseException) -> tuple[int | None, float | None]:
    """HTTP status and Retry-After (seconds) of a failed call, when it got an answer."""
    response = getattr(err, "response", None)
    if response is None or not hasattr(response, "status_code"):
        return None, None
    after = response.headers.get("Retry-After")
    try:
        retry_after = float(after) if after is not None else None
    except ValueError:  # an HTTP date: fall back to the backoff
        retry_after = None
    return int(response.status_code), retry_after


def transient_kind(err: BaseException) -> str | None:
    """``429``, ``5xx``, ``timeout`` or ``connection`` for an error worth retrying, else None."""
    status, _ = _status(err)
    if status is not None:
        if status == 429:
            return "429"
        return "5xx" if status in TRANSIENT_STATUS else None
    if isinstance(err, httpx2.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(err, httpx2.TransportError | ConnectionError):
        return "connection"
    return None


def permanent_reason(err: BaseException) -> str | None:
    status, _ = _status(err)
    if status in PERMANENT_STATUS:
        return PERMANENT_STATUS[status]
    if type(err).__name__ in _NOT_FOUND:
        return PERMANENT_STATUS[404]
    return None


def retrying(what: str, call: Callable[[], T], policy: RetryPolicy | None = None) -> T:
    """``call()``, retried on transient Hub errors; ``what`` names the repo, revision and file for messages."""
    policy = policy or RetryPolicy.from_env()
    for attempt in range(policy.attempts):
        start = time.perf_counter()
        try:
            return call()
        except HubError:
            raise
        except Exception as err:
            reason = permanent_reason(err)
            if reason is not None:
                raise HubError(f"{what}: {reason}") from err
            kind = transient_kind(err)
            if kind is None:
                raise
            if attempt + 1 == policy.attempts:
                raise HubError(
                    f"{what}: still failing after {policy.attempts} tries ({kind}: {err}); the Hub may be "
                    "rate-limiting this job: use a token (HF_TOKEN), fewer workers, or a local copy (prepare)"
                ) from err
            wait = policy.wait(attempt, _status(err)[1], _RNG)
            STATS.retried(kind, what, err, wait)
            time.sleep(wait)
        finally:
            STATS.add_wait(time.perf_counter() - start)
    raise AssertionError("unreachable")
