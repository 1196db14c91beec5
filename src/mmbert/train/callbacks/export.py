"""The Hugging Face folder a finished run leaves: what the merge, downstream and analysis steps read."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from mmbert.checkpoint.hf import save_hf_folder

log = logging.getLogger(__name__)


class HFExportCallback(L.Callback):
    """Exports the final weights (and tokenizer) as a Hugging Face folder when training ends.

    A run stopped on a signal (:class:`mmbert.train.resume.Preempted`) never reaches ``on_train_end``, so
    only finished runs export.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        save_hf_folder(pl_module.net, self.output_dir, tokenizer=pl_module.hparams.tokenizer)
        log.info("Hugging Face export written to %s", self.output_dir)
