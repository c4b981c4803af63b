"""CPU threads of the shipped trainers under a competing load: images/s of `python -m torch_reference
train` and `python -m jax_vae train` with --threads 1 and 2, with 0, 1 or 2 busy-loop processes
running beside them, and for PyTorch with OMP_WAIT_POLICY=PASSIVE against the default.

Each case is one fresh train process (--steps, no images, a temp run folder); its images/s is the
summary's (training only, compile excluded). Repeats are interleaved (every case once, then again) so
slow drift of the host's load spreads over all cases; the table reports medians and the range.
Run: python -m benchmarks.investigations.threads [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"jax": "jax_vae", "torch": "torch_reference"}
BUSY = "while True: pass"


def cases(frameworks: list[str], threads: list[str], loads: list[int]) -> list[dict[str, Any]]:
    """Every (framework, threads, load, wait policy) cell; the wait policy varies for torch only."""
    out = []
    for fw, t, load in itertools.product(frameworks, threads, loads):
        for wait in ["default", "PASSIVE"] if fw == "torch" else ["default"]:
            out.append({"framework": fw, "threads": t, "load": load, "omp_wait": wait})
    return out


def run_case(case: dict[str, Any], preset: str, steps: int, extra: list[str], timeout_s: float) -> dict:
    """One train process beside `load` busy loops: its images/s, or the reason it has none."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("OMP_WAIT_POLICY", None)
    if case["omp_wait"] != "default":
        env["OMP_WAIT_POLICY"] = case["omp_wait"]
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(case["load"])]
    try:
        time.sleep(0.5 if busy else 0.0)  # the loops are running before the trainer starts
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", PACKAGES[case["framework"]], "train", "--preset", preset]
            cmd += ["--steps", str(steps), "--out", f"{tmp}/run", "--threads", case["threads"]]
            cmd += ["--no-progress", "--no-images", *extra]
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout_s
                )
            except subprocess.TimeoutExpired:
                return {"error": f"timed out after {timeout_s:.0f} s", "load_avg_1m": load_before}
            if proc.returncode != 0:
                return {"error": proc.stderr.strip()[-300:], "load_avg_1m": load_before}
            summary = json.loads(Path(f"{tmp}/run/summary.json").read_text())
        return {
            "images_per_s": summary["images_per_s"],
            "train_s": summary["train_s"],
            "device": summary["device"],
            "test_loss": summary["test_loss"],
            "load_avg_1m": load_before,
        }
    finally:
        for p in busy:
            p.kill()
            p.wait()


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per case, the median images/s, its range over the repeats and the loss."""
    lines = [
        "| framework | threads | busy loops | OMP_WAIT_POLICY | images/s (median) | range | n | loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = sorted({(r["framework"], r["threads"], r["load"], r["omp_wait"]) for r in results})
    for fw, t, load, wait in keys:
        rs = [
            r
            for r in results
            if (r["framework"], r["threads"], r["load"], r["omp_wait"]) == (fw, t, load, wait)
        ]
        ips = [r["images_per_s"] for r in rs if "images_per_s" in r]
        losses = {f"{r['test_loss']:.3f}" for r in rs if "test_loss" in r}
        med = f"{statistics.median(ips):,.0f}" if ips else "error"
        rng = f"{min(ips):,.0f} - {max(ips):,.0f}" if ips else "; ".join(r.get("error", "") for r in rs)[:80]
        lines.append(
            f"| {fw} | {t} | {load} | {wait} | {med} | {rng} | {len(ips)} | {', '.join(sorted(losses))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="stutz-rectangles")
    p.add_argument("--dataset", help="the preset's by default")
    p.add_argument("--frameworks", default="torch,jax")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--loads", default="0,1,2", help="busy-loop processes beside the trainer")
    p.add_argument("--torch-steps", type=int, default=200)
    p.add_argument("--jax-steps", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout-s", type=float, default=180.0)
    p.add_argument("--json", help="write every run here")
    a = p.parse_args(argv)
    grid = cases(a.frameworks.split(","), a.threads.split(","), [int(v) for v in a.loads.split(",")])
    extra = ["--dataset", a.dataset] if a.dataset else []
    steps = {"torch": a.torch_steps, "jax": a.jax_steps}
    results = []
    for rep in range(a.repeats):
        for case in grid:
            r = case | {
                "repeat": rep,
                **run_case(case, a.preset, steps[case["framework"]], extra, a.timeout_s),
            }
            print(json.dumps(r), file=sys.stderr, flush=True)
            results.append(r)
    if a.json:
        Path(a.json).write_text(
            json.dumps({"preset": a.preset, "dataset": a.dataset, "runs": results}, indent=1)
        )
    print(f"{a.preset}{' on ' + a.dataset if a.dataset else ''}, {os.cpu_count()} CPUs, {a.repeats} repeats")
    print(table(results))


if __name__ == "__main__":
    main()
