"""The data: the dataset table without I/O (catalog), loading and binarization (datasets), verified
IDX files (idx), the user's npz / image folders (userdata), CelebA (celeba) and resizing (resize).
"""

__all__ = ["catalog", "datasets", "idx", "userdata", "celeba", "resize"]
