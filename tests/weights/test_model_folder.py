"""Model folders (`export --format folder`): config.json + model.safetensors + a README.md model card,
loaded by jax_vae.load and torch_reference.load bit for bit, read by evaluate --run and
train --init-from on both frameworks, written all or nothing, and refused in one line when broken."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

import jax_vae
import torch_reference
from jax_vae.common import cli
from jax_vae.common.weights.convert import flax_to_torch
from tests.helpers import TINY, assert_one_line_error, run_main, tree_snapshot

FILES = ["README.md", "config.json", "model.safetensors"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, one_torch_thread) -> dict[str, Path]:
    """{framework: model folder} exported from a 4-step run of each framework, evaluated first."""
    root = tmp_path_factory.mktemp("model-folders")
    out = {}
    for fw in ("jax", "torch"):
        run = root / f"run-{fw}"
        assert cli.main(["train", "--steps", "4", *TINY, "--out", str(run)], fw) == 0
        assert cli.main(["evaluate", "--run", str(run), "--k", "4", "--num-images", "20"], fw) == 0
        out[fw] = root / f"model-{fw}"
        assert cli.main(["export", str(run), "--format", "folder", "--out", str(out[fw])], fw) == 0
    return out


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_a_folder_holds_the_weights_their_config_and_a_card(folders, framework):
    folder = folders[framework]
    assert sorted(p.name for p in folder.iterdir()) == FILES
    record = json.loads((folder / "config.json").read_text())
    assert record["format"] == "jax-vae-model" and record["preset"] == "stutz-rectangles"
    assert record["framework"] == framework and record["step"] == 4 and record["summary"]["steps"] == 4
    assert [e["k"] for e in record["evaluations"]] == [4]
    card = (folder / "README.md").read_text()
    assert "stutz-rectangles" in card and "IWAE-4 NLL (step 4)" in card
    assert f"jax_vae.load('{folder.name}')" in card and f"torch_reference.load('{folder.name}')" in card


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_both_loaders_read_a_folder_bit_for_bit(folders, framework):
    cfg, params = jax_vae.load(folders[framework])
    cfg_t, model = torch_reference.load(folders[framework])
    assert cfg == cfg_t and cfg.encoder_hidden == (8,) and not model.training
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    want = flax_to_torch(jax.tree_util.tree_map(np.asarray, params), cfg)
    assert sorted(state) == sorted(want)
    for key in state:
        np.testing.assert_array_equal(state[key], want[key], err_msg=key)
    x = torch.rand(3, cfg.input_dim)
    eps = torch.zeros(1, 3, cfg.latent_dim)
    out = jax_vae.VAE(cfg).apply({"params": params}, x.numpy(), eps.numpy())[0]
    np.testing.assert_allclose(np.asarray(out), model(x, eps)[0].detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_evaluate_and_init_from_read_a_folder(folders, tmp_path, framework, capsys):
    recorded = json.loads((folders[framework] / "config.json").read_text())["evaluations"][0]
    for fw in ("jax", "torch"):
        report = tmp_path / f"{fw}.json"
        args = [
            "evaluate",
            "--run",
            str(folders[framework]),
            "--k",
            "4",
            "--num-images",
            "20",
            "--out",
            str(report),
        ]
        assert run_main(fw, args, capsys)[0] == 0
        got = json.loads(report.read_text())
        if fw == framework:  # the same weights, seed and samples as the run's own evaluation
            assert got["iwae_nll"] == recorded["iwae_nll"] and got["neg_elbo"] == recorded["neg_elbo"]
        else:  # the other framework's noise: within the estimates' standard errors
            assert abs(got["iwae_nll"] - recorded["iwae_nll"]) < 4 * (
                got["iwae_nll_sem"] + recorded["iwae_nll_sem"]
            )
    run = tmp_path / "finetuned"
    args = ["train", "--steps", "2", *TINY, "--init-from", str(folders[framework]), "--out", str(run)]
    assert run_main(framework, args, capsys)[0] == 0
    assert json.loads((run / "config.json").read_text())["options"]["init_from"] == str(folders[framework])


def test_an_existing_out_is_refused_and_nothing_is_left_behind(folders, tmp_path, capsys):
    src = json.loads((folders["jax"] / "config.json").read_text())["source"]
    taken = tmp_path / "taken"
    taken.mkdir()
    before = tree_snapshot(tmp_path)
    code, lines = run_main("jax", ["export", src, "--format", "folder", "--out", str(taken)], capsys)
    assert_one_line_error(code, lines, "already exists")
    assert tree_snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "damage,needle",
    [
        ("model", "without its model.safetensors"),
        ("config", "carries no"),
        ("weights", "as a safetensors file"),
    ],
)
def test_a_broken_folder_is_one_line(folders, tmp_path, capsys, damage, needle):
    folder = tmp_path / "broken"
    shutil.copytree(folders["jax"], folder)
    if damage == "model":
        (folder / "model.safetensors").unlink()
    elif damage == "config":  # the weights' own header holds the config a loader reads
        (folder / "model.safetensors").write_bytes(_without_config(folder / "model.safetensors"))
    else:
        (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    for fw in ("jax", "torch"):
        code, lines = run_main(fw, ["evaluate", "--run", str(folder), "--k", "2"], capsys)
        assert_one_line_error(code, lines, needle)


def _without_config(path: Path) -> bytes:
    """The safetensors file at `path` re-written without the config in its metadata."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save

    with safe_open(str(path), framework="numpy") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "config"}
    return save(load_file(path), metadata=meta)
