"""mmbert: train massively multilingual ModernBERT encoders the mmBERT way."""

__version__ = "0.1.0"
