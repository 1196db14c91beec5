"""``MLMDataModule``: the mixture, the packed training stream, masking, validation and exact resumption.

Training batches are *assembled in the main process*: dataloader workers yield packed rows, and
:meth:`MLMDataModule.on_before_batch_transfer` turns the rows of one optimizer step into a
:class:`~mmbert.data.batch.StepBatch`: this device's share of the step's global rows, cut into micro-batches
of at most ``rows_per_step`` rows (full ones first, the remainder last), each concatenated and masked. The
train dataloader itself yields :class:`PendingBatch` placeholders, so Lightning's one-batch prefetch does
not consume data early: ``set_step_rows``/``set_mask_ratio`` apply to the very next step, and
``state_dict()`` describes exactly the batches training has used. Without Lightning, iterate
:meth:`MLMDataModule.train_batches`.

Resumption state: per dataloader worker the latest snapshot it handed over and the rows consumed since
(see :mod:`mmbert.data.pipeline`), the number of rows consumed (whose turn is next), the masking RNG, the
mask ratio, the rows per step and the realised tokens. In DDP ``state_dict()`` gathers every rank's state
(Lightning saves rank 0's copy) and each rank restores its own.

Tensor suffixes: T tokens of the batch, L training languages.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from mmbert.data.batch import StepBatch, assemble, split_rows
from mmbert.data.errors import DataError
from mmbert.data.masking import Masker, check_mask_ratio, special_ids_table
from mmbert.data.mix import MixSpec, mixture_report
from mmbert.data.mixing import check_tau
from mmbert.data.paths import resolve_tokenizer
from mmbert.data.pipeline import PackedRowDataset, PipelineConfig, _identity
from mmbert.data.sources import Source
from mmbert.data.tokenizer import load_tokenizer
from mmbert.data.validation import FixedBatches, build_val_batches

STATE_VERSION = 2  # 2: rows per optimizer step (batch-size warmup) instead of per micro-batch
SCAN_THREADS = 16  # languages inspected at once by setup (hub sources stream: one by one takes minutes)

log = logging.getLogger(__name__)


class PendingBatch:
    """Placeholder yielded by the train dataloader; turned into a batch when training is about to use it."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


class _TrainBatches:
    def __init__(self, dm: MLMDataModule) -> None:
        self.dm = dm

    def __iter__(self) -> Iterator[PendingBatch]:
        generation = self.dm._open_rows()
        while True:
            yield PendingBatch(generation)


def _portable(obj: Any, to_torch: bool) -> Any:
    """Worker snapshots hold numpy arrays; checkpoints load with ``weights_only=True``, which takes tensors."""
    if to_torch and isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if to_torch and isinstance(obj, np.generic):
        return obj.item()
    if not to_torch and isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _portable(v, to_torch) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_portable(v, to_torch) for v in obj)
    return obj


@dataclass
class _LanguagePlan:
    """What setup found for one training language."""

    holdout: int  # raw records at the start of file 0 held out for validation
    val_docs: list[Any]
    trains: bool  # training keeps at least one usable document
    note: str = ""  # why fewer records are held out than asked, or that there is no usable document


def _val_source(mix: MixSpec, lang: str) -> Source | None:
    try:
        return mix.val_source(lang)
    except KeyError:  # a language the mix does not know has no split either
        return None


def _no_documents(source: Source) -> str:
    files = list(source.files())
    where = ", ".join(files[:3]) + (f" and {len(files) - 3} more files" if len(files) > 3 else "")
    return f"no usable documents in {where or 'no files'}"


def _plan_language(mix: MixSpec, lang: str, n: int) -> _LanguagePlan:
    """Validation documents of a training language (``n``, 0: none) and whether training keeps a document.

    Without a validation split the first ``n`` raw records of file 0 are held out, or fewer: when they hold
    the only usable documents, the last of them (and the records after it) stays in training.
    """
    split = _val_source(mix, lang) if n else None
    source = mix.train_source(lang)
    head, more = source.scan_head(0 if split else n)
    if split is not None:
        return _LanguagePlan(0, split.first_docs(n), more, "" if more else _no_documents(source))
    if more:
        return _LanguagePlan(n, [doc for _, doc in head], True)
    if not head:
        return _LanguagePlan(0, [], False, _no_documents(source))
    note = (
        f"all its {len(head)} usable documents are among the {n} records to hold out for validation: "
        f"it validates on {len(head) - 1} and trains on the last one"
    )
    return _LanguagePlan(head[-1][0], [doc for _, doc in head[:-1]], True, note)


def check_shape(seq_len: int, rows_per_step: int, where: str = "") -> None:
    """Row length and micro-batch rows of the data; ``where`` prefixes the names (``data.``) in errors."""
    if not isinstance(seq_len, int) or seq_len < 16:
        raise DataError(f"{where}seq_len must be an integer >= 16, got {seq_len!r}")
    if not isinstance(rows_per_step, int) or rows_per_step < 1:
        raise DataError(f"{where}rows_per_step must be an integer >= 1, got {rows_per_step!r}")


class MLMDataModule(L.LightningDataModule):
    """Packed, temperature-mixed, masked MLM batches from a mix spec (``conf/data_mix``).

    Args:
        mix: the instantiated ``data_mix`` config.
        seq_len: tokens per packed row (>= 16).
        rows_per_step: packed rows per micro-batch on one device (what fits in its memory).
        tau: language temperature in (0, 1].
        mask_ratio: MLM mask ratio in (0, 1) of the first batches (None: set by ``set_mask_ratio`` before the
            first batch, as the mask-ratio callback does in training).
        tokenizer: tokenizer folder or hub id; default the mix's.
        num_workers: dataloader workers producing rows (0: in the main process).
        seed: seeds sampling, shuffling and masking.
        val_docs_per_lang: validation documents per language (0: no validation).
        val_mask_ratio: fixed mask ratio of validation batches.
        val_rows_per_step: rows per validation batch (default ``rows_per_step``).
        val_languages: languages to validate (default the mix's ``val_languages``, else all).
        buffer_size, tokenize_batch, block_size, snapshot_every: pipeline knobs (see ``PipelineConfig``).
        prefetch_factor: rows each worker prepares ahead.
        global_batch_rows: rows of one optimizer step over all devices (default ``rows_per_step`` per
            device: one micro-batch a step); ``set_step_rows`` changes it (batch-size warmup).
        strict_languages: a language without any usable training document fails setup (DataError) instead
            of being excluded with a warning (``excluded``: language -> reason; the other weights
            renormalise).
    """

    def __init__(
        self,
        mix: MixSpec,
        seq_len: int,
        rows_per_step: int,
        tau: float,
        mask_ratio: float | None = None,
        tokenizer: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        val_docs_per_lang: int = 32,
        val_mask_ratio: float = 0.15,
        val_rows_per_step: int | None = None,
        val_languages: Sequence[str] | None = None,
        buffer_size: int = 32,
        tokenize_batch: int = 64,
        block_size: int = 256,
        snapshot_every: int = 128,
        prefetch_factor: int = 4,
        global_batch_rows: int | None = None,
        strict_languages: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(mix, MixSpec):
            raise DataError(
                f"mix must be a MixSpec (an instantiated data_mix config), got {type(mix).__name__}"
            )
        check_shape(seq_len, rows_per_step)
        check_tau(tau)
        if num_workers < 0 or val_docs_per_lang < 0:
            raise DataError(
                f"num_workers and val_docs_per_lang must be >= 0, got {num_workers}, {val_docs_per_lang}"
            )
        if val_rows_per_step is not None and val_rows_per_step < 1:
            raise DataError(f"val_rows_per_step must be >= 1, got {val_rows_per_step}")
        for key, value in (("buffer_size", buffer_size), ("tokenize_batch", tokenize_batch)):
            if value < 1:
                raise DataError(f"{key} must be >= 1, got {value}")
        if block_size < 1 or snapshot_every < 1 or prefetch_factor < 1:
            raise DataError("block_size, snapshot_every and prefetch_factor must be >= 1")
        self.mix = mix
        self.seq_len, self.micro_batch_rows, self.tau = seq_len, rows_per_step, float(tau)
        # Absolute (or a hub name), so checkpoints and the HF export find it from any working directory.
        self.tokenizer_name = resolve_tokenizer(tokenizer or mix.tokenizer)
        self.num_workers, self.seed = num_workers, seed
        self.val_docs_per_lang = val_docs_per_lang
        self.val_mask_ratio = check_mask_ratio("val_mask_ratio", val_mask_ratio)
        self.val_rows_per_step = val_rows_per_step or rows_per_step
        self.languages: list[str] = mix.languages
        self.strict_languages = strict_languages
        self.excluded: dict[str, str] = {}  # languages dropped by setup: no usable training document
        requested = list(val_languages) if val_languages is not None else mix.val_languages
        self._requested_val = list(requested) if requested is not None else list(self.languages)
        self._knobs = {
            "buffer_size": buffer_size, "tokenize_batch": tokenize_batch, "block_size": block_size,
            "snapshot_every": snapshot_every,
        }  # fmt: skip
        self.prefetch_factor = prefetch_factor
        self._mask_ratio = None if mask_ratio is None else check_mask_ratio("mask_ratio", mask_ratio)
        self._step_rows = global_batch_rows
        if global_batch_rows is not None:
            self.set_step_rows(global_batch_rows)
        self.rank, self.world_size = 0, 1
        self._tok: PreTrainedTokenizerFast | None = None
        self._ready = False
        self._generation = 0
        self._rows_iter: Iterator[dict[str, Any]] | None = None
        self._reset_progress()

    def __repr__(self) -> str:
        # LightningDataModule.__str__ would build (and iterate) the dataloaders.
        return (
            f"MLMDataModule(mix={self.mix!r}, seq_len={self.seq_len}, rows_per_step={self.micro_batch_rows}, "
            f"tau={self.tau}, mask_ratio={self._mask_ratio}, num_workers={self.num_workers})"
        )

    __str__ = __repr__

    # ----------------------------------------------------------------------------------------- setup
    def _reset_progress(self) -> None:
        self._workers: dict[int, dict[str, Any]] = {}
        self._rows_consumed = 0
        self._realised = dict.fromkeys(self.languages, 0)
        self._mask_rng = np.random.default_rng([self.seed, self.rank, 0x6D61736B])

    def _dist_info(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    @property
    def tokenizer(self) -> PreTrainedTokenizerFast:
        if self._tok is None:
            self._tok = load_tokenizer(self.tokenizer_name)
        return self._tok

    def prepare_data(self) -> None:
        self.mix.token_counts()  # measures and caches counts once (rank 0) before every rank reads them

    def setup(self, stage: str | None = None) -> None:
        # The rank is re-read on every call: user code may touch the datamodule before the trainer exists.
        rank, world = self._dist_info()
        if (rank, world) != (self.rank, self.world_size):
            if self._rows_consumed:
                raise DataError(
                    f"rank/world size changed to {rank}/{world} after training batches were drawn"
                )
            self.rank, self.world_size = rank, world
            self._mask_rng = np.random.default_rng([self.seed, self.rank, 0x6D61736B])
        if self._ready:
            return
        tok = self.tokenizer
        self.masker = Masker(special_ids_table(tok), tok.mask_token_id)
        counts = self.mix.token_counts()
        missing = [lang for lang in self.languages if lang not in counts]
        if missing:
            raise DataError(f"mix {self.mix.name!r} has no token counts for {missing}")
        sources, val_docs = self._sources()  # first: it drops languages without training documents
        self.token_counts = {lang: counts[lang] for lang in self.languages}
        self.weights = self.mix.target_weights(self.tau, self.token_counts)  # tau applies as the mix says
        means = self.mix.mean_doc_tokens()
        self.pipeline = PipelineConfig(
            sources=tuple(sources), weights=tuple(self.weights[lang] for lang in self.languages),
            tokenizer=self.tokenizer_name, seq_len=self.seq_len, seed=self.seed,
            bos_id=tok.bos_token_id, eos_id=tok.eos_token_id,
            mean_doc_tokens=tuple(means.get(lang) for lang in self.languages), **self._knobs,
        )  # fmt: skip
        self._val: dict[str, list[dict[str, Any]]] = {}
        for lang, docs in val_docs.items():
            idx = self.languages.index(lang) if lang in self.languages else -1
            batches = build_val_batches(
                docs, idx, len(self.languages), tok, self.masker, self.seq_len, self.val_rows_per_step,
                self.val_mask_ratio, self.seed, lang,
            )  # fmt: skip
            if batches:
                self._val[lang] = batches
        self._ready = True

    def _sources(self) -> tuple[list[Source], dict[str, list[Any]]]:
        """Training sources (with held-out records where a language has no validation split) and val docs.

        Every training language is inspected first (in threads: streamed hub sources one by one would take
        minutes for Decay-All's 1833), and those without a usable document are excluded (:meth:`_exclude`).
        """
        n = self.val_docs_per_lang
        wanted = set(self._requested_val) if n else set()
        extra = {
            lang: _val_source(self.mix, lang) for lang in self._requested_val if lang not in self.languages
        }
        for lang, src in extra.items():  # a validation-only language needs its own split
            if src is None:
                raise DataError(
                    f"val_languages: {lang!r} is not a training language of mix {self.mix.name!r}"
                )

        def inspect(lang: str) -> _LanguagePlan:
            return _plan_language(self.mix, lang, n if lang in wanted else 0)

        with ThreadPoolExecutor(SCAN_THREADS) as pool:
            found = pool.map(inspect, self.languages)
            bar = tqdm(found, total=len(self.languages), desc="checking sources", leave=False)
            plans = dict(zip(self.languages, bar, strict=True))
            docs = pool.map(lambda src: src.first_docs(n), extra.values())
            extra_docs = dict(zip(extra, docs, strict=True))
        self._exclude({lang: plan.note for lang, plan in plans.items() if not plan.trains})
        for lang in self.languages:
            if plans[lang].note:
                log.warning("language %r: %s", lang, plans[lang].note)
        sources = [self.mix.train_source(lang, plans[lang].holdout) for lang in self.languages]
        # An excluded language with a validation split of its own is still validated.
        val_docs = {
            lang: plans[lang].val_docs if lang in plans else extra_docs[lang]
            for lang in self._requested_val
            if lang in wanted
        }
        return sources, {k: v for k, v in val_docs.items() if v}

    def _exclude(self, empty: dict[str, str]) -> None:
        """Drops the languages without a usable training document, before anything indexes languages."""
        if not empty:
            return
        reasons = "; ".join(f"{lang}: {why}" for lang, why in empty.items())
        if self.strict_languages:
            raise DataError(f"languages without usable training documents (strict_languages): {reasons}")
        if len(empty) == len(self.languages):
            raise DataError(f"mix {self.mix.name!r}: no language has a usable training document ({reasons})")
        for lang, why in empty.items():
            log.warning("language %r excluded from training (other weights renormalised): %s", lang, why)
            self._realised.pop(lang, None)
        self.excluded = dict(empty)
        self.languages = [lang for lang in self.languages if lang not in empty]

    # ------------------------------------------------------------------------------------- training
    def train_dataloader(self) -> _TrainBatches:
        self.setup("fit")
        return _TrainBatches(self)

    def _open_rows(self) -> int:
        """(Re)start the row stream from the consumed state; returns the new generation."""
        workers = max(self.num_workers, 1)
        dataset = PackedRowDataset(
            self.pipeline, self.rank, self.world_size, self.num_workers,
            worker_offset=self._rows_consumed % workers, resume=dict(self._workers),
        )  # fmt: skip
        loader = DataLoader(
            dataset, batch_size=None, num_workers=self.num_workers, collate_fn=_identity,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
        )  # fmt: skip
        self._rows_iter = iter(loader)
        self._generation += 1
        return self._generation

    def _take_rows(self, n: int) -> list[Any]:
        assert self._rows_iter is not None
        rows = []
        for _ in range(n):
            item = next(self._rows_iter)
            w = item["worker"]
            prev = self._workers.get(w)
            snapshot = item["snapshot"] if item["snapshot"] is not None else (prev or {}).get("snapshot")
            if snapshot is None or (item["snapshot"] is None and prev["snapshot_id"] != item["snapshot_id"]):
                raise RuntimeError(f"row stream out of order: worker {w} snapshot {item['snapshot_id']}")
            self._workers[w] = {
                "snapshot": snapshot,
                "snapshot_id": item["snapshot_id"],
                "since": item["since"],
            }
            self._rows_consumed += 1
            rows.append(item["row"])
        return rows

    def _micro_batch(self, n_rows: int) -> dict[str, Any]:
        if self._mask_ratio is None:
            raise DataError("no mask ratio: pass mask_ratio= or call set_mask_ratio() before drawing batches")
        rows = self._take_rows(n_rows)
        batch = assemble(rows, self.seq_len, self.tokenizer.pad_token_id, len(self.languages))
        batch["input_ids"], batch["labels"] = self.masker(
            batch["input_ids"], self._mask_ratio, self._mask_rng
        )
        for lang, n in zip(self.languages, batch["lang_tokens"].tolist(), strict=True):
            self._realised[lang] += n
        return batch

    def _materialize(self, pending: PendingBatch) -> StepBatch:
        if pending.generation != self._generation:
            raise RuntimeError("a train batch from an earlier dataloader iterator was used after a restart")
        return StepBatch(
            [self._micro_batch(n) for n in split_rows(self.device_step_rows, self.micro_batch_rows)]
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self._materialize(batch) if isinstance(batch, PendingBatch) else batch

    def train_steps(self) -> Iterator[StepBatch]:
        """Training steps outside Lightning: what the training loop receives."""
        for pending in self.train_dataloader():
            yield self._materialize(pending)

    def train_batches(self) -> Iterator[dict[str, Any]]:
        """Training micro-batches outside Lightning (notebooks, benchmarks, tests), step after step."""
        for step in self.train_steps():
            yield from step.micro_batches

    def set_mask_ratio(self, ratio: float) -> None:
        self._mask_ratio = check_mask_ratio("mask_ratio", ratio)

    @property
    def mask_ratio(self) -> float | None:
        return self._mask_ratio

    def set_step_rows(self, n: int) -> None:
        """Rows of the next optimizer steps over all devices (a multiple of the device count)."""
        if not (isinstance(n, int) and n >= 1):
            raise DataError(f"rows per optimizer step must be an integer >= 1, got {n!r}")
        self._step_rows = n

    @property
    def step_rows(self) -> int:
        """Rows of one optimizer step over all devices."""
        return self._step_rows if self._step_rows is not None else self.micro_batch_rows * self.world_size

    @property
    def device_step_rows(self) -> int:
        """This device's rows of one optimizer step."""
        rows, world = self.step_rows, self.world_size
        if rows % world:
            raise DataError(f"rows per optimizer step ({rows}) must be a multiple of the devices ({world})")
        return rows // world

    # ----------------------------------------------------------------------------------- validation
    @property
    def val_languages(self) -> list[str]:
        self.setup("validate")
        return list(self._val)

    def val_dataloader(self) -> list[DataLoader]:
        self.setup("validate")
        return [
            DataLoader(FixedBatches(batches), batch_size=None, collate_fn=_identity)
            for batches in self._val.values()
        ]

    # -------------------------------------------------------------------------------------- mixture
    @property
    def realised_tokens(self) -> dict[str, int]:
        return dict(self._realised)

    def mixture_report(self, budget_tokens: float | None = None) -> dict[str, Any]:
        """``mixture.json`` (:func:`mmbert.data.mix.mixture_report`; ``budget_tokens``: the phase's) plus this
        process's realised tokens."""
        self.setup("fit")
        available = self.mix.available_tokens()
        report = mixture_report(self.mix, self.tau, self.weights, self.token_counts, budget_tokens, available)
        for lang, entry in report["languages"].items():
            entry["realised_tokens"] = self._realised[lang]
        report["excluded"] = dict(self.excluded)  # languages without usable training documents, and why
        return report

    def write_mixture_json(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.mixture_report(), indent=1, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------------------------ resumption
    def _local_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "languages": list(self.languages),
            "seq_len": self.seq_len,
            "seed": self.seed,
            "num_workers": max(self.num_workers, 1),
            "world_size": self.world_size,
            "rows_consumed": self._rows_consumed,
            "workers": _portable(self._workers, to_torch=True),
            "mask_ratio": self._mask_ratio,
            "mask_rng": self._mask_rng.bit_generator.state,
            "step_rows": self._step_rows,
            "realised_tokens": dict(self._realised),
            "mixture": self._mixture_key(),
        }

    def _mixture_key(self) -> int:
        self.setup("fit")
        return zlib.crc32(repr([(lang, self.weights[lang]) for lang in self.languages]).encode())

    def state_dict(self) -> dict[str, Any]:
        local = self._local_state()
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            ranks: list[Any] = [None] * self.world_size
            dist.all_gather_object(ranks, local)
            return {"ranks": ranks}
        return {"ranks": [local]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.setup("fit")  # rank, world size and mixture first (Lightning has already called it)
        ranks = state_dict.get("ranks")
        if not ranks:
            raise DataError("data state: no per-rank states (not saved by MLMDataModule.state_dict)")
        if len(ranks) != max(self.world_size, 1):
            raise DataError(
                f"data state was saved with {len(ranks)} ranks; resuming needs as many, got {self.world_size}"
            )
        st = ranks[self.rank]
        if st.get("version") != STATE_VERSION:
            raise DataError(f"data state version {st.get('version')} is not {STATE_VERSION}")
        checks = {
            "languages": list(self.languages), "seq_len": self.seq_len, "seed": self.seed,
            "num_workers": max(self.num_workers, 1),
        }  # fmt: skip
        checks["mixture"] = self._mixture_key()  # the same languages, token counts and tau
        for key, value in checks.items():
            if st[key] != value:
                raise DataError(
                    f"data state: {key} was {st[key]!r} when saved, now {value!r} (resuming needs the same)"
                )
        self._workers = {int(k): _portable(v, to_torch=False) for k, v in st["workers"].items()}
        self._rows_consumed = st["rows_consumed"]
        self._mask_ratio = st["mask_ratio"]
        self._mask_rng.bit_generator.state = st["mask_rng"]
        self._step_rows = st["step_rows"]
        self._realised = dict(st["realised_tokens"])
        self._generation += 1  # pending batches of an older iterator must not be used
        self._rows_iter = None
