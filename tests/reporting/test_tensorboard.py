"""`train --tensorboard`: event files beside metrics.jsonl hold its scalars and the epoch-end grids, and a
resumed run shows each step once. The events are read back here from their TFRecord framing (length,
masked CRC-32C of the length, an Event proto, masked CRC-32C of the data) with tensorboardX's protos,
applying TensorBoard's purge rule: a SessionLog.START at step P drops the events at steps >= P read
before it."""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jax_vae.common import metrics
from jax_vae.common.reporting import tensorboard
from tests.helpers import FRAMEWORKS, REPO, assert_one_line_error, metric_records, run_main

tbx = pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2  # noqa: E402
from tensorboardX.record_writer import masked_crc32c  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAIN = [
    "train",
    "--set",
    "encoder_hidden=8",
    "--set",
    "decoder_hidden=8",
    "--no-progress",
    "--log-every",
    "2",
]
# stutz-rectangles: 24x24 images, 1-pixel grey padding, a 2-D latent (so a 20x20 manifold grid)
GRID_SHAPES = {
    "reconstruction": (4 * 25 + 1, 8 * 25 + 1),
    "samples": (8 * 25 + 1,) * 2,
    "manifold": (501, 501),
}


def read_events(path: Path) -> list[event_pb2.Event]:
    """Every Event of one file, checking both CRCs of each record."""
    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        header = data[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[at + 8 : at + 12])[0] == masked_crc32c(header)
        body = data[at + 12 : at + 12 + length]
        assert struct.unpack("<I", data[at + 12 + length : at + 16 + length])[0] == masked_crc32c(body)
        events.append(event_pb2.Event.FromString(body))
        at += 16 + length
    assert at == len(data)
    return events


def board_view(run_dir: Path) -> tuple[dict[tuple[str, int], float], dict[tuple[str, int], np.ndarray]]:
    """({(tag, step): scalar}, {(tag, step): image pixels}) as TensorBoard shows the run folder."""
    from PIL import Image

    shown: list[tuple[str, int, object]] = []
    for path in tensorboard.event_files(run_dir):
        for event in read_events(path):
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                shown = [e for e in shown if e[1] < event.step]
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    shown.append((value.tag, event.step, value.simple_value))
                elif kind == "image":
                    pixels = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)))
                    assert pixels.shape == (value.image.height, value.image.width)  # one grey channel
                    shown.append((value.tag, event.step, pixels))
    keys = [(tag, step) for tag, step, _ in shown]
    assert len(keys) == len(set(keys)), "a (tag, step) shown twice"
    scalars = {(t, s): v for t, s, v in shown if isinstance(v, float)}
    images = {(t, s): v for t, s, v in shown if isinstance(v, np.ndarray)}
    return scalars, images


def expected_scalars(run_dir: Path) -> dict[tuple[str, int], np.float32]:
    """metrics.jsonl's numeric fields as TensorBoard scalars (float32), null ones left out."""
    out = {}
    for r in metric_records(run_dir, drop_timing=False):
        prefix = "train" if r["kind"] == "step" else "epoch"
        for key, value in r.items():
            if key not in ("kind", "step", "epoch", "non_finite") and value is not None:
                out[(f"{prefix}/{key}", r["step"])] = np.float32(value)
    return out


def assert_board_is_metrics(run_dir: Path, image_steps: list[int]) -> dict[tuple[str, int], np.ndarray]:
    scalars, images = board_view(run_dir)
    expected = expected_scalars(run_dir)
    assert scalars.keys() == expected.keys()
    for key, value in expected.items():
        assert np.float32(scalars[key]) == value, key
    assert {t for t, _ in scalars} >= {f"train/{k}" for k in metrics.STEP_KEYS[3:]}
    assert {t for t, _ in scalars} >= {f"epoch/{k}" for k in metrics.EPOCH_KEYS[3:]}
    assert sorted(images) == sorted((f"images/{n}", s) for n in GRID_SHAPES for s in image_steps)
    for (tag, _), pixels in images.items():
        assert pixels.shape == GRID_SHAPES[tag.split("/")[1]]
    return images


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_events_hold_the_metrics_and_grids_and_a_resume_shows_each_step_once(tmp_path, capsys, framework):
    run = tmp_path / "run"
    code, lines = run_main(
        framework,
        [*TRAIN, "--steps", "4", "--checkpoint-every", "2", "--tensorboard", "--out", str(run)],
        capsys,
    )
    assert code == 0, lines
    assert [p.parent for p in tensorboard.event_files(run)] == [run]  # in the run folder itself
    images = assert_board_is_metrics(run, image_steps=[4])
    assert {s for _, s in expected_scalars(run)} == {2, 4}
    pixels = images[("images/reconstruction", 4)]
    assert (pixels[0] == 128).all() and len(np.unique(pixels)) > 2  # grey padding, then images
    plain = tmp_path / "plain"  # drawing the grids mid-run leaves the training numbers as they are
    code, lines = run_main(framework, [*TRAIN, "--steps", "4", "--no-images", "--out", str(plain)], capsys)
    assert code == 0 and tensorboard.event_files(plain) == [], lines
    assert metric_records(plain) == metric_records(run)
    # Continue the 4-step run to 8: the flag is restored from config.json; step 4 was the end of the
    # shorter run (an epoch record there, now dropped from metrics.jsonl), so the new file purges from 4.
    code, lines = run_main(framework, ["train", "--resume", "--steps", "8", "--out", str(run)], capsys)
    assert code == 0, lines
    first, second = tensorboard.event_files(run)
    purges = [
        e.step
        for e in read_events(second)
        if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START
    ]
    assert purges == [4]
    assert min(e.step for e in read_events(second) if e.HasField("summary")) == 4
    assert_board_is_metrics(run, image_steps=[8])
    assert {s for _, s in expected_scalars(run)} == {2, 4, 6, 8}


def test_off_by_default_and_a_resume_with_the_flag_logs_the_kept_history(tmp_path, capsys):
    """No event file without the flag; `--resume --tensorboard` writes the earlier records from
    metrics.jsonl; --no-images leaves the image tags out."""
    run = tmp_path / "run"
    code, lines = run_main("jax", [*TRAIN, "--steps", "4", "--no-images", "--out", str(run)], capsys)
    assert code == 0, lines
    assert (
        tensorboard.event_files(run) == []
        and not json.loads((run / "config.json").read_text())["options"]["tensorboard"]
    )
    args = ["train", "--resume", "--steps", "6", "--tensorboard", "--no-images", "--out", str(run)]
    code, lines = run_main("jax", args, capsys)
    assert code == 0, lines
    assert len(tensorboard.event_files(run)) == 1
    assert_board_is_metrics(run, image_steps=[])
    assert {s for _, s in expected_scalars(run)} == {2, 4, 6}


def test_scalars_skip_non_finite_and_non_numeric_fields():
    record = {"kind": "epoch", "epoch": 1, "step": 9, "train_loss": np.float32(2.5), "test_loss": math.nan}
    record |= {"recon": math.inf, "kl": None, "non_finite": ["test_loss"], "flag": True}
    assert tensorboard.scalars(record) == {"epoch/train_loss": 2.5}
    assert tensorboard.scalars({"kind": "other", "step": 1, "loss": 1.0}) == {}


def test_missing_tensorboardx_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    code, lines = run_main(
        "torch", [*TRAIN, "--steps", "2", "--tensorboard", "--out", str(tmp_path / "r")], capsys
    )
    assert_one_line_error(code, lines, "pip install tensorboardX")
    assert not (tmp_path / "r").exists()


def test_importing_tensorboardx_does_not_load_torch():
    code = (
        "import sys; from jax_vae.common.reporting import tensorboard; "
        "tbx = tensorboard.import_tensorboardx(); print(tbx.SummaryWriter.__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["SummaryWriter", "False"]
