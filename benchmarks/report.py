"""Markdown tables and plots from a throughput results.json (matplotlib Agg, no display needed).

Run: python -m benchmarks.report benchmarks/results/<device>/results.json  (rewrites results.md, *.png)
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import MICRO_MODES, MODES, framework_of

ALL_MODES = MODES["jax"] + MODES["torch"]
NNX_PAIRS = (("nnx-jit", "jax-jit"), ("nnx-scan", "jax-scan"))  # each NNX mode beside its Linen twin


def _ok(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok"]


def best_by_batch(records: list[dict[str, Any]], framework: str) -> dict[int, dict[str, Any]]:
    """batch size -> the fastest ok record (median images/s) of `framework`."""
    best: dict[int, dict[str, Any]] = {}
    for r in _ok(records):
        if r["framework"] == framework:
            b = r["batch_size"]
            if b not in best or r["images_per_s"]["median"] > best[b]["images_per_s"]["median"]:
                best[b] = r
    return best


def groups(results: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(preset, precision) -> its records, in grid order."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results["records"]:
        out[(r["preset"], r["precision"])].append(r)
    return out


def _fmt(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def throughput_table(recs: list[dict[str, Any]]) -> list[str]:
    """Images/s median [min-max] per mode and batch, best JAX / best torch ratio, roofline %."""
    modes = [m for m in ALL_MODES if any(r["mode"] == m and r["status"] == "ok" for r in recs)]
    by = {(r["mode"], r["batch_size"]): r for r in recs}
    bj, bt = best_by_batch(recs, "jax"), best_by_batch(recs, "torch")
    head = ["batch"] + modes + ["best JAX / best torch", "best JAX % peak"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in sorted({r["batch_size"] for r in recs}):
        row = [str(b)]
        for m in modes:
            r = by.get((m, b))
            if r and r["status"] == "ok":
                s = r["images_per_s"]
                row.append(f"{_fmt(s['median'])} [{_fmt(s['min'])}–{_fmt(s['max'])}]")
            else:
                row.append(r["status"] if r else "—")
        ratio = (
            bj[b]["images_per_s"]["median"] / bt[b]["images_per_s"]["median"] if b in bj and b in bt else None
        )
        row.append(f"**{ratio:.2f}x** ({bj[b]['mode']} vs {bt[b]['mode']})" if ratio else "—")
        frac = bj[b].get("roofline_fraction") if b in bj else None
        row.append(f"{100 * frac:.1f}%" if frac is not None else "—")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def detail_table(recs: list[dict[str, Any]]) -> list[str]:
    """Step latency, compile time and peak memory per ok record."""
    lines = [
        "| mode | batch | step ms median [IQR] | compile s | peak memory MB (+ over pre-compile) "
        "| GFLOP/s | % peak | other CPU (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(_ok(recs), key=lambda r: (ALL_MODES.index(r["mode"]), r["batch_size"])):
        s = r["step_ms"]
        frac = r.get("roofline_fraction")
        lines.append(
            f"| {r['mode']} | {r['batch_size']} | {s['median']:.3f} [{s['q1']:.3f}–{s['q3']:.3f}] | "
            f"{r['compile_s']:.2f} | {_memory(r)} | "
            f"{r['achieved_flops'] / 1e9:,.1f} | {'—' if frac is None else f'{100 * frac:.1f}%'} | "
            f"{_fmt(r.get('foreign_cpu_cores'), 2)} |"
        )
    return lines


def _memory(r: dict[str, Any]) -> str:
    """'peak MB (+growth over the RSS before compile)'; GPU allocator peaks have no baseline."""
    peak = r["peak_memory_bytes"] / 2**20
    before = r.get("rss_before_bytes")
    return f"{peak:,.0f}" + (f" (+{peak - before / 2**20:,.0f})" if before else "")


def nnx_line(preset: str, precision: str, recs: list[dict[str, Any]]) -> str | None:
    """'nnx-jit / jax-jit: 16: 0.41x, ...; nnx-scan / jax-scan: ...' (median images/s ratios; '~' marks
    the batch sizes where the two modes' [min, max] window ranges overlap: within the spread)."""
    by = {(r["mode"], r["batch_size"]): r["images_per_s"] for r in _ok(recs)}
    parts = []
    for nnx, linen in NNX_PAIRS:
        cells = []
        for b in sorted({b for m, b in by if m == nnx and (linen, b) in by}):
            n, li = by[(nnx, b)], by[(linen, b)]
            overlap = n["min"] <= li["max"] and li["min"] <= n["max"]
            cells.append(f"{b}: {n['median'] / li['median']:.2f}x" + ("~" if overlap else ""))
        if cells:
            parts.append(f"{nnx} / {linen}: " + ", ".join(cells))
    if not parts:
        return None
    return (
        f"- **{preset}, {precision}, Flax NNX vs Linen** — images/s by batch size (~: within the "
        "run-to-run spread, the [min, max] windows overlap): " + "; ".join(parts) + "."
    )


def summary_lines(results: dict[str, Any]) -> list[str]:
    """README-ready: per preset/precision, best-JAX/best-torch ratio per batch, roofline at the largest;
    then the NNX modes against their Linen twins."""
    out = []
    nnx = [line for (p, prec), recs in groups(results).items() if (line := nnx_line(p, prec, recs))]
    for (preset, precision), recs in groups(results).items():
        bj, bt = best_by_batch(recs, "jax"), best_by_batch(recs, "torch")
        common_b = sorted(set(bj) & set(bt))
        if not common_b:
            continue
        ratios = ", ".join(
            f"{b}: {bj[b]['images_per_s']['median'] / bt[b]['images_per_s']['median']:.2f}x" for b in common_b
        )
        out.append(f"- **{preset}, {precision}** — best JAX / best PyTorch images/s by batch size: {ratios}.")
        top = bj[max(bj)]
        peak = results["peaks"].get(precision) or {}
        parts = [f"{top['achieved_flops'] / 1e9:,.1f} GFLOP/s ({top['mode']})"]
        if top.get("roofline_fraction") is not None:
            parts.append(
                f"{100 * top['roofline_fraction']:.1f}% of the roofline peak "
                f"{peak['flops'] / 1e9:,.0f} GFLOP/s ({peak.get('kind', '')})"
            )
        est = (peak.get("estimate") or {}).get("flops")
        if est and est != peak["flops"]:
            parts.append(
                f"{100 * top['achieved_flops'] / est:.1f}% of the nominal-clock estimate "
                f"{est / 1e9:,.0f} GFLOP/s"
            )
        out.append(f"  At batch {max(bj)} the best JAX mode reaches " + ", ".join(parts) + ".")
    return out + nnx


def environment_lines(results: dict[str, Any]) -> list[str]:
    """Device, versions, flags, threads, peaks and grid, as a bullet list."""
    lines = [
        f"- device: `{results['device']}`; host: {results['host']['cpu_model']}, "
        f"{results['host']['cpu_threads']} threads visible; {results['host']['platform']}, "
        f"Python {results['host']['python']}"
    ]
    for fw, pr in results["frameworks"].items():
        info = pr.get("info") or {"error": pr.get("error")}
        lines.append(f"- {fw}: " + ", ".join(f"{k}={v}" for k, v in info.items() if v not in (None, "")))
    flags: dict[tuple[str, str], Any] = {}
    for p in results.get("processes", []):
        flags.setdefault((p["framework"], p["precision"]), p.get("flags"))
    for (fw, prec), f in sorted(flags.items()):
        lines.append(f"- {fw} {prec} flags: `{json.dumps(f)}`")
    for prec, peak in results["peaks"].items():
        if peak:
            line = (
                f"- roofline peak {prec}: {peak['flops'] / 1e9:,.0f} GFLOP/s "
                f"({peak['kind']}: {peak['source']})"
            )
            for k in ("estimate", "measured_sgemm"):
                if peak.get(k) and peak[k].get("flops"):
                    line += (
                        f"; {k.replace('_', ' ')} {peak[k]['flops'] / 1e9:,.0f} GFLOP/s ({peak[k]['source']})"
                    )
            lines.append(line)
    g = results["grid"]
    lines.append(
        f"- grid `{g['name']}`: repeats {g['repeats']}, window >= {g['window_s']} s, warm-up >= "
        f"{g['warmup_s']} s; data: {results['data']}; wall time {results['wall_s'] / 60:.1f} min"
    )
    if g.get("micro_batch") and any(m in g["modes"] for m in MICRO_MODES):
        lines.append(
            "- `*-mb` modes: the base mode with gradient accumulation over chunks of "
            f"{g['micro_batch']} examples (`cfg.micro_batch`: same update, one optimizer step per "
            "batch), run at batch sizes above it"
        )
    lines.append(f"- command: `{results['command']}`")
    foreign = [
        p["foreign_cpu_cores"] for p in results.get("processes", []) if p.get("foreign_cpu_cores") is not None
    ]
    if foreign:
        verdict = " — **disturbed: re-run on a quiet host**" if max(foreign) > 0.1 else " (quiet)"
        lines.append(
            f"- CPU used by other processes while benchmarking: max {max(foreign):.2f} cores, "
            f"median {statistics.median(foreign):.2f}" + verdict
        )
    load = results["host"].get("load_avg_at_start")
    if load and foreign:  # the direct measure above decides; the load average also counts work just ended
        lines.append(
            f"- 1-min load average before the run: {load[0]:.2f} (a decaying average that also "
            "counts work which ended just before, e.g. the previous part of a chained grid)"
        )
    elif load:
        busy = load[0] > 0.5 * results["host"]["cpu_threads"]
        lines.append(
            f"- 1-min load average before the run: {load[0]:.2f}"
            + (" — **the host was busy: CPU numbers are disturbed**" if busy else " (quiet host)")
        )
    return lines


def plot(recs: list[dict[str, Any]], title: str, path: Path) -> None:
    """Two panels: images/s vs batch per mode (log-log), and each mode's ratio to the best torch mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    bt = best_by_batch(recs, "torch")
    for m in ALL_MODES:
        rs = sorted((r for r in _ok(recs) if r["mode"] == m), key=lambda r: r["batch_size"])
        if not rs:
            continue
        style = ":^" if m.startswith("nnx-") else "-o" if framework_of(m) == "jax" else "--s"
        b = [r["batch_size"] for r in rs]
        med = [r["images_per_s"]["median"] for r in rs]
        err = [
            [x - r["images_per_s"]["min"] for x, r in zip(med, rs)],
            [r["images_per_s"]["max"] - x for x, r in zip(med, rs)],
        ]
        ax1.errorbar(b, med, yerr=err, fmt=style, label=m, capsize=2, ms=4)
        rb = [r for r in rs if r["batch_size"] in bt]
        ax2.plot(
            [r["batch_size"] for r in rb],
            [r["images_per_s"]["median"] / bt[r["batch_size"]]["images_per_s"]["median"] for r in rb],
            style,
            label=m,
            ms=4,
        )
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("images / s (median, min-max bars)")
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set_ylabel("images/s relative to the best PyTorch mode")
    ax1.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write results.md and one PNG per (preset, precision) with ok records; returns the md path."""
    out_dir = Path(out_dir)
    md = [
        f"# Train-step throughput: JAX vs PyTorch on `{results['device']}`",
        "",
        "Generated by `benchmarks/report.py` from `results.json`. Images/s are medians over the timed "
        "windows with [min–max]; each framework runs in its own process; compile time is reported "
        "separately (first call minus a steady call).",
        "",
        "## Summary",
        "",
    ]
    md += summary_lines(results) or ["No batch size has both a JAX and a PyTorch result."]
    md += ["", "## Environment", ""] + environment_lines(results)
    for (preset, precision), recs in groups(results).items():
        md += ["", f"## {preset}, {precision}", ""]
        if _ok(recs):
            name = f"throughput_{preset}_{precision}.png"
            try:
                plot(recs, f"{preset}, {precision}, {results['device']}", out_dir / name)
                figure = ["", f"![{preset} {precision}]({name})", ""]
                md += throughput_table(recs) + figure + detail_table(recs)
            except ImportError as e:  # matplotlib missing: tables only
                md += throughput_table(recs) + ["", f"(no plot: {e})", ""] + detail_table(recs)
        notes = sorted({(r["mode"], r["status"], r.get("reason", "")) for r in recs if r["status"] != "ok"})
        md += [""] + [f"- {m}: {s} — {reason}" for m, s, reason in notes]
    path = out_dir / "results.md"
    path.write_text("\n".join(md) + "\n")
    return path


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict from runs on the same device: later records replace earlier ones per key."""
    devices = {p["device"] for p in parts}
    if len(devices) > 1:
        raise ValueError(f"cannot merge results from different devices: {sorted(devices)}")
    out = dict(parts[0])
    recs: dict[tuple, dict[str, Any]] = {}
    for p in parts:
        for r in p["records"]:
            key = (r["framework"], r["mode"], r["preset"], r["precision"], r["batch_size"])
            if r.get("status") == "ok" or key not in recs or recs[key].get("status") != "ok":
                recs[key] = r
    out["records"] = list(recs.values())
    # One roofline for the merged table: each part measured its own sgemm peak; keep the highest
    # (the most demanding reference) per precision and recompute every record's fraction against it.
    precisions = {k for p in parts for k in (p.get("peaks") or {})}
    out["peaks"] = {
        k: max(
            (p["peaks"].get(k) for p in parts if (p.get("peaks") or {}).get(k)),
            key=lambda v: v.get("flops") or 0,
            default=None,
        )
        for k in precisions
    }
    for r in out["records"]:
        peak = (out["peaks"].get(r["precision"]) or {}).get("flops")
        if r.get("achieved_flops") and peak:
            r["roofline_fraction"] = r["achieved_flops"] / peak
    out["processes"] = sum((p.get("processes", []) for p in parts), [])
    out["command"] = " ; ".join(p["command"] for p in parts)
    out["wall_s"] = sum(p["wall_s"] for p in parts)
    out["load_avg_at_end"] = parts[-1].get("load_avg_at_end")
    for k in ("presets", "batch_sizes", "precisions", "modes"):
        out["grid"] = dict(out["grid"], **{k: sorted({v for p in parts for v in p["grid"][k]}, key=str)})
    per_preset = [p["grid"].get("preset_batch_sizes") or {} for p in parts]  # later parts win
    out["grid"]["preset_batch_sizes"] = {k: v for d in per_preset for k, v in d.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="results.json file(s); several are merged (same device)")
    p.add_argument("--out", help="output folder (default: next to the first results.json)")
    a = p.parse_args(argv)
    merged = merge([json.loads(Path(f).read_text()) for f in a.results])
    out = Path(a.out) if a.out else Path(a.results[0]).parent
    out.mkdir(parents=True, exist_ok=True)
    if len(a.results) > 1:
        (out / "results.json").write_text(json.dumps(merged, indent=1))
    print(write_report(merged, out))


if __name__ == "__main__":
    main()
