"""Downstream evaluation of any checkpoint: classification, tagging, extractive QA (fine-tuned on the packed
encoder) and bitext retrieval (embeddings only), per language. Entry point: ``evaluate.py``."""

from mmbert.downstream.loading import load_encoder
from mmbert.downstream.metrics import (
    accuracy,
    bio_entities,
    entity_f1,
    exact_match,
    macro_f1,
    normalize_answer,
    retrieval_accuracy,
    squad_scores,
    token_f1,
)
from mmbert.downstream.results import read_results, table_rows, write_results, write_table
from mmbert.downstream.run import evaluate
from mmbert.downstream.tasks import ClassifyTask, QaTask, RetrieveTask, TagTask, Task

__all__ = [
    "ClassifyTask",
    "QaTask",
    "RetrieveTask",
    "TagTask",
    "Task",
    "accuracy",
    "bio_entities",
    "entity_f1",
    "evaluate",
    "exact_match",
    "load_encoder",
    "macro_f1",
    "normalize_answer",
    "read_results",
    "retrieval_accuracy",
    "squad_scores",
    "table_rows",
    "token_f1",
    "write_results",
    "write_table",
]
