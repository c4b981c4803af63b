"""The one training path of both frameworks: `train(backend, cfg, run_dir, opts)`.

It owns everything both frameworks must do identically: the checks before anything is written, the
run folder, the plan of chunks, the data order, metrics (one schema), checkpoint cadence, the
non-finite stop, the progress bar, images and the summary. A framework supplies a `Trainer`
(jax_vae.common.backends' Protocol) through its `Backend`; the trainer owns its checkpoints.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, SupportsInt

import numpy as np

from jax_vae.common.backends import Backend, Trainer
from jax_vae.common.config.options import TrainOptions
from jax_vae.common.config.vae_config import VAEConfig, to_dict
from jax_vae.common.data.catalog import parse_dataset
from jax_vae.common.data.datasets import default_data_dir
from jax_vae.common.errors import Interrupted, NonFiniteLossError, RunError, one_line
from jax_vae.common.metrics import EpochSums, StepMetrics
from jax_vae.common.reporting import plots, tensorboard
from jax_vae.common.runs import folder as runs
from jax_vae.common.runs.lock import RunLock
from jax_vae.common.training import plan, progress
from jax_vae.common.training.inputs import check_data, fit_to_data, initial_params, loss_unit, prepare_data


@dataclasses.dataclass
class _Run:
    """Where a run starts and what the loop accumulates while it goes."""

    cfg: VAEConfig
    run_dir: Path
    layout: plan.Layout
    total: int
    start: int = 0
    resumed: bool = False
    order: np.ndarray | None = None
    order_epoch: int = -1
    sums: EpochSums = dataclasses.field(default_factory=EpochSums)
    elapsed0: float = 0.0
    t_start: float = dataclasses.field(default_factory=time.perf_counter)
    step: int = 0
    compile_s: float = 0.0
    session_s: float = 0.0
    session_images: int = 0
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
    last_train: float | None = None

    def wall_s(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t_start

    def meta(self, chunk: plan.Chunk) -> dict[str, Any]:
        """What a checkpoint records beside the state: config, position, running epoch sums."""
        return {
            "preset": self.cfg.name,
            "config": to_dict(self.cfg),
            "step": chunk.end,
            "order_epoch": chunk.epoch,
            "epoch_sums": dataclasses.asdict(self.sums),
            "elapsed_s": self.wall_s(),
        }


def train(
    backend: Backend,
    cfg: VAEConfig,
    run_dir: str | Path,
    opts: TrainOptions,
    *,
    data: dict[str, np.ndarray] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (or continue it with opts.resume) with `backend`'s trainer and
    return the summary; `log` receives one line once the checks have passed (the CLI prints it).
    The writing process holds the run folder's lock (jax_vae.common.runs.lock) throughout."""
    opts.check()
    if opts.tensorboard:
        tensorboard.import_tensorboardx()  # missing: one line before anything is written
    run_dir = Path(run_dir)
    if opts.init_from is not None:  # recorded absolute in config.json
        opts = dataclasses.replace(opts, init_from=str(Path(opts.init_from).expanduser().absolute()))
    if opts.data_parallel and not backend.data_parallel:
        raise RunError("data-parallel training is JAX-only (python -m jax_vae train --data-parallel)")
    # Under jax.distributed every process runs this loop; process 0 alone writes the run folder
    # (checkpoints are written by all of them together, as orbax requires).
    primary = backend.process_index() == 0
    if not primary:
        return _train(backend, cfg, run_dir, opts, data, log, primary)
    with RunLock(run_dir, backend.framework, log or _stderr):
        return _train(backend, cfg, run_dir, opts, data, log, primary)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _train(
    backend: Backend,
    cfg: VAEConfig,
    run_dir: Path,
    opts: TrainOptions,
    data: dict[str, np.ndarray] | None,
    log: Callable[[str], None] | None,
    primary: bool,
) -> dict[str, Any]:
    """train() once the run folder is locked (or on a non-writing process)."""
    cfg, data = fit_to_data(cfg, data, opts.download)
    saved = (
        runs.check_run_dir(run_dir, backend.framework, cfg, opts.resume)
        if primary
        else runs.read_run(run_dir)
        if opts.resume
        else None
    )
    data_dir = opts.data_dir if opts.data_dir is not None else runs.recorded_data_dir(saved)
    data = prepare_data(cfg, data_dir, opts.download) if data is None else data
    n = check_data(cfg, data)
    layout = plan.Layout(n, cfg.batch_size, cfg.drop_last)
    run = _Run(cfg, run_dir, layout, plan.total_steps(layout, cfg.epochs, cfg.steps))
    if run.total < 1:
        raise RunError(f"nothing to train: epochs={cfg.epochs}, steps={cfg.steps}; set one of them >= 1")
    show_bar = opts.progress and sys.stderr.isatty() and primary
    bar: progress.Bar | None = None  # created once the checks have passed

    def advance(step: SupportsInt) -> None:  # the bar to the step a compiled chunk reports
        if bar is not None:
            bar.update(int(step) - bar.n)

    tick = advance if show_bar else None
    trainer = backend.trainer(cfg, data, opts, run_dir / runs.CHECKPOINT_DIR, tick)
    try:
        _open(run, trainer, backend, saved, opts)
        finished = runs.read_summary(run_dir) if run.resumed and run.start == run.total else None
        if finished is not None and finished.get("steps") == run.total:
            (log or _stderr)(
                f"{trainer.framework}: the run in {run_dir} is finished ({run.total} steps); nothing to "
                "do (extend it with a larger --epochs or --steps)"
            )
            return finished
        # ---- nothing was written before this line
        _write_record(run, trainer, opts, saved, primary, log, data_dir)
        bar = progress.bar(run.total, run.start, f"{backend.framework} {cfg.name}", show_bar)
        writer: runs.RecordWriter = (
            runs.MetricsWriter(run.run_dir / runs.METRICS_FILE) if primary else runs.NoWriter()
        )
        try:
            if opts.tensorboard and primary:  # the same records, also as TensorBoard events
                draw = partial(plots.canvases, cfg, trainer.decode, trainer.reconstruct, data["test"])
                board = tensorboard.open_board(run.run_dir, run.start, draw if opts.images else None)
                writer = tensorboard.Tee(writer, board)
            _train_chunks(run, trainer, opts, writer, bar, primary)
        finally:
            writer.close()
            bar.close()
    finally:
        trainer.close()
    return _finish(run, trainer, opts, data, primary)


def _open(
    run: _Run, trainer: Trainer, backend: Backend, saved: dict[str, Any] | None, opts: TrainOptions
) -> None:
    """Fresh state (the preset's init or --init-from), or the state, data order and epoch sums of the
    newest intact checkpoint (or of checkpoint opts.resume_step) (read-only). A run folder to resume
    without one is refused."""
    step = opts.resume_step
    if saved is None:
        trainer.init_state(initial_params(backend, run.cfg, opts))
        return
    if trainer.latest_checkpoint() is None:
        raise RunError(
            f"the run in {run.run_dir} has no intact checkpoint in {trainer.checkpoint_dir} to resume "
            "from; delete the folder to start again, or choose another --out"
        )
    where = f"the checkpoint in {trainer.checkpoint_dir}"
    runs.check_compatible(trainer.checkpoint_config(step), run.cfg, where)
    run.order, meta = trainer.restore(step)
    if len(run.order) != run.layout.n:  # e.g. images added to a folder:PATH since
        raise RunError(
            f"{where} is of a dataset of {len(run.order)} training images; {run.cfg.dataset} now has "
            f"{run.layout.n}"
        )
    run.start = run.step = int(meta["step"])
    if run.start > run.total:
        raise RunError(
            f"the run in {run.run_dir} is at step {run.start}, past the {run.total} steps asked for"
        )
    run.resumed, run.order_epoch = True, meta.get("order_epoch", -1)
    run.sums = EpochSums(**meta.get("epoch_sums", {}))
    run.elapsed0 = float(meta.get("elapsed_s", 0.0))


def _write_record(
    run: _Run,
    trainer: Trainer,
    opts: TrainOptions,
    saved: dict[str, Any] | None,
    primary: bool,
    log: Callable[[str], None] | None,
    data_dir: str | None,
) -> None:
    """config.json (with the data folder read), the start line, and the metrics history cut back to
    the resumed step."""
    if not primary:
        return
    record = runs.run_record(
        trainer.framework,
        run.cfg,
        opts.persisted(),
        {**trainer.versions(), "numpy": np.__version__, "python": platform.python_version()},
    )
    if saved is not None:
        record["created"] = saved.get("created", record["created"])
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    reads = parse_dataset(run.cfg.dataset).reads_data_dir
    record["data_dir"] = str(folder.resolve()) if reads else None  # None: generated or a user dataset
    runs.write_run(run.run_dir, record)
    spe, cfg = run.layout.steps_per_epoch, run.cfg
    if log is not None:
        what = f"resuming at step {run.start}" if run.resumed else "training"
        if opts.init_from is not None and not run.resumed:
            what = f"fine-tuning ({opts.source} weights {opts.init_from})"
        log(
            f"{trainer.framework}: {what} {cfg.name} on {cfg.dataset} for {run.total} steps "
            f"({run.total / spe:g} epochs of {spe}, batch {cfg.batch_size}, seed {cfg.seed}) on "
            f"{trainer.device_name()} -> {run.run_dir}"
        )
    # A shorter run's last epoch record (at a step that is not an epoch end) goes when it is extended.
    extended = run.start % spe != 0 and run.start < run.total
    runs.truncate_metrics(run.run_dir / runs.METRICS_FILE, run.start, mid_epoch=extended)


def _train_chunks(
    run: _Run,
    trainer: Trainer,
    opts: TrainOptions,
    writer: runs.RecordWriter,
    bar: progress.Bar,
    primary: bool,
) -> None:
    """Every chunk of the plan: train, log step records, stop on a non-finite loss, epoch records,
    checkpoints."""
    trainer_epoch = -1
    try:
        for chunk in plan.chunks(run.layout, run.start, run.total, opts.checkpoint_every, opts.chunk_steps):
            if chunk.epoch != run.order_epoch:
                run.order, run.order_epoch = (
                    plan.epoch_order(run.cfg.seed, chunk.epoch, run.layout.n),
                    chunk.epoch,
                )
                run.sums = EpochSums()
            if chunk.epoch != trainer_epoch:
                trainer.set_epoch(chunk.epoch)
                trainer_epoch = chunk.epoch
            run.compile_s += trainer.compile(chunk.num_steps, chunk.batch_size)
            assert run.order is not None
            t0 = time.perf_counter()
            m = trainer.run_chunk(plan.chunk_indices(run.order, chunk))  # numpy [S] per field
            dt = time.perf_counter() - t0
            records = progress.step_records(chunk, m, dt, opts.log_every)
            writer.write(records)
            if opts.verbose and primary:
                progress.echo(records)
            _stop_if_not_finite(chunk, m, trainer)
            run.step = chunk.end
            run.sums.add(m, chunk.batch_size, dt)
            run.session_s += dt
            run.session_images += chunk.num_steps * chunk.batch_size
            bar.update(run.step - bar.n)
            bar.set_postfix(progress.postfix(m), refresh=False)
            if chunk.epoch_end:
                run.last_eval = trainer.evaluate()
                run.last_train = run.sums.loss / run.sums.images
                writer.write([run.sums.record(chunk.epoch + 1, run.step, run.last_eval, run.wall_s())])
            if chunk.checkpoint:
                trainer.save(run.step, run.order, run.meta(chunk))
    except OSError as err:  # a full disk, a folder gone read-only: one line, the last checkpoint kept
        raise RunError(
            f"{one_line(err)}; training stopped at step {run.step}; the last checkpoint is step "
            f"{trainer.latest_checkpoint()}; fix that and continue with --resume --out {run.run_dir}"
        ) from None
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted at step {run.step}; the last checkpoint is step "
            f"{trainer.latest_checkpoint()}; continue with --resume --out {run.run_dir}"
        ) from None


def _stop_if_not_finite(chunk: plan.Chunk, m: StepMetrics[np.ndarray], trainer: Trainer) -> None:
    ok = np.asarray(m.finite, bool)
    if ok.all():
        return
    good = int(np.argmin(ok))
    last = trainer.latest_checkpoint()
    where = (
        f"last good checkpoint: step {last} in {trainer.checkpoint_dir}"
        if last is not None
        else "no checkpoint was saved before it"
    )
    raise NonFiniteLossError(
        f"non-finite loss ({m.loss[good]}) at step {chunk.start + good + 1} (epoch "
        f"{chunk.epoch + 1}); training stopped; {where}"
    )


def _finish(
    run: _Run, trainer: Trainer, opts: TrainOptions, data: dict[str, np.ndarray], primary: bool
) -> dict[str, Any]:
    """Images, summary.json and the summary dict."""
    if not run.last_eval:  # resumed a finished run that has no summary: score it again
        run.last_eval = trainer.evaluate()
        has_metrics = (run.run_dir / runs.METRICS_FILE).is_file()
        records = runs.read_metrics(run.run_dir) if has_metrics else []
        ends = [r for r in records if r.get("kind") == "epoch" and r["step"] == run.step]
        run.last_train = ends[-1].get("train_loss") if ends else None
    cfg, framework, spe = run.cfg, trainer.framework, run.layout.steps_per_epoch
    image_dir = run.run_dir / runs.IMAGE_DIR
    title = f"{framework} {cfg.name} ({cfg.dataset}), step {run.step}"
    images = (
        plots.write_images(
            image_dir,
            cfg,
            trainer.decode,
            trainer.reconstruct,
            data["test"],
            runs.read_metrics(run.run_dir),
            title,
        )
        if opts.images and primary
        else []
    )
    summary = {
        "framework": framework,
        "preset": cfg.name,
        "dataset": cfg.dataset,
        "run_dir": str(run.run_dir),
        "device": trainer.device_name(),
        "steps": run.step,
        "epochs": run.step / spe,
        "resumed_from": run.start if run.resumed else None,
        "train_loss": run.last_train,
        **run.last_eval,
        "loss_unit": loss_unit(cfg),
        "train_s": run.session_s,
        "compile_s": run.compile_s,
        "images_per_s": run.session_images / max(run.session_s, 1e-9),
        "wall_s": run.wall_s(),
        "metrics": str(run.run_dir / runs.METRICS_FILE),
        "image_dir": str(image_dir),
        "images": [str(p) for p in images],
        "checkpoint": str(run.run_dir / runs.CHECKPOINT_DIR),
    }
    if primary:
        runs.write_summary(run.run_dir, summary)
    return summary
