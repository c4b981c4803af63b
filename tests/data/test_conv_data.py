"""The conv presets' data pieces: threshold binarization, resizing (against Pillow and torch), image
channels in the config, and CelebA as AntixK/PyTorch-VAE reads it, on generated JPEGs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig, apply_overrides, from_dict, to_dict
from jax_vae.common.data import celeba, resize
from jax_vae.common.data import datasets as data
from jax_vae.common.errors import DataError
from jax_vae.common.evaluation import check_evaluable
from jax_vae.common.reporting import plots
from jax_vae.common.training import inputs
from tests.helpers import TINY, assert_one_line_error, run_main

RNG = np.random.default_rng(0)


def test_threshold_is_the_tutorials_preprocessing():
    """np.where(x > .5, 1, 0) on uint8 / 255 in float64 (the tutorial) equals ours on the float32
    images the loaders give, for all 256 grey levels; 0.5 itself maps to 0."""
    levels = np.arange(256, dtype=np.uint8)
    tutorial = np.where(levels / 255.0 > 0.5, 1.0, 0.0).astype("float32")
    ours = data.threshold(levels.astype(np.float32) / np.float32(255))
    assert ours.dtype == np.float32 and np.array_equal(ours, tutorial)
    assert int(tutorial.sum()) == 128  # 128..255
    assert data.threshold(np.array([0.5, 0.5000001], np.float32)).tolist() == [0.0, 1.0]


def test_threshold_binarization_in_load_dataset(tmp_path):
    """binarization='threshold' is applied to train and test, fixed (no seed dependence)."""
    x = RNG.integers(0, 256, size=(20, 6, 7), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x)
    name = f"npz:{tmp_path / 'd.npz'}"
    grey = data.load_dataset(name)
    a = data.load_dataset(name, binarization="threshold", seed=0)
    b = data.load_dataset(name, binarization="threshold", seed=7)
    for split in ("train", "test"):
        assert np.array_equal(a[split], (grey[split] > 0.5).astype(np.float32))
        assert np.array_equal(a[split], b[split])
    assert VAEConfig(name="t", binarization="threshold").binarization == "threshold"  # a valid value


def _pil_float(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pillow's BILINEAR on a float32 ("F" mode) image [H, W] -> [h, w]."""
    return np.asarray(
        Image.fromarray(img.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR)
    )


@pytest.mark.parametrize("shape", [(28, 28, 64, 64), (28, 28, 20, 20), (12, 20, 9, 31), (148, 148, 64, 64)])
def test_resize_equals_pillow_bilinear(shape):
    """Up and down, square and not: Pillow BILINEAR on float images to float32 rounding."""
    h, w, oh, ow = shape
    x = RNG.random((3, h, w, 1), dtype=np.float32)
    ours = resize.resize_images(x, oh, ow)  # [3, oh, ow, 1]
    for i in range(3):
        np.testing.assert_allclose(ours[i, :, :, 0], _pil_float(x[i, :, :, 0], oh, ow), rtol=0, atol=2e-6)
    np.testing.assert_allclose(resize.axis_weights(h, oh).sum(1), 1.0, rtol=1e-12)


def test_resize_equals_torch_interpolate():
    """Upscaling is F.interpolate(bilinear, align_corners=False, antialias=False); downscaling is
    antialias=True (torch's port of Pillow's filter); colour channels resize independently."""
    x = RNG.random((2, 28, 28, 3), dtype=np.float32)
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2).double()
    for size, antialias in ((64, False), (20, True)):
        ref = F.interpolate(
            nchw, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
        )
        ours = resize.resize_images(x, size, size)
        np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-6)


def test_resize_fashion_mnist_shape_and_config():
    """resize=64 on a known 28x28 dataset: [N, 4096], and fit_to_data sets image_shape and input_dim
    (H * W * C); a [N, D] npz without a recorded shape cannot be resized (one-line DataError)."""
    flat = RNG.random((5, 784), dtype=np.float32)
    out = resize.resize_flat(flat, (28, 28), 1, 64, "x")
    assert out.shape == (5, 4096) and out.dtype == np.float32
    assert abs(float(out.mean()) - float(flat.mean())) < 0.02  # bilinear keeps the mean roughly
    cfg = dataclasses.replace(get_preset("pytorch-examples"), dataset="fashion_mnist", resize=64)
    fitted, _ = inputs.fit_to_data(cfg, None, download=False)
    assert (fitted.input_dim, fitted.image_shape, fitted.image_channels) == (4096, (64, 64), 1)
    three = inputs.fit_to_data(dataclasses.replace(cfg, image_channels=3), None, download=False)[0]
    assert three.input_dim == 64 * 64 * 3
    with pytest.raises(DataError, match="cannot resize images of unknown shape"):
        resize.resize_flat(flat, (), 1, 64, "npz:d.npz")


def test_image_channels_config():
    """image_shape * image_channels = input_dim, checked; the field round-trips through config.json
    and old configs without it read as grey (1)."""
    cfg = VAEConfig(name="c", input_dim=64 * 64 * 3, image_shape=(64, 64), image_channels=3)
    assert from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match=r"H \* W \* image_channels = input_dim"):
        VAEConfig(name="c", input_dim=64 * 64, image_shape=(64, 64), image_channels=3)
    with pytest.raises(ValueError, match="image_channels must be >= 1"):
        VAEConfig(name="c", image_channels=0)
    old = {k: v for k, v in to_dict(VAEConfig(name="o")).items() if k not in ("image_channels", "resize")}
    assert from_dict(old).image_channels == 1 and from_dict(old).resize == 0
    for field, bad in (("lr_gamma", "0"), ("lr_gamma", "1.5"), ("resize", "-1")):
        with pytest.raises(ValueError, match=field):
            apply_overrides(VAEConfig(name="c"), {field: bad})
    check_evaluable(VAEConfig(name="mc", kl="monte_carlo"))  # log p(x) is defined for it


# --- CelebA -------------------------------------------------------------------------------------


def make_celeba(root: Path, n: int = 5, header: bool = False, size: tuple[int, int] = (178, 218)) -> Path:
    """n random 178 x 218 (W x H) RGB JPEGs and their split file: images 1..n-2 train, n-1 valid, n test."""
    (root / celeba.IMAGE_DIR).mkdir(parents=True)
    rng = np.random.default_rng(1)
    lines = ["image_id,partition"] if header else []
    for i in range(1, n + 1):
        name = f"{i:06d}.jpg"
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / celeba.IMAGE_DIR / name, quality=95)
        code = 0 if i <= n - 2 else (1 if i == n - 1 else 2)
        lines.append(f"{name},{code}" if header else f"{name} {code}")
    (root / celeba.PARTITION_FILE).write_text("\n".join(lines) + "\n")
    return root


def _antixk(path: Path, size: int) -> np.ndarray:
    """torchvision's CenterCrop(148), Resize(size), ToTensor written out with Pillow: [H, W, 3] float32."""
    with Image.open(path) as img:
        w, h = img.size
        top, left = int(round((h - 148) / 2.0)), int(round((w - 148) / 2.0))
        out = (
            img.convert("RGB")
            .crop((left, top, left + 148, top + 148))
            .resize((size, size), Image.Resampling.BILINEAR)
        )
    return np.asarray(out, np.float32) / np.float32(255)


@pytest.mark.parametrize("header", [False, True], ids=["txt", "kaggle-csv"])
def test_celeba_splits_and_transform(tmp_path, header):
    """Partition 0 is train, 2 is test (1 unused); each image centre-cropped to 148 (box 15, 35 on
    178 x 218) and resized to 64 as torchvision does it; flat [H, W, C] float32 in [0, 1]."""
    root = make_celeba(tmp_path / "celeba", header=header)
    assert celeba.crop_box(178, 218) == (15, 35, 163, 183)
    x, labels = celeba.load_split(tmp_path, "train", 64)  # PATH/celeba found (torchvision's layout)
    assert x.shape == (3, 64 * 64 * 3) and x.dtype == np.float32 and labels.tolist() == [0, 0, 0]
    for i in range(3):
        expected = _antixk(root / celeba.IMAGE_DIR / f"{i + 1:06d}.jpg", 64)
        assert np.array_equal(x[i].reshape(64, 64, 3), expected)
    test, _ = celeba.load_split(root, "test", 0)  # resize 0: the 148 x 148 crop itself
    assert test.shape == (1, 148 * 148 * 3)
    loaded = data.load_dataset(f"celeba:{root}", resize=64, binarization="none")
    assert loaded["test"].shape == (1, 12288) and loaded["image_shape"].tolist() == [64, 64]
    assert int(loaded["image_channels"]) == 3


def test_celeba_errors(tmp_path):
    """One-line DataErrors: no split file, a bad line, a missing image, an unreadable image, an image
    smaller than the crop."""
    with pytest.raises(DataError, match="no list_eval_partition.txt"):
        celeba.load_split(tmp_path, "train", 64)
    root = make_celeba(tmp_path / "c", n=3)
    (root / celeba.PARTITION_FILE).write_text("000001.jpg 0\n000002.jpg 7\n")
    with pytest.raises(DataError, match=r"list_eval_partition.txt:2: expected"):
        celeba.load_split(root, "train", 64)
    (root / celeba.PARTITION_FILE).write_text("000001.jpg 0\n000009.jpg 0\n")
    with pytest.raises(DataError, match="000009.jpg: listed in list_eval_partition.txt but missing"):
        celeba.load_split(root, "train", 64)
    (root / celeba.IMAGE_DIR / "000009.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="000009.jpg: cannot read it as an image"):
        celeba.load_split(root, "train", 64)
    Image.new("RGB", (100, 120)).save(root / celeba.IMAGE_DIR / "000009.jpg")
    with pytest.raises(DataError, match=r"is 120x100 \(height x width\), smaller than the 148x148"):
        celeba.load_split(root, "train", 64)
    (root / celeba.PARTITION_FILE).write_text("000001.jpg 0\n")
    with pytest.raises(DataError, match=r"no image in partition 2 \(test\)"):
        celeba.load_split(root, "test", 64)


@pytest.mark.usefixtures("one_torch_thread")
def test_cli_trains_on_celeba(tmp_path, capsys, monkeypatch):
    """--dataset celeba:PATH --set resize=8 from the CLI: the run records input_dim 8 * 8 * 3, image
    shape (8, 8) and 3 channels; a missing split file is a one-line error."""
    monkeypatch.chdir(tmp_path)
    make_celeba(tmp_path / "faces", n=6)
    args = ["train", "--preset", "pytorch-examples", *TINY, "--batch-size", "2", "--steps", "2"]
    args += ["--set", "resize=8", "--set", "latent_dim=2", "--dataset", "celeba:faces", "--out", "run"]
    code, lines = run_main("jax", args, capsys)
    assert code == 0, lines
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (cfg["input_dim"], cfg["image_shape"], cfg["image_channels"]) == (192, [8, 8], 3)
    assert cfg["dataset"] == f"celeba:{tmp_path / 'faces'}"
    (tmp_path / "faces" / celeba.PARTITION_FILE).unlink()
    code, lines = run_main("torch", [*args[:-1], "run2"], capsys)
    assert_one_line_error(code, lines, "no list_eval_partition.txt")


def test_rgb_canvases_and_pngs(tmp_path):
    """image_channels=3: tiles are [H, W, 3] cells of the flat H, W, C images, the square side comes from
    D / C, and write_images saves colour PNGs (recon, samples, 2-D manifold)."""
    cfg = VAEConfig(name="rgb", input_dim=4 * 4 * 3, image_channels=3, latent_dim=2, decoder_output="sigmoid")
    assert plots.image_shape(cfg) == (4, 4)
    x = RNG.random((16, 48), dtype=np.float32)  # [16, H*W*C]
    decode = lambda z: np.tile(np.linspace(0, 1, 48, dtype=np.float32), (len(z), 1))  # noqa: E731
    grids = plots.canvases(cfg, decode, lambda v: v, x)
    assert grids["reconstruction"].shape == (4 * 5 + 1, 8 * 5 + 1, 3)
    assert np.array_equal(grids["reconstruction"][1:5, 1:5], x[0].reshape(4, 4, 3))  # first input, HWC
    assert grids["samples"].shape == (8 * 5 + 1, 8 * 5 + 1, 3) and grids["manifold"].shape[2] == 3
    paths = plots.write_images(tmp_path, cfg, decode, lambda v: v, x, [], "rgb")
    assert [p.name for p in paths] == ["reconstructions.png", "samples.png", "manifold.png"]
    with Image.open(paths[0]) as img:
        rgb = np.asarray(img.convert("RGB"), np.int64)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 50  # colour, not grey
