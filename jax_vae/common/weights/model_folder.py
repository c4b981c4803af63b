"""A model folder: trained weights in the form others load (`export --format folder`).

    config.json        {"format": "jax-vae-model", "version", "preset", "config", "step", "source",
                        "framework", "summary", "evaluations"}: the record a loader reads
    model.safetensors  jax-vae's PyTorch-layout state_dict, the same header metadata as an export
    README.md          a model card: the preset and what it reproduces, the data, the training run's
                       summary and evaluations, how to load the weights in either framework

`jax_vae.load(folder)` and `torch_reference.load(folder)` read it (the same as a .safetensors export),
and so do `evaluate --run` and `train --init-from`. The folder is written beside its final name and
renamed into place, so a reader never sees half of one, and an existing path is never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jax_vae.common.config.presets import PRESET_DOCS
from jax_vae.common.errors import RunError
from jax_vae.common.files import atomic_write_text, fsync_dir
from jax_vae.common.runs import folder as runs
from jax_vae.common.weights.formats import (
    MODEL_CARD,
    MODEL_CONFIG,
    MODEL_FILE,
    MODEL_FORMAT,
    write_safetensors,
)

VERSION = 1  # of the folder's layout


def run_of(source: Path) -> Path | None:
    """The run folder `source` is (or is a checkpoint inside), if any."""
    for folder in (source, source.parent, source.parent.parent):
        if (folder / runs.CONFIG_FILE).is_file() and runs.framework_of(folder) is not None:
            return folder
    return None


def _evaluations(run: Path | None) -> list[dict[str, Any]]:
    """The run's evaluate reports (<run>/evaluation-k<k>.json), the score fields of each."""
    keep = ("k", "step", "neg_elbo", "neg_elbo_sem", "iwae_nll", "iwae_nll_sem", "num_images", "units")
    out = []
    for path in sorted(run.glob("evaluation-k*.json")) if run else []:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a broken report is left out of the card, not fatal to the export
        if isinstance(report, dict):
            out.append({k: report[k] for k in keep if k in report})
    return out


def record_of(meta: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """config.json of a model folder exported from `source` with the export's record `meta`."""
    run = run_of(source)
    summary = runs.read_summary(run) if run else None
    framework = runs.framework_of(run) if run else None
    return {
        "format": MODEL_FORMAT,
        "version": VERSION,
        **dict(meta),
        "framework": framework,
        "summary": summary,
        "evaluations": _evaluations(run),
    }


def _numbers(summary: Mapping[str, Any] | None, evaluations: list[dict[str, Any]]) -> list[str]:
    lines = []
    if summary:
        shown = ("framework", "steps", "epochs", "test_loss", "loss_unit", "train_s", "device")
        lines += [f"| {k} | {summary[k]} |" for k in shown if summary.get(k) is not None]
    for e in evaluations:
        lines.append(
            f"| IWAE-{e.get('k')} NLL (step {e.get('step')}) | {e.get('iwae_nll', float('nan')):.3f} "
            f"+- {e.get('iwae_nll_sem', float('nan')):.3f} {e.get('units', '')}, "
            f"{e.get('num_images')} test images |"
        )
    return ["| | |", "|---|---|", *lines] if lines else ["Not recorded: the weights came from no run folder."]


def model_card(record: Mapping[str, Any], name: str) -> str:
    """README.md of the model folder `name`, from its config.json record."""
    cfg, preset = record["config"], record["preset"]
    doc = PRESET_DOCS.get(preset, "(not a named preset: its config is in config.json)")
    net = f"{cfg['arch']}, latent {cfg['latent_dim']}, {cfg['likelihood']} likelihood, {cfg['objective']}"
    return "\n".join(
        [
            f"# jax-vae model: {preset}",
            "",
            f"A variational autoencoder trained with jax-vae: preset `{preset}` ({net}).",
            "",
            "## Preset",
            "",
            doc,
            "",
            "## Data",
            "",
            f"Dataset `{cfg['dataset']}`, binarization `{cfg['binarization']}`, images "
            f"{cfg['input_dim']} values ({cfg['image_channels']} channel(s)).",
            "",
            "## Training",
            "",
            f"Step {record.get('step')} of the run at `{record.get('source')}`.",
            "",
            *_numbers(record.get("summary"), list(record.get("evaluations") or [])),
            "",
            "## Parity",
            "",
            "The JAX and PyTorch implementations of this preset compute the same losses, gradients",
            "and training trajectories under shared weights (jax-vae's parity suite; its table:",
            "docs/parity-cpu.md).",
            "",
            "## Loading",
            "",
            "```python",
            "import jax_vae",
            f"cfg, params = jax_vae.load({name!r})  # cfg: VAEConfig, params: the Flax weights",
            "```",
            "",
            "```python",
            "import torch_reference",
            f"cfg, model = torch_reference.load({name!r})  # a torch VAE in eval mode",
            "```",
            "",
            "`model.safetensors` is a plain PyTorch state_dict too (safetensors.torch.load_file).",
            f"From the command line: `jax-vae evaluate --run {name}`, `jax-vae train --init-from {name}`.",
            "",
        ]
    )


def write_model_folder(
    out: Path, state: Mapping[str, np.ndarray], meta: Mapping[str, Any], source: Path
) -> Path:
    """The model folder of `state` (PyTorch layout) at `out`, which must not exist yet."""
    out = Path(out).absolute()
    if out.exists():
        raise RunError(f"{out} already exists; choose another --out")
    record = record_of(meta, Path(source).absolute())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write_safetensors(tmp / MODEL_FILE, state, meta)
        atomic_write_text(tmp / MODEL_CONFIG, json.dumps(record, indent=2, sort_keys=True) + "\n")
        atomic_write_text(tmp / MODEL_CARD, model_card(record, out.name))
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)  # a directory rename: fails, rather than replaces, if `out` appeared
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    return out
