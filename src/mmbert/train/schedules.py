"""Learning-rate and mask-ratio schedules as pure functions of tokens seen.

Every schedule maps ``tokens`` (an int, global tokens consumed so far) to a multiplier or a value. Units are
tokens throughout, never steps, so a schedule does not change when the batch size does (batch-size warmup)
or when a run is stopped early with ``trainer.max_steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mmbert.data.masking import check_mask_ratio


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def linear_warmup(tokens: int, warmup_tokens: int) -> float:
    """Linear ramp from ~0 to 1 over ``warmup_tokens``; 1 afterwards (and when there is no warmup)."""
    if warmup_tokens <= 0 or tokens >= warmup_tokens:
        return 1.0
    return max(tokens, 0) / warmup_tokens


def decay_fraction(tokens: int, decay_start: int, decay_tokens: int) -> float:
    """Fraction ``f`` of the decay window elapsed, clamped to [0, 1]."""
    if decay_tokens <= 0:
        return 1.0 if tokens >= decay_start else 0.0
    return min(max((tokens - decay_start) / decay_tokens, 0.0), 1.0)


def linear_decay(f: float, alpha_f: float) -> float:
    """``1 - f * (1 - alpha_f)``: 1 at the start of the window, ``alpha_f`` at its end."""
    return 1.0 - f * (1.0 - alpha_f)


def one_minus_sqrt_decay(f: float, alpha_f: float) -> float:
    """``alpha_f + (1 - alpha_f) * (1 - sqrt(f))``: the mmBERT decay shape."""
    return alpha_f + (1.0 - alpha_f) * (1.0 - math.sqrt(f))


@dataclass(frozen=True)
class LRSchedule:
    """Warmup, then constant, then an optional decay over the last ``decay_tokens`` of ``total_tokens``.

    ``kind`` selects the decay shape: ``constant`` (no decay), ``linear`` (warmup-stable-decay) or
    ``one_minus_sqrt``. ``alpha_f`` is the final multiplier of the peak LR.
    """

    kind: str = "constant"
    warmup_tokens: int = 0
    total_tokens: int = 0
    decay_tokens: int = 0
    alpha_f: float = 0.0

    KINDS = ("constant", "linear", "one_minus_sqrt")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"lr schedule kind must be one of {self.KINDS}, got {self.kind!r}")
        _check_fraction("alpha_f", self.alpha_f)
        for name in ("warmup_tokens", "total_tokens", "decay_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.kind != "constant" and self.decay_tokens > self.total_tokens:
            raise ValueError(f"decay_tokens ({self.decay_tokens}) exceeds total_tokens ({self.total_tokens})")

    @property
    def decay_start(self) -> int:
        return self.total_tokens - self.decay_tokens

    def __call__(self, tokens: int) -> float:
        mult = linear_warmup(tokens, self.warmup_tokens)
        if self.kind == "constant":
            return mult
        f = decay_fraction(tokens, self.decay_start, self.decay_tokens)
        shape = linear_decay if self.kind == "linear" else one_minus_sqrt_decay
        return mult * shape(f, self.alpha_f)


@dataclass(frozen=True)
class MaskSchedule:
    """Mask ratio moving linearly from ``start`` to ``end`` over ``tokens`` (constant when equal)."""

    start: float
    end: float | None = None
    tokens: int = 0

    def __post_init__(self) -> None:
        check_mask_ratio("mask ratio start", self.start)
        if self.end is not None:
            check_mask_ratio("mask ratio end", self.end)

    def __call__(self, tokens: int) -> float:
        end = self.start if self.end is None else self.end
        if self.tokens <= 0:
            return end if tokens > 0 and end != self.start else self.start
        f = min(max(tokens / self.tokens, 0.0), 1.0)
        return self.start + f * (end - self.start)


@dataclass(frozen=True)
class BatchSizeWarmup:
    """Global packed rows per optimizer step grow from ``min_rows`` to ``max_rows`` over ``warmup_tokens``.

    As in ModernBERT, the batch grows in discrete increments when tokens seen cross evenly spaced
    thresholds; ``num_steps`` increments split the warmup budget. Stage ``s`` (0-based) trains
    ``min_rows + (max_rows - min_rows) * s // num_steps`` rows. On ``devices`` devices every device trains
    the same rows, so a stage that does not split evenly is rounded *down* to a multiple of ``devices``
    (never below one row per device); ``max_rows`` itself must split evenly.
    """

    min_rows: int
    max_rows: int
    warmup_tokens: int = 0
    num_steps: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min_rows <= self.max_rows:
            raise ValueError(f"need 1 <= min_rows <= max_rows, got {self.min_rows} and {self.max_rows}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")

    def __call__(self, tokens: int, devices: int = 1) -> int:
        if self.max_rows % devices:
            raise ValueError(f"max_rows={self.max_rows} does not split over {devices} devices")
        if self.warmup_tokens <= 0 or tokens >= self.warmup_tokens:
            return self.max_rows
        stage = int(tokens * self.num_steps // self.warmup_tokens)
        rows = self.min_rows + (self.max_rows - self.min_rows) * stage // self.num_steps
        return max(devices, rows // devices * devices)
