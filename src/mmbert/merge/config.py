"""Merge settings as typed (keys of conf/merge.yaml) and their validation into a resolved spec.

Every check here runs before any file is read or written, so bad settings fail in milliseconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mmbert.errors import MergeError
from mmbert.merge.ops import decay_from_half_life, ema_weights

__all__ = ["METHODS", "MergeConfig", "MergeSpec", "parse_dtype", "parse_size"]

METHODS = ("ties", "task_arithmetic", "linear", "ema")
_USES_BASE = ("ties", "task_arithmetic")

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

    method: str
    base: Path | None
    models: tuple[Path, ...]
    weights: tuple[float, ...]
    density: float | None
    lam: float | None
    normalize: bool
    decay: float | None
    half_life: float | None
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
        params: dict[str, Any] = {"weights": list(self.weights)}
        if self.method == "ties":
            params["density"] = self.density
        if self.method in _USES_BASE:
            params["lambda"] = self.lam
        if self.method == "ema":
            params.update(decay=self.decay, half_life=self.half_life)
        else:
            params["normalize"] = self.normalize
        return params


@dataclass(frozen=True)
class MergeConfig:
    """Merge settings as given; `None` means "not set" so method-specific keys can be checked.

    `lambda` is a Python keyword: the field is `lam`, the config key `lambda` (`from_mapping` maps it).
    """

    method: str
    models: Sequence[str | Path]
    output_dir: str | Path
    base: str | Path | None = None
    weights: Sequence[float] | None = None
    density: float | None = None
    lam: float | None = None
    normalize: bool | None = None
    decay: float | None = None
    half_life: float | None = None
    dtype: str | None = None
    shard_size: int | str = "5GB"
    overwrite: bool = False
    chunk_elements: int = 1 << 22

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> MergeConfig:
        """Build from config keys (as in conf/merge.yaml); unknown and missing keys are errors."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            field = "lam" if key == "lambda" else key
            if field not in known or key == "lam":
                keys = sorted(known - {"lam"} | {"lambda"})
                raise MergeError(f"unknown merge key {key!r}; known keys: {', '.join(keys)}")
            kwargs[field] = value
        for key in ("method", "models", "output_dir"):
            if kwargs.get(key) is None:
                raise MergeError(f"merge key {key!r} is required")
        return cls(**kwargs)

    def resolve(self) -> MergeSpec:
        """Check every setting and fill in per-method defaults; raises MergeError naming the key."""
        method = self.method
        if method not in METHODS:
            raise MergeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if isinstance(self.models, str | Path) or not self.models:
            raise MergeError("models must be a non-empty list of checkpoint paths")
        models = tuple(Path(m) for m in self.models)

        def refuse(key: str, value: object, reason: str) -> None:
            if value is not None:
                raise MergeError(f"{key}={value!r} does not apply to method={method}: {reason}")

        if method in _USES_BASE:
            if self.base is None:
                raise MergeError(f"method={method} needs base (the checkpoint task vectors start from)")
        else:
            refuse("base", self.base, "it averages the models themselves")
        if method != "ties":
            refuse("density", self.density, "only ties trims task vectors")
        if method not in _USES_BASE:
            refuse("lambda", self.lam, "it has no task vectors to scale")
        if method == "ema":
            refuse("weights", self.weights, "ema weights come from decay or half_life")
            refuse("normalize", self.normalize, "ema weights always sum to 1")
        else:
            refuse("decay", self.decay, "only ema decays")
            refuse("half_life", self.half_life, "only ema decays")

        weights = self._weights(len(models))
        density = None
        if method == "ties":
            density = 1.0 if self.density is None else float(self.density)
            if not 0.0 < density <= 1.0:
                raise MergeError(f"density must be in (0, 1], got {self.density}")
        lam = None
        if method in _USES_BASE:
            lam = 1.0 if self.lam is None else float(self.lam)
            if not math.isfinite(lam):
                raise MergeError(f"lambda must be a finite number, got {self.lam}")
        normalize = True if self.normalize is None else self.normalize
        if not isinstance(normalize, bool):
            raise MergeError(f"normalize must be true or false, got {self.normalize!r}")
        if method == "linear" and normalize and sum(weights) == 0:
            raise MergeError(f"weights {list(weights)} sum to 0: a normalized linear merge is undefined")
        decay = None
        if method == "ema":
            decay = self._decay()
            weights = tuple(ema_weights(len(models), decay))

        if not isinstance(self.chunk_elements, int) or self.chunk_elements < 1:
            raise MergeError(f"chunk_elements must be a positive integer, got {self.chunk_elements!r}")
        if not isinstance(self.overwrite, bool):
            raise MergeError(f"overwrite must be true or false, got {self.overwrite!r}")
        return MergeSpec(
            method=method,
            base=Path(self.base) if self.base is not None else None,
            models=models,
            weights=weights,
            density=density,
            lam=lam,
            normalize=normalize,
            decay=decay,
            half_life=self.half_life,
            dtype=parse_dtype(self.dtype),
            shard_size=parse_size(self.shard_size),
            overwrite=self.overwrite,
            output_dir=Path(self.output_dir),
            chunk_elements=self.chunk_elements,
        )

    def _weights(self, n_models: int) -> tuple[float, ...]:
        if self.weights is None:
            return (1.0,) * n_models
        if isinstance(self.weights, str | int | float):
            raise MergeError(f"weights must be a list with one number per model, got {self.weights!r}")
        weights = tuple(float(w) for w in self.weights)
        if len(weights) != n_models:
            raise MergeError(f"weights has {len(weights)} entries but models has {n_models}")
        if not all(math.isfinite(w) for w in weights):
            raise MergeError(f"weights must be finite numbers, got {list(weights)}")
        return weights

    def _decay(self) -> float:
        if (self.decay is None) == (self.half_life is None):
            raise MergeError("method=ema needs exactly one of decay (in [0, 1)) or half_life (checkpoints)")
        if self.half_life is not None:
            try:
                return decay_from_half_life(float(self.half_life))
            except ValueError as err:
                raise MergeError(f"half_life: {err}") from None
        decay = float(self.decay)  # type: ignore[arg-type]
        if not 0.0 <= decay < 1.0:
            raise MergeError(f"decay must be in [0, 1), got {self.decay}")
        return decay
