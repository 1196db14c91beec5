"""What every command line of the project does with an error the user can fix: one line naming the key or
file on stderr and exit status 2, instead of a traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from mmbert.errors import UserError

USAGE_EXIT = 2


def find_user_error(err: BaseException) -> UserError | None:
    """The user-fixable error behind ``err``: itself, or what Hydra's instantiate (or another wrapper) raised
    it from."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Run a command's body; a :class:`~mmbert.errors.UserError` (ConfigError, DataError, CheckpointError,
    MergeError, ...) ends it with one line ``<prog>: error: <message>`` and exit status 2."""
    try:
        yield
    except Exception as err:
        found = find_user_error(err)
        if found is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{prog}: error: {found}", file=sys.stderr)
        sys.exit(USAGE_EXIT)
