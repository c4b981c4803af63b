"""Train-step throughput, JAX vs PyTorch, side by side: one command, one JSON, one report.

Each (framework, preset, mode, precision) runs in its own subprocess (benchmarks.jax_modes /
benchmarks.torch_modes) over the batch sizes in ascending order; this driver imports neither
framework. It merges the records, adds FLOPs per step and the roofline fraction, and writes
<out>/results.json, results.md and plots. Without --out it writes to a git-ignored scratch folder,
runs/bench/<grid>-<device>/ (printed); committed results change only when named:
--out benchmarks/results/<device>. The tiny grid is a smoke run and never writes there.
Run: python -m benchmarks.throughput --grid cpu --out benchmarks/results/<device>   (see --help)
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
from pathlib import Path
from typing import Any

from benchmarks import common, flops, host
from jax_vae.common.config.presets import get_preset

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = {"jax": "benchmarks.jax_modes", "torch": "benchmarks.torch_modes"}
COMMITTED = ROOT / "benchmarks" / "results"  # the committed results: written only by an explicit --out
SCRATCH = ROOT / "runs" / "bench"  # git-ignored (/runs/ in .gitignore)
SMOKE_GRIDS = ("tiny",)


def default_out(name: str, device: str) -> Path:
    """Where a run without --out writes: runs/bench/<name>-<device>, never under benchmarks/results."""
    return SCRATCH / f"{name}-{device}"


def is_committed(out: Path) -> bool:
    """Whether `out` is (under) benchmarks/results, the committed results."""
    return Path(out).resolve().is_relative_to(COMMITTED.resolve())


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def probe(framework: str, env: dict[str, str]) -> dict[str, Any]:
    """Device info and mode/precision availability from a fresh framework process."""
    proc = subprocess.run(
        [sys.executable, "-m", SCRIPT[framework], "--probe"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-800:] or f"exit code {proc.returncode}"}
    return json.loads(proc.stdout)


def run_process(
    framework: str,
    preset: str,
    mode: str,
    precision: str,
    batch_sizes: list[int],
    timing: dict[str, Any],
    env: dict[str, str],
    timeout_s: float,
    micro_batch: int = common.MICRO_BATCH,
) -> dict[str, Any]:
    """Run one benchmark subprocess; a crash or timeout becomes error records, never an exception."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [
            sys.executable,
            "-m",
            SCRIPT[framework],
            "--preset",
            preset,
            "--mode",
            mode,
            "--precision",
            precision,
            "--batch-sizes",
            ",".join(map(str, batch_sizes)),
            "--repeats",
            str(timing["repeats"]),
            "--window-s",
            str(timing["window_s"]),
            "--warmup-s",
            str(timing["warmup_s"]),
            "--micro-batch",
            str(micro_batch),
            "--json",
            str(out),
        ]
        t0, busy0, ours0 = time.perf_counter(), host.busy_cpu_seconds(), host.children_cpu_seconds()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout_s)
            sys.stderr.write(proc.stdout)  # progress lines; stdout stays machine-readable
            reason = proc.stderr.strip()[-800:] or f"exit code {proc.returncode}"
            ok = proc.returncode == 0 and out.exists()
        except subprocess.TimeoutExpired:
            ok, reason = False, f"process timed out after {timeout_s:.0f} s"
        wall = time.perf_counter() - t0
        busy1, ours1 = host.busy_cpu_seconds(), host.children_cpu_seconds()
        # CPU the rest of the host used meanwhile, in cores: > ~0.1 means the timings were disturbed.
        foreign = (
            max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall
            if busy0 is not None and busy1 is not None
            else None
        )
        if ok:
            result = json.loads(out.read_text())
            result["process_wall_s"] = wall
            for r in result["records"]:
                r["foreign_cpu_cores"] = foreign
            return result
    base: dict[str, Any] = {"framework": framework, "mode": mode, "preset": preset, "precision": precision}
    errors = [
        base | {"batch_size": b, "status": "error", "reason": reason, "foreign_cpu_cores": foreign}
        for b in batch_sizes
    ]
    return {"records": errors, "process_wall_s": wall}


def device_slug(probes: dict[str, Any]) -> str:
    """'cpu-amd-epyc-2t' or the GPU name slug, from whichever framework reported a device."""
    for fw in ("jax", "torch"):
        info = probes.get(fw, {}).get("info")
        if info and info["platform"] in ("gpu", "cuda"):
            return host.slug(info["device_kind"])
    return f"cpu-{host.slug(host.cpu_model())}-{host.cpu_threads()}t"


def device_peaks(probes: dict[str, Any], precisions: list[str]) -> dict[str, Any]:
    """Peak FLOP/s per precision: GPU datasheet; CPU: the larger of the nominal-clock estimate and a
    measured numpy sgemm (a VM reports its base clock, turbo can beat that estimate)."""
    for fw in ("torch", "jax"):
        info = probes.get(fw, {}).get("info")
        if info and info["platform"] in ("gpu", "cuda"):
            return {p: flops.gpu_peak(info["device_kind"], p) for p in precisions}
    est, meas = flops.cpu_peak(host.cpu_threads()), flops.measure_sgemm()
    use_meas = est["flops"] is None or meas["flops"] > est["flops"]
    ref = meas if use_meas else est
    cpu = {
        "flops": ref["flops"],
        "kind": ref["kind"],
        "source": ref["source"],
        "estimate": est,
        "measured_sgemm": meas,
    }
    return {p: cpu if p == "fp32" else None for p in precisions}


def enrich(rec: dict[str, Any], peaks: dict[str, Any]) -> dict[str, Any]:
    """Add FLOPs per step, achieved FLOP/s and the fraction of the device peak to an ok record."""
    cfg = get_preset(rec["preset"])
    f = flops.train_step_flops(cfg, rec["batch_size"])
    rec["flops_per_step"] = f
    if rec.get("status") != "ok":
        return rec
    achieved = f["total"] * rec["images_per_s"]["median"] / rec["batch_size"]
    rec["achieved_flops"] = achieved
    peak = peaks.get(rec["precision"]) or {}
    if peak.get("flops"):
        rec["roofline_fraction"] = achieved / peak["flops"]
    return rec


def unavailable(pr: dict[str, Any], fw: str, mode: str, precision: str) -> str | None:
    """Why a framework's probe rules out (mode, precision), else None."""
    if "error" in pr:
        return f"{fw} unavailable: {pr['error'][-300:]}"
    avail = pr["availability"]
    return (
        avail["modes"].get(mode)
        or avail["precisions"].get(precision)
        or avail.get("pairs", {}).get(f"{mode}/{precision}")
    )


def batch_skips(
    mode: str,
    batch_sizes: list[int],
    micro_batch: int,
    compile_batch_sizes: list[int] | None,
    batch_norm: bool = False,
) -> dict[int, str]:
    """batch size -> why `mode` skips it: *-mb modes at or below the micro batch (the base mode's
    program) or on a BatchNorm preset, compiled modes outside --compile-batch-sizes."""
    skips = {}
    compiled = compile_batch_sizes if mode in common.COMPILE_MODES else None
    for b in batch_sizes:
        if mode in common.MICRO_MODES and batch_norm:
            skips[b] = "BatchNorm: micro-batches would normalize each chunk on its own (not the same update)"
        elif mode in common.MICRO_MODES and b <= micro_batch:
            skips[b] = f"batch <= micro batch {micro_batch}: the same program as {common.MICRO_MODES[mode]}"
        elif compiled is not None and b not in compiled:
            skips[b] = "not in --compile-batch-sizes (each shape costs a cold compile)"
    return skips


def run_grid(
    presets: list[str],
    batch_sizes: list[int],
    precisions: list[str],
    modes: list[str],
    timing: dict[str, Any],
    out_dir: Path | None = None,
    xla_flags: str | None = None,
    timeout_s: float = 3600.0,
    report: bool = True,
    grid_name: str = "custom",
    write: bool = True,
    compile_batch_sizes: list[int] | None = None,
    micro_batch: int = common.MICRO_BATCH,
    preset_batch_sizes: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Run the grid (a preset in preset_batch_sizes at those batch sizes, the others at batch_sizes);
    if write, save <out_dir or default_out(grid_name, device)>/results.json (+ report)."""
    per_preset = {p: (preset_batch_sizes or {}).get(p, batch_sizes) for p in presets}
    t_start = time.perf_counter()
    host_facts = host.host_info()  # before any work: its load average says how busy the host was
    envs = {"jax": _env({"XLA_FLAGS": xla_flags} if xla_flags is not None else None), "torch": _env()}
    probes = {fw: probe(fw, envs[fw]) for fw in ("jax", "torch")}
    peaks = device_peaks(probes, precisions)
    records, procs = [], []
    for preset in presets:
        sizes_p, cfg = per_preset[preset], get_preset(preset)  # this preset's batch sizes and config
        for precision in precisions:
            for mode in modes:
                fw = common.framework_of(mode)
                reason = unavailable(probes[fw], fw, mode, precision) or common.preset_skip(
                    mode, precision, cfg
                )
                skips = (
                    {b: reason for b in sizes_p}
                    if reason
                    else batch_skips(mode, sizes_p, micro_batch, compile_batch_sizes, cfg.batch_norm)
                )
                cell = {"framework": fw, "mode": mode, "preset": preset, "precision": precision}
                records += [
                    cell | {"batch_size": b, "status": "skipped", "reason": why} for b, why in skips.items()
                ]
                sizes = [b for b in sizes_p if b not in skips]
                if sizes:
                    res = run_process(
                        fw, preset, mode, precision, sizes, timing, envs[fw], timeout_s, micro_batch
                    )
                    records += res["records"]
                    procs.append(
                        cell
                        | {
                            "flags": res.get("flags"),
                            "wall_s": res.get("process_wall_s"),
                            "foreign_cpu_cores": res["records"][0].get("foreign_cpu_cores"),
                        }
                    )
    results: dict[str, Any] = {
        "schema": 1,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.throughput"] + sys.argv[1:]),
        "grid": {
            "name": grid_name,
            "presets": presets,
            "batch_sizes": sorted({b for sizes in per_preset.values() for b in sizes}),
            "preset_batch_sizes": per_preset,
            "precisions": precisions,
            "modes": modes,
            "compile_batch_sizes": compile_batch_sizes,
            "micro_batch": micro_batch,
            **timing,
        },
        "device": device_slug(probes),
        "host": host_facts,
        "frameworks": probes,
        "peaks": peaks,
        "data": f"synthetic U[0,1) float32, an epoch of {common.EPOCH_IMAGES:,} images generated once and "
        "placed on the device before timing; each step gathers its batch as the trainers do, in "
        "plan.epoch_order",
        "processes": procs,
        "records": [enrich(r, peaks) for r in records],
        "wall_s": time.perf_counter() - t_start,
        "load_avg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if write:
        out_dir = out_dir or default_out(grid_name, results["device"])
        results["out_dir"] = str(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
        if report:
            from benchmarks.report import write_report

            write_report(results, out_dir)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", choices=list(common.GRIDS), default="tiny")
    p.add_argument("--presets", help="comma-separated, default: the grid's")
    p.add_argument("--batch-sizes", help="comma-separated, every preset's (default: the grid's)")
    p.add_argument("--precisions", help="comma-separated subset of fp32,tf32,bf16")
    p.add_argument("--modes", help="comma-separated subset of " + ",".join(sum(common.MODES.values(), [])))
    p.add_argument("--compile-batch-sizes", help="run the torch.compile modes only at these batch sizes")
    p.add_argument("--repeats", type=int)
    p.add_argument("--window-s", type=float)
    p.add_argument("--warmup-s", type=float)
    p.add_argument("--micro-batch", type=int, help="chunk size of the *-mb modes (default: the grid's)")
    p.add_argument("--xla-flags", help="XLA_FLAGS for the JAX processes (default: inherited)")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per benchmark process")
    p.add_argument(
        "--out",
        help="output folder (default: the git-ignored runs/bench/<grid>-<device>); committed results: "
        "--out benchmarks/results/<device>",
    )
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args(argv)
    if a.out and a.grid in SMOKE_GRIDS and is_committed(Path(a.out)):
        p.error(f"--grid {a.grid} is a smoke run: it never writes the committed results ({a.out})")
    g = common.GRIDS[a.grid]
    split = lambda s, conv=str: [conv(v) for v in s.split(",") if v]
    presets = split(a.presets) if a.presets else g["presets"]
    for name in presets:
        get_preset(name)
    batch_sizes = split(a.batch_sizes, int) if a.batch_sizes else g["batch_sizes"]
    preset_batch_sizes = None if a.batch_sizes else g.get("preset_batch_sizes")  # --batch-sizes: all
    precisions = split(a.precisions) if a.precisions else g["precisions"]
    modes = split(a.modes) if a.modes else sum(common.MODES.values(), [])
    unknown = set(modes) - set(sum(common.MODES.values(), [])) | set(precisions) - set(common.PRECISIONS)
    if unknown:
        p.error(f"unknown modes/precisions: {sorted(unknown)}")
    timing = {
        "repeats": a.repeats or g["repeats"],
        "window_s": a.window_s or g["window_s"],
        "warmup_s": a.warmup_s if a.warmup_s is not None else g["warmup_s"],
    }
    res = run_grid(
        presets,
        batch_sizes,
        precisions,
        modes,
        timing,
        Path(a.out) if a.out else None,
        a.xla_flags,
        a.timeout_s,
        not a.no_report,
        a.grid,
        compile_batch_sizes=split(a.compile_batch_sizes, int) if a.compile_batch_sizes else None,
        micro_batch=a.micro_batch or g["micro_batch"],
        preset_batch_sizes=preset_batch_sizes,
    )
    where = "committed results" if is_committed(Path(res["out_dir"])) else "scratch, git-ignored"
    print(
        f"wrote {res['out_dir']}/results.json ({where}; {len(res['records'])} records, {res['wall_s']:.0f} s)"
    )


if __name__ == "__main__":
    main()
