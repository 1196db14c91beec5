"""What every task type shares: reading and checking its splits, the protocols (cross-lingual zero-shot or
in-language), fine-tuning with early stopping, and metrics overall and per language."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from mmbert.downstream.data import Fields, Split, check_languages, read_split
from mmbert.downstream.finetune import FinetuneConfig, History, finetune
from mmbert.errors import ConfigError
from mmbert.model import MmBertForMaskedLM

log = logging.getLogger(__name__)

PROTOCOLS = ("cross_lingual", "in_language")


@dataclass
class Splits:
    train: Split | None
    dev: Split | None
    test: Split

    def refuse_unseen(self, field: str, values: Callable[[dict[str, Any]], Iterable[Any]], seen: set) -> None:
        """DataError naming the split's file when a dev or test row has a value of ``field`` (``values(row)``)
        that training never saw."""
        for split in (self.dev, self.test):
            if split is None:
                continue
            unseen = sorted({v for r in split.rows for v in values(r)} - seen)
            if unseen:
                raise split.error(f"field '{field}' has values never seen in training: {unseen[:10]}")


class Task:
    """One downstream task (a config of ``conf/task/``). Subclasses say which fields they read, how rows
    become model inputs, the head, the loss, the predictions and the metrics."""

    kind: ClassVar[str]
    fields: ClassVar[Fields]
    main_metric: ClassVar[str]  # selects the best dev epoch
    trains: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        test_file: Any = None,
        train_file: Any = None,
        dev_file: Any = None,
        columns: Mapping[str, str] | None = None,
        protocol: str = "cross_lingual",
        train_languages: Sequence[str] | None = None,
        test_languages: Sequence[str] | None = None,
        max_len: int = 256,
        limit: int | None = None,
        eval_batch_tokens: int = 16384,
        finetune: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.files = {"train": train_file, "dev": dev_file, "test": test_file}
        self.columns = dict(columns or {})
        if protocol not in PROTOCOLS:
            raise ConfigError(f"task.protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol
        self.train_languages = None if train_languages is None else list(train_languages)
        self.test_languages = None if test_languages is None else list(test_languages)
        if max_len < 8:
            raise ConfigError(f"task.max_len must be >= 8, got {max_len}")
        self.max_len = int(max_len)
        self.limit = limit
        self.eval_batch_tokens = int(eval_batch_tokens)
        self.finetune_cfg = FinetuneConfig(**dict(finetune or {}))

    # ---- data --------------------------------------------------------------------------------------------

    def load(self) -> Splits:
        """Read and check every split: DataError naming the file and field before anything trains."""
        if self.files["test"] is None:
            raise ConfigError(f"task.test_file is required (task {self.name})")
        if self.trains and self.files["train"] is None:
            raise ConfigError(f"task.train_file is required: task {self.name} fine-tunes")
        read = {
            split: read_split(split, self.files[split], self.fields, self.columns, self.limit)
            for split in ("train", "dev", "test")
            if self.trains or split == "test"
        }
        splits = Splits(read.get("train"), read.get("dev"), read["test"])  # type: ignore[arg-type]
        check_languages(splits.test, self.test_languages, "task.test_languages")
        if self.test_languages is not None:
            splits.test = splits.test.where(self.test_languages)
        if splits.train is not None:
            check_languages(splits.train, self.train_languages, "task.train_languages")
            if self.train_languages is not None:
                splits.train = splits.train.where(self.train_languages)
                if splits.dev is not None:
                    kept = splits.dev.where(self.train_languages)
                    splits.dev = kept if kept.rows else None
            if self.protocol == "in_language":
                missing = sorted(set(splits.test.languages) - set(splits.train.languages))
                if missing:
                    raise splits.train.error(
                        f"task.protocol=in_language needs training rows in every test language; "
                        f"none in field 'language' for {missing}"
                    )
        for split in (splits.train, splits.dev, splits.test):
            if split is not None:
                self.check_rows(split)
        self.check_splits(splits)
        return splits

    def check_rows(self, split: Split) -> None:
        """Per-row checks of one split (types, spans); DataError via ``split.error``."""

    def check_splits(self, splits: Splits) -> None:
        """Checks across splits (labels of dev/test seen in training)."""

    # ---- model -------------------------------------------------------------------------------------------

    def encode(
        self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, train: bool
    ) -> list[Any]:
        raise NotImplementedError

    def build(self, mlm: MmBertForMaskedLM) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, examples: list[Any], idx: list[int], device: torch.device) -> Tensor:
        raise NotImplementedError

    def predict(
        self, model: nn.Module, rows: list[dict[str, Any]], examples: list[Any], device: torch.device
    ) -> list[Any]:
        """One prediction per row."""
        raise NotImplementedError

    def score(self, rows: list[dict[str, Any]], predictions: list[Any]) -> dict[str, float]:
        raise NotImplementedError

    def length(self, example: Any) -> int:
        return len(example.ids)

    # ---- protocol ----------------------------------------------------------------------------------------

    def run(
        self,
        mlm: MmBertForMaskedLM,
        tokenizer: PreTrainedTokenizerBase,
        splits: Splits,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> dict[str, Any]:
        """``{"metrics": {...overall..., "per_language": {...}}, "training": [...]}``."""
        device = torch.device(device)
        if self.protocol == "in_language" and splits.train is not None:
            groups = [
                (
                    [lang],
                    splits.train.where([lang]),
                    splits.dev.where([lang]) if splits.dev is not None else None,
                    splits.test.where([lang]),
                )
                for lang in splits.test.languages
            ]
        else:
            groups = [(None, splits.train, splits.dev, splits.test)]
        rows: list[dict[str, Any]] = []
        predictions: list[Any] = []
        training = []
        for langs, train, dev, test in groups:
            model, history = self.fit(mlm, tokenizer, train, dev, seed, device)
            if history is not None:
                training.append({"languages": langs, **history.__dict__})
            predictions += self.predict(model, test.rows, self.encode(test.rows, tokenizer, False), device)
            rows += test.rows
        return {"metrics": self.metrics(rows, predictions), "training": training}

    def fit(
        self,
        mlm: MmBertForMaskedLM,
        tokenizer: PreTrainedTokenizerBase,
        train: Split | None,
        dev: Split | None,
        seed: int,
        device: torch.device,
    ) -> tuple[nn.Module, History | None]:
        torch.manual_seed(seed)
        model = self.build(mlm).to(device)
        if train is None or not self.trains:
            return model.eval(), None
        examples = self.encode(train.rows, tokenizer, True)
        dev_score = None
        if dev is not None and dev.rows:
            dev_examples = self.encode(dev.rows, tokenizer, False)

            def dev_score() -> float:
                with torch.no_grad():
                    preds = self.predict(model, dev.rows, dev_examples, device)
                return self.score(dev.rows, preds)[self.main_metric]

        history = finetune(
            model,
            [self.length(e) for e in examples],
            lambda idx: self.loss(model, examples, idx, device),
            self.finetune_cfg,
            dev_score=dev_score,
            seed=seed,
            device=device,
        )
        return model, history

    def metrics(self, rows: list[dict[str, Any]], predictions: list[Any]) -> dict[str, Any]:
        by_lang: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_lang.setdefault(row["language"], []).append(i)
        overall: dict[str, Any] = dict(self.score(rows, predictions))
        overall["n"] = len(rows)
        overall["per_language"] = {
            lang: {
                **self.score([rows[i] for i in idx], [predictions[i] for i in idx]),
                "n": len(idx),
            }
            for lang, idx in sorted(by_lang.items())
        }
        return overall
