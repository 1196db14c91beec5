"""The multilingual data pipeline: sources, temperature mixing by tokens, packing, masking, resumption."""

from mmbert.data.datamodule import MLMDataModule, PendingBatch
from mmbert.data.mds import MdsWriter, merge_index
from mmbert.data.mixspec import FolderMix, HubMix, MdsMix, MixSpec, SampleMix, mixture_report
from mmbert.data.paths import repo_root, resolve_path
from mmbert.data.sampling import released_weights, temperature_weights
from mmbert.data.sources import FileSource, HubSource, MdsSource, Source
from mmbert.data.tokenizer import load_tokenizer

__all__ = [
    "FileSource",
    "FolderMix",
    "HubMix",
    "HubSource",
    "MLMDataModule",
    "MdsMix",
    "MdsSource",
    "MdsWriter",
    "MixSpec",
    "PendingBatch",
    "SampleMix",
    "Source",
    "load_tokenizer",
    "merge_index",
    "mixture_report",
    "released_weights",
    "repo_root",
    "resolve_path",
    "temperature_weights",
]
