"""`compare`: overlay the curves of run folders (e.g. JAX vs PyTorch) and tabulate their final losses.

Framework-free: it reads config.json and metrics.jsonl only, so it compares runs of either side. Axes
are labelled by the runs' objective and unit (plots.loss_label); runs of different objectives are
flagged in the figure and the table, and get no means.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jax_vae.common.errors import RunError
from jax_vae.common.files import check_writable
from jax_vae.common.reporting import plots
from jax_vae.common.runs import folder as runs

if TYPE_CHECKING:  # matplotlib loads when a figure is made (plots.new_figure)
    from matplotlib.figure import Figure

CompareRun = tuple[str, str, Sequence[dict[str, Any]], Mapping[str, Any]]  # label, framework, records, cfg


def final_epoch(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The last "epoch" record of a run, or None."""
    epochs = [r for r in records if r.get("kind") == "epoch"]
    return epochs[-1] if epochs else None


def check_out(out: Path, force: bool = False) -> Path:
    """--out, checked before anything is read: an extension matplotlib writes, no existing file unless
    `force`, a place it can be written (files.check_writable)."""
    out = Path(out)
    formats = plots.figure_formats()
    if out.suffix[1:].lower() not in formats:
        what = f"extension {out.suffix!r}" if out.suffix else "no extension"
        raise RunError(f"--out {out} has {what}; supported: {', '.join('.' + f for f in formats)}")
    if out.is_dir():
        raise RunError(f"--out {out} is a folder; name a file such as {out / 'compare.png'}")
    if out.exists() and not force:
        raise RunError(f"{out} already exists; choose another --out, or pass --force to overwrite it")
    check_writable(out, "comparison")  # a read-only folder or a parent that is a file, as evaluate/export
    return out


def compare(
    run_dirs: Sequence[Path],
    out: Path,
    labels: Sequence[str] | None = None,
    title: str = "",
    force: bool = False,
) -> str:
    """Write the overlay figure at `out` (atomically; an existing file only with `force`) and return
    a text table (per run, then mean per framework when the runs share an objective)."""
    out = check_out(out, force)
    if labels is not None and len(labels) != len(run_dirs):
        raise RunError(f"--labels has {len(labels)} labels for {len(run_dirs)} runs")
    entries: list[CompareRun] = []
    rows = []
    for i, run_dir in enumerate(run_dirs):
        record = runs.read_run(Path(run_dir))
        if record is None:
            raise RunError(f"{run_dir} is not a run folder (no {runs.CONFIG_FILE})")
        records = runs.read_metrics(Path(run_dir))
        cfg = record["config"]
        label = labels[i] if labels else f"{record['framework']} {record['preset']} seed {cfg.get('seed')}"
        entries.append((label, record["framework"], records, cfg))
        last = final_epoch(records)
        rows.append((label, record["framework"], last))
    if not any(last for _, _, last in rows):
        raise RunError("none of these runs has finished an epoch yet; nothing to compare")
    plots.save_figure(compare_figure(entries, title), out)
    kinds = sorted({plots.loss_label(cfg) for *_, cfg in entries})
    return "\n".join([*table(rows, kinds), f"wrote {out}"])


def table(
    rows: Sequence[tuple[str, str, dict[str, Any] | None]], kinds: Sequence[tuple[str, str]]
) -> list[str]:
    """Lines: the last epoch of each (label, framework, record) row, the test loss's (name, unit), and
    the mean per framework (with their difference for two frameworks) when the runs share one."""
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
    if len(kinds) > 1:
        lines.append(f"{mixed_note(kinds)}: no means")
        by_framework = {}
    else:
        lines.append(f"test loss: {kinds[0][0]}, {kinds[0][1]}")
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
    return lines


def mixed_note(kinds: Sequence[tuple[str, str]]) -> str:
    """The warning for runs of different objectives, naming each (name, unit)."""
    return "runs with different objectives, not on one scale: " + "; ".join(f"{n} ({u})" for n, u in kinds)


def compare_figure(entries: Sequence[CompareRun], title: str = "") -> Figure:
    """Overlay runs: test loss per epoch, smoothed train loss per step, axes labelled by the runs'
    objective and unit; runs of one framework share a colour and differ by line style. Runs of
    different objectives are named so in the title, each legend entry carrying its own."""
    tests = sorted({plots.loss_label(cfg) for *_, cfg in entries})
    trains = {plots.train_loss_label(cfg) for *_, cfg in entries}
    fig = plots.new_figure((10, 3.8))
    a, b = fig.subplots(1, 2)
    styles, seen, curves = ["-", "--", ":", "-."], dict[str, int](), []
    for label, framework, records, cfg in entries:
        color = plots.FRAMEWORK_COLORS.get(framework)
        ls = styles[seen.get(framework, 0) % len(styles)]
        seen[framework] = seen.get(framework, 0) + 1
        label = f"{label} [{', '.join(plots.loss_label(cfg))}]" if len(tests) > 1 else label
        e, v = plots.series(records, "epoch", "epoch", "test_loss")
        if len(e):
            a.plot(e, v, ls, marker="o", ms=3, color=color, label=label)
        s, v = plots.series(records, "step", "step", "loss")
        if len(s):
            curves.append(plots.smooth(v, max(1, len(v) // 50)))
            marker = "o" if len(s) <= plots.FEW_POINTS else None
            b.plot(s, curves[-1], ls, marker=marker, ms=2, color=color, lw=1.0, label=label)
    plots.focus(b, curves)
    if len(tests) > 1:
        a.set(ylabel="test loss per image (see legend)", title="test loss (objectives differ)")
        title = f"{title}\n{mixed_note(tests)}" if title else mixed_note(tests)
    else:
        name, unit = tests[0]
        a.set(ylabel=f"{name} ({unit})", title=f"test loss ({name})")
    train_label = next(iter(trains)) if len(trains) == 1 else "train loss per image (runs differ)"
    a.set(xlabel="epoch")
    plots.integer_ticks(a)
    b.set(xlabel="step", ylabel=train_label, title="training loss (smoothed)")
    return plots.finish(fig, (a, b), title)


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
