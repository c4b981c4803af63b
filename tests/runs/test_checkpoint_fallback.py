"""Broken checkpoints, both frameworks: a truncated, metadata-less or emptied newest checkpoint is
skipped with one note on stderr (resume continues bit for bit from the one before it, evaluate and
export read it), `--step` picks a checkpoint and a broken or absent one is a one-line error; no
traceback reaches stderr. Also: evaluate of exports, unsafe pickles, diverged weights."""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jax_vae.common import cli
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import apply_overrides
from jax_vae.common.data.datasets import make_rectangles
from tests.helpers import (
    FRAMEWORKS,
    REPO,
    assert_bit_identical,
    load_params,
    metric_records,
    tiny_config,
    tiny_data,
    train_fn,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BREAKS = ("truncate", "no_metadata", "empty")
RECTANGLES = apply_overrides(
    get_preset("stutz-rectangles"),
    {"encoder_hidden": (16,), "decoder_hidden": (16,), "batch_size": 8, "steps": 10},
)
NOTE = re.compile(
    r"^note: checkpoint step (\d+) in (.+) is (unreadable|incomplete) \((.+)\); using step (\d+)$"
)


def _break(framework: str, ckpt_dir: Path, step: int, how: str) -> None:
    """Damage checkpoint `step` the way a full disk, a bad copy or a killed job would."""
    if framework == "jax":
        folder = ckpt_dir / str(step)
        if how == "truncate":  # every OCDBT data file cut in half
            for f in (folder / "train").rglob("*"):
                if f.is_file() and f.parent.name == "d":
                    os.truncate(f, f.stat().st_size // 2)
        elif how == "no_metadata":
            (folder / "train" / "_METADATA").unlink()
        else:
            shutil.rmtree(folder)
            folder.mkdir()
        return
    path = ckpt_dir / f"ckpt_{step:09d}.pt"
    if how == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    elif how == "no_metadata":  # the zip without its pickle (the tensors' metadata)
        with zipfile.ZipFile(path) as z:
            members = [(i, z.read(i)) for i in z.infolist() if not i.filename.endswith("data.pkl")]
        with zipfile.ZipFile(path, "w") as z:
            for info, data in members:
                z.writestr(info, data)
    else:
        path.write_bytes(b"")


def _rectangles() -> dict[str, np.ndarray]:
    x, labels = make_rectangles(64, seed=5)
    return {"train": x, "test": x[:16], "train_labels": labels, "test_labels": labels[:16]}


def _notes(err: str) -> list[re.Match]:
    assert "Traceback" not in err and "Exception ignored" not in err, err
    return [m for line in err.splitlines() if (m := NOTE.match(line))]


@pytest.mark.parametrize("how", BREAKS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_continues_from_the_newest_intact_checkpoint(tmp_path, framework, how, capfd):
    """Checkpoints 6, 8, 10 with 10 broken: resume notes it once, starts at 8, and ends exactly where
    an unbroken run resumed from 8 ends."""
    train = train_fn(framework)
    kw: dict[str, Any] = dict(data=tiny_data(), progress=False, images=False, checkpoint_every=2, log_every=1)
    train(tiny_config(steps=10), tmp_path / "broken", **kw)
    train(tiny_config(steps=8), tmp_path / "clean", **kw)
    _break(framework, tmp_path / "broken" / "checkpoints", 10, how)
    capfd.readouterr()
    broken = train(tiny_config(steps=14), tmp_path / "broken", resume=True, **kw)
    notes = _notes(capfd.readouterr().err)
    assert [(m[1], m[5]) for m in notes] == [("10", "8")], notes
    clean = train(tiny_config(steps=14), tmp_path / "clean", resume=True, **kw)
    assert broken["resumed_from"] == clean["resumed_from"] == 8 and broken["steps"] == 14
    a, meta_a = load_params(framework, tmp_path / "broken")
    b, meta_b = load_params(framework, tmp_path / "clean")
    assert meta_a["step"] == meta_b["step"] == 14
    assert_bit_identical(a, b)
    assert metric_records(tmp_path / "broken") == metric_records(tmp_path / "clean")
    capfd.readouterr()
    load_params(framework, tmp_path / "broken", 12)  # saved after the resume (the broken 10: pruned)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_evaluate_and_export_fall_back_and_step_picks_one(tmp_path, framework, capfd):
    run = tmp_path / "run"
    train_fn(framework)(RECTANGLES, run, data=_rectangles(), progress=False, images=False, checkpoint_every=2)
    _break(framework, run / "checkpoints", 10, "truncate")
    evaluate = ["evaluate", "--run", str(run), "--k", "4", "--num-images", "4", "--no-download"]
    capfd.readouterr()
    assert cli.main([*evaluate, "--out", str(tmp_path / "a.json")], framework=framework) == 0
    out, err = capfd.readouterr()
    assert [(m[1], m[3], m[5]) for m in _notes(err)] == [("10", "unreadable", "8")], err
    assert len(err.splitlines()) == 1 and "(step 8)" in out
    assert json.loads((tmp_path / "a.json").read_text())["step"] == 8
    assert cli.main([*evaluate, "--step", "6", "--out", str(tmp_path / "b.json")], framework=framework) == 0
    out, err = capfd.readouterr()
    assert "(step 6)" in out and err == ""
    for step, what in (("10", "is unreadable"), ("7", "does not exist")):
        assert cli.main([*evaluate, "--step", step], framework=framework) == 2
        err = capfd.readouterr().err
        assert err.startswith(f"error: checkpoint step {step} in ") and len(err.splitlines()) == 1, err
        assert what in err and err.rstrip().endswith("intact steps: 6, 8") and "Traceback" not in err
    if framework != "jax":
        return  # export reads JAX runs (to PyTorch); --to-jax reads PyTorch files
    assert cli.main(["export", str(run), "--out", str(tmp_path / "m.pt")], framework="jax") == 0
    _, err = capfd.readouterr()
    assert [(m[1], m[5]) for m in _notes(err)] == [("10", "8")], err
    assert json.loads((tmp_path / "m.pt.json").read_text())["step"] == 8
    assert (
        cli.main(["export", str(run), "--step", "6", "--out", str(tmp_path / "s.pt")], framework="jax") == 0
    )
    assert json.loads((tmp_path / "s.pt.json").read_text())["step"] == 6
    assert (
        cli.main(["export", str(run), "--step", "10", "--out", str(tmp_path / "x.pt")], framework="jax") == 2
    )
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and "unreadable" in err and not (tmp_path / "x.pt").exists()


def test_torch_export_of_a_broken_run_to_jax_falls_back(tmp_path, capfd):
    run = tmp_path / "run"
    train_fn("torch")(RECTANGLES, run, data=_rectangles(), progress=False, images=False, checkpoint_every=2)
    _break("torch", run / "checkpoints", 10, "empty")
    capfd.readouterr()
    assert cli.main(["export", str(run), "--to-jax", "--out", str(tmp_path / "j")], framework="torch") == 0
    assert [(m[1], m[5]) for m in _notes(capfd.readouterr().err)] == [("10", "8")]
    assert load_params("jax", tmp_path / "j")[1]["step"] == 8


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_no_intact_checkpoint_is_one_line(tmp_path, framework, capfd):
    run = tmp_path / "run"
    train_fn(framework)(RECTANGLES, run, data=_rectangles(), progress=False, images=False, checkpoint_every=4)
    for step in (4, 8, 10):
        _break(framework, run / "checkpoints", step, "truncate")
    capfd.readouterr()
    assert cli.main(["evaluate", "--run", str(run), "--k", "2", "--no-download"], framework=framework) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: no intact checkpoint in ") and len(err.splitlines()) == 1, err
    assert "step 10 is unreadable" in err and "step 4 is unreadable" in err


def test_an_unfinished_orbax_save_is_ignored_with_a_note(tmp_path, capfd):
    run = tmp_path / "run"
    train_fn("jax")(RECTANGLES, run, data=_rectangles(), progress=False, images=False, checkpoint_every=4)
    shutil.copytree(run / "checkpoints" / "10", run / "checkpoints" / "12.orbax-checkpoint-tmp-99")
    (run / "checkpoints" / "10" / "commit_success.txt").unlink()  # and a folder never committed
    capfd.readouterr()
    _, meta = load_params("jax", run)
    assert meta["step"] == 8
    notes = [(m[1], m[3], m[4], m[5]) for m in _notes(capfd.readouterr().err)]
    assert notes == [
        ("12", "incomplete", "an unfinished save", "8"),
        ("10", "incomplete", "no commit marker", "8"),
    ]


# --------------------------------------------------------------------------------- exports and files
def _export(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    train_fn("jax")(RECTANGLES, run, data=_rectangles(), progress=False, images=False)
    assert cli.main(["export", str(run), "--out", str(tmp_path / "model.pt")], framework="jax") == 0
    return tmp_path / "model.pt"


def test_evaluate_reads_exports_on_both_sides(tmp_path, capfd):
    """A torch state_dict export (model.pt + model.pt.json) for torch evaluate, its --to-jax params
    folder for JAX evaluate: the same weights, so the same -ELBO (k = 1, mean path aside) closely."""
    pt = _export(tmp_path)
    assert cli.main(["export", str(pt), "--to-jax", "--out", str(tmp_path / "params")], framework="jax") == 0
    args = ["--k", "8", "--num-images", "8", "--no-download"]
    reports = {}
    for framework, source in (("torch", pt), ("jax", tmp_path / "params")):
        out = tmp_path / f"{framework}.json"
        code = cli.main(["evaluate", "--run", str(source), *args, "--out", str(out)], framework=framework)
        assert code == 0, capfd.readouterr().err
        reports[framework] = json.loads(out.read_text())
        assert reports[framework]["step"] == 10 and reports[framework]["source"] == str(source)
    assert reports["jax"]["kl"] == pytest.approx(reports["torch"]["kl"], rel=1e-4)  # no sampling in the KL
    for framework, source in (("torch", pt), ("jax", tmp_path / "params")):  # --step must be the export's
        capfd.readouterr()
        assert cli.main(["evaluate", "--run", str(source), *args, "--step", "4"], framework=framework) == 2
        err = capfd.readouterr().err
        assert "step 10, not" in err or "of step 10" in err, err
        assert len(err.splitlines()) == 1


def test_an_unsafe_pickle_is_refused_in_one_line_without_torchs_advice(tmp_path, capfd):
    bad = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2), "extra": _Opaque()}, bad)
    assert cli.main(["evaluate", "--run", str(bad), "--k", "2"], framework="torch") == 2
    err = capfd.readouterr().err
    assert err == f"error: {bad} holds objects other than tensors and is not loaded\n"
    assert cli.main(["export", str(bad), "--to-jax", "--out", str(tmp_path / "j")], framework="jax") == 2
    err = capfd.readouterr().err
    assert "holds objects other than tensors" in err and "weights_only" not in err


class _Opaque:
    """A pickled object that is not a tensor (what a weights_only load refuses)."""


def test_the_plain_pytorch_snippet_in_the_docs_runs(tmp_path):
    """docs/evaluation.md's export snippet, executed beside a real export."""
    pt = _export(tmp_path)
    text = (REPO / "docs" / "evaluation.md").read_text()
    section = text[text.index("## Loading an export in plain PyTorch") :]
    start = section.index("```python\n") + len("```python\n")
    snippet = section[start : section.index("\n```", start)]
    cwd = os.getcwd()
    os.chdir(pt.parent)
    try:
        scope: dict[str, Any] = {}
        exec(compile(snippet, "docs/evaluation.md", "exec"), scope)  # noqa: S102 - the doc's own code
    finally:
        os.chdir(cwd)
    assert scope["recon"].shape == (4, RECTANGLES.input_dim)
    assert torch.isfinite(scope["recon"]).all() and scope["model"].training is False


# ------------------------------------------------------------------------------------- diverged
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_evaluate_of_diverged_weights_is_one_line(tmp_path, framework, capfd):
    """Weights whose q(z|x) variance overflows give NaN decoder outputs (torch's BCE refuses NaN
    probabilities; JAX's gives NaN): either way, one line naming the step."""
    pt = _export(tmp_path)
    state = torch.load(pt, weights_only=True)
    state["encoder.logvar.bias"] = torch.full_like(state["encoder.logvar.bias"], 1e4)  # std = inf
    diverged = tmp_path / "diverged.pt"
    torch.save(state, diverged)
    shutil.copy(f"{pt}.json", f"{diverged}.json")
    source = diverged
    if framework == "jax":
        assert (
            cli.main(["export", str(diverged), "--to-jax", "--out", str(tmp_path / "j")], framework="jax")
            == 0
        )
        source = tmp_path / "j"
    capfd.readouterr()
    code = cli.main(
        ["evaluate", "--run", str(source), "--k", "4", "--num-images", "6", "--no-download"],
        framework=framework,
    )
    err = capfd.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "weights of step 10 give a non-finite" in err and "on 6 of 6 test images" in err
