"""Profile the JAX train step: kernels per step from the compiled HLO, donation, XLA's FLOP count,
memory, and a sweep of XLA_FLAGS (each flag set in a fresh benchmark process).

The program profiled is the one each benchmark mode calls (benchmarks.jax_modes.program: the shipped
jax_vae.step.make_train_step for jax-jit, jax_vae.chunk.make_chunk_fn for jax-scan).
hlo:   python -m benchmarks.investigations.profile_jax hlo --preset pytorch-examples --batch 128 \
           [--mode jax-scan]
flags: python -m benchmarks.investigations.profile_jax flags --preset pytorch-examples --batch-sizes 16,1024 \
           --set default= --set xnnpack=--xla_cpu_use_xnnpack=true
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from typing import Any

# Instructions that move no data or only name buffers: not kernels/thunks.
FREE_OPS = {
    "parameter",
    "tuple",
    "get-tuple-element",
    "bitcast",
    "constant",
    "after-all",
    "partition-id",
    "replica-id",
    "opt-barrier",
}
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*\S.*?\s([a-z][\w\-]*)\(")


def computations(hlo_text: str) -> dict[str, list[str]]:
    """Computation name -> its instruction lines, from an HLO module's text ('ENTRY' keyed as ENTRY)."""
    comps: dict[str, list[str]] = {}
    name: str | None = None
    body: list[str] = []
    for line in hlo_text.splitlines():
        head = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if head and not line.startswith(" "):
            name, body = ("ENTRY" if head.group(1) else head.group(2)), []
        elif line.startswith("}") and name is not None:
            comps[name] = body
            name = None
        elif name is not None and line.strip():
            body.append(line)
    return comps


def op_counts(lines: list[str]) -> collections.Counter[str]:
    """Opcode histogram of a computation's instruction lines (FREE_OPS excluded)."""
    ops: collections.Counter[str] = collections.Counter()
    for line in lines:
        m = _INSTR.match(line)
        if m and m.group(1) not in FREE_OPS:
            ops[m.group(1)] += 1
    return ops


def _callee(pattern: str, line: str) -> str:
    """The computation an instruction line names with `pattern` (condition=, body=, to_apply=)."""
    m = re.search(pattern + r"=%?([\w.\-]+)", line)
    if m is None:
        raise ValueError(f"no {pattern}= in {line[:120]!r}")
    return m.group(1)


def kernel_launches(comps: dict[str, list[str]], name: str = "ENTRY") -> tuple[int, collections.Counter[str]]:
    """(kernels one execution of computation `name` runs, opcode histogram): while bodies count
    known_trip_count times, called computations inline; fused computations count as one kernel."""
    total, hist = 0, collections.Counter[str]()
    for line in comps.get(name, []):
        m = _INSTR.match(line)
        if not m or m.group(1) in FREE_OPS:
            continue
        op = m.group(1)
        if op == "while":
            trips = re.search(r'known_trip_count":\{"n":"(\d+)"', line)
            n = int(trips.group(1)) if trips else 1
            for key in ("condition", "body"):
                k, h = kernel_launches(comps, _callee(key, line))
                total += n * k
                hist.update({o: n * c for o, c in h.items()})
        elif op == "call":
            k, h = kernel_launches(comps, _callee("to_apply", line))
            total, hist = total + k, hist + h
        else:
            total += 1
            hist[op] += 1
    return total, hist


def step_kernels(hlo_text: str, steps: int = 1) -> dict[str, Any]:
    """Kernels (thunks) per train step of a compiled module that runs `steps` steps, and donation."""
    comps = computations(hlo_text)
    total, hist = kernel_launches(comps)
    return {
        "kernels_per_step": total / steps,
        "ops_per_step": {k: v / steps for k, v in hist.most_common()},
        "entry_ops": dict(op_counts(comps.get("ENTRY", []))),
        "donated_outputs": sum(hlo_text.splitlines()[0].count(k) for k in ("may-alias", "must-alias")),
    }


def hlo_report(preset: str, batch: int, mode: str, precision: str = "fp32") -> dict[str, Any]:
    """Compile the mode's program (the step, or a chunk of 8 steps) and report kernels, donation,
    FLOPs and memory."""
    import jax
    import numpy as np

    from benchmarks import flops, jax_modes
    from jax_vae.common.config.presets import get_preset
    from jax_vae.optim import make_optimizer

    jax_modes.set_precision(precision)
    cfg = get_preset(preset)
    tx = make_optimizer(cfg)
    state = jax_modes.initial_state(cfg, tx)
    key = jax.random.key(1)
    fn = jax_modes.program(cfg, mode, precision, tx)
    scan_len = 8 if mode == "jax-scan" else 1
    if mode == "jax-scan":  # chunk(state, data [S*B, D], idx [S, B], key)
        data = np.zeros((scan_len * batch, cfg.input_dim), np.float32)
        args: tuple = (data, np.arange(scan_len * batch, dtype=np.int32).reshape(scan_len, batch), key)
    else:  # step(state, batch [B, D], key)
        args = (np.zeros((batch, cfg.input_dim), np.float32), key)
    compiled = fn.lower(state, *args).compile()
    text = compiled.as_text()
    out = {
        "preset": preset,
        "batch": batch,
        "mode": mode,
        "precision": precision,
        "info": jax_modes.device_info(),
    }
    out.update(step_kernels(text, scan_len))
    out["state_leaves"] = len(jax.tree_util.tree_leaves(state))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost and "flops" in cost and mode == "jax-jit":  # cost_analysis counts a while body once
        out["xla_flops_per_step"] = cost["flops"]
        out["flops_py_per_step"] = flops.train_step_flops(cfg, batch)
    mem = compiled.memory_analysis()
    if mem is not None:
        out["memory"] = {
            k: getattr(mem, k)
            for k in (
                "argument_size_in_bytes",
                "output_size_in_bytes",
                "alias_size_in_bytes",
                "temp_size_in_bytes",
            )
            if hasattr(mem, k)
        }
    fn(state, *args)
    out["donation_effective"] = all(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(state.params))
    return out


def flag_sweep(
    preset: str,
    mode: str,
    batch_sizes: list[int],
    sets: dict[str, str],
    timing: dict[str, Any],
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """images/s per (flag set, batch) for one preset/mode; each flag set in a fresh JAX process,
    the sets interleaved over `rounds` (a busy host then disturbs every set alike)."""
    from benchmarks.throughput import _env, run_process

    rows = []
    for rnd in range(rounds):
        for name, xla_flags in sets.items():
            res = run_process(
                "jax", preset, mode, "fp32", batch_sizes, timing, _env({"XLA_FLAGS": xla_flags}), 3600
            )
            for r in res["records"]:
                rows.append(
                    {
                        "round": rnd,
                        "flags": name,
                        "xla_flags": xla_flags,
                        "batch_size": r["batch_size"],
                        "status": r["status"],
                        "reason": r.get("reason"),
                        "images_per_s": r.get("images_per_s"),
                        "compile_s": r.get("compile_s"),
                    }
                )
    return rows


def sweep_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: per flag set and batch, the median over rounds of the median images/s, and its ratio
    to the first flag set."""
    import statistics

    cell: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            cell[(r["flags"], r["batch_size"])].append(r["images_per_s"]["median"])
    names = list(dict.fromkeys(r["flags"] for r in rows))
    batches = sorted({r["batch_size"] for r in rows})
    lines = ["| flags | " + " | ".join(f"B={b}" for b in batches) + " |", "|---|" + "---|" * len(batches)]
    for n in names:
        row = []
        for b in batches:
            v, base = cell.get((n, b)), cell.get((names[0], b))
            ratio = (
                f" ({statistics.median(v) / statistics.median(base):.2f}x)"
                if v and base and n != names[0]
                else ""
            )
            row.append(f"{statistics.median(v):,.0f}{ratio}" if v else "error")
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hlo")
    h.add_argument("--preset", default="pytorch-examples")
    h.add_argument("--batch", type=int, default=128)
    h.add_argument("--mode", default="jax-jit", choices=["jax-jit", "jax-scan"])
    h.add_argument("--precision", default="fp32")
    f = sub.add_parser("flags")
    f.add_argument("--preset", default="pytorch-examples")
    f.add_argument("--mode", default="jax-scan", choices=["jax-jit", "jax-scan"])
    f.add_argument("--batch-sizes", default="16,1024")
    f.add_argument("--set", action="append", default=[], help="NAME=XLA_FLAGS (repeatable)")
    f.add_argument("--repeats", type=int, default=5)
    f.add_argument("--window-s", type=float, default=0.2)
    f.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    if a.cmd == "hlo":
        out: Any = hlo_report(a.preset, a.batch, a.mode, a.precision)
    else:
        sets = dict(s.split("=", 1) for s in a.set) or {"default": ""}
        timing = {"repeats": a.repeats, "window_s": a.window_s, "warmup_s": a.window_s}
        out = flag_sweep(a.preset, a.mode, [int(b) for b in a.batch_sizes.split(",")], sets, timing, a.rounds)
        print("\n".join(sweep_table(out)), file=sys.stderr)
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
