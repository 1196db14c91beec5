"""The LightningModule: the encoder with its MLM head, trained on packed batches.

Batch legend: T = tokens in the packed batch (all documents of all rows), N = documents, V = vocab.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from contextlib import nullcontext

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.strategies import ParallelStrategy
from torch import nn
from torchmetrics import MeanMetric

from mmbert.data.batch import StepBatch
from mmbert.errors import ConfigError, NonFiniteLossError
from mmbert.model import MmBertConfig, MmBertForMaskedLM
from mmbert.train.init import load_initial_weights
from mmbert.train.optim import param_groups

log = logging.getLogger(__name__)

# weights: the init_from weights as they are; full: and the optimizer moments of a Lightning checkpoint;
# strided: sampled from a wider model (mmBERT-small from base).
INIT_MODES = ("weights", "full", "strided")


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of optimizer step ``step`` on ``rank``: distinct per (seed, step, rank), in [0, 2**63)."""
    return ((seed * 1_000_003 + step) * 10_007 + rank) % (1 << 63)


class MLMModule(L.LightningModule):
    """Masked-language-model training of :class:`MmBertForMaskedLM`.

    ``tokens_seen`` counts real (non-padding) training tokens over all ranks; every schedule callback
    reads it, and it travels in checkpoints so that a resumed run continues the schedules exactly.
    """

    def __init__(
        self,
        model_config: MmBertConfig | dict,
        optimizer: Callable[..., torch.optim.Optimizer],
        init_from: str | None = None,
        init_mode: str = "weights",
        tokenizer: str | None = None,
        compile: bool | str = False,
        on_nonfinite: str = "stop",
        seed: int = 0,
    ) -> None:
        super().__init__()
        # One Lightning batch is one optimizer step: the step's micro-batches vary in number during
        # batch-size warmup, which Lightning's fixed accumulate_grad_batches cannot express.
        self.automatic_optimization = False
        if init_mode not in INIT_MODES:
            raise ConfigError(f"model.init_mode must be one of {INIT_MODES}, got {init_mode!r}")
        if init_mode == "strided" and not init_from:
            raise ConfigError("model.init_mode=strided samples a wider model: set model.init_from to it")
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"module.on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        model_config = MmBertConfig.coerce(model_config)
        # Plain types only: Lightning reads checkpoints back with weights_only=True.
        self.save_hyperparameters(
            {
                "model_config": dataclasses.asdict(model_config),
                "init_from": None if init_from is None else str(init_from),
                "init_mode": init_mode,
                "tokenizer": None if tokenizer is None else str(tokenizer),
                "compile": compile if isinstance(compile, str) else bool(compile),
                "on_nonfinite": on_nonfinite,
                "seed": int(seed),
            }
        )
        self.optimizer_factory = optimizer
        self.net = MmBertForMaskedLM(model_config)
        self.tokens_seen = 0
        self.skipped_batches = 0
        self._init_optimizer_state: dict | None = None
        if init_from:
            ckpt = load_initial_weights(self.net, init_from, strided=init_mode == "strided")
            if init_mode == "full":
                if ckpt is None or not ckpt.get("optimizer_states"):
                    raise ValueError(
                        f"model.init_mode=full needs a Lightning checkpoint with optimizer state; "
                        f"model.init_from={init_from} has none"
                    )
                self._init_optimizer_state = ckpt["optimizer_states"][0]
        if compile:
            # Regional compile, in place (nn.Module.compile), so the module tree and state_dict names stay
            # the plain model's: each encoder layer and the MLM head (as ModernBERT compiled its MLP and head).
            # The packed attention stays eager: its per-batch document layout (length buckets, read on
            # the host) would otherwise guard every graph and recompile on each new packing. Token counts
            # vary (rows per micro-batch, masked positions), hence dynamic shapes. True means inductor; a
            # string names the backend (aot_eager, eager: debugging).
            backend = "inductor" if compile is True else str(compile)
            if backend not in torch._dynamo.list_backends(exclude_tags=()):
                raise ValueError(f"module.compile={compile!r}: not a torch.compile backend")
            for layer in self.net.model.layers:
                attn = layer.attn
                attn.forward = torch.compiler.disable(type(attn).forward).__get__(attn)
                layer.compile(backend=backend, dynamic=True)
            self.net.head.compile(backend=backend, dynamic=True)
        self.val_languages: list[str] = []

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self.val_languages = list(getattr(datamodule, "val_languages", []) or [])
        self.val_loss = nn.ModuleDict({lang: MeanMetric() for lang in self.val_languages})
        self.val_acc = MeanMetric()
        self.val_loss_all = MeanMetric()

    def forward(self, **batch) -> object:
        return self.net(**batch)

    def _model_inputs(self, batch: dict) -> dict:
        return {
            "input_ids": batch["input_ids"],
            "cu_seqlens": batch["cu_seqlens"],
            "max_seqlen": int(batch["max_seqlen"]),
            "labels": batch["labels"],
        }

    # ---------------------------------------------------------------- training
    def training_step(self, batch: StepBatch | dict, batch_idx: int) -> None:
        """One optimizer step over the step's micro-batches.

        The loss is the mean over every masked token of the step on all devices: micro-batch ``k`` with
        ``n_k`` masked tokens is weighted ``n_k * world / N`` (``N`` summed over devices; DDP then divides
        by ``world``), so a step means the same whatever the split into devices and micro-batches.
        Gradients are synchronised once, on the last micro-batch. A non-finite loss is judged on the
        reduced value, so every rank skips (or stops at) the same step.
        """
        step = batch if isinstance(batch, StepBatch) else StepBatch([batch])
        # Dropout draws from torch's global RNG, which checkpoints do not hold and which validation and
        # dataloaders draw from too: seeding it from (run seed, step, rank) gives each step the same masks
        # whether or not the run was resumed, and every rank its own.
        torch.manual_seed(step_seed(self.hparams.seed, self.global_step, self.global_rank))
        strategy = self.trainer.strategy
        counts = torch.tensor(
            [[float(mb["num_tokens"]), float(mb["num_rows"]), float((mb["labels"] != -100).sum())]
             for mb in step.micro_batches],
            device=self.device, dtype=torch.float64,
        ).sum(0)  # fmt: skip
        tokens, rows, labels = strategy.reduce(counts, reduce_op="sum").tolist()
        self.tokens_seen += int(tokens)
        world = self.trainer.world_size
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        for k, mb in enumerate(step.micro_batches):
            mb = move_data_to_device(mb, self.device)
            n_k = float((mb["labels"] != -100).sum())
            last = k == len(step) - 1
            defer_sync = not last and isinstance(strategy, ParallelStrategy)
            with strategy.block_backward_sync() if defer_sync else nullcontext():
                loss = self(**self._model_inputs(mb)).loss
                self.manual_backward(loss * (n_k * world / max(labels, 1.0)))
            loss_sum += loss.detach().double() * n_k
        loss = strategy.reduce(loss_sum, reduce_op="sum") / max(labels, 1.0)
        optimizer = self.optimizers()
        if not torch.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            if self.hparams.on_nonfinite == "skip":
                self.skipped_batches += 1
                log.warning("non-finite loss %s at step %d: step skipped", loss.item(), self.global_step)
                self.log("train/skipped_batches", float(self.skipped_batches), on_step=True)
                return
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {self.global_step} "
                f"(tokens seen {self.tokens_seen}); the last good checkpoint is left in place. "
                "Set module.on_nonfinite=skip to skip such steps instead."
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.log("train/loss", loss.float(), on_step=True, prog_bar=True)
        self.log("train/tokens", float(self.tokens_seen), on_step=True, reduce_fx="max")
        self.log("train/batch_rows", rows, on_step=True)

    # ---------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self(**self._model_inputs(batch))
        labels = batch["labels"]
        target = labels[labels != -100]
        if target.numel() == 0:
            return
        # The fused loss's argmax, computed chunk by chunk: reading out.logits would allocate [n, V].
        acc = (out.predictions == target).float().mean()
        n = target.numel()
        lang = self.val_languages[dataloader_idx] if self.val_languages else "all"
        if lang in self.val_loss:
            self.val_loss[lang].update(out.loss.detach(), n)
        self.val_loss_all.update(out.loss.detach(), n)
        self.val_acc.update(acc, n)

    def on_validation_epoch_end(self) -> None:
        for lang, metric in self.val_loss.items():
            if metric.update_count == 0:
                continue
            value = metric.compute()
            self.log(f"val/loss/{lang}", value, sync_dist=False)
            self.log(f"val/ppl/{lang}", torch.exp(value), sync_dist=False)
            metric.reset()
        if self.val_loss_all.update_count:
            self.log("val/loss", self.val_loss_all.compute(), prog_bar=True)
            self.log("val/acc", self.val_acc.compute())
        self.val_loss_all.reset()
        self.val_acc.reset()

    # ---------------------------------------------------------------- optimisation
    def configure_model(self) -> None:
        # FSDP2 (mmbert.train.strategies.FSDP2Strategy) shards the encoder here, one unit per layer;
        # load_from_checkpoint calls this hook without a trainer.
        if self._trainer is None:
            return
        parallelize = getattr(self.trainer.strategy, "parallelize", None)
        if parallelize is not None:
            parallelize(self.net)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Hydra gives a functools.partial; its weight_decay goes to the matrices' group only.
        weight_decay = getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0)
        optimizer = self.optimizer_factory(params=param_groups(self.net, weight_decay))
        if self._init_optimizer_state is not None:
            fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
            optimizer.load_state_dict(self._init_optimizer_state)
            # Only the moments carry over: every hyper-parameter is the new phase's, and keys the old
            # phase added (the LR callback's peak_lr on torch optimizers) go, or it would keep the old peak.
            for group, hyper in zip(optimizer.param_groups, fresh, strict=True):
                params = group["params"]
                group.clear()
                group.update(hyper, params=params)
            self._init_optimizer_state = None
        return optimizer

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["skipped_batches"] = self.skipped_batches
        checkpoint["mmbert_config"] = dataclasses.asdict(self.net.config)
        checkpoint["mmbert_tokenizer"] = self.hparams.tokenizer

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        self.skipped_batches = int(checkpoint.get("skipped_batches", 0))
