"""Pure tensor operations for model merging: fp32 tensors in, fp32 tensors out, no file access.

Large tensors are merged in row chunks, so everything that needs a view of the whole tensor (the TIES
magnitude threshold) is written to accept the tensor in chunks of flat (row-major) order. The whole-tensor
helpers at the bottom are the same operations fed a single chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "MagnitudeSelect",
    "MagnitudeTrim",
    "Threshold",
    "decay_from_half_life",
    "ema_weights",
    "keep_count",
    "linear_combine",
    "linear_merge",
    "task_arithmetic_combine",
    "task_arithmetic_merge",
    "ties_combine",
    "ties_merge",
    "trim_magnitude",
]

_HIGH_BUCKETS = 1 << 15  # top 16 bits of a non-negative float32: sign bit is 0
_LOW_BUCKETS = 1 << 16


def keep_count(numel: int, density: float) -> int:
    """Entries a TIES trim keeps: mergekit's `int(density * numel)`, but at least one.

    mergekit refuses a tensor where the product rounds to 0; keeping its largest entry is the closer
    reading of "keep the top fraction" and lets tiny tensors (norm weights of toy models) through.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    return numel if density >= 1.0 else max(1, int(density * numel))


def _magnitude_bits(x: Tensor) -> Tensor:
    # For finite non-negative float32, the int32 bit pattern orders like the value; masking the sign bit
    # is |x| without a float pass (and maps -0.0 to 0).
    if x.dtype != torch.float32:
        raise TypeError(f"expected float32, got {x.dtype}")
    return x.reshape(-1).view(torch.int32) & 0x7FFFFFFF


def _bucket_from_top(counts: Tensor, k: int) -> tuple[int, int]:
    """Bucket holding the k-th largest entry (1-based) and the number of entries in higher buckets."""
    from_top = counts.flip(0).cumsum(0)
    idx = int(torch.searchsorted(from_top, torch.tensor([k], dtype=from_top.dtype))[0])
    return counts.numel() - 1 - idx, int(from_top[idx - 1]) if idx > 0 else 0


@dataclass(frozen=True)
class Threshold:
    """The k-th largest magnitude of a tensor, and how to keep exactly k entries.

    Keep every entry with |x| > value, then the first `k - n_above` entries (flat order) with |x| == value:
    a deterministic tie-break, so chunked and whole-tensor trims agree entry for entry.
    """

    value: float
    n_above: int
    k: int


class MagnitudeSelect:
    """Exact k-th largest |x| of a tensor streamed in chunks, in two passes of radix select.

    Pass 1 histograms the top 16 bits of |x|, pass 2 the low 16 bits inside the bucket pass 1 picked, so
    memory stays at one chunk plus two small histograms however large the tensor is. Feed every chunk
    with `update`, call `end_pass`, repeat; then read `threshold`.
    """

    passes = 2

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._pass = 0
        self._counts = torch.zeros(_HIGH_BUCKETS, dtype=torch.int64)
        self._high = 0
        self._n_above_high = 0
        self._threshold: Threshold | None = None

    def update(self, chunk: Tensor) -> None:
        bits = _magnitude_bits(chunk)
        if self._pass == 0:
            self._counts += torch.bincount(bits >> 16, minlength=_HIGH_BUCKETS)
        elif self._pass == 1:
            low = bits[(bits >> 16) == self._high] & 0xFFFF
            self._counts += torch.bincount(low, minlength=_LOW_BUCKETS)
        else:
            raise RuntimeError("MagnitudeSelect already finished both passes")

    def end_pass(self) -> None:
        if self._pass == 0:
            total = int(self._counts.sum())
            if self.k > total:
                raise ValueError(f"k={self.k} exceeds the {total} entries seen")
            self._high, self._n_above_high = _bucket_from_top(self._counts, self.k)
            self._counts = torch.zeros(_LOW_BUCKETS, dtype=torch.int64)
        elif self._pass == 1:
            low, n_above_low = _bucket_from_top(self._counts, self.k - self._n_above_high)
            bits = torch.tensor([(self._high << 16) | low], dtype=torch.int32)
            self._threshold = Threshold(
                value=float(bits.view(torch.float32)[0]), n_above=self._n_above_high + n_above_low, k=self.k
            )
        self._pass += 1

    @property
    def threshold(self) -> Threshold:
        if self._threshold is None:
            raise RuntimeError("MagnitudeSelect needs both passes before its threshold is known")
        return self._threshold


class MagnitudeTrim:
    """Zeroes all but the top-k magnitudes given a `Threshold`; call on the chunks in flat order."""

    def __init__(self, threshold: Threshold) -> None:
        self.threshold = threshold
        self._ties_left = threshold.k - threshold.n_above

    def __call__(self, chunk: Tensor) -> Tensor:
        mag = chunk.abs()
        keep = mag > self.threshold.value
        if self._ties_left > 0:
            tied = (mag == self.threshold.value).reshape(-1).nonzero().squeeze(1)[: self._ties_left]
            keep.view(-1)[tied] = True
            self._ties_left -= tied.numel()
        return torch.where(keep, chunk, torch.zeros((), dtype=chunk.dtype))


def _column(weights: Tensor, ndim: int) -> Tensor:
    """Weights shaped [K, 1, ..., 1] to broadcast against stacked [K, ...] tensors."""
    return weights.reshape(-1, *([1] * (ndim - 1)))


def _check_stack(stacked: Tensor, weights: Tensor) -> None:
    if weights.dim() != 1 or stacked.dim() < 1 or weights.numel() != stacked.shape[0]:
        raise ValueError(f"{weights.numel()} weights for a stack of shape {tuple(stacked.shape)}")


def ties_combine(trimmed: Tensor, weights: Tensor, normalize: bool) -> Tensor:
    """TIES sign election and disjoint mean of trimmed task vectors stacked as [K, ...].

    Weights scale each task vector before the election; the elected sign is the sign of the weighted
    sum (mass, ties go to +). Only non-zero weighted entries of the elected sign contribute; with
    `normalize` their sum is divided by the summed weights of exactly those entries.
    """
    _check_stack(trimmed, weights)
    w = _column(weights.to(trimmed.dtype), trimmed.dim())
    weighted = trimmed * w
    elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0).to(trimmed.dtype)
    agree = torch.sign(weighted) == elected
    merged = torch.where(agree, weighted, 0.0).sum(0)
    if normalize:
        divisor = torch.where(agree, w, 0.0).sum(0)
        merged /= torch.where(divisor == 0, 1.0, divisor)
    return merged


def task_arithmetic_combine(deltas: Tensor, weights: Tensor, normalize: bool) -> Tensor:
    """Weighted sum of task vectors stacked as [K, ...]; `normalize` divides by the weight sum.

    A weight sum of (nearly) zero is left undivided, as mergekit does.
    """
    _check_stack(deltas, weights)
    merged = (deltas * _column(weights.to(deltas.dtype), deltas.dim())).sum(0)
    total = float(weights.sum())
    if normalize and abs(total) >= 1e-8:
        merged /= total
    return merged


def linear_combine(tensors: Tensor, weights: Tensor, normalize: bool) -> Tensor:
    """Weighted sum of models stacked as [K, ...]; `normalize` makes it a weighted average."""
    _check_stack(tensors, weights)
    merged = (tensors * _column(weights.to(tensors.dtype), tensors.dim())).sum(0)
    if normalize:
        total = float(weights.sum())
        if total == 0:
            raise ValueError("weights sum to 0: a normalized linear merge is undefined")
        merged /= total
    return merged


def ema_weights(n: int, decay: float) -> list[float]:
    """Weights of an exponentially weighted average of n checkpoints, oldest first, summing to 1.

    Checkpoint i gets `decay ** (n - 1 - i)` before normalization: the newest weighs most, each older one
    `decay` times the next. decay 0 keeps only the newest (0 ** 0 == 1).
    """
    if n < 1:
        raise ValueError("ema needs at least one checkpoint")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    raw = [decay ** (n - 1 - i) for i in range(n)]
    total = math.fsum(raw)
    return [r / total for r in raw]


def decay_from_half_life(half_life: float) -> float:
    """Per-checkpoint decay whose weights halve every `half_life` checkpoints."""
    if not half_life > 0 or not math.isfinite(half_life):
        raise ValueError(f"half_life must be a positive number of checkpoints, got {half_life}")
    return 0.5 ** (1.0 / half_life)


def _float_stack(tensors: Sequence[Tensor]) -> Tensor:
    return torch.stack([t.to(torch.float32) for t in tensors])


def trim_magnitude(delta: Tensor, density: float) -> Tensor:
    """Keep the top `density` fraction of a tensor's entries by magnitude, zero the rest."""
    delta = delta.to(torch.float32)
    k = keep_count(delta.numel(), density)
    if k == delta.numel():
        return delta.clone()
    select = MagnitudeSelect(k)
    for _ in range(select.passes):
        select.update(delta)
        select.end_pass()
    return MagnitudeTrim(select.threshold)(delta)


def ties_merge(
    base: Tensor,
    models: Sequence[Tensor],
    weights: Sequence[float],
    density: float,
    lam: float = 1.0,
    normalize: bool = True,
) -> Tensor:
    """TIES merge of whole tensors: trim each task vector, elect signs, disjoint mean, scale by lambda."""
    base32 = base.to(torch.float32)
    trimmed = torch.stack([trim_magnitude(m.to(torch.float32) - base32, density) for m in models])
    return base32 + lam * ties_combine(trimmed, torch.tensor(weights, dtype=torch.float32), normalize)


def task_arithmetic_merge(
    base: Tensor, models: Sequence[Tensor], weights: Sequence[float], lam: float = 1.0, normalize: bool = True
) -> Tensor:
    """base + lambda * (weighted sum of task vectors, divided by the weight sum when normalizing)."""
    base32 = base.to(torch.float32)
    deltas = _float_stack(models) - base32
    merged = task_arithmetic_combine(deltas, torch.tensor(weights, dtype=torch.float32), normalize)
    return base32 + lam * merged


def linear_merge(models: Iterable[Tensor], weights: Sequence[float], normalize: bool = True) -> Tensor:
    """Weighted average (or plain weighted sum without `normalize`) of whole tensors."""
    return linear_combine(_float_stack(list(models)), torch.tensor(weights, dtype=torch.float32), normalize)
