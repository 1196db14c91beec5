"""module.compile (regional: each encoder layer and the MLM head) and trainer.precision=bf16-mixed on the CPU,
each against the same fp32 eager run of the tiny model, through the real build/fit path."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch._dynamo
from helpers import FAST, compose_train, logged
from torch._dynamo.utils import counters

from mmbert.train import MLMModule
from mmbert.train.run import build

# 8 rows a step in micro-batches of 3, 3 and 2 rows: packed lengths of 384 and 256 tokens within every step,
# masked positions differing in every micro-batch, and validation batches of their own sizes in between.
# token_scale makes the LR warm up over about 6 steps, so the run trains at a real LR.
COMMON = [
    "trainer.max_steps=5",
    "trainer.val_check_interval=2",
    "data.rows_per_device=3",
    "model.config.attn_backend=sdpa",
    "token_scale=0.02",
]
# aot_eager runs the same ATen kernels as eager mode (through the traced forward and backward graphs):
# measured identical losses. Inductor fuses and reorders fp32 arithmetic.
AOT_EAGER_RTOL = 1e-6
INDUCTOR_RTOL = 1e-4
# bf16 keeps 8 bits of mantissa (0.4% a rounding), but autocast keeps fp32 weights, norms, softmax and loss:
# measured 1.3e-5 relative per step and 0.14% of the run's loss drop. A per-step bound of 2-5% would pass any
# run near log(V), trained or not, so the steps are held to 1e-3 and the drop since step 0 (what training
# achieved) to 5% of fp32's.
BF16_STEP_RTOL = 1e-3
BF16_DROP_RTOL = 0.05


class _Record(L.Callback):
    """Dynamo's count of distinct graphs after every training step and validation, and the autocast dtype."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.dtypes: set[torch.dtype] = set()

    def on_fit_start(self, trainer, pl_module) -> None:
        wi = pl_module.net.model.layers[0].mlp.Wi
        wi.register_forward_hook(lambda _m, _i, out: self.dtypes.add(out.dtype))

    def on_train_batch_end(self, *args) -> None:
        self.events.append(("train", counters["stats"]["unique_graphs"]))

    def on_validation_end(self, *args) -> None:
        self.events.append(("val", counters["stats"]["unique_graphs"]))


def _train(out: Path, *overrides: str) -> tuple[MLMModule, list[float], _Record]:
    torch._dynamo.reset()
    counters.clear()
    cfg = compose_train([*FAST, *COMMON, *overrides], output_dir=out)
    datamodule, module, trainer = build(cfg)
    record = _Record()
    trainer.callbacks.append(record)
    trainer.fit(module, datamodule=datamodule)
    losses = [v for _, v in logged(out, "train/loss")]
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    return module, losses, record


@pytest.fixture(scope="module")
def eager_fp32(tmp_path_factory) -> tuple[MLMModule, list[float]]:
    module, losses, record = _train(tmp_path_factory.mktemp("eager") / "run")
    assert record.dtypes == {torch.float32}
    assert losses[-1] < losses[0] - 0.02, f"the reference run must train: {losses}"
    return module, losses


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    yield
    torch._dynamo.reset()


def _plain_and_compiled(backend: str) -> tuple[MLMModule, MLMModule]:
    config = dict(
        vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2
    )
    torch.manual_seed(0)
    plain = MLMModule(model_config=config, optimizer=None)
    torch.manual_seed(0)
    return plain, MLMModule(model_config=config, optimizer=None, compile=backend)


def test_compile_is_regional_and_keeps_the_plain_names():
    plain, compiled = _plain_and_compiled("eager")
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in compiled.named_modules()] == [n for n, _ in plain.named_modules()]
    for layer in compiled.net.model.layers:
        assert layer._compiled_call_impl is not None, "every encoder layer is compiled in place"
    assert compiled.net.head._compiled_call_impl is not None
    assert compiled.net._compiled_call_impl is None and compiled.net.model._compiled_call_impl is None
    assert compiled.hparams.compile == "eager"
    with pytest.raises(ValueError, match=r"not a torch\.compile backend"):
        MLMModule(model_config=plain.net.config, optimizer=None, compile="no-such-backend")


def test_compiled_training_matches_eager_without_recompiling(eager_fp32, tmp_path):
    _, eager_losses = eager_fp32
    out = tmp_path / "run"
    # Past the limit dynamo would silently fall back to eager mode; here it fails instead.
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        module, losses, record = _train(out, "module.compile=aot_eager")
    assert losses == pytest.approx(eager_losses, rel=AOT_EAGER_RTOL)

    events = record.events
    assert [kind for kind, _ in events] == ["train", "train", "val", "train", "train", "val", "train"]
    first = events[0][1]
    assert first > 0, "the first step must have run compiled graphs"
    assert events[1][1] == first, f"a second step with other packed lengths compiled anew: {events}"
    after_val = events[2][1]
    assert all(n == after_val for _, n in events[2:]), (
        f"graphs kept being compiled as packed lengths changed (counts after each step / validation): {events}"
    )

    # Checkpoints of a compiled run hold the plain model's names and load without compile.
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert set(ckpt["state_dict"]) == set(module.state_dict())
    restored = MLMModule.load_from_checkpoint(
        out / "checkpoints" / "last.ckpt", compile=False, optimizer=None
    )
    assert all(layer._compiled_call_impl is None for layer in restored.net.model.layers)
    trained = module.net.state_dict()
    for name, tensor in restored.net.state_dict().items():
        torch.testing.assert_close(tensor, trained[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_inductor_training_matches_eager_without_recompiling(eager_fp32, tmp_path):
    _, eager_losses = eager_fp32
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        _, losses, record = _train(tmp_path / "run", "module.compile=true")
    assert losses == pytest.approx(eager_losses, rel=INDUCTOR_RTOL)
    counts = [n for _, n in record.events]
    assert counts[0] > 0 and counts[0] == counts[1] and all(n == counts[2] for n in counts[2:]), record.events


def test_bf16_mixed_on_the_cpu_trains_close_to_fp32(eager_fp32, tmp_path):
    _, fp32_losses = eager_fp32
    module, losses, record = _train(tmp_path / "run", "trainer.precision=bf16-mixed")
    assert record.dtypes == {torch.bfloat16}, "the encoder's matmuls must run under bf16 autocast"
    for name, param in module.net.named_parameters():
        assert param.dtype == torch.float32, f"{name} is {param.dtype}: autocast keeps fp32 weights"
        assert torch.isfinite(param).all(), name
    assert losses == pytest.approx(fp32_losses, rel=BF16_STEP_RTOL)
    drop, fp32_drop = losses[0] - losses[-1], fp32_losses[0] - fp32_losses[-1]
    assert drop == pytest.approx(fp32_drop, rel=BF16_DROP_RTOL), (losses, fp32_losses)
    assert losses != fp32_losses, "bf16 autocast gave exactly the fp32 losses: was it applied at all?"
