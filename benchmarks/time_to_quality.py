"""Time to quality: wall-clock for each framework's fastest mode to reach a fixed test loss.

Same preset and hyperparameters on both sides (default pytorch-examples: 784-400-20, Adam 1e-3,
batch 128) on Fashion-MNIST, the trainers' data order (plan.epoch_order, last partial batch dropped);
each framework trains with its throughput mode's step (benchmarks.jax_modes / torch_modes, the shipped
code) in segments of steps, and after every segment the test negative ELBO per image (nats, one z
sample per image, the same noise each time) is evaluated, `--evals-per-epoch` times per epoch. The
clock counts training only (compile included, synced), evaluation time is reported beside it. Each
framework runs in its own process.
Run: python -m benchmarks.time_to_quality [--data-dir DIR] [--target 250] [--out DIR]
Without --out it writes to the git-ignored runs/bench/time-to-quality-<device>/ (printed); committed
results change only when named: --out benchmarks/results/<device>.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from benchmarks import common
from benchmarks.report import best_by_batch
from benchmarks.throughput import COMMITTED, ROOT, _env, default_out, device_slug, is_committed, probe
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig, apply_overrides

# Test -ELBO per image (nats) on Fashion-MNIST that pytorch-examples passes in about 2 epochs on both
# frameworks (pilot run: see benchmarks/results/<device>/time_to_quality.md for the curves).
DEFAULT_TARGET = 255.0
FALLBACK_MODE = {"jax": "jax-scan", "torch": "torch-compile"}


def fastest_modes(results_path: Path, preset: str, batch: int) -> dict[str, str]:
    """Each framework's fastest fp32 mode at `batch` in a throughput results.json, else the fallback."""
    modes = dict(FALLBACK_MODE)
    if results_path.exists():
        recs = [
            r
            for r in json.loads(results_path.read_text())["records"]
            if r["preset"] == preset and r["precision"] == "fp32"
        ]
        for fw in modes:
            best = best_by_batch(recs, fw)
            if batch in best:
                modes[fw] = best[batch]["mode"]
    return modes


def train_to_target(
    framework: str,
    cfg: VAEConfig,
    data: dict[str, np.ndarray],
    mode: str,
    target: float,
    max_epochs: int,
    segment: int,
) -> dict[str, Any]:
    """Train with `mode` in segments of `segment` steps until the test loss <= target or max_epochs
    (inside the framework's own process); returns the curve and the times."""
    side = cast(common.Side, importlib.import_module(f"benchmarks.{framework}_modes"))
    flags = side.set_precision("fp32")
    n = len(data["train"])
    train, test = side.put(data["train"]), side.put(data["test"])  # [N, D], [M, D]
    run, state, details = side.build_step(cfg, mode, "fp32", cfg.batch_size, n // cfg.batch_size)
    evaluate = side.make_eval(cfg, test)
    curve: list[dict[str, Any]] = []
    reached: dict[str, Any] | None = None
    clock, eval_s, step, t_wall = 0.0, 0.0, 0, time.perf_counter()
    for epoch in range(max_epochs):
        order = common.epoch_rows(cfg.seed, epoch, n, cfg.batch_size)  # [S, B]
        for start in range(0, len(order), segment):
            rows = order[start : start + segment]  # [segment, B]
            t = time.perf_counter()
            state, _ = run(state, train, side.put(rows))
            side.sync(state)
            clock += time.perf_counter() - t
            step += len(rows)
            t = time.perf_counter()
            loss = evaluate(state)
            eval_s += time.perf_counter() - t
            curve.append(
                {
                    "step": step,
                    "epoch": step / len(order),
                    "train_clock_s": clock,
                    "wall_s": time.perf_counter() - t_wall,
                    "test_nelbo": loss,
                }
            )
            if loss <= target:
                reached = curve[-1]
                break
        if reached is not None:
            break
    return {
        "curve": curve,
        "reached": reached is not None,
        "eval_s": eval_s,
        "time_to_target_s": reached["train_clock_s"] if reached else None,
        "wall_to_target_s": reached["wall_s"] if reached else None,
        "steps_to_target": reached["step"] if reached else None,
        "first_segment_s": curve[0]["train_clock_s"] if curve else None,
        "info": side.device_info(),
        "flags": flags,
        "details": details,
    }


def worker(a: argparse.Namespace) -> dict[str, Any]:
    """Run one framework (inside its own process) and return its result."""
    from jax_vae.common.data.datasets import load_dataset

    cfg = apply_overrides(get_preset(a.preset), {"dataset": a.dataset})
    data = load_dataset(a.dataset, a.data_dir, binarization=cfg.binarization, download=False)
    if a.train_limit:
        data = {k: v[: a.train_limit] for k, v in data.items()}
    segment = max(1, len(data["train"]) // cfg.batch_size // a.evals_per_epoch)
    mode = a.jax_mode if a.worker == "jax" else a.torch_mode
    out = train_to_target(a.worker, cfg, data, mode, a.target, a.max_epochs, segment)
    return out | {"framework": a.worker, "mode": mode, "segment_steps": segment}


def markdown(res: dict[str, Any]) -> str:
    """A short table: time to target, steps, eval time, final loss per framework."""
    lines = [
        f"# Time to quality on `{res['device']}`",
        "",
        f"{res['preset']} on {res['dataset']}, batch {res['batch_size']}, target test -ELBO <= "
        f"{res['target']} nats/image, evaluated every {res['runs'][0].get('segment_steps', '?')} steps. "
        "Clock = training only (compile included); evaluation excluded and listed.",
        "",
        "| framework | mode | reached | train clock to target s | wall incl. eval s | steps | "
        "first segment s (incl. compile) | final test -ELBO |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        if "curve" not in r:
            lines.append(f"| {r['framework']} | {r.get('mode')} | error: {r.get('error', '')[:200]} |||||||")
            continue
        f = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"
        lines.append(
            f"| {r['framework']} | {r['mode']} | {r['reached']} | {f(r['time_to_target_s'])} | "
            f"{f(r['wall_to_target_s'])} | {r['steps_to_target'] or '—'} | "
            f"{f(r['first_segment_s'])} | {f(r['curve'][-1]['test_nelbo'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="pytorch-examples")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", help="default: $JAX_VAE_DATA_DIR or the jax_vae cache")
    p.add_argument("--target", type=float, default=DEFAULT_TARGET)
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--evals-per-epoch", type=int, default=4)
    p.add_argument("--jax-mode", default="auto")
    p.add_argument("--torch-mode", default="auto")
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N images (tests)")
    p.add_argument(
        "--out",
        help="folder for time_to_quality.json/.md (default: the git-ignored "
        "runs/bench/time-to-quality-<device>); committed results: --out benchmarks/results/<device>",
    )
    p.add_argument(
        "--results",
        help="throughput results.json whose fastest modes 'auto' picks (default: <out>/results.json, "
        "else benchmarks/results/<device>/results.json; only read)",
    )
    p.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        Path(a.json).write_text(json.dumps(worker(a), indent=1))
        return
    from jax_vae.common.data.datasets import load_dataset
    from jax_vae.common.errors import DataError

    try:
        load_dataset(a.dataset, a.data_dir, download=False)
    except DataError as e:
        print(f"time_to_quality: skipped, {a.dataset} not available offline: {e}")
        return
    device = device_slug({"jax": probe("jax", _env())})
    out = Path(a.out) if a.out else default_out("time-to-quality", device)
    cfg = get_preset(a.preset)
    results = Path(a.results) if a.results else out / "results.json"
    if not a.results and not results.exists():
        results = COMMITTED / device / "results.json"
    auto = fastest_modes(results, a.preset, cfg.batch_size)
    a.jax_mode = auto["jax"] if a.jax_mode == "auto" else a.jax_mode
    a.torch_mode = auto["torch"] if a.torch_mode == "auto" else a.torch_mode
    runs = []
    for fw in ("jax", "torch"):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.time_to_quality",
                "--worker",
                fw,
                "--json",
                f"{tmp}/o.json",
            ]
            for k in (
                "preset",
                "dataset",
                "data_dir",
                "target",
                "max_epochs",
                "evals_per_epoch",
                "jax_mode",
                "torch_mode",
                "train_limit",
            ):
                if getattr(a, k) is not None:
                    cmd += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
            ok = proc.returncode == 0 and Path(f"{tmp}/o.json").exists()
            runs.append(
                json.loads(Path(f"{tmp}/o.json").read_text())
                if ok
                else {"framework": fw, "error": proc.stderr.strip()[-600:]}
            )
        r = runs[-1]
        print(
            f"{fw}: {r.get('mode')} reached={r.get('reached')} time_to_target_s={r.get('time_to_target_s')}"
        )
    res = {
        "device": device,
        "preset": a.preset,
        "dataset": a.dataset,
        "batch_size": cfg.batch_size,
        "target": a.target,
        "max_epochs": a.max_epochs,
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "time_to_quality.json").write_text(json.dumps(res, indent=1))
    (out / "time_to_quality.md").write_text(markdown(res))
    print(markdown(res))
    where = "committed results" if is_committed(out) else "scratch, git-ignored"
    print(f"wrote {out}/time_to_quality.json and .md ({where})")


if __name__ == "__main__":
    main()
