"""Framework-free run folders: layout, the resolved config, metrics as JSON lines, the summary.

A run folder (both frameworks, same layout and schema):
    config.json     {"framework", "preset", "config": VAEConfig fields, "options": {...}, ...}
    metrics.jsonl   one JSON object per line, `kind` "step" or "epoch" (see STEP_KEYS / EPOCH_KEYS)
    checkpoints/    orbax steps (JAX) or ckpt_<step>.pt files (PyTorch)
    images/         reconstructions.png, samples.png, manifold.png (2-D latents), curves.png
    events.out.tfevents.*  with --tensorboard: the same records as TensorBoard events (tensorboard.py)
    summary.json    the final numbers, also printed as one summary line
Losses are per image: nats for Bernoulli presets; for MSE presets the same sums/means of squared
error (+ KL) the preset optimizes, which are not nats.

A "step" record (every --log-every steps) holds that step's loss, recon, kl and the latent statistics
of its batch (StepMetrics: mu_mean, logvar_std, logvar_mean), and `chunk_images_per_s`: the images of
the whole chunk the step ran in divided by the chunk's wall time, the same on every record of a chunk
(a chunk is one jitted scan, an epoch by default; per-step times are not measured). An "epoch" record's
`images_per_s` is the epoch's training images over its training time.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from jax_vae.common.backends import FRAMEWORKS
from jax_vae.common.config.vae_config import VAEConfig, from_dict, to_dict
from jax_vae.common.errors import RunError, one_line
from jax_vae.common.files import atomic_write_text, with_path
from jax_vae.common.runs.lock import LOCK_FILE

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.json", "metrics.jsonl", "summary.json"
CHECKPOINT_DIR, IMAGE_DIR = "checkpoints", "images"
RESUMABLE_FIELDS = ("epochs", "steps")  # config fields a resumed run may change (its length)


def run_record(
    framework: str, cfg: VAEConfig, options: dict[str, Any], versions: dict[str, str]
) -> dict[str, Any]:
    """The content of config.json: everything needed to resume or reproduce the run."""
    return {
        "framework": framework,
        "preset": cfg.name,
        "config": to_dict(cfg),
        "options": options,
        "versions": versions,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """config.json of a run folder, or None when there is none; a broken or tampered one (not JSON,
    an unknown framework, config fields of the wrong type, options not an object) is a RunError."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or "config" not in record or "framework" not in record:
            raise ValueError("missing 'config' or 'framework'")
        if record["framework"] not in FRAMEWORKS:
            raise ValueError(f"framework {record['framework']!r} is none of {', '.join(FRAMEWORKS)}")
        from_dict(record["config"])
        if not isinstance(record.get("options", {}), dict):
            raise ValueError("'options' is not a JSON object")
        return record
    except (ValueError, KeyError, TypeError) as err:
        raise RunError(f"{path} is not a valid run config ({one_line(err)})") from None


def framework_of(path: Path) -> str | None:
    """The framework of the run folder `path` is in (or is), else None."""
    for folder in (Path(path), Path(path).parent):
        record = read_run(folder) if folder.is_dir() else None
        if record is not None:
            return str(record["framework"])
    return None


def recorded_data_dir(record: dict[str, Any] | None) -> str | None:
    """The data folder config.json records the run was trained on, when it still exists."""
    recorded = (record or {}).get("data_dir")
    return recorded if isinstance(recorded, str) and Path(recorded).is_dir() else None


def config_diff(saved: dict[str, Any], cfg: VAEConfig, ignore: Iterable[str] = RESUMABLE_FIELDS) -> list[str]:
    """'field: saved -> new' for every config field that differs (order of VAEConfig); a field the
    saved config predates counts as its default."""
    new, default = to_dict(cfg), to_dict(VAEConfig(name=cfg.name))
    old = {k: saved.get(k, default[k]) for k in new}
    return [f"{k}: {old[k]!r} -> {v!r}" for k, v in new.items() if k not in ignore and old[k] != v]


def check_compatible(saved: dict[str, Any], cfg: VAEConfig, what: str) -> None:
    """A saved config (config.json or a checkpoint's) must be cfg's preset with the same fields."""
    if saved.get("name") != cfg.name:
        raise RunError(f"{what} is of preset {saved.get('name')!r}, not {cfg.name!r}")
    diff = config_diff(saved, cfg)
    if diff:
        raise RunError(
            f"{what} was trained with another config ({'; '.join(diff[:3])}"
            f"{'; ...' if len(diff) > 3 else ''}); only epochs/steps may change on --resume"
        )


def check_run_dir(run_dir: Path, framework: str, cfg: VAEConfig, resume: bool) -> dict[str, Any] | None:
    """Read-only check that `run_dir` may receive this run; returns the saved record when resuming."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"out dir {run_dir} is a file")
    record = read_run(run_dir) if run_dir.is_dir() else None
    has_files = run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir())
    if record is None:
        if resume:
            raise RunError(
                f"there is no run to resume in {run_dir} (no {CONFIG_FILE}); check --out, or drop --resume "
                "to start a new run"
            )
        if has_files:
            raise RunError(f"out dir {run_dir} is not empty and holds no run; choose another --out")
        return None
    if not resume:
        raise RunError(
            f"out dir {run_dir} already holds a run ({record['framework']}, preset "
            f"{record.get('preset')!r}); pass --resume to continue it or choose another --out"
        )
    if record["framework"] != framework:
        raise RunError(
            f"out dir {run_dir} holds a {record['framework']} run; resume it with "
            f"python -m {'jax_vae' if record['framework'] == 'jax' else 'torch_reference'}"
        )
    check_compatible(record["config"], cfg, f"the run in {run_dir}")
    return record


def write_run(run_dir: Path, record: dict[str, Any]) -> None:
    """Create the run folder and write config.json."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(run_dir) / CONFIG_FILE, strict_json(record, indent=2) + "\n")


def _clean(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays become Python ones; non-finite floats become null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _non_finite(record: dict[str, Any]) -> list[str]:
    """Top-level keys whose value is a non-finite float (or numpy scalar)."""
    bad = []
    for k, v in record.items():
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            bad.append(k)
    return bad


def strict_json(record: dict[str, Any], indent: int | None = None) -> str:
    """Strict JSON text (no NaN / Infinity tokens): a non-finite number is written as null and its
    key listed in "non_finite"."""
    bad = _non_finite(record)
    clean = _clean(record) | ({"non_finite": bad} if bad else {})
    return json.dumps(clean, indent=indent, allow_nan=False)


class RecordWriter(Protocol):
    """Where the training loop sends its metric records: MetricsWriter, NoWriter, tensorboard.Tee."""

    def write(self, records: Iterable[dict[str, Any]]) -> None: ...
    def close(self) -> None: ...


class MetricsWriter:
    """Appends metric records to metrics.jsonl, one JSON object per line, flushed per call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        lines = [strict_json(r) + "\n" for r in records]
        if lines:
            try:
                self._file.writelines(lines)
                self._file.flush()
            except OSError as err:
                with contextlib.suppress(OSError):  # the unflushed lines would fail again on close
                    self._file.close()
                raise with_path(err, self.path) from None

    def close(self) -> None:
        self._file.close()


class NoWriter:
    """The metrics writer of a non-primary process (jax.distributed): writes nothing."""

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        pass

    def close(self) -> None:
        pass


def truncate_metrics(path: Path, step: int, mid_epoch: bool = False) -> None:
    """Drop records past `step`: a run resumed from step k rewrites what followed k. With mid_epoch,
    also the epoch record at k (the end of a shorter run, now extended, was not an epoch end)."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by a kill mid-write
            continue
        s = int(record.get("step", 0))
        if s < step or (s == step and not (mid_epoch and record.get("kind") == "epoch")):
            keep.append(line if line.endswith("\n") else line + "\n")
    atomic_write_text(path, "".join(keep))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All records of a run folder's metrics.jsonl (torn trailing lines are skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} holds no {METRICS_FILE}; is it a run folder?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / SUMMARY_FILE, strict_json(summary, indent=2) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json of a finished run, or None when there is none (or it is not a JSON object)."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def step_line(r: dict[str, Any]) -> str:
    """A "step" record as one console line (--verbose): loss terms and latent statistics, 4 digits."""

    def f(key: str) -> str:
        return "n/a" if r.get(key) is None else f"{float(r[key]):.4g}"

    return (
        f"step {r['step']} epoch {r['epoch']}: loss {f('loss')} recon {f('recon')} kl {f('kl')} "
        f"mu {f('mu_mean')} logvar std {f('logvar_std')} mean {f('logvar_mean')}"
    )


def summary_line(s: dict[str, Any]) -> str:
    """One line: what ran, how long, how fast, the final test loss and where the outputs are."""
    test = "n/a" if s.get("test_loss") is None else f"{s['test_loss']:.3f}"
    epochs = s["epochs"]
    line = (
        f"done: {s['framework']} {s['preset']} on {s['dataset']}: {epochs:g} epoch"
        f"{'' if epochs == 1 else 's'} ({s['steps']} steps) in {s['train_s']:.1f} s "
        f"({s['images_per_s']:,.0f} images/s); test loss {test} {s['loss_unit']}"
    )
    line += f"\n  run: {s['run_dir']}  metrics: {s['metrics']}"
    if s.get("images"):
        line += f"  images: {s['image_dir']} ({', '.join(Path(p).name for p in s['images'])})"
    return line
