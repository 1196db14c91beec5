"""mmbert: train massively multilingual ModernBERT encoders the mmBERT way.

``from mmbert import encode``: the inference path (:func:`mmbert.model.encode.encode`), imported on first use so
that ``import mmbert.<module>`` does not load the model code.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["encode"]


def __getattr__(name: str) -> Any:
    if name == "encode":
        from mmbert.model.encode import encode

        return encode
    raise AttributeError(f"module 'mmbert' has no attribute {name!r}")
