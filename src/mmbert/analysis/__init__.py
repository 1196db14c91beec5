"""Analyses of a recipe's runs and checkpoints, shared by the notebooks in ``notebooks/``."""

from mmbert.analysis.corpus import (
    language_script,
    languages_with_test_split,
    matching_languages,
    one_per_script,
    read_parallel,
    read_test_texts,
)
from mmbert.analysis.discovery import find_checkpoints, find_runs, order_key, parent_of, phase_of
from mmbert.analysis.embeddings import (
    CrossLingual,
    crosslingual_checkpoints,
    crosslingual_similarity,
    embed_parallel,
    mean_pooled,
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
from mmbert.analysis.plotting import mark_phases, plot_curves, plot_heatmap, plot_shares, run_colors

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
    "mean_pooled",
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
