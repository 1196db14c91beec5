"""ModernBERT/mmBERT encoder with packed (unpadded) attention."""

from mmbert.model.attention import BucketLayout, packed_attention, select_attn_backend
from mmbert.model.config import ATTN_BACKENDS, MmBertConfig
from mmbert.model.loss import IGNORE_INDEX, linear_cross_entropy
from mmbert.model.modeling import MaskedLMOutput, MmBertForMaskedLM, MmBertModel

__all__ = [
    "ATTN_BACKENDS",
    "IGNORE_INDEX",
    "BucketLayout",
    "MaskedLMOutput",
    "MmBertConfig",
    "MmBertForMaskedLM",
    "MmBertModel",
    "linear_cross_entropy",
    "packed_attention",
    "select_attn_backend",
]
