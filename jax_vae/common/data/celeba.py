"""CelebA (aligned and cropped faces) as AntixK/PyTorch-VAE feeds it to its VanillaVAE: `celeba:PATH`.

PATH holds (or holds a `celeba/` folder, torchvision's layout, holding) `img_align_celeba/*.jpg` and
`list_eval_partition.txt`: one line per image, "000001.jpg 0" (the original file, space-separated) or
"000001.jpg,0" after an "image_id,partition" header (the Kaggle copy); 0 = train, 1 = valid, 2 = test.
AntixK trains on split 0 and validates on split 2 (dataset.py: MyCelebA(split='train'), (split='test')), so
"train" is partition 0 and "test" partition 2; partition 1 is unused.

Each image goes through AntixK's deterministic transforms with Pillow, as torchvision does them:
CenterCrop(148) (top = round((H - 148) / 2), left = round((W - 148) / 2): 35 and 15 on the 178 x 218
aligned images), Resize(size) (Pillow BILINEAR on the 8-bit RGB image: antialiased, rounded to uint8) and
ToTensor (float32 division by 255, values in [0, 1]; AntixK's current code does not rescale to [-1, 1]).
RandomHorizontalFlip, which AntixK applies to train AND validation images, is a per-draw augmentation and is
not done here. Images are RGB, flat [H, W, C] (image_channels = 3). CelebA has no class labels: labels are 0.
Memory: the 162,770 training images at 64 x 64 x 3 float32 are 8.0 GB.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import numpy as np

from jax_vae.common.errors import DataError, one_line

if TYPE_CHECKING:
    import numpy.typing as npt

CROP = 148  # AntixK: transforms.CenterCrop(148)
IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
PARTITIONS = {"train": 0, "test": 2}  # our split -> CelebA's partition code (1 = valid, unused)
CHANNELS = 3


def find_root(path: pathlib.Path) -> pathlib.Path:
    """The folder holding list_eval_partition.txt: PATH itself or PATH/celeba (DataError otherwise)."""
    for root in (path, path / "celeba"):
        if (root / PARTITION_FILE).is_file():
            return root
    raise DataError(f"{path}: no {PARTITION_FILE} (CelebA's split file) in it or in {path / 'celeba'}")


def read_partition(file: pathlib.Path) -> list[tuple[str, int]]:
    """(image file name, partition code) per line of list_eval_partition.txt, space or comma separated."""
    try:
        lines = file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: cannot read it ({one_line(err, 200)})") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        fields = line.replace(",", " ").split()
        if not fields or (n == 1 and fields == ["image_id", "partition"]):
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2") or "/" in fields[0] or "\\" in fields[0]:
            raise DataError(f"{file}:{n}: expected 'IMAGE.jpg 0|1|2', got {line.strip()[:80]!r}")
        rows.append((fields[0], int(fields[1])))
    if not rows:
        raise DataError(f"{file}: lists no images")
    return rows


def crop_box(width: int, height: int, crop: int = CROP) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop box (left, top, right, bottom): top = int(round((H - crop) / 2.0))."""
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def read_image(path: pathlib.Path, size: int, crop: int = CROP) -> npt.NDArray[np.uint8]:
    """One image through CenterCrop(crop) and Resize(size) as uint8 [size, size, 3] (DataError if bad)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: listed in {PARTITION_FILE} but missing") from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: cannot read it as an image ({one_line(err, 200)})") from None
    if min(rgb.size) < crop:
        w, h = rgb.size
        raise DataError(f"{path} is {h}x{w} (height x width), smaller than the {crop}x{crop} centre crop")
    out = rgb.crop(crop_box(*rgb.size, crop))
    if size != crop:
        out = out.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, np.uint8)


def load_split(
    path: pathlib.Path, split: str, size: int = 0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """(images float32 [N, size * size * 3] in [0, 1], labels int64 zeros [N]) of CelebA's `split`;
    size = 0 keeps the 148 x 148 crop."""
    size = size or CROP
    root = find_root(path)
    names = [name for name, code in read_partition(root / PARTITION_FILE) if code == PARTITIONS[split]]
    if not names:
        raise DataError(f"{root / PARTITION_FILE}: no image in partition {PARTITIONS[split]} ({split})")
    images = np.empty((len(names), size, size, CHANNELS), np.uint8)  # [N, H, W, C]
    for i, name in enumerate(names):
        images[i] = read_image(root / IMAGE_DIR / name, size)
    x = images.reshape(len(names), -1).astype(np.float32)  # [N, H*W*C], flat in H, W, C order
    np.divide(x, np.float32(255), out=x)  # ToTensor: float32 division by 255
    return x, np.zeros(len(names), np.int64)
