"""Opening torch checkpoint files without running code from them.

``torch.load(weights_only=True)`` rebuilds only tensors, containers and primitives, and refuses any other
pickled global. A format may need a few more types to *parse* (Composer pickles its RNG state as numpy arrays,
``datetime.timedelta`` wall-clock times, ``TorchVersion`` strings and, depending on its version, some of its own
classes); none of them is needed to *use* the checkpoint, which only reads tensors and plain dicts. So each
allowed global is bound to an inert stand-in (:class:`Opaque`) that records its arguments and runs nothing:
the named module is never imported and no function of it is called. Anything not on the list is refused
before unpickling, naming the file and the type. Why not the real classes: they are not installed here
(Composer, its metrics) or would execute their reconstruction code (numpy's ``_reconstruct``), and the values
are thrown away anyway.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mmbert.checkpoint.formats import Format
from mmbert.errors import CheckpointError, UnsafeCheckpointError


class Opaque:
    """Inert stand-in for an allowed non-tensor global: keeps what the pickle passed, executes nothing."""

    pickled_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        obj = super().__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.pickled_name}>"


# Globals each format may pickle besides what torch's weights_only loader allows, as exact names or prefixes.
# Lightning: this project's checkpoints hold only tensors, containers and primitives (the module saves plain
# hyper-parameters, the data module tensors), so nothing is added; Lightning's loops and callbacks state are
# plain dicts.
# Composer (State.state_dict() and reproducibility.get_rng_state()): numpy RNG state, timestamps'
# wall-clock times, the torch version string, and Composer's own types (Time, TimeUnit, ...) in some versions.
ALLOWED: dict[Format, tuple[frozenset[str], tuple[str, ...]]] = {
    Format.LIGHTNING: (frozenset(), ()),
    Format.STATE_DICT: (frozenset(), ()),
    Format.COMPOSER: (
        frozenset(
            {
                "datetime.timedelta",
                "torch.torch_version.TorchVersion",
                "numpy.ndarray",
                "numpy.dtype",
                "numpy.core.multiarray._reconstruct",
                "numpy._core.multiarray._reconstruct",
                "numpy.core.multiarray.scalar",
                "numpy._core.multiarray.scalar",
            }
        ),
        ("composer.", "numpy.dtypes."),
    ),
}


def _allowed(name: str, formats: Iterable[Format]) -> bool:
    for fmt in formats:
        exact, prefixes = ALLOWED[fmt]
        if name in exact or name.startswith(prefixes):
            return True
    return False


def _stand_in(name: str) -> tuple[type, str]:
    module, _, attr = name.rpartition(".")
    cls = type(attr or name, (Opaque,), {"__module__": module, "pickled_name": name})
    return cls, name


def _is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def pickled_globals(path: Path) -> list[str]:
    """Globals the file's pickle names that torch's weights_only loader does not allow by default (read from
    the pickle's opcodes, nothing executed)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # torch raises ValueError/RuntimeError/UnpicklingError for broken files
        raise CheckpointError(f"cannot read {path} as a torch checkpoint: {err}") from err


def safe_torch_load(
    path: str | Path, formats: Iterable[Format], *, mmap: bool = True
) -> tuple[Any, set[str]]:
    """Load a ``torch.save`` file with ``weights_only=True``, allowing the globals of ``formats`` as inert
    stand-ins. Returns the object and the names of the globals that were stood in for.

    mmap keeps a large checkpoint on disk until a tensor is read. UnsafeCheckpointError (naming the file and
    the type) for any other global, before anything is unpickled."""
    path = Path(path)
    formats = tuple(formats)
    zipped = _is_zip(path)
    found = pickled_globals(path) if zipped else []
    refused = sorted(name for name in found if not _allowed(name, formats))
    if refused:
        # Name what no format allows first: that is what could run code.
        unknown = [name for name in refused if not _allowed(name, ALLOWED)]
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it pickles {', '.join(unknown or refused)}, which is not on the "
            f"allow-list of {'/'.join(f.value for f in formats)} checkpoints (loading it could run code)"
        )
    stand_ins = [_stand_in(name) for name in found]
    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location="cpu", mmap=mmap and zipped, weights_only=True)
    except pickle.UnpicklingError as err:
        # Globals pushed dynamically escape the static scan; torch's loader still refuses them.
        raise UnsafeCheckpointError(f"refusing to load {path}: {err}") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot load {path}: {err}") from err
    return obj, set(found)
