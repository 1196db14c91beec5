"""Throughput you can see: FLOPs per token, device peaks, train/tokens_per_s, train/mfu, the token progress bar."""

from __future__ import annotations

import pytest
from helpers import SMALL, logged

from mmbert.model import MmBertConfig
from mmbert.train.run import run
from mmbert.train.throughput import device_peak_flops, flops_per_token

TINY = MmBertConfig(vocab_size=8192, hidden_size=128, intermediate_size=256, num_hidden_layers=6,
                    num_attention_heads=2)  # fmt: skip


def test_flops_per_token_at_exact_points():
    # 3 x (projections 1,966,080 + attention 393,216 (2 global + 4 local layers, 128 keys each) + head
    # 0.3 x 2,129,920): worked out by hand for the tiny model.
    assert flops_per_token(TINY, 128, 0.3) == pytest.approx(8_994_816)
    # Rows longer than the window: local layers see 129 keys, global ones the whole row.
    assert flops_per_token(TINY, 1024, 0.0) - flops_per_token(TINY, 128, 0.0) == 3 * 4 * 128 * 2 * (
        1024 - 128
    ) + (3 * 4 * 128 * 4 * (129 - 128))
    assert flops_per_token(MmBertConfig(**SMALL), 1024, 0.3) == pytest.approx(476_317_900.8)


@pytest.mark.parametrize(
    "name, peak",
    [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
     ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GeForce GTX 1080", None)],
)  # fmt: skip
def test_device_peaks_by_name(name, peak):
    assert device_peak_flops(name) == peak


def test_tokens_per_second_and_mfu_are_logged(compose_fast, tmp_path):
    out = tmp_path / "with_peak"
    run(compose_fast("callbacks.throughput.peak_flops=1.0e12", output_dir=out))
    rates = [v for _, v in logged(out, "train/tokens_per_s")]
    mfu = [v for _, v in logged(out, "train/mfu")]
    assert len(rates) == 6 and all(r > 0 for r in rates)
    flops = flops_per_token(TINY, 128, 0.3)
    assert mfu == pytest.approx([r * flops / 1e12 for r in rates], rel=1e-5)
    cpu = tmp_path / "cpu"
    run(compose_fast(output_dir=cpu))
    assert logged(cpu, "train/tokens_per_s") and not logged(cpu, "train/mfu"), "no MFU on a CPU by default"


def test_the_progress_bar_counts_tokens_of_the_budget(compose_fast, tmp_path, capsys):
    run(compose_fast("trainer.enable_progress_bar=true", output_dir=tmp_path / "run"))
    err = capsys.readouterr().err
    assert "/3.00M [" in err, "tokens seen out of the phase's 3M-token budget"
    assert "tok/s" in err and "<" in err and "loss=" in err and "step=6" in err, "rate, ETA, loss, step"
