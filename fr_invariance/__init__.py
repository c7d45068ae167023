"""fr-invariance: attribute invariance of face-recognition embeddings (see DESIGN.md)."""

__version__ = "0.1.0"
