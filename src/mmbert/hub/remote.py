"""A file on the Hub read as a seekable binary file: HTTP range requests at a pinned commit, each retried.

Parquet readers seek to a column chunk and read it (one request per read); line readers read it front to back
through a buffer. A read cut short by a reset or a 5xx continues from the last byte received, so a flaky
connection never changes what is read, only how long it takes.
"""

from __future__ import annotations

import io

import huggingface_hub
from huggingface_hub.utils import build_hf_headers

from mmbert.hub.retry import retrying

BUFFER_BYTES = 1 << 20  # line readers' read-ahead: one request per MiB
TIMEOUT_S = 60.0


class _Short(ConnectionError):
    """A body that ended before the bytes it promised (a transient error: the rest is asked for again)."""


class RemoteRaw(io.RawIOBase):
    """``size`` bytes at ``url`` (``.../resolve/<sha>/<path>``); ``what`` names the file in errors."""

    def __init__(self, url: str, size: int, what: str) -> None:
        self.url, self.size, self.what = url, size, what
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        view = memoryview(buffer).cast("B")
        end = min(self.pos + len(view), self.size)
        if end <= self.pos:
            return 0
        got = 0

        def fetch() -> None:
            nonlocal got
            headers = build_hf_headers() | {"Range": f"bytes={self.pos + got}-{end - 1}"}
            session = huggingface_hub.get_session()
            with session.stream(
                "GET", self.url, headers=headers, follow_redirects=True, timeout=TIMEOUT_S
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    r.raise_for_status()
                skip = self.pos + got if r.status_code == 200 else 0  # a server that ignored the range
                for chunk in r.iter_bytes():
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    n = min(len(chunk), end - self.pos - got)
                    view[got : got + n] = chunk[:n]
                    got += n
                    if self.pos + got == end:
                        return
            raise _Short(f"body ended after {got} of {end - self.pos} bytes")

        retrying(self.what, fetch)
        self.pos += got
        return got


def open_remote(url: str, size: int, what: str) -> io.BufferedReader:
    return io.BufferedReader(RemoteRaw(url, size, what), BUFFER_BYTES)
