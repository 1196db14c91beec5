"""The token budget of a phase: the data stream never ends, so the run stops on tokens seen."""

from __future__ import annotations

import lightning as L


class StopAtTokens(L.Callback):
    """Ends the run once the phase's token budget is consumed (the data stream itself never ends).

    It checks at optimizer-step boundaries (one Lightning batch is one step), so the run stops at the first
    step at or past the budget, never inside one.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = int(max_tokens)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.max_tokens > 0 and pl_module.tokens_seen >= self.max_tokens:
            trainer.should_stop = True
