"""The Hugging Face folder a finished run leaves: what the merge, downstream and analysis steps read."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from mmbert.checkpoint.hf import save_hf_folder
from mmbert.errors import CheckpointError

log = logging.getLogger(__name__)


class HFExportCallback(L.Callback):
    """Exports the final weights (and tokenizer) as a Hugging Face folder when the run has finished.

    ``on_fit_end`` comes after every ``on_train_end``, so the final checkpoint (last.ckpt) is on disk before the
    export starts, and an export that fails (a tokenizer that cannot be fetched, a full disk) loses nothing:
    it ends the run with one :class:`~mmbert.errors.CheckpointError` line and a non-zero status. A run stopped
    on a signal (:class:`mmbert.train.resume.Preempted`) never gets here, so only finished runs export.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        try:
            save_hf_folder(
                pl_module.net, self.output_dir, tokenizer=pl_module.hparams.tokenizer, frame_texts=True
            )
        except Exception as e:
            saved = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else None
            raise CheckpointError(
                f"training finished{f' and {saved} is written' if saved else ''}, but the Hugging Face export to "
                f"{self.output_dir} failed ({type(e).__name__}: {e}); export later with "
                "`mmbert-convert to-hf CHECKPOINT OUT --tokenizer ...`"
            ) from e
        log.info("Hugging Face export written to %s", self.output_dir)
