"""The multilingual data pipeline: sources, temperature mixing by tokens, packing, masking, resumption."""

from mmbert.data.datamodule import MLMDataModule, PendingBatch
from mmbert.data.mds import MdsWriter, merge_index
from mmbert.data.mix.base import MixSpec, Source
from mmbert.data.mix.count_meaning import CountMeaning
from mmbert.data.mix.folder import FileSource, FolderMix
from mmbert.data.mix.hub import HubMix, HubSource
from mmbert.data.mix.mds import MdsMix, MdsSource
from mmbert.data.mix.report import mixture_report
from mmbert.data.mix.sample import SampleMix
from mmbert.data.paths import repo_root, resolve_path
from mmbert.data.sampling import released_weights, temperature_weights
from mmbert.data.tokenizer import load_tokenizer

__all__ = [
    "CountMeaning",
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
