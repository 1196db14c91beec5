"""Model FLOPs per trained token and device peaks: what ``train/mfu`` divides.

Training FLOPs are 3x the forward's (forward, and backward for activations and weights); a matmul of an
``[m, k]`` by a ``[k, n]`` matrix is ``2 m k n``. Per token and encoder layer: the projections (``Wqkv``,
``Wo``, GeGLU ``Wi`` and ``Wo``: ``4 H^2 + 3 I H`` weights), and attention scores and values against the keys
a token sees (``4 H`` per key: every other token of the row on global layers, at most ``local_attention + 1``
on local ones, counted at full rows, an upper bound for packed documents). The MLM head (``dense`` and the
decoder over the vocabulary) runs on the masked tokens only (sparse prediction), so it counts at the mask
ratio. Embedding lookups and norms are not matmuls and are left out, as is usual for MFU.
"""

from __future__ import annotations

from mmbert.model import MmBertConfig

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from the vendors' data sheets; matched as substrings of
# torch.cuda.get_device_name(), most specific first. Anything else: set callbacks.throughput.peak_flops.
BF16_PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
)


def flops_per_token(config: MmBertConfig, seq_len: int, mask_ratio: float) -> float:
    """Training FLOPs of one token of packed rows of ``seq_len`` tokens with ``mask_ratio`` of them predicted."""
    H, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    layers = config.num_hidden_layers
    every = config.global_attn_every_n_layers
    n_global = len(range(0, layers, every))
    local_keys = min(seq_len, config.local_attention + 1)
    projections = layers * 2 * (4 * H * H + 3 * I * H)
    attention = 4 * H * (n_global * seq_len + (layers - n_global) * local_keys)
    head = mask_ratio * 2 * (H * H + H * V)
    return 3.0 * (projections + attention + head)


def device_peak_flops(device_name: str) -> float | None:
    """The bf16 peak of a GPU by its name, or None when it is not in the table."""
    for key, peak in BF16_PEAK_FLOPS:
        if key in device_name:
            return peak
    return None
