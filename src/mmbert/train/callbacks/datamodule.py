"""The datamodule a callback reads or steers: the mask ratio, the rows per step and the mixture live there."""

from __future__ import annotations

import lightning as L


def fitted_datamodule(trainer: L.Trainer) -> L.LightningDataModule:
    """The trainer's datamodule; a callback that needs one fails clearly on a fit given bare dataloaders."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None:
        raise RuntimeError("this callback needs the trainer to be fitted with a datamodule")
    return dm
