"""Errors raised by the data pipeline; messages always name the offending path, key or setting."""

from __future__ import annotations


class DataError(ValueError):
    """Bad data or a bad data setting, detected before (or while) training reads it."""
