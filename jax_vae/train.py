"""JAX training: the dataset lives on the device and a chunk of steps is one jitted lax.scan.

Mirror of torch_reference/train.py; the run loop itself is framework-free (jax_vae/loop.py).
Keys: root = PRNGKey(seed); init, eps, eval and binarize keys are fold_in(root, 0..3); step t draws
eps from fold_in(eps_key, t) and epoch e binarizes (dynamic presets) with fold_in(binarize_key, e),
so a run resumed from (step, params, opt_state) replays the uninterrupted run bit for bit.
data_parallel=True: one mesh over every device (all processes under jax.distributed, see
jax_vae/parallel.py); data, state and keys are replicated, each step's batch is split on 'data'.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from jax_vae import parallel
from jax_vae.common import loop, plan
from jax_vae.checkpoint import Checkpoints
from jax_vae.common.config import VAEConfig
from jax_vae.losses import loss_fn
from jax_vae.models import VAE, init_params, sample_eps
from jax_vae.optim import make_optimizer
from jax_vae.common.runs import RunError
from jax_vae.step import TrainState, create_state, make_train_step

Array = jax.Array
EVAL_BATCH = 1000
TICK_EVERY = 10       # progress callback period inside a scan, in steps


def resolve_device(name: str) -> jax.Device:
    """'auto' (JAX's default), 'cpu', or 'gpu'/'cuda' -> a jax.Device; a one-line error if absent."""
    platform = {"auto": None, "cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}.get(name)
    if name not in ("auto", "cpu", "gpu", "cuda"):
        raise RunError(f"unknown device {name!r}; valid: auto, cpu, gpu, cuda")
    try:                                  # local: under jax.distributed, jax.devices()[0] is process 0's
        return jax.local_devices(backend=platform)[0] if platform else jax.local_devices()[0]
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise RunError(f"device {name!r} is not available to JAX (available: {', '.join(have)})") from None


def make_chunk_fn(cfg: VAEConfig, tx: optax.GradientTransformation,
                  tick: Callable[[Array], None] | None = None, mesh: parallel.Mesh | None = None) -> Callable:
    """chunk(state, data [N, D], idx [S, B], eps_key) -> (state, metrics [S]): lax.scan of the train step
    over batches gathered on device; step t uses fold_in(eps_key, t). State is donated.
    With a mesh: inputs and outputs replicated, each gathered batch split over the mesh's 'data' axis."""
    train_step = make_train_step(cfg, tx, jit=False)

    def chunk(state: TrainState, data: Array, idx: Array, eps_key: Array):
        def body(state: TrainState, rows: Array):
            batch = data[rows]                                                  # [B, D]
            if mesh is not None:
                batch = jax.lax.with_sharding_constraint(batch, parallel.batch_sharded(mesh))
            state, metrics = train_step(state, batch, jax.random.fold_in(eps_key, state.step))
            if tick is not None:
                jax.lax.cond(state.step % TICK_EVERY == 0,
                             lambda s: jax.debug.callback(tick, s), lambda s: None, state.step)
            return state, metrics
        return jax.lax.scan(body, state, idx)

    if mesh is None:
        return jax.jit(chunk, donate_argnums=0)
    repl = parallel.replicated(mesh)
    return jax.jit(chunk, in_shardings=(repl,) * 4, out_shardings=(repl, repl), donate_argnums=0)


def program_config(cfg: VAEConfig) -> VAEConfig:
    """The config fields that shape the compiled programs: the seed (keys are arguments) and the run
    length (host-side) are zeroed, so runs differing only in those share compilations."""
    return dataclasses.replace(cfg, seed=0, epochs=0, steps=0)


@dataclasses.dataclass
class Programs:
    """The jitted functions of one (program config, steps per epoch), built once per process."""

    tx: optax.GradientTransformation
    chunk: Callable
    step: Callable
    init: Callable
    eval: Callable
    decode: Callable
    encode: Callable
    compiled: dict = dataclasses.field(default_factory=dict)    # AOT chunks: (S, B, N, device) -> exe


@functools.lru_cache(maxsize=None)
def programs(pcfg: VAEConfig, steps_per_epoch: int) -> Programs:
    """Compiled programs are cached per process: repeated runs (seeds, tests, resumes) reuse them."""
    tx = make_optimizer(pcfg, steps_per_epoch=steps_per_epoch)
    model = VAE(pcfg)
    return Programs(
        tx=tx, chunk=make_chunk_fn(pcfg, tx), step=make_train_step(pcfg, tx, jit=True),
        init=jax.jit(lambda key: create_state(init_params(key, pcfg), tx)),
        eval=jax.jit(functools.partial(_eval_sums, cfg=pcfg)),
        decode=jax.jit(lambda params, z: model.apply({"params": params}, z, method=VAE.decode)),
        encode=jax.jit(lambda params, x: model.apply({"params": params}, x, method=VAE.encode)))


class Trainer:
    """JAX backend of jax_vae.common.loop: owns the device data, the TrainState and the compiled chunks."""

    framework = "jax"

    def __init__(self, cfg: VAEConfig, data: dict[str, np.ndarray], *, device: str = "auto",
                 jit: str = "scan", tick: Callable[[Any], None] | None = None,
                 data_parallel: bool = False) -> None:
        self.cfg, self.jit, self.device = cfg, jit, resolve_device(device)
        layout = plan.Layout(len(data["train"]), cfg.batch_size, cfg.drop_last)
        self.mesh = _data_parallel_mesh(self.device, layout) if data_parallel else None
        self.p = programs(program_config(cfg), layout.steps_per_epoch)
        self.tx = self.p.tx
        if tick is not None or self.mesh is not None:   # a progress callback or a mesh: programs of their own
            self.p = dataclasses.replace(
                self.p, chunk=make_chunk_fn(program_config(cfg), self.tx, tick, self.mesh), compiled={})
        root = jax.random.PRNGKey(cfg.seed)
        self.init_key, self.eps_key, self.eval_key, self.bin_key = (
            jax.random.fold_in(root, i) for i in range(4))
        if self.mesh is not None:                # checkpointed: a global (replicated) array under jax.distributed
            self.eps_key = self._put(self.eps_key)
        self.train_grey = self._put(np.asarray(data["train"], np.float32))    # [N, D]
        self.train_x = self.train_grey
        self.test_x = self._put(np.asarray(data["test"], np.float32))         # [M, D]
        self.state: TrainState | None = None
        self._gather = jax.jit(lambda data, rows: data[rows])
        if self.mesh is not None:                # --jit step: the batch split over the mesh as well
            self.p = dataclasses.replace(self.p, step=parallel.make_parallel_train_step(
                program_config(cfg), self.tx, self.mesh))
            self._gather = jax.jit(lambda data, rows: data[rows], out_shardings=parallel.batch_sharded(self.mesh))
        self._eval, self._decode, self._encode = self.p.eval, self.p.decode, self.p.encode

    def versions(self) -> dict[str, str]:
        return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                "orbax-checkpoint": getattr(ocp, "__version__", "?")}

    def device_name(self) -> str:
        if self.mesh is not None:
            return (f"{self.mesh.size} x {self.device.platform} ({self.device.device_kind}) in "
                    f"{jax.process_count()} process(es), data-parallel")
        return f"{self.device.platform}:{self.device.id} ({self.device.device_kind})"

    @staticmethod
    def process_index() -> int:
        """0 on the process that writes the run folder (the only one without jax.distributed)."""
        return jax.process_index()

    def _put(self, tree: Any) -> Any:
        """Onto the run's device, or replicated over the data-parallel mesh."""
        return jax.device_put(tree, self.device) if self.mesh is None else parallel.replicate(tree, self.mesh)

    def init_state(self) -> None:
        self.state = self._template()

    def _template(self) -> TrainState:
        """Step-0 state on the device, every leaf its own buffer (the scan donates the state, and an
        optimizer may init two moments as one shared zeros tree)."""
        state = self.p.init(jax.device_put(self.init_key, self.device))       # jitted: distinct buffers
        return state if self.mesh is None else self._put(state)

    def restore(self, ckpts: Checkpoints) -> tuple[np.ndarray, dict[str, Any]]:
        state, order, eps_key, meta = ckpts.restore(self._template(), len(self.train_grey), self.eps_key)
        self.state = self._put(state)
        self.eps_key = self._put(eps_key)
        return order, meta

    def save(self, ckpts: Checkpoints, step: int, order: np.ndarray, meta: dict[str, Any]) -> None:
        ckpts.save(step, self.state, order, self.eps_key, meta)

    def set_epoch(self, epoch: int) -> None:
        """Dynamic binarization: a fresh Bernoulli draw of the grey training set for epoch `epoch`."""
        if self.cfg.binarization == "dynamic":
            key = jax.random.fold_in(self.bin_key, epoch)
            self.train_x = jax.random.bernoulli(key, self.train_grey).astype(jnp.float32)

    def compile(self, num_steps: int, batch_size: int) -> float:
        """Ahead-of-time compile of the scan for this chunk shape; returns the seconds it took."""
        key = (num_steps, batch_size, self.train_x.shape, self.device)
        if self.jit != "scan" or key in self.p.compiled:
            return 0.0
        t0 = time.perf_counter()
        idx = jax.ShapeDtypeStruct((num_steps, batch_size), jnp.int32)
        self.p.compiled[key] = self.p.chunk.lower(self.state, self.train_x, idx, self.eps_key).compile()
        return time.perf_counter() - t0

    def run_chunk(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Train on batches idx [S, B] (scan or per-step jit); per-step metrics as numpy [S]."""
        rows = self._put(idx)
        if self.jit == "scan":
            exe = self.p.compiled[(*idx.shape, self.train_x.shape, self.device)]
            self.state, metrics = exe(self.state, self.train_x, rows, self.eps_key)
        else:
            out = []
            for s in range(idx.shape[0]):
                key = jax.random.fold_in(self.eps_key, self.state.step)
                self.state, m = self.p.step(self.state, self._gather(self.train_x, rows[s]), key)
                out.append(m)
            metrics = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *out)
        metrics = parallel.to_host(metrics)
        return {"loss": metrics["objective"], "recon": metrics["recon"], "kl": metrics["kl"],
                "finite": metrics["finite"] & np.isfinite(metrics["objective"])}

    def evaluate(self) -> dict[str, float]:
        """Test-set -ELBO per image (beta = 1), fixed eval key; z = mean for eval_use_mean presets."""
        total = np.zeros(3)
        m = self.test_x.shape[0]
        for i, lo in enumerate(range(0, m, EVAL_BATCH)):
            x = self.test_x[lo:lo + EVAL_BATCH]
            sums = self._eval(self.state.params, x, jax.random.fold_in(self.eval_key, i))
            total += np.asarray(parallel.to_host(sums), np.float64)
        return {"test_loss": total[0] / m, "test_recon": total[1] / m, "test_kl": total[2] / m}

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Decoder outputs for codes z [N, Z] -> [N, D]."""
        z = jax.device_put(np.asarray(z, np.float32), self.device)
        return np.asarray(self._decode(self._local_params(), z))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoder outputs at z = mean of q(z|x): [N, D] -> [N, D]."""
        mean, _ = self._encode(self._local_params(), jax.device_put(np.asarray(x, np.float32), self.device))
        return self.decode(np.asarray(mean))

    def _local_params(self) -> dict:
        """Params on this process's device: images are drawn by process 0 alone, so no collective."""
        if self.mesh is None:
            return self.state.params
        return jax.device_put(parallel.to_host(self.state.params), self.device)

    def params_numpy(self) -> dict:
        return parallel.to_host(self.state.params)


def _eval_sums(params: dict, x: Array, key: Array, cfg: VAEConfig) -> Array:
    """[sum of -ELBO, sum of recon, sum of KL] over the batch x [B, D]."""
    eps = sample_eps(key, cfg, x.shape[0], dtype=x.dtype)                       # [L, B, Z]
    if cfg.eval_use_mean:
        eps = jnp.zeros_like(eps)
    _, aux = loss_fn(params, x, eps, cfg, beta=1.0)
    return jnp.stack([aux["per_example"].sum(), aux["recon"].sum(), aux["kl"].sum()])


def _data_parallel_mesh(device: jax.Device, layout: plan.Layout) -> parallel.Mesh:
    """Mesh over every device of `device`'s platform (all processes); batches must split evenly."""
    mesh = parallel.make_mesh(jax.devices(device.platform))
    if layout.batch_size % mesh.size:
        raise RunError(f"data-parallel over {mesh.size} devices: batch size {layout.batch_size} does not split "
                       f"evenly; use a multiple of {mesh.size}")
    if layout.last_batch_size % mesh.size:
        raise RunError(f"data-parallel over {mesh.size} devices: the last batch of each epoch has "
                       f"{layout.last_batch_size} images; pass --set drop_last=true or another batch size")
    return mesh


def train(cfg: VAEConfig, run_dir: str | Path, *, data_dir: str | Path | None = None, device: str = "auto",
          jit: str = "scan", checkpoint_every: int = 0, log_every: int = 10, chunk_steps: int = 0,
          resume: bool = False, progress: bool = True, images: bool = True, download: bool = True,
          data: dict[str, np.ndarray] | None = None, log: Callable[[str], None] | None = None,
          data_parallel: bool = False) -> dict[str, Any]:
    """Train `cfg` (seed = cfg.seed) into `run_dir`; returns the summary (see jax_vae.common.loop.run)."""
    opts = loop.TrainOptions(device=device, jit=jit, checkpoint_every=checkpoint_every, log_every=log_every,
                             chunk_steps=chunk_steps, progress=progress, images=images,
                             data_parallel=data_parallel)
    return loop.run(Trainer, Checkpoints, cfg, Path(run_dir), opts, resume=resume, data_dir=data_dir,
                    download=download, data=data, log=log)
