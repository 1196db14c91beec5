"""Training end to end on the tiny model and the sample corpus: outputs, exact resume, faults, chaining."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import logged

from mmbert.errors import NonFiniteLossError
from mmbert.train.run import build, run


def _losses(run_dir: Path) -> dict[int, float]:
    return dict(logged(run_dir, "train/loss"))


def test_default_run_writes_every_output(compose_fast, tmp_path):
    out = tmp_path / "run"
    cfg = compose_fast("logger=default", output_dir=out)
    trainer = run(cfg)
    assert trainer.global_step == 6
    ckpts = {p.name for p in (out / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("step-") for n in ckpts)
    assert any(n.startswith("best-step-") for n in ckpts)
    losses = _losses(out)
    assert sorted(losses) == list(range(6)), "train/loss must be logged at every step"
    assert all(math.isfinite(v) for v in losses.values())
    header = next(csv.reader((out / "csv" / "metrics.csv").read_text().splitlines()))
    assert {"val/loss", "val/acc", "train/lr", "train/mask_ratio"} <= set(header)
    assert any(h.startswith("val/loss/") for h in header) and any(
        h.startswith("data/tokens/") for h in header
    )
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    mixture = json.loads((out / "mixture.json").read_text())
    assert mixture["tau"] == cfg.phase.tau
    realised = sum(e["realised_tokens"] for e in mixture["languages"].values())
    assert realised == trainer.lightning_module.tokens_seen > 0
    assert math.isclose(sum(e["weight"] for e in mixture["languages"].values()), 1.0, rel_tol=1e-9)

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    hf = AutoModelForMaskedLM.from_pretrained(out / "hf")
    tok = AutoTokenizer.from_pretrained(out / "hf")
    ids = tok(["Hello world, this is a test."], return_tensors="pt")
    ours = trainer.lightning_module.net.eval()
    with torch.no_grad():
        theirs = hf(**ids).logits
        mine = ours(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("workers", "dropout"), [(0, 0.0), (1, 0.0), (0, 0.1)])
def test_resume_reproduces_the_uninterrupted_run(compose_fast, tmp_path, workers, dropout):
    # With dropout (the recipe's 0.1 after the attention output) the masks after resuming must be the
    # uninterrupted run's too, although validation at the checkpoint step draws from torch's global RNG.
    common = (
        "trainer.max_steps=8",
        "callbacks.model_checkpoint.every_n_train_steps=4",
        "trainer.val_check_interval=4",
        f"data.num_workers={workers}",
        f"model.config.attention_output_dropout={dropout}",
    )
    straight = tmp_path / "straight"
    run(compose_fast(*common, output_dir=straight))
    first = tmp_path / "first"
    run(compose_fast(*common, "trainer.max_steps=4", output_dir=first))
    resumed = tmp_path / "resumed"
    trainer = run(
        compose_fast(*common, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", output_dir=resumed)
    )
    assert trainer.global_step == 8
    a, b = _losses(straight), _losses(resumed)
    assert sorted(b) == [4, 5, 6, 7]
    # Exactly: without per-step dropout seeds the dropout run differs by ~5e-5 here.
    assert {step: a[step] for step in b} == b


class _PoisonAt(L.Callback):
    """Makes the model produce NaN from a given step on (a stand-in for a diverging run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.net.model.embeddings.norm.weight.fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(compose_fast, tmp_path):
    out = tmp_path / "run"
    # Validation (and its checkpoint) only after the poisoned step, so last.ckpt comes from step 2.
    cfg = compose_fast(
        "callbacks.model_checkpoint.every_n_train_steps=2", "trainer.val_check_interval=6", output_dir=out
    )
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.append(_PoisonAt(3))
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 3"):
        trainer.fit(module, datamodule=datamodule)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())


class _NaNLossOnce(L.Callback):
    """Poisons the weights for the forward pass of one batch only, then puts them back."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.saved: torch.Tensor | None = None
        self.restored = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.saved is None:
            weight = pl_module.net.model.embeddings.norm.weight
            self.saved = weight.detach().clone()
            with torch.no_grad():
                weight.fill_(float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.saved is not None and not self.restored:
            self.restored = True
            with torch.no_grad():
                pl_module.net.model.embeddings.norm.weight.copy_(self.saved)


def test_skip_mode_drops_the_bad_batch_and_continues(compose_fast, tmp_path):
    out = tmp_path / "run"
    cfg = compose_fast("module.on_nonfinite=skip", output_dir=out)
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.append(_NaNLossOnce(2))
    trainer.fit(module, datamodule=datamodule)
    assert module.skipped_batches == 1
    # max_steps counts optimizer steps: the skipped batch made none, so a seventh batch was drawn.
    assert trainer.global_step == 6
    losses = _losses(out)
    assert all(math.isfinite(v) for v in losses.values())
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_phase_chaining_with_context_extension(compose_fast, tmp_path):
    pre = tmp_path / "pretrain"
    run(compose_fast("phase=pretrain", "data_mix.subset=pretrain", output_dir=pre))
    mid = tmp_path / "midtrain"
    start = pre / "checkpoints" / "last.ckpt"
    cfg = compose_fast("phase=midtrain", "phase.seq_len=256", f"model.init_from={start}", output_dir=mid)
    datamodule, module, trainer = build(cfg)
    before = torch.load(start, map_location="cpu", weights_only=False)["state_dict"]
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, before[name], msg=name)
    assert module.net.config.global_rope_theta == 160_000.0 == module.net.config.local_rope_theta
    trainer.fit(module, datamodule=datamodule)
    hf_config = json.loads((mid / "hf" / "config.json").read_text())
    assert hf_config["global_rope_theta"] == 160_000.0 and hf_config["local_rope_theta"] == 160_000.0
    dec = tmp_path / "decay"
    run(compose_fast("phase=decay", f"model.init_from={mid / 'hf'}", output_dir=dec))
    assert (dec / "hf" / "model.safetensors").exists()


@pytest.mark.parametrize("optimizer", ["adamw", "stable_adamw"])
def test_a_new_phase_with_carried_moments_runs_at_its_own_lr(compose_fast, tmp_path, optimizer):
    pre = tmp_path / "pretrain"
    run(compose_fast(f"optimizer={optimizer}", "trainer.max_steps=2", output_dir=pre))  # peak 2e-3
    mid = tmp_path / "midtrain"
    start = pre / "checkpoints" / "last.ckpt"
    overrides = (
        f"optimizer={optimizer}",
        "phase=midtrain",
        f"model.init_from={start}",
        "model.init_mode=full",
    )
    run(compose_fast(*overrides, "trainer.max_steps=2", output_dir=mid))
    assert [lr for _, lr in logged(mid, "train/lr")] == pytest.approx([1e-3, 1e-3]), "midtrain: 1e-3"


def test_max_steps_never_changes_the_schedule(compose_fast, tmp_path):
    short = compose_fast("phase=decay", "trainer.max_steps=2", output_dir=tmp_path / "a")
    long = compose_fast("phase=decay", "trainer.max_steps=5", output_dir=tmp_path / "b")
    assert short.lr_schedule == long.lr_schedule
    assert short.lr_schedule.total_tokens == long.lr_schedule.total_tokens > 0


def test_the_final_step_is_checkpointed_between_saves(compose_fast, tmp_path):
    out = tmp_path / "run"
    run(compose_fast("trainer.max_steps=5", output_dir=out))  # saves every 3 steps
    names = {p.name for p in (out / "checkpoints").iterdir()}
    assert {"step-0000003.ckpt", "step-0000005.ckpt", "last.ckpt"} <= names
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5


def test_a_step_of_several_micro_batches_trains_the_global_batch(compose_fast, tmp_path):
    out = tmp_path / "run"
    cfg = compose_fast(
        "data.rows_per_device=3", "trainer.max_steps=4", "trainer.val_check_interval=2", output_dir=out
    )
    trainer = run(cfg)  # 8 rows a step: micro-batches of 3, 3 and 2 rows
    assert trainer.global_step == 4
    assert [step for step, _ in logged(out, "val/loss")] == [1, 3], "intervals count optimizer steps"
    assert [rows for _, rows in logged(out, "train/batch_rows")] == [8.0] * 4
    tokens = [t for _, t in logged(out, "train/tokens")]
    assert tokens[0] > 7 * 128, "eight packed rows of 128 tokens, nearly full"


def test_resuming_into_the_same_folder_keeps_the_earlier_metrics(compose_fast, tmp_path):
    common = ("trainer.max_steps=6", "callbacks.model_checkpoint.every_n_train_steps=3")
    straight = tmp_path / "straight"
    run(compose_fast(*common, output_dir=straight))
    out = tmp_path / "run"
    run(compose_fast(*common, "trainer.max_steps=3", output_dir=out))
    run(compose_fast(*common, f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", output_dir=out))
    train_steps = [step for step, _ in logged(out, "train/loss")]
    assert train_steps == list(range(6)), "each step logged once, the first attempt's rows kept"
    a, b = _losses(straight), _losses(out)
    assert all(abs(a[s] - b[s]) <= 1e-4 for s in range(6))


def test_a_micro_batch_too_large_for_the_cpu_fails_before_training(compose_fast, tmp_path, monkeypatch):
    import mmbert.train.run as run_module
    from mmbert.errors import ConfigError

    monkeypatch.setattr(run_module, "available_memory_bytes", lambda: 16 * 2**30)
    cfg = compose_fast("model=small", "phase=decay", "phase.seq_len=8192", "trainer.accelerator=cpu")
    with pytest.raises(
        ConfigError, match=r"data\.rows_per_device=8 x phase\.seq_len=8192 needs about 68 GiB"
    ):
        build(cfg)
    build(compose_fast("trainer.accelerator=cpu"))  # the tiny default fits


class _DieInValidationAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.global_step == self.step and not trainer.sanity_checking:
            raise RuntimeError("killed during validation")


def test_a_run_killed_during_validation_repeats_it_on_resume(compose_fast, tmp_path):
    straight = tmp_path / "straight"
    run(compose_fast(output_dir=straight))  # validation and checkpoints every 3 steps
    out = tmp_path / "run"
    datamodule, module, trainer = build(compose_fast(output_dir=out))
    trainer.callbacks.append(_DieInValidationAt(6))
    with pytest.raises(RuntimeError, match="killed during validation"):
        trainer.fit(module, datamodule=datamodule)
    names = {p.name for p in (out / "checkpoints").iterdir()}
    assert "step-0000003.ckpt" in names and "step-0000006.ckpt" not in names  # saved after validation only
    run(compose_fast(f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", output_dir=out))
    val_steps = [[step for step, _ in logged(d, "val/loss")] for d in (out, straight)]
    assert val_steps[0] == val_steps[1] == [2, 5]


def test_starting_weights_with_another_tokenizer_are_refused(compose_fast, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mmbert.checkpoint.hf import save_hf_folder
    from mmbert.errors import ConfigError
    from mmbert.model import MmBertForMaskedLM

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    backend = Tokenizer(
        models.WordLevel({t: i for i, t in enumerate([*specials, "hello", "world"])}, "<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    other = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        mask_token="<mask>",
    )  # fmt: skip
    cfg = compose_fast(output_dir=tmp_path / "run")
    foreign = save_hf_folder(MmBertForMaskedLM(cfg.model.config), tmp_path / "foreign", tokenizer=other)
    with pytest.raises(ConfigError, match=r"model\.init_from=.*foreign was trained with the tokenizer"):
        build(compose_fast(f"model.init_from={foreign}"))
    ours = save_hf_folder(MmBertForMaskedLM(cfg.model.config), tmp_path / "ours", tokenizer="data/tokenizer")
    build(compose_fast(f"model.init_from={ours}"))  # the same tokenizer: accepted


def test_strided_init_through_the_train_config_samples_the_wider_run(compose_fast, tmp_path):
    from mmbert.checkpoint.hf import save_hf_folder
    from mmbert.checkpoint.shrink import shrink_state
    from mmbert.model import MmBertForMaskedLM

    wide = MmBertForMaskedLM(compose_fast().model.config)  # the tiny model: hidden 128, 2 heads of 64
    folder = save_hf_folder(wide, tmp_path / "wide", tokenizer="data/tokenizer")
    narrow = ("model.config.hidden_size=64", "model.config.num_attention_heads=1", "model.config.intermediate_size=128")  # fmt: skip
    _, module, _ = build(compose_fast(*narrow, f"model.init_from={folder}", "model.init_mode=strided"))
    expected = shrink_state(wide.state_dict(), wide.config, module.net.config, origin="wide")
    for name, tensor in module.net.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
