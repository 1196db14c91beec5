"""Everything that talks to the Hugging Face Hub, below the model, checkpoint and data layers that use it.

- :mod:`.retry`: transient errors (429, 5xx, timeouts, resets) retried with backoff and counted; permanent
  ones (401, 403, 404) as one :class:`~mmbert.errors.HubError` naming the repo, revision and file.
- :mod:`.snapshot`: a dataset repo's files and configs at a pinned commit, asked for once per run.
- :mod:`.remote`: a file of that commit read with range requests (parquet by column chunk, lines buffered).
- :mod:`.models`: a model repo's files (tokenizers, weights) as a local folder, fetched once per run.
"""

from mmbert.hub.models import model_folder
from mmbert.hub.remote import open_remote
from mmbert.hub.retry import STATS, retrying
from mmbert.hub.snapshot import RepoSnapshot, pins, snapshot, use_folder

__all__ = [
    "STATS",
    "RepoSnapshot",
    "model_folder",
    "open_remote",
    "pins",
    "retrying",
    "snapshot",
    "use_folder",
]
