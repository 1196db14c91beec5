"""``MLMDataModule``: wires the data stages for Lightning, from a mix spec to training and validation batches.

The path from a folder to a batch, one module per stage:

1. mixture plan: :mod:`mmbert.data.mix` (which languages, where, how many tokens; counted or estimated by
   :mod:`mmbert.data.counts`; what those counts mean, and so the target token shares at the phase's tau);
2. sources: each mix backend's source over :mod:`mmbert.data.readers`, each language's held-out validation
   records and excluded languages decided by :mod:`mmbert.data.holdout`;
3. per-shard document stream: :mod:`mmbert.data.doc_stream` (epochs, shuffling, rank x worker sharding);
4. packed rows: :mod:`mmbert.data.rows` (sample a source by token share, tokenize, frame and pack with
   :mod:`mmbert.data.packing`; one generator per dataloader worker, snapshots for resumption);
5. masking and batches: :mod:`mmbert.data.steps` (the rows of one optimizer step -> masked micro-batches,
   :mod:`mmbert.data.batch`, :mod:`mmbert.data.masking`);
6. validation: :mod:`mmbert.data.validation` (fixed batches per language);
7. resumable state: :mod:`mmbert.data.resume` (what checkpoints hold, checked on load).

The train dataloader yields :class:`PendingBatch` placeholders, and :meth:`MLMDataModule.on_before_batch_transfer`
turns each into a :class:`~mmbert.data.batch.StepBatch`, so Lightning's one-batch prefetch does not consume
data early: ``set_step_rows``/``set_mask_ratio`` apply to the very next step, and ``state_dict()`` describes
exactly the batches training has used. Without Lightning, iterate :meth:`MLMDataModule.train_batches`.

Tensor suffixes: T tokens of the batch, L training languages.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerFast

from mmbert import hub
from mmbert.data.batch import StepBatch
from mmbert.data.holdout import plan_sources
from mmbert.data.masking import Masker, check_mask_ratio, special_ids_table
from mmbert.data.mix.base import MixSpec, Source
from mmbert.data.mix.report import mixture_report
from mmbert.data.paths import resolve_tokenizer
from mmbert.data.resume import STATE_VERSION, gather_ranks, rank_state
from mmbert.data.rows import PipelineConfig, identity
from mmbert.data.sampling import check_tau
from mmbert.data.steps import TrainStream, mask_rng
from mmbert.data.tokenizer import load_tokenizer
from mmbert.data.validation import FixedBatches, build_val_batches
from mmbert.errors import ConfigError, DataError

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


def check_shape(seq_len: int, rows_per_device: int, where: str = "") -> None:
    """Row length and micro-batch rows of the data; ``where`` prefixes the names (``data.``) in errors."""
    if not isinstance(seq_len, int) or seq_len < 16:
        raise DataError(f"{where}seq_len must be an integer >= 16, got {seq_len!r}")
    if not isinstance(rows_per_device, int) or rows_per_device < 1:
        raise DataError(f"{where}rows_per_device must be an integer >= 1, got {rows_per_device!r}")


class MLMDataModule(L.LightningDataModule):
    """Packed, temperature-mixed, masked MLM batches from a mix spec (``conf/data_mix``).

    Args:
        mix: the instantiated ``data_mix`` config.
        seq_len: tokens per packed row (>= 16).
        rows_per_device: packed rows per micro-batch on one device (what fits in its memory).
        tau: language temperature in (0, 1].
        mask_ratio: MLM mask ratio in (0, 1) of the first batches (None: set by ``set_mask_ratio`` before the
            first batch, as the mask-ratio callback does in training).
        tokenizer: tokenizer folder or hub id; default the mix's.
        num_workers: dataloader workers producing rows (0: in the main process).
        seed: seeds sampling, shuffling and masking.
        val_docs_per_lang: validation documents per language (0: no validation).
        val_mask_ratio: fixed mask ratio of validation batches.
        val_rows_per_device: rows per validation batch (default ``rows_per_device``).
        val_languages: languages to validate (default the mix's ``val_languages``, else all).
        buffer_size, tokenize_batch, block_size, snapshot_every: pipeline knobs (see ``PipelineConfig``).
        prefetch_factor: rows each worker prepares ahead.
        global_batch_rows: rows of one optimizer step over all devices (default ``rows_per_device`` per
            device: one micro-batch a step); ``set_step_rows`` changes it (batch-size warmup).
        strict_languages: a language without any usable training document fails setup (DataError) instead
            of being excluded with a warning (``excluded``: language -> reason; the other weights
            renormalise).
    """

    def __init__(
        self,
        mix: MixSpec,
        seq_len: int,
        rows_per_device: int,
        tau: float,
        mask_ratio: float | None = None,
        tokenizer: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        val_docs_per_lang: int = 32,
        val_mask_ratio: float = 0.15,
        val_rows_per_device: int | None = None,
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
        check_shape(seq_len, rows_per_device)
        check_tau(tau)
        if num_workers < 0 or val_docs_per_lang < 0:
            raise DataError(
                f"num_workers and val_docs_per_lang must be >= 0, got {num_workers}, {val_docs_per_lang}"
            )
        if val_rows_per_device is not None and val_rows_per_device < 1:
            raise DataError(f"val_rows_per_device must be >= 1, got {val_rows_per_device}")
        for key, value in (("buffer_size", buffer_size), ("tokenize_batch", tokenize_batch)):
            if value < 1:
                raise DataError(f"{key} must be >= 1, got {value}")
        if block_size < 1 or snapshot_every < 1 or prefetch_factor < 1:
            raise DataError("block_size, snapshot_every and prefetch_factor must be >= 1")
        self.mix = mix
        self.seq_len, self.rows_per_device, self.tau = seq_len, rows_per_device, float(tau)
        # Absolute (or a hub name), so checkpoints and the HF export find it from any working directory.
        self.tokenizer_name = resolve_tokenizer(tokenizer or mix.tokenizer)
        self.num_workers, self.seed = num_workers, seed
        self.val_docs_per_lang = val_docs_per_lang
        self.val_mask_ratio = check_mask_ratio("val_mask_ratio", val_mask_ratio)
        self.val_rows_per_device = val_rows_per_device or rows_per_device
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
        self._stream = TrainStream(self.languages, seed, self.rank)

    def __repr__(self) -> str:
        # LightningDataModule.__str__ would build (and iterate) the dataloaders.
        return (
            f"MLMDataModule(mix={self.mix!r}, seq_len={self.seq_len}, rows_per_device={self.rows_per_device}, "
            f"tau={self.tau}, mask_ratio={self._mask_ratio}, num_workers={self.num_workers})"
        )

    __str__ = __repr__

    # ----------------------------------------------------------------------------------------- setup
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

    def check_vocab(self, vocab_size: int) -> None:
        """The model's embedding must cover every id this data's tokenizer can produce."""
        if len(self.tokenizer) > vocab_size:
            raise ConfigError(
                f"model.config.vocab_size={vocab_size} is smaller than the tokenizer {self.tokenizer_name} "
                f"({len(self.tokenizer)} tokens)"
            )

    def prepare_data(self) -> None:
        self.mix.token_counts()  # measures and caches counts once (rank 0) before every rank reads them

    def setup(self, stage: str | None = None) -> None:
        # The rank is re-read on every call: user code may touch the datamodule before the trainer exists.
        rank, world = self._dist_info()
        if (rank, world) != (self.rank, self.world_size):
            if self._stream.rows_consumed:
                raise DataError(
                    f"rank/world size changed to {rank}/{world} after training batches were drawn"
                )
            self.rank, self.world_size = rank, world
            self._stream.mask_rng = mask_rng(self.seed, self.rank)
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
        self.weights = self.mix.meaning.weights(self.token_counts, self.tau)  # tau applies as the mix says
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
                docs, idx, len(self.languages), tok, self.masker, self.seq_len, self.val_rows_per_device,
                self.val_mask_ratio, self.seed, lang,
            )  # fmt: skip
            if batches:
                self._val[lang] = batches
        self._ready = True

    def _sources(self) -> tuple[list[Source], dict[str, list[Any]]]:
        """Training sources and validation documents (:func:`mmbert.data.holdout.plan_sources`); drops the
        languages without a usable training document before anything indexes languages."""
        plan = plan_sources(
            self.mix, self.languages, self._requested_val, self.val_docs_per_lang, self.strict_languages
        )
        if plan.excluded:
            self._stream.drop(list(plan.excluded))
            self.excluded = plan.excluded
            self.languages = plan.languages
        return plan.sources, plan.val_docs

    # ------------------------------------------------------------------------------------- training
    def train_dataloader(self) -> _TrainBatches:
        self.setup("fit")
        return _TrainBatches(self)

    def _open_rows(self) -> int:
        """(Re)start the row stream from the consumed state; returns the new generation."""
        return self._stream.open(
            self.pipeline, self.rank, self.world_size, self.num_workers, self.prefetch_factor
        )

    def _take_rows(self, n: int) -> list[Any]:
        return self._stream.take_rows(n)

    def _materialize(self, pending: PendingBatch) -> StepBatch:
        if pending.generation != self._stream.generation:
            raise RuntimeError("a train batch from an earlier dataloader iterator was used after a restart")
        if self._mask_ratio is None:
            raise DataError("no mask ratio: pass mask_ratio= or call set_mask_ratio() before drawing batches")
        return self._stream.step(
            self.device_step_rows, self.rows_per_device, seq_len=self.seq_len,
            pad_id=self.tokenizer.pad_token_id, masker=self.masker, mask_ratio=self._mask_ratio,
            languages=self.languages,
        )  # fmt: skip

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
        return self._step_rows if self._step_rows is not None else self.rows_per_device * self.world_size

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
            DataLoader(FixedBatches(batches), batch_size=None, collate_fn=identity)
            for batches in self._val.values()
        ]

    # -------------------------------------------------------------------------------------- mixture
    @property
    def realised_tokens(self) -> dict[str, int]:
        return dict(self._stream.realised)

    def mixture_report(self, budget_tokens: float | None = None) -> dict[str, Any]:
        """``mixture.json`` (:func:`mmbert.data.mix.report.mixture_report`; ``budget_tokens``: the phase's) plus
        this process's realised tokens."""
        self.setup("fit")
        known = self.mix.known_counts()
        report = mixture_report(
            self.mix.meaning, self.tau, self.weights, self.token_counts, budget_tokens, known
        )
        for lang, entry in report["languages"].items():
            entry["realised_tokens"] = self._stream.realised[lang]
        report["excluded"] = dict(self.excluded)  # languages without usable training documents, and why
        return report

    def take_wait(self) -> float:
        """Seconds this rank waited for training rows since the last call."""
        return self._stream.take_wait()

    def hub_stats(self) -> dict[str, float]:
        """Hub retries by kind (``retries/<kind>``) and seconds waiting on the Hub (``wait_s``) of this rank."""
        return self._stream.hub_stats()

    def write_mixture_json(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.mixture_report(), indent=1, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------------------------ resumption
    def _local_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            **self._unchanged(),
            "world_size": self.world_size,
            **self._stream.state(),
            "mask_ratio": self._mask_ratio,
            "step_rows": self._step_rows,
        }

    def _unchanged(self) -> dict[str, Any]:
        """What resuming needs as it was saved."""
        self.setup("fit")
        key = zlib.crc32(repr([(lang, self.weights[lang]) for lang in self.languages]).encode())
        # The hub commits read: a resume reads the same files (a run folder keeps them, hub/); elsewhere pin
        # them with data_mix.revision.
        commits = hub.pins()
        return {
            "languages": list(self.languages), "seq_len": self.seq_len, "seed": self.seed,
            "num_workers": max(self.num_workers, 1), "mixture": key,  # the same languages, counts and tau
            **({"hub_commits": commits} if commits else {}),
        }  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return gather_ranks(self._local_state(), self.world_size)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.setup("fit")  # rank, world size and mixture first (Lightning has already called it)
        st = rank_state(state_dict, self.rank, self.world_size, self._unchanged())
        self._stream.load(st)
        self._mask_ratio = st["mask_ratio"]
        self._step_rows = st["step_rows"]
