"""Every error type a user of this package can meet and fix: a leaf module that anything may import.

The command lines turn the ``UserError`` subclasses into one line naming the key, file or setting at fault
and exit status 2 (:func:`mmbert.cli.errors.user_errors`); the others are failures of a run itself.
"""

from __future__ import annotations


class UserError(ValueError):
    """A setting, file or input the user can fix; the message names it."""


class ConfigError(UserError):
    """A configuration value is invalid; the message names the key."""


class DataError(UserError):
    """Bad data or a bad data setting, detected before (or while) training reads it; the message names the
    offending path, key or setting."""


class HubError(UserError):
    """The Hugging Face Hub refused a request (no such repo, config, revision or file; no access) or kept
    failing after its retries; the message names the repo, revision and file."""


class CheckpointError(UserError):
    """A checkpoint cannot be read as asked; the message names the file and what is wrong with it."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint, or a file a checkpoint refers to, does not exist."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint pickles a type that is not on its format's allow-list; loading it could run code."""


class MergeError(UserError):
    """Bad merge input or configuration; the message names the key, tensor or path at fault."""


class AttentionBackendError(RuntimeError):
    """An attention backend was requested explicitly but cannot run here."""


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss is NaN or inf and the run is not set to skip such batches."""
