"""What a mix's token counts mean, and so how a phase's ``tau`` turns them into target shares.

One immutable value per mix (:attr:`mmbert.data.mix.base.MixSpec.meaning`), checked when it is made:

- ``counts: available`` (folder and sample mixes, user-given counts): the tokens each language *has*;
  the phase samples ``q_i = n_i^tau / sum_j n_j^tau``.
- ``counts: released`` (the released mixtures, the released MDS shards): the tokens of each language in
  already temperature-sampled data, i.e. the target shares themselves (``count_i / total``), which tau must
  not flatten a second time. ``released_tau`` is the tau the release was sampled with; a phase run at another
  tau (an ablation) re-tempers the entries not in ``fixed_shares`` from their implied available tokens
  ``n_i ~ share_i^(1 / released_tau)``, keeping their total share, while the ``fixed_shares`` entries
  (sources outside the temperature sampling, e.g. English and code) keep theirs
  (:func:`mmbert.data.sampling.released_weights`). ``released_tau: null`` takes the phase's tau: the counts are
  then read at their sizes whatever the tau.

Languages added to a mix at a chosen share (``data_mix.add``, :mod:`mmbert.data.mix.added`) are outside both:
``added`` maps each to its target share, which tau leaves as it is; the mix's own languages share the rest,
``1 - sum(added)``, in the proportions their counts give.

Apart from how tau applies, the meaning says how much data lies behind the counts (for the passes of
``mixture.json``): available counts are the data's tokens, scaled by ``upweight`` where a subset weighs a
language up (the sample's ``decay-eng``); released counts are not, unless they were measured on the data
itself (``of_data``: MDS shards are all the data there is).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import KW_ONLY, InitVar, dataclass, field
from types import MappingProxyType

from mmbert.data.sampling import check_tau, released_weights, temperature_weights
from mmbert.errors import DataError

AVAILABLE, RELEASED = "available", "released"


@dataclass(frozen=True)
class CountMeaning:
    """``counts``, ``released_tau`` and ``fixed_shares`` as the module docstring says; ``upweight``: factors the
    available counts carry over the data's tokens; ``of_data``: released counts measured on the data itself.

    ``where`` names the mix in errors, and ``entries`` (the mix's languages, when known) are what
    ``fixed_shares`` may name; neither is kept.
    """

    counts: str = AVAILABLE
    released_tau: float | None = None
    fixed_shares: tuple[str, ...] = ()
    _: KW_ONLY
    upweight: Mapping[str, float] = field(default_factory=dict, hash=False)
    of_data: bool = False
    added: Mapping[str, float] = field(default_factory=dict, hash=False)
    where: InitVar[str] = "data_mix"
    entries: InitVar[Collection[str] | None] = None

    def __post_init__(self, where: str, entries: Collection[str] | None) -> None:
        if self.counts not in (AVAILABLE, RELEASED):
            raise DataError(f"{where}: counts must be {AVAILABLE!r} or {RELEASED!r}, got {self.counts!r}")
        fixed = tuple(self.fixed_shares)
        if self.counts == AVAILABLE and (self.released_tau is not None or fixed):
            raise DataError(f"{where}: released_tau and fixed_shares need counts: {RELEASED}")
        if self.released_tau is not None:
            try:
                check_tau(self.released_tau)
            except DataError as e:
                raise DataError(f"{where}: released_tau: {e}") from e
        unknown = sorted(set(fixed) - set(entries)) if entries is not None else []
        if unknown:
            raise DataError(f"{where}: fixed_shares has entries not in the mix: {unknown}")
        for lang, share in self.added.items():
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
                raise DataError(f"data_mix.add.{lang}.share must be a number in (0, 1), got {share!r}")
        if self.added and sum(self.added.values()) >= 1:
            raise DataError(
                f"data_mix.add: the shares sum to {sum(self.added.values()):g} (must be < 1: the mix's own "
                f"languages share the rest): {dict(self.added)}"
            )
        # frozen: the immutable copies are set once, here
        object.__setattr__(self, "fixed_shares", fixed)
        object.__setattr__(self, "upweight", MappingProxyType(dict(self.upweight)))
        object.__setattr__(self, "added", MappingProxyType(dict(self.added)))

    # A mapping proxy does not pickle; the data module (and so this value) travels to spawned DDP processes.
    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "upweight": dict(self.upweight), "added": dict(self.added)}

    def __setstate__(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, MappingProxyType(value) if key in ("upweight", "added") else value)

    def weights(self, counts: Mapping[str, float], tau: float) -> dict[str, float]:
        """Target token share of each language of ``counts`` (in their order) in a phase sampled at ``tau``."""
        own = {lang: n for lang, n in counts.items() if lang not in self.added}
        if not own:
            shares = {}
        elif self.counts == AVAILABLE:
            shares = temperature_weights(own, tau)
        else:
            released = tau if self.released_tau is None else self.released_tau
            shares = released_weights(own, tau, released, self.fixed_shares)
        rest = 1.0 - sum(self.added.values())
        return {lang: self.added[lang] if lang in self.added else shares[lang] * rest for lang in counts}

    @property
    def sizes_data(self) -> bool:
        """Whether the counts tell how many tokens of data each language has (so passes over it are known)."""
        return self.counts == AVAILABLE or self.of_data

    def upweighted(self, data_tokens: Mapping[str, int]) -> dict[str, int]:
        """The counts of languages holding ``data_tokens`` tokens of data."""
        return {lang: round(n * self.upweight.get(lang, 1.0)) for lang, n in data_tokens.items()}

    def data_tokens(self, counts: Mapping[str, int] | None) -> dict[str, int] | None:
        """Tokens of data behind each language of ``counts``; None where that is not known (no counts, or
        counts that do not size the data). Undoes :meth:`upweighted` exactly for factors >= 1, whose
        rounding error divides to under half a token."""
        if counts is None or not (self.sizes_data or self.added):
            return None
        return {  # added languages' counts are always their data's tokens
            lang: round(n / self.upweight[lang]) if lang in self.upweight else n
            for lang, n in counts.items()
            if self.sizes_data or lang in self.added
        }
