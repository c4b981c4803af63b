"""Weights the way users hold them: safetensors exports (exact both ways, read without torch on the JAX
side), pickles refused, and the sources' own checkpoints through `import`, `evaluate --weights` and
`train --init-from` on both frameworks. (Loss and gradient equality of every source map:
parity_tests/test_source_checkpoints.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
import torch

from jax_vae.common import backends
from jax_vae.common.config.options import TrainOptions
from jax_vae.common.data.datasets import default_data_dir
from jax_vae.common.training import inputs
from jax_vae.common.weights import sources
from jax_vae.common.weights.convert import flax_to_torch
from parity_tests.source_modules import PytorchExamplesVAE
from tests.helpers import (
    FRAMEWORKS,
    REPO,
    assert_bit_identical,
    assert_one_line_error,
    load_params,
    run_main,
    tiny_config,
    tiny_data,
    train_fn,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 3-step tiny run of each framework."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for framework in FRAMEWORKS:
        out[framework] = root / framework
        train_fn(framework)(
            tiny_config(steps=3), out[framework], data=tiny_data(), images=False, progress=False
        )
    return out


def test_safetensors_export_round_trips_exactly_both_ways(runs, tmp_path, capsys):
    jax_params, meta = load_params("jax", runs["jax"])
    for framework in FRAMEWORKS:  # JAX run -> .safetensors (torch layout) -> back to JAX
        out = tmp_path / f"{framework}.safetensors"
        assert run_main(framework, ["export", str(runs[framework]), "--out", str(out)], capsys)[0] == 0
        state = safetensors.numpy.load_file(out)
        header = safetensors.safe_open(str(out), framework="numpy").metadata()
        assert header["preset"] == "stutz-rectangles" and '"input_dim": 64' in header["config"]
        assert header["step"] == "3" and header["format"] == "jax-vae"
        expect = load_params(framework, runs[framework])[0]
        if framework == "jax":  # the converter's exact transpose
            from jax_vae.checkpoint import load_params as jax_load

            expect = flax_to_torch(jax_load(runs["jax"])[0], tiny_config())
        assert_bit_identical(state, expect)
        torch_state, torch_meta = backends.get("torch").load_params(out, None)  # safetensors.torch
        assert_bit_identical({k: v.numpy() for k, v in torch_state.items()}, expect)
        assert torch_meta["config"]["input_dim"] == 64 and torch_meta["step"] == 3
    back = tmp_path / "back"
    assert (
        run_main(
            "jax", ["export", str(tmp_path / "jax.safetensors"), "--to-jax", "--out", str(back)], capsys
        )[0]
        == 0
    )
    assert_bit_identical(load_params("jax", back)[0], jax_params)
    assert meta["config"] == load_params("jax", back)[1]["config"]


def test_the_jax_side_reads_safetensors_without_torch(runs, tmp_path):
    weights = tmp_path / "w.safetensors"
    assert run_main_quiet("jax", ["export", str(runs["jax"]), "--out", str(weights)]) == 0
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "from jax_vae.common.cli import main\n"
        f"assert main(['export', {str(weights)!r}, '--to-jax', '--out', {str(tmp_path / 'j')!r}]) == 0\n"
        "from jax_vae.backend import BACKEND\n"
        f"params, meta = BACKEND.load_params(__import__('pathlib').Path({str(weights)!r}), None)\n"
        "assert meta['preset'] == 'stutz-rectangles'\n"
        "assert params['decoder']['out']['kernel'].shape == (16, 64)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]


def run_main_quiet(framework: str, args: list[str]) -> int:
    from jax_vae.common import cli

    return cli.main(args, framework=framework)


class _Payload:
    """A pickle that runs code when unpickled (touches a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_everywhere(tmp_path, capsys):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"fc1.weight": _Payload(marker)}, evil)
    for framework, args in (
        ("torch", ["evaluate", "--run", str(evil), "--k", "1"]),
        ("jax", ["export", str(evil), "--to-jax", "--out", str(tmp_path / "x")]),
        ("jax", ["import", str(evil), "--source", "pytorch-examples", "--out", str(tmp_path / "y")]),
        ("torch", ["evaluate", "--weights", str(evil), "--source", "pytorch-examples", "--k", "1"]),
        (
            "jax",
            ["train", "--init-from", str(evil), "--source", "pytorch-examples", "--out", str(tmp_path / "r")],
        ),
    ):
        assert_one_line_error(
            *run_main(framework, args, capsys), "holds objects other than tensors", "evil.pt"
        )
    assert not marker.exists() and not (tmp_path / "r").exists()


def _source_file(tmp_path: Path, **drop: bool) -> Path:
    """A pytorch/examples-style module (784-16-2) saved as its state_dict."""
    torch.manual_seed(0)
    state = PytorchExamplesVAE(hidden=16, latent=2).state_dict()
    path = tmp_path / "vae.pt"
    torch.save({k: v for k, v in state.items() if not drop.get(k.replace(".", "_"))}, path)
    return path


def test_source_errors_name_the_key_and_the_layouts(tmp_path, capsys):
    path = _source_file(tmp_path, fc4_bias=True)
    assert_one_line_error(
        *run_main(
            "jax", ["import", str(path), "--source", "pytorch-examples", "--out", str(tmp_path / "o")], capsys
        ),
        "'fc4.bias' is missing",
        "source layouts: jax-vae, pytorch-examples, minimalist",
    )
    (tmp_path / "good").mkdir()
    good = _source_file(tmp_path / "good")
    assert_one_line_error(
        *run_main(
            "torch", ["import", str(good), "--source", "deep-mse", "--out", str(tmp_path / "p.pt")], capsys
        ),
        "'encoder.0.weight' is missing",
        "its keys are those of --source pytorch-examples",
    )
    assert_one_line_error(  # a --set that contradicts the file: the converter names the key
        *run_main(
            "jax",
            [
                "import",
                str(good),
                "--source",
                "pytorch-examples",
                "--set",
                "latent_dim=3",
                "--out",
                str(tmp_path / "q"),
            ],
            capsys,
        ),
        "'encoder.mean.weight' has shape (2, 16)",
    )
    code, lines = run_main(
        "jax", ["import", str(good), "--source", "nope", "--out", str(tmp_path / "r")], capsys
    )
    assert code == 2 and "invalid choice: 'nope'" in lines[0]
    assert not any((tmp_path / n).exists() for n in ("o", "p.pt", "q", "r"))


def test_init_from_starts_training_from_the_file_on_both_frameworks(tmp_path):
    path = _source_file(tmp_path)
    state, cfg, _ = sources.load(path, "pytorch-examples")
    assert (cfg.input_dim, cfg.encoder_hidden, cfg.latent_dim, cfg.decoder_hidden) == (784, (16,), 2, (16,))
    opts = TrainOptions(init_from=str(path), source="pytorch-examples")
    data = {
        k: (np.random.default_rng(0).random((32, 784)) < 0.5).astype(np.float32) for k in ("train", "test")
    }
    for framework in FRAMEWORKS:
        backend = backends.get(framework)
        trainer: Any = backend.trainer(cfg, data, opts, tmp_path / framework, None)
        trainer.init_state(inputs.initial_params(backend, cfg, opts))
        if framework == "jax":
            got = flax_to_torch(trainer.state.params, cfg)
        else:
            got = {k: v.numpy() for k, v in trainer.state.model.state_dict().items()}
        assert_bit_identical(got, state)
        trainer.close()


def _report(framework: str, args: list[str], out: Path, capsys) -> dict:
    assert run_main(framework, [*args, "--out", str(out)], capsys)[0] == 0
    return json.loads(out.read_text())


def test_import_evaluate_and_fine_tune_a_source_checkpoint_from_both_clis(tmp_path, capsys):
    if not (default_data_dir() / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not in the data folder (set JAX_VAE_DATA_DIR)")
    path = _source_file(tmp_path)
    common = ["--k", "8", "--num-images", "100", "--dataset", "fashion_mnist"]
    imported = {"jax": tmp_path / "jax-params", "torch": tmp_path / "torch.safetensors"}
    scores = {}
    for framework, out in imported.items():
        weights = ["evaluate", "--weights", str(path), "--source", "pytorch-examples", *common]
        scores[framework] = _report(framework, weights, tmp_path / f"{framework}-w.json", capsys)
        args = ["import", str(path), "--source", "pytorch-examples", "--out", str(out)]
        assert run_main(framework, args, capsys)[0] == 0
        again = _report(
            framework, ["evaluate", "--run", str(out), *common], tmp_path / f"{framework}-r.json", capsys
        )
        for key in ("neg_elbo", "iwae_nll", "recon", "kl"):  # same weights, same seed: the same numbers
            assert again[key] == scores[framework][key], key
        run = tmp_path / f"ft-{framework}"
        args = [
            "train",
            "--init-from",
            str(out),
            "--dataset",
            "fashion_mnist",
            "--steps",
            "2",
            "--out",
            str(run),
        ]
        assert run_main(framework, [*args, "--no-images", "--no-progress"], capsys)[0] == 0
        recorded = json.loads((run / "config.json").read_text())
        assert (
            recorded["options"]["init_from"] == str(out.absolute()) and recorded["config"]["latent_dim"] == 2
        )
    a, b = scores["jax"], scores["torch"]  # other RNG streams: equal within the Monte Carlo error
    for key in ("neg_elbo", "iwae_nll"):
        assert abs(a[key] - b[key]) < 5 * np.hypot(a[f"{key}_sem"], b[f"{key}_sem"]) + 1e-3 * abs(b[key]), key


def test_the_plain_pytorch_safetensors_snippet_in_the_docs_runs(runs, tmp_path, capsys):
    """docs/weights.md's snippet, executed beside a real safetensors export."""
    assert (
        run_main("jax", ["export", str(runs["jax"]), "--out", str(tmp_path / "model.safetensors")], capsys)[0]
        == 0
    )
    text = (REPO / "docs" / "weights.md").read_text()
    start = text.index("```python\n") + len("```python\n")
    snippet = text[start : text.index("\n```", start)]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict[str, Any] = {}
        exec(compile(snippet, "docs/weights.md", "exec"), scope)  # noqa: S102 - the doc's own code
    finally:
        os.chdir(cwd)
    expect = load_params("torch", runs["torch"])[0].keys()
    assert scope["cfg"].input_dim == 64 and scope["model"].state_dict().keys() == expect
