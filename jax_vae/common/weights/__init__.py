"""Weights between frameworks and files: the one layout converter (convert), safetensors / npz and
any weight file's tensors (formats), the sources' own checkpoints (sources), export and import.
"""

__all__ = ["convert", "formats", "sources", "export", "importing"]
