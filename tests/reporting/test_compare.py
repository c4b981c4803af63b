"""`compare`: the overlay of run folders, its table and labels, and the checks on --out (format,
overwrite) that come before any run is read: one-line errors, exit 2, nothing written."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from jax_vae.common import cli as cli_module
from jax_vae.common.config.vae_config import to_dict
from jax_vae.common.errors import RunError
from jax_vae.common.reporting.compare import compare, compare_figure
from tests.helpers import tiny_config, tree_snapshot

PNG = b"\x89PNG"


def fake_run(path, framework, seed, losses, **cfg_changes):
    """A run folder with one step record and one epoch record (test loss `v`) per value of `losses`."""
    path.mkdir()
    cfg = dataclasses.replace(tiny_config(seed=seed), **cfg_changes)
    (path / "config.json").write_text(
        json.dumps({"framework": framework, "preset": cfg.name, "config": to_dict(cfg)})
    )
    records = [
        {"kind": "step", "step": e * 10 + 5, "epoch": e + 1, "loss": v + 1} for e, v in enumerate(losses)
    ]
    records += [
        {
            "kind": "epoch",
            "epoch": e + 1,
            "step": (e + 1) * 10,
            "train_loss": v + 1,
            "test_loss": v,
            "wall_s": e + 1.0,
        }
        for e, v in enumerate(losses)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run_main(args: list[str], capsys) -> tuple[int | str | None, list[str], str]:
    """(exit code, stderr lines, stdout) of the CLI called in-process."""
    code: int | str | None
    try:
        code = cli_module.main(args)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


def assert_one_line_error(code, lines, *needles):
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_compare_overlays_runs_and_reports_means(tmp_path, capsys):
    runs = [
        fake_run(tmp_path / "j0", "jax", 0, [110, 105]),
        fake_run(tmp_path / "j1", "jax", 1, [111, 106]),
        fake_run(tmp_path / "t0", "torch", 0, [112, 107]),
        fake_run(tmp_path / "t1", "torch", 1, [113, 108]),
    ]
    text = compare(runs, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == PNG
    assert "test loss: -ELBO, nats/image" in text
    assert "mean jax: test loss 105.500 +- 0.707" in text and "mean torch: test loss 107.500 +- 0.707" in text
    assert "difference of means (jax - torch): -2.000" in text
    code, lines, out = run_main(
        ["compare", *map(str, runs[::2]), "--labels", "JAX", "PyTorch", "--out", str(tmp_path / "d.png")],
        capsys,
    )
    assert code == 0 and not lines
    assert "JAX" in out and "105.000" in out and math.isfinite(float(out.split("PyTorch")[1].split()[2]))


def test_compare_labels_axes_by_objective_and_flags_mixed_ones(tmp_path):
    elbo = fake_run(tmp_path / "elbo", "jax", 0, [110, 105])
    iwae = fake_run(
        tmp_path / "iwae", "torch", 0, [100, 99], objective="iwae", num_samples=5, likelihood="bce_probs"
    )
    mse = fake_run(tmp_path / "mse", "torch", 1, [9, 8], likelihood="mse_sum", decoder_output="identity")
    text = compare([elbo, iwae, mse], tmp_path / "mixed.svg")
    assert (tmp_path / "mixed.svg").read_bytes()[:5] == b"<?xml"
    note = next(line for line in text.splitlines() if line.startswith("runs with different objectives"))
    for kind in ("-ELBO (nats/image)", "-IWAE-5 bound (nats/image)", "mse_sum+KL (per image, not nats)"):
        assert kind in note
    assert note.endswith("no means") and "mean " not in text and "difference of means" not in text

    entries = [
        (name, fw, [{"kind": "epoch", "epoch": 1, "step": 1, "test_loss": 1.0}], to_dict(cfg))
        for name, fw, cfg in (
            ("a", "jax", tiny_config()),
            ("b", "torch", dataclasses.replace(tiny_config(), objective="iwae", num_samples=5)),
        )
    ]
    fig = compare_figure(entries, "title")
    test_axes, train_axes = fig.axes
    assert test_axes.get_title() == "test loss (objectives differ)"
    legend = test_axes.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == [
        "a [-ELBO, nats/image]",
        "b [-IWAE-5 bound, nats/image]",
    ]
    assert fig.get_suptitle().startswith("title\nruns with different objectives")
    fig = compare_figure(entries[:1])
    assert fig.axes[0].get_ylabel() == "-ELBO (nats/image)" and fig.axes[0].get_title() == "test loss (-ELBO)"
    assert fig.axes[1].get_ylabel() == "train -ELBO (nats/image)"


@pytest.mark.parametrize(
    "out, needles",
    [
        ("c.txt", ["extension '.txt'", ".png", ".pdf", ".svg"]),
        ("compare", ["has no extension", ".png"]),
        (".png", ["has no extension"]),  # a hidden file's name, not an extension
    ],
)
def test_bad_out_format_is_one_line_before_the_runs_are_read(tmp_path, capsys, out, needles):
    before = tree_snapshot(tmp_path)
    # the run folder does not exist: the format error comes first
    code, lines, _ = run_main(["compare", str(tmp_path / "no-run"), "--out", str(tmp_path / out)], capsys)
    assert_one_line_error(code, lines, *needles)
    assert tree_snapshot(tmp_path) == before


def test_upper_case_extension_is_accepted(tmp_path):
    run = fake_run(tmp_path / "r", "jax", 0, [10])
    compare([run], tmp_path / "C.PNG")
    assert (tmp_path / "C.PNG").read_bytes()[:4] == PNG


def test_existing_out_is_refused_unless_forced(tmp_path, capsys):
    run = fake_run(tmp_path / "r", "jax", 0, [10, 9])
    out = tmp_path / "c.png"
    out.write_bytes(b"keep me")
    before = tree_snapshot(tmp_path)
    for runs in ([str(run)], [str(tmp_path / "no-run")]):  # refused before the runs are read
        code, lines, _ = run_main(["compare", *runs, "--out", str(out)], capsys)
        assert_one_line_error(code, lines, f"{out} already exists", "--force")
        assert tree_snapshot(tmp_path) == before
    with pytest.raises(RunError, match="already exists"):
        compare([run], out)
    code, lines, stdout = run_main(["compare", str(run), "--out", str(out), "--force"], capsys)
    assert code == 0 and not lines and f"wrote {out}" in stdout
    assert out.read_bytes()[:4] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "r"]  # atomic: no temp file left


def test_out_folder_is_refused(tmp_path, capsys):
    run = fake_run(tmp_path / "r", "jax", 0, [10])
    (tmp_path / "figs.png").mkdir()
    code, lines, _ = run_main(["compare", str(run), "--out", str(tmp_path / "figs.png"), "--force"], capsys)
    assert_one_line_error(code, lines, "is a folder")
    assert not any((tmp_path / "figs.png").iterdir())


def test_runs_without_a_finished_epoch_write_nothing(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"framework": "jax", "preset": "x", "config": to_dict(tiny_config())})
    )
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "step", "step": 1, "loss": 3.0}) + "\n")
    code, lines, _ = run_main(["compare", str(run), "--out", str(tmp_path / "c.pdf")], capsys)
    assert_one_line_error(code, lines, "none of these runs has finished an epoch")
    assert not (tmp_path / "c.pdf").exists()
