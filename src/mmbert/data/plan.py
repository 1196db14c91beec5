"""Mixture plan, offline: what each language of a phase gets, before any data is read (the command line is
:mod:`mmbert.cli.plan`).

From a ``data_mix`` config it instantiates only the mix: no datamodule, model or tokenizer, no hub
access, no data read. The plan is one line per language, largest share first (``top`` lines, then a summary
line):

- ``share``: the target token share at ``phase.tau`` (:meth:`mmbert.data.CountMeaning.weights`: the release's
  own shares for the released mixtures, ``n^tau`` of the counted tokens for folder and sample mixes);
- ``tokens``: share x the phase's token budget (the recipe's ``tokens`` x ``token_scale``);
- ``data`` and ``passes``: where the mix knows how much data a language has (folder and sample mixes: their
  counted tokens; MDS shards: their size; released hub mixtures: unknown, their counts are shares), the
  tokens of it and the passes over it, flagged ``!`` above ``max_passes``. The default, 4, is where repeating
  data stops being almost as good as fresh data (Muennighoff et al. 2023, "Scaling Data-Constrained Language
  Models").

The plan itself is in the ``mixture.json`` schema (:func:`mmbert.data.mix.report.mixture_report`), which the
command's ``out=FILE`` writes.

By default token counts are not measured here, since that reads the corpus: a folder mix uses its given
``data_mix.token_counts`` or the counts cached for its files (looked up by file sizes, without loading the
tokenizer; if the cache holds counts of several tokenizers for them, which is the mix's cannot be told), and
otherwise the plan refuses, naming the setting. With ``count=estimate`` or ``count=exact`` it measures the
missing ones as a training run does when it starts (:mod:`mmbert.data.counts`: a sample of each language,
or every document; with a progress bar) and caches them where the run will find them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from mmbert.data.counts import check_method
from mmbert.data.mix.base import MixSpec
from mmbert.data.mix.build import instantiate_mix
from mmbert.data.mix.folder import FolderMix
from mmbert.data.mix.mds import MdsMix
from mmbert.data.mix.report import mixture_report
from mmbert.data.sampling import check_tau
from mmbert.errors import DataError


def _unmeasured(mix: MixSpec) -> DataError:
    where = f" ({mix.root})" if isinstance(mix, FolderMix | MdsMix) else ""
    return DataError(
        f"data_mix: the token counts of mix {mix.name!r}{where} are not measured for these files yet (or "
        "measured with several tokenizers) and the plan reads no data: give them in data_mix.token_counts, "
        "measure and cache them with count=estimate (a sample of each language) or count=exact, or start a "
        "training run once, which measures and caches them"
    )


def _measured(mix: MixSpec, count: str) -> dict[str, int]:
    """The mix's counts, measuring and caching those missing: a folder mix by ``count`` (``estimate`` or
    ``exact``, whatever its ``data_mix.count_tokens``), other mixes as a training run does."""
    if isinstance(mix, FolderMix):
        mix.count_method = check_method(count, "count")
    return mix.token_counts()


def plan(
    mix_cfg: DictConfig, tau: float, budget_tokens: int, count: str | None = None
) -> tuple[MixSpec, dict[str, Any]]:
    """The mix of a ``data_mix`` config and its plan at ``tau`` over ``budget_tokens``, in the
    ``mixture.json`` schema; ``count`` (``estimate`` or ``exact``) measures counts that are not cached."""
    try:
        check_tau(tau)
    except DataError as e:
        raise DataError(f"phase.tau: {e}") from e
    mix = instantiate_mix(mix_cfg)
    known = mix.known_counts() if count is None else _measured(mix, count)
    if known is None:
        raise _unmeasured(mix)
    # A language counted at 0 tokens has no usable document: training excludes it, and so does the plan.
    counts = {lang: known[lang] for lang in mix.languages if known[lang] > 0}
    if not counts:
        raise DataError(f"mix {mix.name!r}: no language has a usable document")
    weights = mix.meaning.weights(counts, tau)
    report = mixture_report(mix.meaning, tau, weights, counts, budget_tokens, known)
    report["excluded"] = {lang: "no usable documents" for lang in mix.languages if lang not in counts}
    return mix, report


def _human(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _percent(share: float) -> str:
    # two decimals as the release's figures are quoted; significant digits for the long tail of decay-all
    return f"{100 * share:.2f}%" if share >= 1e-4 else f"{100 * share:.2g}%"


def format_plan(report: Mapping[str, Any], header: str, top: int, max_passes: float) -> str:
    """The plan as a table, ``top`` lines largest share first, and a summary line."""
    entries = sorted(report["languages"].items(), key=lambda kv: (-kv[1]["weight"], kv[0]))
    lines = [header, f"{'#':>5}  {'language':<10} {'share':>8} {'tokens':>8} {'data':>8} {'passes':>9}"]
    for i, (lang, e) in enumerate(entries[:top], 1):
        data = "-" if e["passes"] is None else _human(e["budget_tokens"] / e["passes"])
        passes = "-" if e["passes"] is None else f"{e['passes']:,.2f}"
        flag = " !" if e["passes"] is not None and e["passes"] > max_passes else ""
        share = _percent(e["weight"])
        lines.append(
            f"{i:>5}  {lang:<10} {share:>8} {_human(e['budget_tokens']):>8} {data:>8} {passes:>9}{flag}"
        )
    total = sum(e["budget_tokens"] for _, e in entries)
    if all(e["passes"] is None for _, e in entries):
        passes = "passes unknown (the mix's counts are shares of a release, not the size of its data)"
    else:
        flagged = sum(e["passes"] is not None and e["passes"] > max_passes for _, e in entries)
        passes = f"{flagged} above max_passes={max_passes:g}"
    added = report.get("added") or {}
    if added:
        passes += "; added at fixed shares (data_mix.add): " + ", ".join(
            f"{lang} {_percent(share)}" for lang, share in added.items()
        )
    excluded = sorted(report.get("excluded", {}))
    if excluded:
        passes += f"; excluded (no usable documents): {', '.join(excluded)}"
    lines.append(f"{len(entries)} languages ({len(entries) - min(top, len(entries))} not shown), "
                 f"{_human(total)} tokens, {passes}")  # fmt: skip
    return "\n".join(lines)


def plan_header(mix: MixSpec, phase: str, tau: float, budget_tokens: int) -> str:
    counts = mix.meaning.counts
    if counts == "released":
        tau = mix.meaning.released_tau
        counts += f" (sampled at tau {tau})" if tau is not None else " (read at their sizes)"
    return (
        f"mixture plan: {type(mix).__name__} {mix.name!r}, counts {counts}; phase {phase}, tau {tau}, "
        f"budget {_human(budget_tokens)} tokens (recipe.tokens x token_scale)"
    )
