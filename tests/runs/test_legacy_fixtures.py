"""Files written by an older jax-vae keep loading: run folders (config.json, orbax and torch
checkpoints, BatchNorm statistics), safetensors / .pt exports and a params folder made at commit
4b1d59e (tests/fixtures/legacy/make_fixtures.py) are evaluated, exported and resumed by the current
code, and give the numbers and tensors that version wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from jax_vae.common import backends
from jax_vae.common import cli as cli_module
from jax_vae.common.config.options import TrainOptions
from jax_vae.common.config.vae_config import from_dict
from jax_vae.common.training import loop
from tests.fixtures.legacy.make_fixtures import write_data

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
K = 8
# evaluate's report fields that are numbers of the weights (the rest: timings, paths, device)
SCORES = ("neg_elbo", "neg_elbo_sem", "iwae_nll", "iwae_nll_sem", "recon", "kl")
EVALUATED = {
    "jax": ["runs/mlp-jax", "exports/mlp-jax.safetensors", "exports/mlp-params"],
    "torch": ["runs/mlp-torch", "exports/mlp-torch.safetensors", "exports/mlp-jax.pt"],
}


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A writable copy of the fixtures (evaluate and resume write into run folders)."""
    root = tmp_path / "legacy"
    shutil.copytree(FIXTURES, root, ignore=shutil.ignore_patterns("*.py"))
    write_data(root / "data.npz")  # generated as the fixtures' runs saw it, not committed
    return root


def _data(root: Path) -> dict[str, np.ndarray]:
    """The fixture's npz as a run reads it: float32 [N, 64] in [0, 1], with its 8x8 image shape."""
    with np.load(root / "data.npz") as z:
        data = {
            split: z[f"x_{split}"].reshape(-1, 64).astype(np.float32) / 255 for split in ("train", "test")
        }
    return {**data, "image_shape": np.array([8, 8])}


@pytest.mark.parametrize("framework,name", [(fw, n) for fw, names in EVALUATED.items() for n in names])
def test_old_runs_and_exports_evaluate_to_the_numbers_they_had(legacy, framework, name):
    expected = json.loads(
        (FIXTURES / "expected" / f"{framework}-{name.split('/')[1].replace('.', '-')}.json").read_text()
    )
    out = legacy / "report.json"
    args = ["evaluate", "--run", str(legacy / name), "--k", str(K), "--seed", "0", "--no-download"]
    assert (
        cli_module.main(
            [*args, "--dataset", f"npz:{legacy / 'data.npz'}", "--out", str(out)], framework=framework
        )
        == 0
    )
    got = json.loads(out.read_text())
    assert (got["step"], got["preset"], got["k"], got["num_images"]) == (
        expected["step"],
        expected["preset"],
        K,
        16,
    )
    for key in SCORES:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_an_old_batchnorm_run_exports_the_tensors_it_had(legacy, framework):
    """The conv + BatchNorm run's checkpoint (params and running statistics) re-exported by today's
    code equals the export that version wrote, tensor for tensor."""
    out = legacy / "again.safetensors"
    assert (
        cli_module.main(
            ["export", str(legacy / f"runs/conv-{framework}"), "--out", str(out)], framework=framework
        )
        == 0
    )
    old, new = load_file(legacy / f"exports/conv-{framework}.safetensors"), load_file(out)
    assert sorted(old) == sorted(new) and any("running_var" in k for k in new)
    for key in old:
        np.testing.assert_array_equal(new[key], old[key], err_msg=key)


@pytest.mark.parametrize(
    "framework,model", [("jax", "mlp"), ("torch", "mlp"), ("jax", "conv"), ("torch", "conv")]
)
def test_an_old_run_resumes(legacy, framework, model):
    """loop.train --resume continues an old run from its last checkpoint (step 6) to step 9."""
    run = legacy / "runs" / f"{model}-{framework}"
    saved = json.loads((run / "config.json").read_text())
    cfg = from_dict({**saved["config"], "steps": 9})
    opts = TrainOptions(resume=True, progress=False, images=False, download=False, checkpoint_every=3)
    summary = loop.train(backends.get(framework), cfg, run, opts, data=_data(legacy))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 9 and max(r["step"] for r in records) == 9
    assert [r["step"] for r in records if r["kind"] == "step" and r["step"] <= 6] == [
        r["step"]
        for r in map(json.loads, (FIXTURES / "runs" / run.name / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "step"
    ]
