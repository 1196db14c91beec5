"""The merge methods, one class each: its parameters, their checks, and how it merges one tensor.

A method's parameters are the fields of its class and the top-level keys of `conf/method/<name>.yaml`, whose
`method._target_` builds it; `METHODS` builds it from a plain dict. A key of another method is simply not a
field, so no method has to refuse the others' keys one by one. Every check runs in the constructor, before
any file is read.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from mmbert.checkpoint import Rows
from mmbert.errors import MergeError
from mmbert.merge.ops import (
    MagnitudeSelect,
    MagnitudeTrim,
    decay_from_half_life,
    ema_weights,
    keep_count,
    linear_combine,
    task_arithmetic_combine,
    ties_combine,
)

__all__ = ["METHODS", "Ema", "Linear", "MergeMethod", "TaskArithmetic", "TensorChunks", "Ties"]


class TensorChunks(Protocol):
    """One tensor of every merge input, read by the row ranges `rows` that cover it in order."""

    rows: Sequence[Rows]
    numel: int
    n_models: int

    def base(self, rows: Rows) -> Tensor:
        """These rows of the base checkpoint, fp32."""
        ...

    def model(self, index: int, rows: Rows) -> Tensor:
        """These rows of the `index`-th model, fp32."""
        ...


def _config_key(name: str) -> str:
    # `lambda` is a Python keyword: the field is `lam`, the config key `lambda`.
    return "lambda" if name == "lam" else name


def _number(key: str, value: object, what: str = "a finite number") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MergeError(f"{key} must be {what}, got {value}")
    return float(value)


class MergeMethod(ABC):
    """A merge method: its settings as validated fields, and `combine` to merge one tensor chunk by chunk."""

    name: ClassVar[str]
    needs_base: ClassVar[bool] = False  # task vectors start from a base checkpoint

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        """Its config keys (besides `base`): the top-level keys of its conf/method file."""
        return tuple(_config_key(f.name) for f in fields(cls) if f.init)  # type: ignore[arg-type]

    @classmethod
    def from_keys(cls, values: Mapping[str, Any]) -> MergeMethod:
        """Build from its config keys (`lambda`, not `lam`); a missing key takes its default."""
        by_key = {_config_key(f.name): f.name for f in fields(cls) if f.init}  # type: ignore[arg-type]
        return cls(**{by_key[key]: value for key, value in values.items()})

    @abstractmethod
    def weights_for(self, n_models: int) -> tuple[float, ...]:
        """One final weight per model, checked against the number of models."""

    @abstractmethod
    def parameters(self, weights: Sequence[float]) -> dict[str, Any]:
        """The settings recorded in merge.json."""

    @abstractmethod
    def combine(self, tensor: TensorChunks, weights: Tensor) -> Iterator[Tensor]:
        """The merged tensor, one fp32 chunk per entry of `tensor.rows`."""


@dataclass
class _Weighted(MergeMethod):
    """A method with one weight per model (default all 1.0), optionally divided by their sum."""

    weights: Sequence[float] | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.weights is not None:
            if isinstance(self.weights, str | int | float):
                raise MergeError(f"weights must be a list with one number per model, got {self.weights!r}")
            try:
                self.weights = tuple(float(w) for w in self.weights)
            except (TypeError, ValueError):
                raise MergeError(f"weights must be numbers, got {list(self.weights)}") from None
            if not all(math.isfinite(w) for w in self.weights):
                raise MergeError(f"weights must be finite numbers, got {list(self.weights)}")
        if not isinstance(self.normalize, bool):
            raise MergeError(f"normalize must be true or false, got {self.normalize!r}")

    def weights_for(self, n_models: int) -> tuple[float, ...]:
        if self.weights is None:
            return (1.0,) * n_models
        if len(self.weights) != n_models:
            raise MergeError(f"weights has {len(self.weights)} entries but models has {n_models}")
        return tuple(self.weights)


def _average(tensor: TensorChunks, weights: Tensor, normalize: bool) -> Iterator[Tensor]:
    for rows in tensor.rows:
        yield linear_combine(
            torch.stack([tensor.model(i, rows) for i in range(tensor.n_models)]), weights, normalize
        )


@dataclass
class Linear(_Weighted):
    """Weighted average of the models themselves (a weighted sum without `normalize`)."""

    name: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalize and self.weights is not None and sum(self.weights) == 0:
            raise MergeError(f"weights {list(self.weights)} sum to 0: a normalized linear merge is undefined")

    def parameters(self, weights: Sequence[float]) -> dict[str, Any]:
        return {"weights": list(weights), "normalize": self.normalize}

    def combine(self, tensor: TensorChunks, weights: Tensor) -> Iterator[Tensor]:
        return _average(tensor, weights, self.normalize)


Trim = Callable[[Tensor], Tensor]


@dataclass
class TaskArithmetic(_Weighted):
    """base + lambda * the weighted sum of task vectors (model - base), divided by the weight sum when
    normalizing."""

    name: ClassVar[str] = "task_arithmetic"
    needs_base: ClassVar[bool] = True

    lam: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lam = _number("lambda", self.lam)

    def parameters(self, weights: Sequence[float]) -> dict[str, Any]:
        return {"weights": list(weights), "lambda": self.lam, "normalize": self.normalize}

    def combine(self, tensor: TensorChunks, weights: Tensor) -> Iterator[Tensor]:
        trims = self._trims(tensor)
        for rows in tensor.rows:
            base = tensor.base(rows)
            deltas = torch.stack([trim(tensor.model(i, rows) - base) for i, trim in enumerate(trims)])
            yield base + self.lam * self._combine(deltas, weights)

    def _trims(self, tensor: TensorChunks) -> list[Trim]:
        return [lambda t: t] * tensor.n_models

    def _combine(self, deltas: Tensor, weights: Tensor) -> Tensor:
        return task_arithmetic_combine(deltas, weights, self.normalize)


@dataclass
class Ties(TaskArithmetic):
    """TIES: trim each task vector to its top `density` by magnitude, elect signs by mass, average the
    agreeing entries, scale by lambda."""

    name: ClassVar[str] = "ties"

    density: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < _number("density", self.density, "in (0, 1]") <= 1.0:
            raise MergeError(f"density must be in (0, 1], got {self.density}")
        self.density = float(self.density)

    def parameters(self, weights: Sequence[float]) -> dict[str, Any]:
        return {
            "weights": list(weights),
            "density": self.density,
            "lambda": self.lam,
            "normalize": self.normalize,
        }

    def _trims(self, tensor: TensorChunks) -> list[Trim]:
        # Each task vector's magnitude threshold over the whole tensor, found in streamed passes.
        k = keep_count(tensor.numel, self.density)
        if k == tensor.numel:
            return super()._trims(tensor)
        selects = [MagnitudeSelect(k) for _ in range(tensor.n_models)]
        for _ in range(MagnitudeSelect.passes):
            for rows in tensor.rows:
                base = tensor.base(rows)
                for i, select in enumerate(selects):
                    select.update(tensor.model(i, rows) - base)
            for select in selects:
                select.end_pass()
        return [MagnitudeTrim(select.threshold) for select in selects]

    def _combine(self, deltas: Tensor, weights: Tensor) -> Tensor:
        return ties_combine(deltas, weights, self.normalize)


@dataclass
class Ema(MergeMethod):
    """Exponentially weighted average of checkpoints given oldest first: each weighs `decay` times the next."""

    name: ClassVar[str] = "ema"

    decay: float | None = None
    half_life: float | None = None
    rate: float = field(init=False)  # the decay in use, from `decay` or `half_life`

    def __post_init__(self) -> None:
        if (self.decay is None) == (self.half_life is None):
            raise MergeError("method=ema needs exactly one of decay (in [0, 1)) or half_life (checkpoints)")
        if self.half_life is not None:
            try:
                self.rate = decay_from_half_life(float(self.half_life))
            except (TypeError, ValueError):
                raise MergeError(
                    f"half_life must be a positive number of checkpoints, got {self.half_life!r}"
                ) from None
        elif 0.0 <= _number("decay", self.decay, "in [0, 1)") < 1.0:
            self.rate = float(self.decay)  # type: ignore[arg-type]
        else:
            raise MergeError(f"decay must be in [0, 1), got {self.decay}")

    def weights_for(self, n_models: int) -> tuple[float, ...]:
        return tuple(ema_weights(n_models, self.rate))

    def parameters(self, weights: Sequence[float]) -> dict[str, Any]:
        return {"weights": list(weights), "decay": self.rate, "half_life": self.half_life}

    def combine(self, tensor: TensorChunks, weights: Tensor) -> Iterator[Tensor]:
        return _average(tensor, weights, normalize=True)  # the weights sum to 1 up to rounding


METHODS: dict[str, type[MergeMethod]] = {m.name: m for m in (Ties, TaskArithmetic, Linear, Ema)}
