"""The framework-free training driver shared by jax_vae.train and torch_reference.train.

It owns everything both frameworks must do identically: the checks before anything is written, the
run folder, the schedule of chunks, the data order, metrics (one schema), checkpoint cadence, the
non-finite stop, the progress bar, images and the summary. A framework supplies a Trainer:
    Trainer(cfg, data, device=, jit=, tick=)      .framework, .versions(), .device_name()
    .init_state()  .restore(ckpts) -> (order, meta)  .save(ckpts, step, order, meta)
    .set_epoch(e)  .compile(num_steps, batch_size) -> seconds  .run_chunk(idx [S, B]) -> {key: [S]}
    .evaluate() -> {test_loss, test_recon, test_kl}  .decode(z)  .reconstruct(x)
"""
from __future__ import annotations

import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from jax_vae.common import plots, runs, plan
from jax_vae.common.config import VAEConfig, to_dict
from jax_vae.common.data import binarize, derive_seed, load_dataset

EVAL_BINARIZATION_SEED = 0     # dynamic presets: the test split binarized once, as jax_vae.common.evaluation does
JIT_MODES = ("scan", "step")


class Interrupted(runs.RunError):
    exit_code = 130


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How a run executes (not what it learns): device, jit mode, checkpoint and log cadence."""

    device: str = "auto"
    jit: str = "scan"              # scan: a chunk of steps per jitted lax.scan; step: one jit call per step
    checkpoint_every: int = 0      # also at every epoch end and at the last step; 0 = only those
    log_every: int = 10            # a "step" record every this many steps
    chunk_steps: int = 0           # cap on steps per scan (0 = a whole epoch, split only by checkpoints)
    progress: bool = True          # tqdm bar on a terminal
    images: bool = True
    data_parallel: bool = False    # JAX: batch split over every device (jax_vae/parallel.py)

    def check(self) -> None:
        if self.jit not in JIT_MODES:
            raise runs.RunError(f"unknown jit mode {self.jit!r}; valid: {', '.join(JIT_MODES)}")
        for name in ("checkpoint_every", "chunk_steps"):
            if getattr(self, name) < 0:
                raise runs.RunError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise runs.RunError(f"log-every must be >= 1, got {self.log_every}")


def loss_unit(cfg: VAEConfig) -> str:
    """Bernoulli presets report nats per image; MSE presets their squared-error objective per image."""
    return "nats/image" if cfg.likelihood.startswith("bce") else f"{cfg.likelihood}+KL per image (not nats)"


def prepare_data(cfg: VAEConfig, data_dir: Any, download: bool) -> dict[str, np.ndarray]:
    """The preset's dataset; a dynamic preset's test split is binarized once with a fixed seed."""
    data = dict(load_dataset(cfg.dataset, data_dir, cfg.binarization, cfg.seed, download))
    if cfg.binarization == "dynamic":
        data["test"] = binarize(data["test"], derive_seed(EVAL_BINARIZATION_SEED, 1))
    return data


def check_data(cfg: VAEConfig, data: dict[str, np.ndarray]) -> int:
    """Shapes and sizes the run needs; returns the number of training images."""
    train, test = data["train"], data["test"]
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise runs.RunError(f"dataset arrays must be [N, D] with one D, got {train.shape} and {test.shape}")
    if train.shape[1] != cfg.input_dim:
        raise runs.RunError(f"preset {cfg.name} expects {cfg.input_dim} pixels per image, {cfg.dataset} "
                            f"images have {train.shape[1]}; pass --set input_dim={train.shape[1]}")
    n = train.shape[0]
    if cfg.batch_size > n:
        raise runs.RunError(f"batch size {cfg.batch_size} is larger than the {n} training images of {cfg.dataset}")
    return n


def _meta(cfg: VAEConfig, chunk: plan.Chunk, sums: dict[str, float], elapsed: float) -> dict[str, Any]:
    return {"preset": cfg.name, "config": to_dict(cfg), "step": chunk.end, "order_epoch": chunk.epoch,
            "epoch_sums": dict(sums), "elapsed_s": elapsed}


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "recon": 0.0, "kl": 0.0, "images": 0, "train_s": 0.0}


def run(trainer_cls: Any, checkpoints_cls: Any, cfg: VAEConfig, run_dir: Path, opts: TrainOptions, *,
        resume: bool = False, data_dir: Any = None, download: bool = True,
        data: dict[str, np.ndarray] | None = None, log: Callable[[str], None] | None = None
        ) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (or continue it with resume) and return the summary dict;
    `log` receives one line once the checks have passed (the CLI prints it)."""
    opts.check()
    run_dir = Path(run_dir)
    framework = trainer_cls.framework
    if opts.data_parallel and framework != "jax":
        raise runs.RunError("data-parallel training is implemented for JAX (python -m jax_vae train --data-parallel)")
    # Under jax.distributed every process runs this loop; process 0 alone writes the run folder
    # (checkpoints are written by all of them together, as orbax requires).
    primary = getattr(trainer_cls, "process_index", lambda: 0)() == 0
    if primary:
        saved = runs.check_run_dir(run_dir, framework, cfg, resume)
    else:
        saved = runs.read_run(run_dir) if resume else None
    data = prepare_data(cfg, data_dir, download) if data is None else data
    n = check_data(cfg, data)
    layout = plan.Layout(n, cfg.batch_size, cfg.drop_last)
    total = plan.total_steps(layout, cfg.epochs, cfg.steps)
    show_bar = opts.progress and sys.stderr.isatty()
    bar: Any = None                          # created once the checks have passed
    tick = (lambda step: bar is not None and bar.update(int(step) - bar.n)) if show_bar else None
    trainer = trainer_cls(cfg, data, device=opts.device, jit=opts.jit, tick=tick,
                          **({"data_parallel": True} if opts.data_parallel else {}))
    ckpts = checkpoints_cls(run_dir / runs.CHECKPOINT_DIR)
    start, order, meta = 0, None, {}
    if saved is not None and ckpts.latest_step() is not None:       # resume: read-only checks first
        runs.check_compatible(ckpts.read_meta()["config"], cfg, f"the checkpoint in {ckpts.directory}")
        order, meta = trainer.restore(ckpts)
        start = int(meta["step"])
        if start > total:
            raise runs.RunError(f"the run in {run_dir} is at step {start}, past the {total} steps asked for")
    else:
        trainer.init_state()
    # ---- nothing was written before this line
    record = runs.run_record(framework, cfg, dataclasses.asdict(opts), {
        **trainer.versions(), "numpy": np.__version__, "python": platform.python_version()})
    if saved is not None:
        record["created"] = saved.get("created", record["created"])
    if primary:
        runs.write_run(run_dir, record)
    if log is not None and primary:
        log(f"{framework}: {'resuming at step ' + str(start) if saved is not None else 'training'} {cfg.name} "
            f"on {cfg.dataset} for {total} steps ({total / layout.steps_per_epoch:g} epochs of "
            f"{layout.steps_per_epoch}, batch {cfg.batch_size}, seed {cfg.seed}) on "
            f"{trainer.device_name()} -> {run_dir}")
    metrics_path = run_dir / runs.METRICS_FILE
    if primary:
        runs.truncate_metrics(metrics_path, start, mid_epoch=start % layout.steps_per_epoch != 0)
    writer = runs.MetricsWriter(metrics_path) if primary else _NoWriter()
    bar = tqdm(total=total, initial=start, unit="step", desc=f"{framework} {cfg.name}", dynamic_ncols=True,
               disable=not (show_bar and primary), leave=True)
    order_epoch = meta.get("order_epoch", -1) if order is not None else -1
    sums = dict(meta.get("epoch_sums", _zero_sums()))
    elapsed0, t_start, trainer_epoch = float(meta.get("elapsed_s", 0.0)), time.perf_counter(), -1
    compile_s = session_s = 0.0
    session_images, last_eval, last_train = 0, {}, None
    step = start
    try:
        for chunk in plan.chunks(layout, start, total, opts.checkpoint_every, opts.chunk_steps):
            if chunk.epoch != order_epoch:
                order, order_epoch, sums = plan.epoch_order(cfg.seed, chunk.epoch, n), chunk.epoch, _zero_sums()
            if chunk.epoch != trainer_epoch:
                trainer.set_epoch(chunk.epoch)
                trainer_epoch = chunk.epoch
            compile_s += trainer.compile(chunk.num_steps, chunk.batch_size)
            t0 = time.perf_counter()
            m = trainer.run_chunk(plan.chunk_indices(order, chunk))       # {key: [S]} numpy
            dt = time.perf_counter() - t0
            ok = np.asarray(m["finite"], bool)
            good = chunk.num_steps if ok.all() else int(np.argmin(ok))
            ips = chunk.num_steps * chunk.batch_size / max(dt, 1e-9)
            writer.write({"kind": "step", "step": chunk.start + i + 1, "epoch": chunk.epoch + 1,
                          "loss": m["loss"][i], "recon": m["recon"][i], "kl": m["kl"][i], "images_per_s": ips}
                         for i in range(good) if (chunk.start + i + 1) % opts.log_every == 0)
            if good < chunk.num_steps:
                last = ckpts.latest_step()
                where = (f"last good checkpoint: step {last} in {ckpts.directory}" if last is not None
                         else "no checkpoint was saved before it")
                raise runs.NonFiniteLossError(
                    f"non-finite loss ({m['loss'][good]}) at step {chunk.start + good + 1} (epoch "
                    f"{chunk.epoch + 1}); training stopped; {where}")
            step = chunk.end
            bs = chunk.batch_size
            for key in ("loss", "recon", "kl"):
                sums[key] += float(np.sum(np.asarray(m[key], np.float64)) * bs)
            sums["images"] += chunk.num_steps * bs
            sums["train_s"] += dt
            session_s += dt
            session_images += chunk.num_steps * bs
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{float(m['loss'][-1]):.3f}", refresh=False)
            if chunk.epoch_end:
                last_eval = trainer.evaluate()
                last_train = sums["loss"] / sums["images"]
                writer.write([{"kind": "epoch", "epoch": chunk.epoch + 1, "step": step, "train_loss": last_train,
                               "recon": sums["recon"] / sums["images"], "kl": sums["kl"] / sums["images"],
                               **last_eval, "images_per_s": sums["images"] / max(sums["train_s"], 1e-9),
                               "train_s": sums["train_s"],
                               "wall_s": elapsed0 + time.perf_counter() - t_start}])
            if chunk.checkpoint:
                trainer.save(ckpts, step, order, _meta(cfg, chunk, sums, elapsed0 + time.perf_counter() - t_start))
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted at step {step}; the last checkpoint is step {ckpts.latest_step()}; "
                          f"continue with --resume --out {run_dir}") from None
    finally:
        writer.close()
        bar.close()
        ckpts.close()
    if not last_eval:                      # resumed a finished run: score it again
        last_eval = trainer.evaluate()
    image_dir = run_dir / runs.IMAGE_DIR
    title = f"{framework} {cfg.name} ({cfg.dataset}), step {step}"
    images = plots.write_images(image_dir, cfg, trainer.decode, trainer.reconstruct, data["test"],
                                runs.read_metrics(run_dir), title) if opts.images and primary else []
    summary = {"framework": framework, "preset": cfg.name, "dataset": cfg.dataset, "run_dir": str(run_dir),
               "device": trainer.device_name(), "steps": step, "epochs": step / layout.steps_per_epoch,
               "resumed_from": start if saved is not None else None, "train_loss": last_train, **last_eval,
               "loss_unit": loss_unit(cfg), "train_s": session_s, "compile_s": compile_s,
               "images_per_s": session_images / max(session_s, 1e-9),
               "wall_s": elapsed0 + time.perf_counter() - t_start,
               "metrics": str(metrics_path), "image_dir": str(image_dir), "images": [str(p) for p in images],
               "checkpoint": str(run_dir / runs.CHECKPOINT_DIR)}
    if primary:
        runs.write_summary(run_dir, summary)
    return summary


class _NoWriter:
    """The metrics writer of a non-primary process: writes nothing."""

    def write(self, records: Any) -> None:
        pass

    def close(self) -> None:
        pass
