"""Per-call dispatch overhead of one train step at small batches: nnx.jit, jax.jit, torch eager.

Microseconds per step call at batch 1-16, where a step's arithmetic is small and the framework's
per-call work shows, for the shipped steps:
  nnx-jit        jax_vae.nnx.step.train_step(model, optimizer, batch, key, cfg): the idiomatic @nnx.jit
                 step on the NNX model and its nnx.Optimizer (graphs walked in Python every call);
  nnx-functional jax_vae.nnx.step.make_functional_step: jax.jit on the split state (step.TrainState),
                 nnx.merge only inside the traced function;
  linen-jit      jax_vae.step.make_train_step (Linen, jax.jit, state donated);
  torch-eager    torch_reference.step.train_step, eager, the torch-eager mode's optimizer options, on
                 the throughput benchmark's threads (every visible core); torch-eager-1t the same on
                 1 thread, what `--threads auto` gives the torch trainer (OpenMP spin-waits collapse
                 beside busy processes: docs/benchmarks.md, CPU threads);
and, to split nnx.jit's overhead: nnx-cached-partial (nnx.cached_partial(nnx_step.train_step, model,
optimizer): Flax's cache of the graph traversal), and no-compute costs in Python: nnx-split
(nnx.split of model and optimizer), nnx-update (nnx.update with that state), jit-identity (a jax.jit
identity on the donated TrainState: pytree flatten plus dispatch, no arithmetic).
Each step runs on one fixed batch [B, D] on the device (no gather), eps from the step's key. Two
syncs: per-call (block_until_ready / .item() on every call's metrics: call latency) and window (one
sync at the end of each window: what a training loop pays per step with JAX's async dispatch).
Timing: common.time_unit (warm-up, median of repeated windows); threads as the throughput processes
(XLA: the visible cores; torch.set_num_threads(host.cpu_threads())); each framework in its own process.
Run: python -m benchmarks.dispatch [--presets P,..] [--batch-sizes 1,2,4,8,16] [--out DIR]
Without --out it writes dispatch.json and dispatch.md to the git-ignored runs/bench/dispatch-<device>/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import common, host
from benchmarks.throughput import ROOT, _env, default_out, is_committed
from jax_vae.common.config.presets import get_preset
from jax_vae.common.training import plan

PRESETS = ["wiseodd"] + common.PRESETS  # the smallest preset (240k parameters), then the CPU grid's
BATCH_SIZES = [1, 2, 4, 8, 16]
STEPS = {
    "jax": ["nnx-jit", "nnx-functional", "linen-jit", "nnx-cached-partial"],
    "torch": ["torch-eager", "torch-eager-1t"],
}
OVERHEADS = ["nnx-split", "nnx-update", "jit-identity"]  # no arithmetic: Python and dispatch only
SYNCS = ("per-call", "window")
Timer = Callable[[Callable[[], Any], Callable[[], None]], dict[str, Any]]


def jax_cells(preset: str, batch: int, timer: Timer) -> list[dict[str, Any]]:
    """Time every JAX step style (both syncs) and the overhead parts at one (preset, batch)."""
    import jax
    from flax import nnx

    from benchmarks import jax_modes
    from jax_vae.nnx import models as nnx_models
    from jax_vae.nnx import step as nnx_step
    from jax_vae.optim import make_optimizer
    from jax_vae.step import make_train_step

    cfg = get_preset(preset)
    tx = make_optimizer(cfg, steps_per_epoch=common.EPOCH_IMAGES // batch)
    x = jax.device_put(common.synthetic_data(batch, cfg.input_dim))  # [B, D]
    key = jax.random.fold_in(jax.random.key(cfg.seed), plan.Stream.EPS)
    init_key = jax.random.fold_in(jax.random.key(cfg.seed), plan.Stream.INIT)
    box: dict[str, Any] = {}

    def objects() -> tuple[Any, Any]:
        model = nnx_models.init_model(init_key, cfg)
        return model, nnx_step.create_optimizer(model, tx)

    def stateful(name: str) -> Callable[[], Any]:
        model, optimizer = objects()
        if name == "nnx-jit":
            return lambda: jax_modes.nnx_train_step(model, optimizer, x, key, cfg)
        cached = nnx.cached_partial(jax_modes.nnx_train_step, model, optimizer)
        return lambda: cached(x, key, cfg=cfg)

    def functional(step: Callable, state: Any) -> Callable[[], Any]:
        box["state"] = state

        def call() -> Any:
            box["state"], metrics = step(box["state"], x, key)
            return metrics

        return call

    graphdef = nnx.graphdef(nnx_models.abstract_model(cfg))
    builders: dict[str, Callable[[], Callable[[], Any]]] = {
        "nnx-jit": lambda: stateful("nnx-jit"),
        "nnx-cached-partial": lambda: stateful("nnx-cached-partial"),
        "nnx-functional": lambda: functional(
            nnx_step.make_functional_step(graphdef, cfg, tx), nnx_step.split(objects()[0], tx)[1]
        ),
        "linen-jit": lambda: functional(make_train_step(cfg, tx), jax_modes.initial_state(cfg, tx)),
    }
    out = []
    for name in STEPS["jax"]:
        call = builders[name]()
        for sync in SYNCS:
            last: dict[str, Any] = {}
            run = (
                (lambda: jax.block_until_ready(call()))
                if sync == "per-call"
                else (lambda: last.update(m=call()))
            )
            out.append({"style": name, "sync": sync} | timer(run, lambda: jax.block_until_ready(last or box)))
    model, optimizer = objects()
    _, nstate = nnx.split((model, optimizer))
    identity = jax.jit(lambda s: s, donate_argnums=0)
    box["ident"] = jax_modes.initial_state(cfg, tx)
    parts: dict[str, Callable[[], Any]] = {
        "nnx-split": lambda: nnx.split((model, optimizer)),
        "nnx-update": lambda: nnx.update((model, optimizer), nstate),
        "jit-identity": lambda: box.update(ident=identity(box["ident"])),
    }
    for name in OVERHEADS:
        out.append({"style": name, "sync": "window"} | timer(parts[name], lambda: jax.block_until_ready(box)))
    return out


def torch_cells(preset: str, batch: int, timer: Timer) -> list[dict[str, Any]]:
    """Time torch_reference.step.train_step eagerly (both syncs and thread counts) at (preset, batch)."""
    import torch

    from benchmarks import torch_modes
    from jax_vae.common.data.datasets import derive_seed
    from torch_reference.nn.models import init_params
    from torch_reference.optim import make_optimizer
    from torch_reference.step import create_state, make_train_step

    cfg = get_preset(preset)
    device = torch_modes._device()
    kw = torch_modes.optimizer_options(cfg, "torch-eager", device)
    opt = make_optimizer(cfg, common.EPOCH_IMAGES // batch, **kw)
    x = torch_modes.put(common.synthetic_data(batch, cfg.input_dim))  # [B, D]
    out, threads = [], torch.get_num_threads()
    for style, sync in [(style, sync) for style in STEPS["torch"] for sync in SYNCS]:
        torch.set_num_threads(1 if style == "torch-eager-1t" else threads)
        state = create_state(init_params(cfg.seed, cfg).to(device), opt)
        step = make_train_step(cfg)
        gen = torch.Generator(device).manual_seed(derive_seed(cfg.seed, plan.Stream.EPS))
        box: dict[str, Any] = {}

        def call() -> None:
            box["m"] = step(state, x, gen)[1]
            if sync == "per-call":
                box["m"].batch_loss.item()

        def window_sync() -> None:
            if box:
                box["m"].batch_loss.item()

        out.append(
            {"style": style, "sync": sync, "threads": torch.get_num_threads()} | timer(call, window_sync)
        )
    torch.set_num_threads(threads)
    return out


def worker(framework: str, presets: list[str], batch_sizes: list[int], timing: dict[str, Any]) -> dict:
    """One framework's records (inside its own process) and its device info."""
    if framework == "jax":
        from benchmarks import jax_modes as side

        side.set_precision("fp32")
        cells = jax_cells
    else:
        from benchmarks import torch_modes as side  # type: ignore[no-redef]

        side.set_precision("fp32")
        cells = torch_cells

    def timer(run: Callable[[], Any], sync: Callable[[], None]) -> dict[str, Any]:
        r = common.time_unit(run, sync, 1, 1, **timing)
        us = {k: (1e3 * v if k != "n" else v) for k, v in r["step_ms"].items()}
        return {"us_per_call": us, "calls_per_window": r["calls_per_window"], "compile_s": r["compile_s"]}

    records = []
    for preset in presets:
        for batch in batch_sizes:
            for rec in cells(preset, batch, timer):
                records.append({"framework": framework, "preset": preset, "batch_size": batch} | rec)
                med = rec["us_per_call"]["median"]
                print(f"{framework} {preset} {batch} {rec['style']} {rec['sync']}: {med:.1f} us", flush=True)
    return {"info": side.device_info(), "records": records}


def run_worker(framework: str, argv: list[str], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """One worker subprocess; its result with wall time and the CPU the rest of the host used (cores)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, "-m", "benchmarks.dispatch", "--worker", framework, "--json", str(out), *argv]
        t0, busy0, ours0 = time.perf_counter(), host.busy_cpu_seconds(), host.children_cpu_seconds()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout_s)
        sys.stderr.write(proc.stdout)
        wall = time.perf_counter() - t0
        busy1, ours1 = host.busy_cpu_seconds(), host.children_cpu_seconds()
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{framework} worker failed: {proc.stderr.strip()[-1500:]}")
        res = json.loads(out.read_text())
    foreign = None
    if busy0 is not None and busy1 is not None:
        foreign = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall
    return res | {"wall_s": wall, "foreign_cpu_cores": foreign}


def measure(
    presets: list[str], batch_sizes: list[int], timing: dict[str, Any], timeout_s: float = 3600.0
) -> dict[str, Any]:
    """Both workers (JAX, then torch) and the run's facts: host, load averages, the command."""
    host_facts = host.host_info()  # load_avg_at_start
    argv = ["--presets", ",".join(presets), "--batch-sizes", ",".join(map(str, batch_sizes))]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in timing.items()]
    parts = {fw: run_worker(fw, argv, _env(), timeout_s) for fw in ("jax", "torch")}
    return {
        "schema": 1,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.dispatch"] + sys.argv[1:]),
        "device": f"cpu-{host.slug(host.cpu_model())}-{host.cpu_threads()}t",
        "settings": {"presets": presets, "batch_sizes": batch_sizes, **timing},
        "host": host_facts,
        "load_avg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "frameworks": {fw: p["info"] for fw, p in parts.items()},
        "processes": {
            fw: {"wall_s": p["wall_s"], "foreign_cpu_cores": p["foreign_cpu_cores"]}
            for fw, p in parts.items()
        },
        "records": parts["jax"]["records"] + parts["torch"]["records"],
    }


def _cell(recs: dict[tuple, dict], style: str, sync: str, b: int) -> str:
    r = recs.get((style, sync, b))
    if r is None:
        return "—"
    u = r["us_per_call"]
    return f"{u['median']:,.0f} [{u['q1']:,.0f}–{u['q3']:,.0f}]"


def markdown(res: dict[str, Any]) -> str:
    """dispatch.md: per preset, us per call by style and batch (median [IQR]), nnx.jit's extra cost."""
    s, h = res["settings"], res["host"]
    lines = [
        f"# Per-call dispatch overhead of a train step on `{res['device']}`",
        "",
        "Generated by `benchmarks/dispatch.py` from `dispatch.json`. Microseconds per step call, median "
        "[IQR] over the timed windows; per-call: every call synced (latency); window: synced once per "
        "window (the per-step cost of a loop with async dispatch). One fixed batch on the device.",
        "",
        f"- {h['cpu_model']}, {h['cpu_threads']} threads visible; "
        + ", ".join(f"{fw} {info.get(fw)}" for fw, info in res["frameworks"].items()),
        f"- repeats {s['repeats']}, window >= {s['window_s']} s, warm-up >= {s['warmup_s']} s",
        f"- 1-min load average: {h['load_avg_at_start'][0]:.2f} before, "
        f"{res['load_avg_at_end'][0]:.2f} after; "
        "CPU used by other processes while timing (cores): "
        + ", ".join(f"{fw} {_fmt(p['foreign_cpu_cores'])}" for fw, p in res["processes"].items()),
        f"- command: `{res['command']}`",
    ]
    for preset in s["presets"]:
        recs = {(r["style"], r["sync"], r["batch_size"]): r for r in res["records"] if r["preset"] == preset}
        cols = [(st, sy) for st in STEPS["jax"] + STEPS["torch"] for sy in SYNCS]
        lines += ["", f"## {preset}", "", "| batch | " + " | ".join(f"{st} ({sy})" for st, sy in cols) + " |"]
        lines.append("|---|" + "---|" * len(cols))
        for b in s["batch_sizes"]:
            lines.append(f"| {b} | " + " | ".join(_cell(recs, st, sy, b) for st, sy in cols) + " |")
        lines += ["", "| batch | nnx-jit − nnx-functional (window) | " + " | ".join(OVERHEADS) + " |"]
        lines.append("|---|---|" + "---|" * len(OVERHEADS))
        for b in s["batch_sizes"]:
            a, f = recs.get(("nnx-jit", "window", b)), recs.get(("nnx-functional", "window", b))
            extra = f"{a['us_per_call']['median'] - f['us_per_call']['median']:,.0f}" if a and f else "—"
            lines.append(
                f"| {b} | {extra} | " + " | ".join(_cell(recs, o, "window", b) for o in OVERHEADS) + " |"
            )
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--window-s", type=float, default=0.1)
    p.add_argument("--warmup-s", type=float, default=0.2)
    p.add_argument("--out", help="output folder (default: the git-ignored runs/bench/dispatch-<device>)")
    p.add_argument("--worker", choices=list(STEPS), help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    presets = [v for v in a.presets.split(",") if v]
    for name in presets:
        get_preset(name)
    batch_sizes = [int(v) for v in a.batch_sizes.split(",") if v]
    timing = {"repeats": a.repeats, "window_s": a.window_s, "warmup_s": a.warmup_s}
    if a.worker:
        Path(a.json).write_text(json.dumps(worker(a.worker, presets, batch_sizes, timing), indent=1))
        return
    res = measure(presets, batch_sizes, timing)
    out = Path(a.out) if a.out else default_out("dispatch", res["device"])
    out.mkdir(parents=True, exist_ok=True)
    res["out_dir"] = str(out)
    (out / "dispatch.json").write_text(json.dumps(res, indent=1))
    (out / "dispatch.md").write_text(markdown(res))
    where = "committed results" if is_committed(out) else "scratch, git-ignored"
    print(f"wrote {out}/dispatch.json and dispatch.md ({where}, {len(res['records'])} records)")


if __name__ == "__main__":
    main()
