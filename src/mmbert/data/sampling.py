"""Temperature sampling over languages, by tokens.

``q_i = n_i^tau / sum_j n_j^tau`` is the share of *tokens* language i should get. :class:`TokenSampler`
picks the source of each next document deterministically, so that realised token shares follow ``q`` from
the first batches on, not only in the limit: source i is due when its tokens so far plus an offset (about
half) of its expected next document fall behind its share, i.e. it is picked in the order of
``(tokens_i + offset_i * L_i) / q_i`` (a divisor method, Sainte-Lague-like, counted in tokens), and each pick
adds ``L_i`` to the source's pending tokens for the picks after it in the same call. ``L_i`` is the expected
tokens of its next document: the known mean of the source (counted tokens / documents) where given, else the
mean observed over all sources, refined by the documents it has drawn. Errors in ``L_i`` only shift when a
source is due; the realised tokens drive the shares. The samplers of several shards stagger their offsets,
so that together they pick like one sampler.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from mmbert.errors import DataError

# A counted mean document length weighs as much as this many drawn documents in the length estimate: it is
# measured over the whole source, but with the mix's tokenizer and before chunking to seq_len.
PRIOR_DOCS = 16.0
# Offsets are (shard + 0.5 +- JITTER) / num_shards, the jitter from the seed: sources with equal due times
# (the many tiny languages of a large mix) then enter in a seeded order rather than by index.
JITTER = 0.25


def check_tau(tau: float) -> None:
    if not (isinstance(tau, int | float) and 0.0 < tau <= 1.0):
        raise DataError(f"tau must be in (0, 1], got {tau!r}")


def _check_positive(counts: Mapping[str, float], where: str) -> None:
    if not counts:
        raise DataError(f"{where}: no languages")
    bad = {k: v for k, v in counts.items() if not (isinstance(v, int | float) and v > 0 and math.isfinite(v))}
    if bad:
        raise DataError(f"token counts must be positive numbers; got {bad}")


def _power_shares(counts: Mapping[str, float], exponent: float) -> dict[str, float]:
    """``{lang: n^exponent / sum n^exponent}`` in log space, so 10^12-token counts stay exact in float64."""
    logs = {k: exponent * math.log(v) for k, v in counts.items()}
    top = max(logs.values())
    unnorm = {k: math.exp(v - top) for k, v in logs.items()}
    total = math.fsum(unnorm.values())
    return {k: v / total for k, v in unnorm.items()}


def temperature_weights(counts: Mapping[str, float], tau: float) -> dict[str, float]:
    """``{lang: n^tau / sum n^tau}`` of *available* token counts ``n``."""
    check_tau(tau)
    _check_positive(counts, "temperature_weights")
    return _power_shares(counts, tau)


def released_weights(
    counts: Mapping[str, float], tau: float, released_tau: float, fixed: Collection[str] = ()
) -> dict[str, float]:
    """Shares of a *released*, already temperature-sampled mixture (``counts``: its tokens per language) when
    sampled at ``tau``.

    At ``tau == released_tau`` these are the release's own shares ``count / total``. Otherwise the tempered
    group (every entry not in ``fixed``) is re-tempered: its available tokens are implied as
    ``n_i ~ share_i^(1 / released_tau)``, so its new shares are ``~ n_i^tau = share_i^(tau / released_tau)``,
    scaled to the group's released total; the ``fixed`` entries (sources outside the temperature sampling,
    e.g. English and code) keep their released shares.
    """
    check_tau(tau)
    check_tau(released_tau)
    _check_positive(counts, "released_weights")
    total = math.fsum(counts.values())
    shares = {k: v / total for k, v in counts.items()}
    group = {k: v for k, v in counts.items() if k not in fixed}
    if tau == released_tau or not group:
        return shares  # the release itself, without a log/exp round trip
    mass = math.fsum(shares[k] for k in group)
    # tau / released_tau may exceed 1 (a decay mix at 0.3 re-tempered at 0.7): no check_tau on the exponent.
    tempered = _power_shares(group, tau / released_tau)
    return {k: mass * tempered[k] if k in group else shares[k] for k in counts}


class TokenSampler:
    """Picks source indices so that token shares follow ``weights``; deterministic given its seed.

    ``mean_doc_tokens``: each source's known tokens per document (a prior for the first draws; None where
    unknown). ``state``: what :meth:`state` returned, to continue exactly where that sampler was.
    ``shard`` of ``num_shards``: the samplers of the shards of one stream stagger their phases, so that
    together they draw like one sampler rather than in lock-step.
    """

    def __init__(
        self,
        weights: Sequence[float],
        seed: Sequence[int],
        state: dict[str, Any] | None = None,
        mean_doc_tokens: Sequence[float | None] | None = None,
        shard: int = 0,
        num_shards: int = 1,
    ) -> None:
        q = np.asarray(weights, dtype=np.float64)
        if q.ndim != 1 or not q.size or not (np.isfinite(q).all() and (q >= 0).all() and q.sum() > 0):
            raise DataError(f"sampler weights must be >= 0 with a positive sum, got {list(weights)}")
        self.q = q / q.sum()
        self.prior = _length_prior(mean_doc_tokens, len(q))
        if state is None:
            rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
            jitter = JITTER * (2.0 * rng.random(len(q)) - 1.0)
            self.offsets = (shard + 0.5 + jitter) / num_shards
            self.tokens = np.zeros(len(q), dtype=np.float64)
            self.docs = np.zeros(len(q), dtype=np.float64)
        else:
            if "offsets" not in state:
                raise DataError("sampler state of an older version (no 'offsets'): it cannot be resumed")
            self.offsets = np.asarray(state["offsets"], dtype=np.float64)
            self.tokens = np.asarray(state["tokens"], dtype=np.float64)
            self.docs = np.asarray(state["docs"], dtype=np.float64)
        if not self.offsets.shape == self.tokens.shape == self.docs.shape == q.shape:
            raise DataError(f"sampler state has {len(self.tokens)} sources, the weights {len(q)}")

    def state(self) -> dict[str, Any]:
        return {"offsets": self.offsets.copy(), "tokens": self.tokens.copy(), "docs": self.docs.copy()}

    def mean_lengths(self) -> np.ndarray:
        """Expected tokens of each source's next document: its known mean (worth ``PRIOR_DOCS`` documents)
        or, where unknown, one document of the mean observed over all sources, updated by what it drew."""
        known = ~np.isnan(self.prior)
        if self.docs.sum():
            fallback = self.tokens.sum() / self.docs.sum()
        else:
            fallback = float(self.prior[known].mean()) if known.any() else 1.0
        prior = np.where(known, self.prior, fallback)
        weight = np.where(known, PRIOR_DOCS, 1.0)
        return (self.tokens + weight * prior) / (self.docs + weight)

    def draw(self, k: int) -> np.ndarray:
        """The next ``k`` sources, one at a time: the one due first, counting the expected tokens of those
        picked before it in this call (their documents are observed only after the whole call)."""
        length = self.mean_lengths()
        with np.errstate(divide="ignore"):
            per_token = np.where(self.q > 0, 1.0 / self.q, np.inf)
        due = (self.tokens + self.offsets * length) * per_token
        picks = np.empty(k, dtype=np.int64)
        for j in range(k):
            i = int(np.argmin(due))  # ties: the lower index, so the order is deterministic
            picks[j] = i
            due[i] += length[i] * per_token[i]
        return picks

    def observe(self, source: int, tokens: int) -> None:
        self.tokens[source] += tokens
        self.docs[source] += 1


def _length_prior(mean_doc_tokens: Sequence[float | None] | None, n: int) -> np.ndarray:
    """Known tokens per document as an array, NaN where unknown (None, or not a positive number)."""
    if mean_doc_tokens is None:
        return np.full(n, np.nan)
    if len(mean_doc_tokens) != n:
        raise DataError(f"mean_doc_tokens has {len(mean_doc_tokens)} entries for {n} sources")
    prior = np.array([np.nan if m is None else float(m) for m in mean_doc_tokens])
    return np.where(np.isfinite(prior) & (prior > 0), prior, np.nan)
