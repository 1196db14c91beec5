"""Temperature sampling over languages, by tokens.

``q_i = n_i^tau / sum_j n_j^tau`` is the share of *tokens* language i should get. Documents are drawn one
source at a time, so the draw probability corrects for document length: source i is drawn with probability
proportional to ``q_i / L_i``, ``L_i`` its mean tokens per document, estimated online from the documents drawn
so far (with a prior of one document of the global mean), and each probability is nudged by how far the
source's realised share has drifted from ``q_i`` (a factor ``exp(-4 * relative drift)``), so realised token
shares stay close to ``q`` over short spans as well as in the limit. Deterministic given the seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmbert.data.errors import DataError

GAIN = 4.0


def check_tau(tau: float) -> None:
    if not (isinstance(tau, int | float) and 0.0 < tau <= 1.0):
        raise DataError(f"tau must be in (0, 1], got {tau!r}")


def temperature_weights(counts: Mapping[str, float], tau: float) -> dict[str, float]:
    """``{lang: n^tau / sum n^tau}``, computed in log space so 10^12-token counts stay exact in float64."""
    check_tau(tau)
    if not counts:
        raise DataError("temperature_weights: no languages")
    bad = {k: v for k, v in counts.items() if not (isinstance(v, int | float) and v > 0 and math.isfinite(v))}
    if bad:
        raise DataError(f"token counts must be positive numbers; got {bad}")
    logs = {k: tau * math.log(v) for k, v in counts.items()}
    top = max(logs.values())
    unnorm = {k: math.exp(v - top) for k, v in logs.items()}
    total = math.fsum(unnorm.values())
    return {k: v / total for k, v in unnorm.items()}


class TokenSampler:
    """Draws source indices so that token shares follow ``weights``; deterministic given its seed."""

    def __init__(
        self, weights: Sequence[float], seed: Sequence[int], state: dict[str, Any] | None = None
    ) -> None:
        self.q = np.asarray(weights, dtype=np.float64)
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(seed))))
        self.tokens = np.zeros(len(self.q), dtype=np.float64)
        self.docs = np.zeros(len(self.q), dtype=np.float64)
        if state is not None:
            self.rng.bit_generator.state = state["rng"]
            self.tokens = np.asarray(state["tokens"], dtype=np.float64)
            self.docs = np.asarray(state["docs"], dtype=np.float64)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "tokens": self.tokens.copy(), "docs": self.docs.copy()}

    def draw(self, k: int) -> np.ndarray:
        total_docs, total_tokens = self.docs.sum(), self.tokens.sum()
        prior = total_tokens / total_docs if total_docs else 1.0
        mean_len = (self.tokens + prior) / (self.docs + 1.0)
        p = self.q / mean_len
        if total_tokens:
            # Feedback on the realised shares: i.i.d. draws alone let small languages drift by tens of percent
            # over short spans; nudging towards q keeps every window of the stream close to the mixture.
            drift = np.clip(self.tokens / (total_tokens * self.q) - 1.0, -1.0, 1.0)
            p = p * np.exp(-GAIN * drift)
        return self.rng.choice(len(self.q), size=k, p=p / p.sum())

    def observe(self, source: int, tokens: int) -> None:
        self.tokens[source] += tokens
        self.docs[source] += 1
