"""mmbert: train massively multilingual ModernBERT encoders the mmBERT way."""

from mmbert.model.encode import encode

__version__ = "0.1.0"

__all__ = ["encode"]
