"""Analyses of a recipe's runs and checkpoints, shared by the notebooks in ``notebooks/``.

The plotting functions are imported on first use, so that the analyses that draw nothing run without
matplotlib (an extra: ``pip install -e .[notebooks]``).
"""

from typing import Any

from mmbert.analysis.corpus import matching_languages, one_per_script
from mmbert.analysis.discovery import find_checkpoints, find_runs, order_key, parent_of, phase_of
from mmbert.analysis.embeddings import (
    CrossLingual,
    crosslingual_checkpoints,
    crosslingual_similarity,
    embed_parallel,
    summarise,
)
from mmbert.analysis.evaluation import (
    EVAL_MASK_RATIO,
    MaskedEvalSet,
    build_eval_set,
    evaluate_checkpoints,
    evaluate_model,
    improvement_kept,
)
from mmbert.analysis.fillmask import (
    MaskedSentence,
    choose_word,
    fill_mask,
    fill_mask_checkpoints,
    mask_word,
    pick_masked_sentences,
)
from mmbert.analysis.metrics import (
    collect_metrics,
    metric_table,
    phase_starts,
    read_metrics,
)
from mmbert.analysis.mixture import added_languages, mixture_shares, read_mixture, share_matrix
from mmbert.analysis.models import iter_checkpoints, load_checkpoint
from mmbert.data.eval_texts import languages_with_test_split, read_parallel, read_test_texts
from mmbert.data.langcodes import language_script

_PLOTTING = frozenset({"mark_phases", "plot_curves", "plot_heatmap", "plot_shares", "run_colors"})


def __getattr__(name: str) -> Any:
    if name in _PLOTTING:
        from mmbert.analysis import plotting

        return getattr(plotting, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EVAL_MASK_RATIO",
    "CrossLingual",
    "MaskedEvalSet",
    "MaskedSentence",
    "added_languages",
    "build_eval_set",
    "choose_word",
    "collect_metrics",
    "crosslingual_checkpoints",
    "crosslingual_similarity",
    "embed_parallel",
    "evaluate_checkpoints",
    "evaluate_model",
    "fill_mask",
    "fill_mask_checkpoints",
    "find_checkpoints",
    "find_runs",
    "improvement_kept",
    "iter_checkpoints",
    "language_script",
    "languages_with_test_split",
    "load_checkpoint",
    "mark_phases",
    "mask_word",
    "matching_languages",
    "metric_table",
    "mixture_shares",
    "one_per_script",
    "order_key",
    "parent_of",
    "phase_of",
    "phase_starts",
    "pick_masked_sentences",
    "plot_curves",
    "plot_heatmap",
    "plot_shares",
    "read_metrics",
    "read_mixture",
    "read_parallel",
    "read_test_texts",
    "run_colors",
    "share_matrix",
    "summarise",
]
