"""Merge settings as typed (conf/merge.yaml and its `method` group) and their validation into a resolved spec.

The method's own settings live on its class (`methods`); this module checks the rest and how they fit the
method. Every check here runs before any file is read or written, so bad settings fail in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmbert.errors import MergeError
from mmbert.merge.methods import METHODS, MergeMethod

__all__ = ["MergeConfig", "MergeSpec", "parse_dtype", "parse_size", "refuse_other_methods_keys"]

_ALL_METHOD_KEYS = {"base", *(key for method in METHODS.values() for key in method.config_keys())}

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in _DTYPES:
        raise MergeError(f"dtype {name!r} is not one of {sorted(_DTYPES)} (or null for the inputs' dtype)")
    return _DTYPES[name]


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as "5GB" (decimal units) or "500MiB" (binary units)."""
    if isinstance(size, bool):
        raise MergeError(f"shard_size must be a size such as 5GB, got {size!r}")
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise MergeError(f"shard_size {size!r} is not a size such as 5GB, 500MiB or 1000000")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise MergeError(f"shard_size must be positive, got {size!r}")
    return value


@dataclass(frozen=True)
class MergeSpec:
    """A validated merge: every default filled in, weights final (ema's computed from its decay)."""

    method: MergeMethod
    base: Path | None
    models: tuple[Path, ...]
    weights: tuple[float, ...]
    dtype: torch.dtype | None
    shard_size: int
    overwrite: bool
    output_dir: Path
    chunk_elements: int

    @property
    def inputs(self) -> tuple[Path, ...]:
        """Every checkpoint read, base first: the first one supplies config and default dtypes."""
        return ((self.base,) if self.base is not None else ()) + self.models

    def parameters(self) -> dict[str, Any]:
        """The method's parameters as recorded in merge.json."""
        return self.method.parameters(self.weights)


def _method_named(name: str) -> type[MergeMethod]:
    if name not in METHODS:
        raise MergeError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def _method_keys(method: type[MergeMethod]) -> tuple[str, ...]:
    return ("base",) * method.needs_base + method.config_keys()


def _not_for(method: type[MergeMethod], setting: str) -> MergeError:
    keys = ", ".join(_method_keys(method))
    return MergeError(f"{setting} does not apply to method={method.name} (its keys: {keys})")


def refuse_other_methods_keys(overrides: Sequence[str], conf_dir: Path) -> None:
    """Refuse a command-line `key=value` whose key belongs to another method than the chosen one.

    Hydra refuses it too, as the key is not in the composed config, but in five lines that suggest `+key=`
    and do not name the method; merge.py calls this before Hydra composes to say both in one line.
    """
    defaults = OmegaConf.load(conf_dir / "merge.yaml").defaults
    choice = next(entry.method for entry in defaults if isinstance(entry, DictConfig) and "method" in entry)
    settings = [item.partition("=") for item in overrides]
    choice = next((value for key, _, value in reversed(settings) if key == "method"), choice)
    if not choice.isidentifier():
        return  # a sweep (method=ties,linear) or another Hydra expression: Hydra resolves it
    method = _method_named(choice)
    for key, sep, value in settings:
        if sep and key in _ALL_METHOD_KEYS and key not in _method_keys(method):
            raise _not_for(method, f"{key}={value}")


def _settings(method: type[MergeMethod], values: Mapping[str, Any]) -> dict[str, Any]:
    """The keys besides the method's own, checked: unknown keys, and set keys of other methods, are errors."""
    known = [f.name for f in fields(MergeConfig) if f.name != "method"]
    for key, value in values.items():
        if key in _ALL_METHOD_KEYS and key not in known:
            if value is not None:
                raise _not_for(method, f"{key}={value!r}")
        elif key not in known:
            keys = ", ".join(sorted({"method", *known, *_ALL_METHOD_KEYS}))
            raise MergeError(f"unknown merge key {key!r}; known keys: {keys}")
    for key in ("models", "output_dir"):
        if values.get(key) is None:
            raise MergeError(f"merge key {key!r} is required")
    return {key: value for key, value in values.items() if key in known}


@dataclass(frozen=True)
class MergeConfig:
    """Merge settings: the method (built and checked already) and the keys of conf/merge.yaml."""

    method: MergeMethod
    models: Sequence[str | Path]
    output_dir: str | Path
    base: str | Path | None = None  # only for a method that `needs_base`
    dtype: str | None = None
    shard_size: int | str = "5GB"
    overwrite: bool = False
    chunk_elements: int = 1 << 22

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> MergeConfig:
        """Build from flat config keys as merge.py takes them, `method` a name; null means "not set".

        Unknown and missing keys are errors, and so is a key of another method unless it is null.
        """
        name = values.get("method")
        if name is None:
            raise MergeError("merge key 'method' is required")
        method = _method_named(name)
        own_keys = method.config_keys()
        rest = _settings(method, {k: v for k, v in values.items() if k not in (*own_keys, "method")})
        own = {key: value for key, value in values.items() if key in own_keys and value is not None}
        return cls(method=method.from_keys(own), **rest)

    @classmethod
    def from_composed(cls, cfg: DictConfig) -> MergeConfig:
        """Build from merge.py's composed config: the `method` node's `_target_` builds the method from its
        top-level keys (conf/method/<name>.yaml); the other top-level keys are this class's."""
        values = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(values, dict)
        method: MergeMethod = instantiate(cfg.method)
        rest = {k: v for k, v in values.items() if k not in (*method.config_keys(), "method")}
        return cls(method=method, **_settings(type(method), rest))

    def resolve(self) -> MergeSpec:
        """Check every setting against the others and fill in defaults; raises MergeError naming the key."""
        method = type(self.method)
        if isinstance(self.models, str | Path) or not self.models:
            raise MergeError("models must be a non-empty list of checkpoint paths")
        models = tuple(Path(m) for m in self.models)
        if method.needs_base and self.base is None:
            raise MergeError(f"method={method.name} needs base (the checkpoint task vectors start from)")
        if not method.needs_base and self.base is not None:
            raise _not_for(method, f"base={self.base!r}")
        if not isinstance(self.chunk_elements, int) or self.chunk_elements < 1:
            raise MergeError(f"chunk_elements must be a positive integer, got {self.chunk_elements!r}")
        if not isinstance(self.overwrite, bool):
            raise MergeError(f"overwrite must be true or false, got {self.overwrite!r}")
        return MergeSpec(
            method=self.method,
            base=Path(self.base) if self.base is not None else None,
            models=models,
            weights=self.method.weights_for(len(models)),
            dtype=parse_dtype(self.dtype),
            shard_size=parse_size(self.shard_size),
            overwrite=self.overwrite,
            output_dir=Path(self.output_dir),
            chunk_elements=self.chunk_elements,
        )
