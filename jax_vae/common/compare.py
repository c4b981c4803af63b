"""`compare`: overlay the curves of run folders (e.g. JAX vs PyTorch) and tabulate their final losses.

Framework-free: it reads config.json and metrics.jsonl only, so it compares runs of either side.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jax_vae.common import plots, runs
from jax_vae.common.errors import RunError


def final_epoch(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The last "epoch" record of a run, or None."""
    epochs = [r for r in records if r.get("kind") == "epoch"]
    return epochs[-1] if epochs else None


def compare(run_dirs: Sequence[Path], out: Path, labels: Sequence[str] | None = None, title: str = "") -> str:
    """Write the overlay PNG at `out` and return a text table (per run, then mean per framework)."""
    if labels is not None and len(labels) != len(run_dirs):
        raise RunError(f"--labels has {len(labels)} labels for {len(run_dirs)} runs")
    entries, rows = [], []
    for i, run_dir in enumerate(run_dirs):
        record = runs.read_run(Path(run_dir))
        if record is None:
            raise RunError(f"{run_dir} is not a run folder (no {runs.CONFIG_FILE})")
        records = runs.read_metrics(Path(run_dir))
        cfg = record["config"]
        label = labels[i] if labels else f"{record['framework']} {record['preset']} seed {cfg.get('seed')}"
        entries.append((label, record["framework"], records))
        last = final_epoch(records)
        rows.append((label, record["framework"], last))
    if not any(last for _, _, last in rows):
        raise RunError("none of these runs has finished an epoch yet; nothing to compare")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.save_compare(out, entries, title)
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'run':<{width}}  epoch  step      test_loss  train_loss  wall_s"]
    by_framework: dict[str, list[float]] = {}
    for label, framework, last in rows:
        if last is None:
            lines.append(f"{label:<{width}}  (no finished epoch)")
            continue
        test = last.get("test_loss")
        lines.append(
            f"{label:<{width}}  {last['epoch']:>5}  {last['step']:>6}  {_fmt(test):>11}  "
            f"{_fmt(last.get('train_loss')):>10}  {_fmt(last.get('wall_s'), 1):>6}"
        )
        if test is not None:
            by_framework.setdefault(framework, []).append(test)
    for framework, values in by_framework.items():
        if len(values) > 1:
            sd = statistics.stdev(values)
            lines.append(
                f"mean {framework}: test loss {statistics.fmean(values):.3f} +- {sd:.3f} "
                f"(sd over {len(values)} runs)"
            )
    if len(by_framework) == 2:
        (fa, va), (fb, vb) = by_framework.items()
        lines.append(f"difference of means ({fa} - {fb}): {statistics.fmean(va) - statistics.fmean(vb):+.3f}")
    lines.append(f"wrote {out}")
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
