"""Training runs of both frameworks: the schedule, the run folder, one metrics schema, the JAX scan vs
per-step paths, the non-finite stop, and the CLI entry points."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jax_vae.common.errors import NonFiniteLossError
from jax_vae.common.metrics import EPOCH_KEYS, STEP_KEYS
from jax_vae.common.training import plan
from tests.helpers import FRAMEWORKS, cli, load_params, metric_records, tiny_config, tiny_data, train_fn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize(
    "n,batch,drop_last,every,chunk",
    [(100, 8, False, 5, 0), (100, 8, True, 0, 3), (96, 8, False, 4, 0), (7, 7, False, 2, 0)],
)
def test_plan_covers_each_step_once_and_resumes_as_a_suffix(n, batch, drop_last, every, chunk):
    layout = plan.Layout(n, batch, drop_last)
    total = 3 * layout.steps_per_epoch + 2
    chunks = list(plan.chunks(layout, 0, total, every, chunk))
    assert chunks[0].start == 0 and chunks[-1].end == total
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:]))
    seen: dict[int, list[int]] = {}
    for c in chunks:
        assert c.start // layout.steps_per_epoch == c.epoch == (c.end - 1) // layout.steps_per_epoch
        if every:
            assert c.start // every == (c.end - 1) // every  # never split by a save
            assert c.checkpoint == (c.end % every == 0 or c.epoch_end)
        if chunk:
            assert c.num_steps <= chunk
        idx = plan.chunk_indices(plan.epoch_order(0, c.epoch, n), c)
        assert idx.shape == (c.num_steps, c.batch_size)
        seen.setdefault(c.epoch, []).extend(idx.ravel().tolist())
    for epoch in range(3):  # full epochs visit every example once
        assert len(seen[epoch]) == len(set(seen[epoch])) == layout.images_in_epoch()
    for c in chunks:  # resuming at any boundary replays the rest
        if c.checkpoint:
            assert list(plan.chunks(layout, c.end, total, every, chunk)) == [
                d for d in chunks if d.start >= c.end
            ]


def test_epoch_order_is_a_fresh_permutation_per_epoch_and_seed():
    a, b, c = (plan.epoch_order(s, e, 50) for s, e in ((0, 0), (0, 1), (1, 0)))
    assert sorted(a.tolist()) == list(range(50)) and a.dtype == np.int32
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, plan.epoch_order(0, 0, 50))


# ------------------------------------------------------------------------------------ run folder
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, one_torch_thread):  # noqa: F811 (a fixture: threads pinned first)
    """One 2-epoch run per framework on 100 random 8x8 images (13 steps/epoch, last batch of 4)."""
    out = {}
    for fw in FRAMEWORKS:
        run_dir = tmp_path_factory.mktemp(fw) / "run"
        summary = train_fn(fw)(
            tiny_config(), run_dir, data=tiny_data(), progress=False, checkpoint_every=5, log_every=1
        )
        out[fw] = (run_dir, summary)
    return out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_run_folder_holds_config_metrics_checkpoints_images(tiny_runs, framework):
    run_dir, summary = tiny_runs[framework]
    record = json.loads((run_dir / "config.json").read_text())
    assert record["framework"] == framework and record["preset"] == "stutz-rectangles"
    assert record["config"]["input_dim"] == 64 and record["options"]["checkpoint_every"] == 5
    records = metric_records(run_dir, drop_timing=False)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(1, 27)) and [r["epoch"] for r in epochs] == [1, 2]
    assert [r["step"] for r in epochs] == [13, 26]
    for r in epochs:  # epoch means are image-weighted means of the step losses (12 x 8 + 4)
        mine = [s for s in steps if (s["step"] - 1) // 13 + 1 == r["epoch"]]
        weights = np.array([8] * 12 + [4])
        assert r["train_loss"] == pytest.approx(
            np.average([s["loss"] for s in mine], weights=weights), rel=1e-6
        )
        assert r["test_loss"] == pytest.approx(r["test_recon"] + r["test_kl"], rel=1e-6)
        assert r["images_per_s"] > 0 and r["wall_s"] > 0
    assert epochs[1]["test_loss"] < epochs[0]["test_loss"] < 64 * np.log(2) + 10  # it learns
    assert summary["test_loss"] == epochs[-1]["test_loss"] and summary["steps"] == 26
    assert summary["loss_unit"] == "nats/image"
    ckpt_steps = sorted(load_steps(framework, run_dir))
    assert ckpt_steps == [20, 25, 26]  # the last 3 kept
    images = {Path(p).name for p in summary["images"]}
    assert images == {"reconstructions.png", "samples.png", "manifold.png", "curves.png"}
    for p in summary["images"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def load_steps(framework: str, run_dir: Path) -> list[int]:
    Checkpoints: Any  # the JAX or the torch class, by framework
    if framework == "jax":
        from jax_vae.checkpoint import Checkpoints
    else:
        from torch_reference.checkpoint import Checkpoints
    return Checkpoints(run_dir / "checkpoints").all_steps()


def test_both_frameworks_write_one_schema(tiny_runs):
    keys = {
        fw: {r["kind"]: tuple(r) for r in metric_records(tiny_runs[fw][0], drop_timing=False)}
        for fw in FRAMEWORKS
    }
    assert keys["jax"] == keys["torch"] == {"step": STEP_KEYS, "epoch": EPOCH_KEYS}
    assert tiny_runs["jax"][1].keys() == tiny_runs["torch"][1].keys()


def test_jax_per_step_jit_matches_the_scan(tmp_path):
    cfg, data = tiny_config(), tiny_data()
    train = train_fn("jax")
    scan = train(cfg, tmp_path / "scan", data=data, progress=False, images=False, jit="scan")
    step = train(cfg, tmp_path / "step", data=data, progress=False, images=False, jit="step")
    a, _ = load_params("jax", tmp_path / "scan")
    b, _ = load_params("jax", tmp_path / "step")
    for key in a:  # same keys, data and math; XLA may fuse the two programs differently
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert scan["test_loss"] == pytest.approx(step["test_loss"], rel=1e-4)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_micro_batch_trains_like_the_whole_batch(tmp_path, framework, one_torch_thread):  # noqa: F811
    """Gradient accumulation over chunks of 3 (8 = 3 + 3 + 2; the epoch's last batch of 4 = 3 + 1)
    follows the whole-batch run up to float32 summation order."""
    data, train = tiny_data(), train_fn(framework)
    whole = train(tiny_config(), tmp_path / "whole", data=data, progress=False, images=False)
    chunked = train(tiny_config(micro_batch=3), tmp_path / "chunked", data=data, progress=False, images=False)
    a, _ = load_params(framework, tmp_path / "whole")
    b, _ = load_params(framework, tmp_path / "chunked")
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert chunked["test_loss"] == pytest.approx(whole["test_loss"], rel=1e-4)
    with pytest.raises(ValueError, match="micro_batch must be >= 0"):
        tiny_config(micro_batch=-1)


# ------------------------------------------------------------------------------------ non-finite
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_non_finite_loss_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path, framework):
    data = tiny_data()
    bad_image = 37
    data["train"][bad_image, 5] = np.nan
    order = plan.epoch_order(0, 0, 100)
    bad_step = int(np.flatnonzero(order == bad_image)[0]) // 8 + 1  # 1-based step whose batch has it
    with pytest.raises(NonFiniteLossError) as err:
        train_fn(framework)(tiny_config(), tmp_path / "run", data=data, progress=False, checkpoint_every=2)
    msg = str(err.value)
    assert f"at step {bad_step} " in msg and "\n" not in msg
    last_good = (bad_step - 1) // 2 * 2
    if last_good == 0:
        assert "no checkpoint" in msg
        return
    assert f"last good checkpoint: step {last_good}" in msg
    params, meta = load_params(framework, tmp_path / "run")
    assert meta["step"] == last_good and all(np.isfinite(v).all() for v in params.values())
    assert max(r["step"] for r in metric_records(tmp_path / "run")) < bad_step
    assert not (tmp_path / "run" / "summary.json").exists()


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cli_trains_rectangles_and_prints_where_outputs_are(tmp_path, framework):
    out = tmp_path / "run"
    proc = cli(
        framework,
        "train",
        "--steps",
        "40",
        "--set",
        "encoder_hidden=32",
        "--set",
        "decoder_hidden=32",
        "--out",
        str(out),
        "--log-every",
        "20",
        "--no-download",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert (
        lines[0].startswith(f"done: {framework} stutz-rectangles on rectangles") and "test loss" in lines[0]
    )
    assert str(out / "metrics.jsonl") in lines[1] and str(out / "images") in lines[1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 40 and np.isfinite(summary["test_loss"])
    assert (out / "images" / "manifold.png").is_file()
