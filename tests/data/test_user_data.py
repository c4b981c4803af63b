"""The user's own images: `--dataset npz:PATH` and `--dataset folder:PATH` (jax_vae.common.data.userdata).

Formats, the fixed test split, labels, the one-line errors of bad input, and runs on non-square
12 x 20 images from both CLIs (images, evaluate, resume from another working directory)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig, to_dict
from jax_vae.common.data import catalog, idx, userdata
from jax_vae.common.data import datasets as data
from jax_vae.common.errors import DataError, RunError
from jax_vae.common.reporting import plots
from jax_vae.common.runs import folder as runs
from tests.helpers import FRAMEWORKS, assert_one_line_error, run_main, train_fn

RNG = np.random.default_rng(0)
X8 = RNG.integers(0, 256, size=(30, 12, 20), dtype=np.uint8)  # [N, H, W] non-square
# pytorch-examples shrunk: 8 hidden units, a 2-D latent (so the manifold grid is drawn too)
SMALL = ["--preset", "pytorch-examples", "--batch-size", "8", "--no-progress"]
SMALL += ["--set", "encoder_hidden=8", "--set", "decoder_hidden=8", "--set", "latent_dim=2"]


def save_png(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode != "L" else img).save(path)
    return path


def expected_split(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.RandomState(0).permutation(n)
    n_test = max(1, round(n * fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True], ids=["NxHxW", "NxD"])
def test_npz_uint8_split(tmp_path, flat):
    """uint8 / 255 exactly, the held-out split is RandomState(0)'s permutation whatever the seed,
    labels travel with their images, and (H, W) is recorded for [N, H, W]."""
    x = X8.reshape(30, -1) if flat else X8
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    a = data.load_dataset(f"npz:{tmp_path / 'd.npz'}", test_fraction=0.2)
    b = data.load_dataset(f"npz:{tmp_path / 'd.npz'}", seed=7, test_fraction=0.2)
    train, test = expected_split(30, 0.2)
    assert len(test) == 6
    flat_x = X8.reshape(30, -1).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(a["train"], flat_x[train])
    np.testing.assert_array_equal(a["test"], flat_x[test])
    np.testing.assert_array_equal(a["train_labels"], y[train])
    np.testing.assert_array_equal(a["test_labels"], y[test])
    assert a["train"].dtype == np.float32 and a["train"].shape == (24, 240)
    assert a["image_shape"].tolist() == ([] if flat else [12, 20])
    for key in ("train", "test", "train_labels", "test_labels"):
        np.testing.assert_array_equal(a[key], b[key])  # the run seed does not move the split
    assert set(expected_split(30, 0.1)[1]) <= set(test)  # a larger fraction holds a smaller one's split


def test_npz_of_real_fashion_mnist_equals_the_idx_loader(tmp_path):
    """Fashion-MNIST's test images saved as uint8 npz read back bit for bit as the IDX loader's
    (so a run on them is the fashion_mnist run: measured equal step for step over 200 steps)."""
    folder = Path(os.environ.get("JAX_VAE_DATA_DIR", "/nonexistent")) / "fashion-mnist"
    name = idx.FILES["fashion_mnist"]["test"][0].name
    path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
    if path is None:
        pytest.skip(f"Fashion-MNIST test images not under {folder}")
    x, y = data.load_split("fashion_mnist", "test", folder.parent, download=False)
    np.savez(tmp_path / "fm.npz", x_train=idx.read_idx(path), x_test=idx.read_idx(path), y_test=y)
    ours = data.load_dataset(f"npz:{tmp_path / 'fm.npz'}")
    np.testing.assert_array_equal(ours["test"], x)
    np.testing.assert_array_equal(ours["test_labels"], y)
    assert ours["image_shape"].tolist() == [28, 28]


def test_npz_float_with_test_split(tmp_path):
    """Float images in [0, 1] as given, [N, H, W, 1] squeezed, x_test used as the test split (no
    hold-out), missing labels 0."""
    x = RNG.random((10, 4, 5, 1)).astype(np.float64)
    x_test = RNG.random((3, 4, 5, 1))
    np.savez(tmp_path / "f.npz", x_train=x, x_test=x_test)
    d = data.load_dataset(f"npz:{tmp_path / 'f.npz'}", binarization="none")
    np.testing.assert_array_equal(d["train"], x.reshape(10, 20).astype(np.float32))
    np.testing.assert_array_equal(d["test"], x_test.reshape(3, 20).astype(np.float32))
    assert d["train_labels"].tolist() == [0] * 10 and d["test_labels"].tolist() == [0] * 3
    assert d["image_shape"].tolist() == [4, 5]
    x_split, _ = data.load_split(f"npz:{tmp_path / 'f.npz'}", "test")
    np.testing.assert_array_equal(x_split, d["test"])


def test_folder_classes(tmp_path):
    """One level of sub-folders = classes in sorted order, files in relative-path order, bilevel and
    JPEG images read, hidden files skipped."""
    root = tmp_path / "imgs"
    px = {name: RNG.integers(0, 256, (6, 7), dtype=np.uint8) for name in ("a1", "a2", "b1", "b2", "b3")}
    save_png(root / "cat" / "a2.png", px["a2"])
    save_png(root / "cat" / "a1.png", px["a1"])
    save_png(root / "dog" / "b1.png", px["b1"], mode="1")  # bilevel: 0 / 255
    save_png(root / "dog" / "b2.png", px["b2"])
    Image.fromarray(px["b3"]).save(root / "dog" / "b3.JPEG", quality=95)
    (root / ".DS_Store").write_bytes(b"\0")
    files, labels, classes = userdata.image_files(root)
    assert [p.relative_to(root).as_posix() for p in files] == [
        "cat/a1.png",
        "cat/a2.png",
        "dog/b1.png",
        "dog/b2.png",
        "dog/b3.JPEG",
    ]
    assert labels == [0, 0, 1, 1, 1] and classes == ["cat", "dog"]
    d = data.load_dataset(f"folder:{root}", test_fraction=0.2)
    train, test = expected_split(5, 0.2)
    assert d["image_shape"].tolist() == [6, 7] and d["train"].shape == (4, 42)
    np.testing.assert_array_equal(d["train_labels"], np.array([0, 0, 1, 1, 1])[train])
    everything = np.concatenate([d["train"], d["test"]])[np.argsort(np.concatenate([train, test]))]
    np.testing.assert_array_equal(everything[0], px["a1"].reshape(-1) / np.float32(255))
    assert set(np.unique(everything[2]).tolist()) <= {0.0, 1.0}  # the bilevel image
    jpeg = np.asarray(Image.open(root / "dog" / "b3.JPEG"), np.float32).reshape(-1) / np.float32(255)
    np.testing.assert_array_equal(everything[4], jpeg)


# --- bad input: one line naming the file --------------------------------------------------------


def _bad_npz(tmp_path: Path, case: str) -> tuple[str, Path, str]:
    """(dataset name, path the message names, text it holds) of one bad .npz."""
    path = tmp_path / "d.npz"
    arrays: dict[str, dict[str, np.ndarray]] = {
        "no x_train": dict(images=X8),
        "out of range": dict(x_train=np.full((4, 3), 1.5)),
        "negative": dict(x_train=np.full((4, 3), -0.5)),
        "nan": dict(x_train=np.array([[0.5, 0.5], [np.nan, 0.5]])),
        "inf": dict(x_train=np.array([[0.5, np.inf]])),
        "1-d": dict(x_train=np.zeros(5, np.uint8)),
        "colour array": dict(x_train=np.zeros((2, 4, 4, 3), np.uint8)),
        "int64": dict(x_train=np.zeros((2, 4), np.int64)),
        "no images": dict(x_train=np.zeros((0, 4), np.uint8)),
        "x_test of another size": dict(x_train=X8, x_test=X8[:, :6]),
        "labels of another length": dict(x_train=X8, y_train=np.zeros(3, np.int64)),
    }
    expect = {
        "no x_train": "no array x_train (it holds: images)",
        "out of range": "values span [1.5, 1.5]; float images must lie in [0, 1]",
        "negative": "values span [-0.5, -0.5]",
        "nan": "x_train holds 1 non-finite values (NaN or inf), the first in image 1",
        "inf": "non-finite values",
        "1-d": "x_train has shape (5,); expected [N, H, W] or [N, D]",
        "colour array": "colour images ([N, H, W, 3]); convert them to grey",
        "int64": "dtype int64; expected uint8 (0-255) or float in [0, 1]",
        "no images": "no images",
        "x_test of another size": "x_test images have shape (6, 20), x_train images (12, 20)",
        "labels of another length": "y_train has shape (3,) and dtype int64; expected 30 integer labels",
    }
    if case == "missing file":
        return "npz:" + str(tmp_path / "nope.npz"), tmp_path / "nope.npz", "no such file"
    if case == "not an npz":
        path.write_text("x,y\n1,2\n")
        return f"npz:{path}", path, "not a readable .npz archive"
    if case == "a .npy":
        np.save(tmp_path / "d.npy", X8)
        return f"npz:{tmp_path / 'd.npy'}", tmp_path / "d.npy", "a single .npy array, not an .npz"
    np.savez(path, allow_pickle=False, **arrays[case])
    return f"npz:{path}", path, expect[case]


NPZ_CASES = (
    "missing file",
    "not an npz",
    "a .npy",
    "no x_train",
    "out of range",
    "negative",
    "nan",
    "inf",
    "1-d",
    "colour array",
    "int64",
    "no images",
    "x_test of another size",
    "labels of another length",
)


@pytest.mark.parametrize("case", NPZ_CASES)
def test_bad_npz(tmp_path, case):
    name, path, needle = _bad_npz(tmp_path, case)
    with pytest.raises(DataError) as err:
        data.load_dataset(name)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and needle in msg, msg


def _bad_folder(root: Path, case: str) -> tuple[Path, str]:
    """(file the message names, text it holds) of one bad image folder under `root`."""
    grey = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
    if case == "missing folder":
        return root, "no such folder"
    root.mkdir()
    if case == "empty folder":
        (root / ".hidden").write_text("")
        return root, "empty folder, no PNG or JPEG images"
    save_png(root / "a.png", grey)
    if case == "mixed sizes":
        save_png(root / "b.png", grey[:5, :4])
        return root / "b.png", f"is 5x4 (height x width), {root / 'a.png'} is 6x7"
    if case == "colour image":
        save_png(root / "b.png", grey, mode="RGB")
        return root / "b.png", "a colour or non-8-bit image (mode RGB); convert them to grey first"
    if case == "non-image file":
        (root / "notes.txt").write_text("hi")
        return root / "notes.txt", "not a PNG or JPEG file"
    if case == "broken png":
        (root / "b.png").write_bytes(b"\x89PNG broken")
        return root / "b.png", "cannot read it as an image"
    if case == "file beside class folders":
        save_png(root / "cls" / "c.png", grey)
        return root / "a.png", "a file beside the class sub-folders"
    if case == "empty class folder":
        (root / "a.png").unlink()
        save_png(root / "cat" / "c.png", grey)
        (root / "dog").mkdir()
        return root / "dog", "class folder holds no images"
    if case == "a file, not a folder":
        return root / "a.png", "is a file (use npz:PATH"
    raise AssertionError(case)


FOLDER_CASES = (
    "missing folder",
    "empty folder",
    "mixed sizes",
    "colour image",
    "non-image file",
    "broken png",
    "file beside class folders",
    "empty class folder",
    "a file, not a folder",
)


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_bad_folder(tmp_path, case):
    root = tmp_path / "imgs"
    path, needle = _bad_folder(root, case)
    name = f"folder:{root / 'a.png' if case == 'a file, not a folder' else root}"
    with pytest.raises(DataError) as err:
        data.load_dataset(name)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and needle in msg, msg


def test_split_errors(tmp_path):
    """A test split that leaves nothing to train on; a fraction outside (0, 1); names that are no dataset."""
    np.savez(tmp_path / "one.npz", x_train=X8[:1])
    with pytest.raises(DataError, match=r"one\.npz: a test split of 1 of its 1 images .* leaves none"):
        data.load_dataset(f"npz:{tmp_path / 'one.npz'}")
    for fraction in (0.0, 1.0, float("nan")):
        with pytest.raises(DataError, match=r"test_fraction must be in \(0, 1\)"):
            data.load_dataset(f"npz:{tmp_path / 'one.npz'}", test_fraction=fraction)
    with pytest.raises(DataError, match="unknown dataset 'csv:x'; valid datasets: .*npz:PATH, folder:PATH"):
        catalog.parse_dataset("csv:x")
    with pytest.raises(DataError, match="names no path"):
        catalog.parse_dataset("folder:")
    with pytest.raises(ValueError, match="test_fraction must be in"):
        VAEConfig(name="x", test_fraction=1.5)
    with pytest.raises(
        ValueError,
        match=r"image_shape must be \(\) or \(H, W\) with H \* W \* image_channels = input_dim 784",
    ):
        VAEConfig(name="x", image_shape=(12, 20))
    assert catalog.canonical_name("fashion-mnist") == "fashion_mnist"
    assert catalog.canonical_name("npz:my-data.npz") == "npz:my-data.npz"  # paths are kept as written


@pytest.mark.usefixtures("one_torch_thread")
def test_cli_split_errors(tmp_path, capsys, monkeypatch):
    """The CLI's one-line errors: a batch larger than what the split leaves, --test-fraction 1."""
    monkeypatch.chdir(tmp_path)
    np.savez("d.npz", x_train=X8)
    out = ["--out", "run", "--dataset", "npz:d.npz"]
    code, lines = run_main("jax", ["train", *SMALL, *out, "--batch-size", "28"], capsys)
    assert_one_line_error(
        code, lines, "batch size 28 is larger than the 27 training images", "test_fraction 0.1"
    )
    code, lines = run_main("torch", ["train", *SMALL, *out, "--test-fraction", "1"], capsys)
    assert_one_line_error(code, lines, "test_fraction must be in (0, 1), got 1.0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]  # nothing written


# --- runs ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cli_non_square_run(tmp_path, capsys, monkeypatch, framework):
    """12 x 20 images from the CLI: input_dim 240 and image_shape (12, 20) recorded with the absolute
    path, images tiled as 12 x 20, then resumed and evaluated from another working directory."""
    canvases: dict[str, tuple[int, ...]] = {}
    save = plots._save_canvas
    monkeypatch.setattr(
        plots,
        "_save_canvas",
        lambda path, canvas, *a, **k: (
            canvases.setdefault(path.name, canvas.shape) and save(path, canvas, *a, **k)
        ),
    )
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    np.savez("d.npz", x_train=X8)
    code, lines = run_main(
        framework, ["train", *SMALL, "--dataset", "npz:d.npz", "--steps", "2", "--out", "run"], capsys
    )
    assert code == 0, lines
    run = tmp_path / "a" / "run"
    record = json.loads((run / "config.json").read_text())
    cfg = record["config"]
    assert cfg["dataset"] == f"npz:{tmp_path / 'a' / 'd.npz'}" and record["data_dir"] is None
    assert (cfg["input_dim"], cfg["image_shape"], cfg["test_fraction"]) == (240, [12, 20], 0.1)
    # one 12 x 20 cell per image, 1 px padding: 4 x 8 reconstructions, 8 x 8 samples, 20 x 20 grid
    assert canvases == {
        "reconstructions.png": (53, 169),
        "samples.png": (105, 169),
        "manifold.png": (261, 421),
    }

    monkeypatch.chdir(tmp_path)  # elsewhere: the recorded absolute path finds the data
    code, lines = run_main(
        framework, ["train", "--resume", "--out", str(run), "--steps", "4", "--no-images"], capsys
    )
    assert code == 0, lines
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    code, lines = run_main(framework, ["evaluate", "--run", str(run), "--k", "2"], capsys)
    assert code == 0, lines
    report = json.loads((run / "evaluation-k2.json").read_text())
    assert report["num_images"] == 3 and report["step"] == 4 and np.isfinite(report["iwae_nll"])


def test_python_train_on_folder(tmp_path, monkeypatch):
    """loop.train from Python on a relative folder:PATH: the config adapts to the images (input_dim,
    image_shape) and records the absolute path."""
    monkeypatch.chdir(tmp_path)
    for i in range(30):  # 27 training images, as in test_cli_non_square_run: the same JAX programs
        save_png(Path("imgs") / f"c{i % 2}" / f"{i:02d}.png", X8[i])
    cfg = dataclasses.replace(
        get_preset("pytorch-examples"),
        dataset="folder:imgs",
        encoder_hidden=(8,),
        decoder_hidden=(8,),
        latent_dim=2,
        batch_size=8,
        epochs=1,
    )
    summary = train_fn("jax")(cfg, tmp_path / "run", images=False, progress=False)
    saved = runs.read_run(tmp_path / "run")
    assert saved is not None
    assert saved["config"]["dataset"] == f"folder:{tmp_path / 'imgs'}"
    assert (saved["config"]["input_dim"], saved["config"]["image_shape"]) == (240, [12, 20])
    assert summary["steps"] == 4  # one epoch of the 27 training images (3 held out) in batches of 8
    save_png(Path("imgs") / "c0" / "30.png", X8[0])  # the folder changed: resuming is refused
    with pytest.raises(RunError, match="is of a dataset of 27 training images; folder:.*imgs now has 28"):
        train_fn("jax")(dataclasses.replace(cfg, epochs=2), tmp_path / "run", resume=True, progress=False)


def test_old_config_without_new_fields_is_compatible():
    """A config.json written before image_shape / test_fraction existed resumes: missing = default."""
    cfg = get_preset("pytorch-examples")
    saved = {k: v for k, v in to_dict(cfg).items() if k not in ("image_shape", "test_fraction")}
    assert runs.config_diff(saved, cfg) == []
    assert runs.config_diff(saved, dataclasses.replace(cfg, test_fraction=0.2)) == [
        "test_fraction: 0.1 -> 0.2"
    ]
