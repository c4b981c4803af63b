"""JAX training: the dataset lives on the device and a chunk of steps is one jitted lax.scan.

Mirror of torch_reference/trainer.py; the run loop itself is framework-free (jax_vae/common/training/loop.py).
Keys: root = jax.random.key(seed); the init, eps, eval and binarize keys are fold_in(root, stream)
for the plan.Stream numbers; step t draws eps from fold_in(eps_key, t) (inside step.train_step) and
epoch e binarizes (dynamic presets) with fold_in(binarize_key, e), so a run resumed from (step,
params, opt_state) replays the uninterrupted run bit for bit.
data_parallel: one mesh over every device (all processes under jax.distributed, see
jax_vae/parallel.py); data, state and keys are replicated, each step's batch is split on 'data'.
api="nnx": the same programs built on the Flax NNX model (nnx_models.VAE) in the functional style:
its graphdef is split once per program key and nnx.merge(graphdef, params) runs inside the traced
functions only (the loss through step.py's apply_loss, evaluation, decode, encode). The state, and
so the checkpoints, is the same TrainState of the Linen params tree, which is the NNX state as a
pure dict; the lowered programs are Linen's, so both APIs train to the same bits.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from jax_vae import parallel
from jax_vae.checkpoint import Checkpoints
from jax_vae.chunk import Progress, make_chunk_fn
from jax_vae.common.config.options import Api, Tick, TrainOptions
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.errors import RunError
from jax_vae.common.metrics import StepMetrics
from jax_vae.common.training import plan
from jax_vae.functional import sample_eps
from jax_vae.linen.models import VAE, init_variables, split_weights, variables, weights
from jax_vae.losses import loss_fn
from jax_vae.nnx import models as nnx_models
from jax_vae.nnx.step import make_functional_step
from jax_vae.optim import make_optimizer
from jax_vae.step import LossFn, TrainState, create_state, make_train_step

Array = jax.Array
EVAL_BATCH = 1000


def resolve_device(name: str) -> jax.Device:
    """'auto' (JAX's default), 'cpu', or 'gpu'/'cuda' -> a jax.Device; a one-line error if absent."""
    platform = {"auto": None, "cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}.get(name)
    if name not in ("auto", "cpu", "gpu", "cuda"):
        raise RunError(f"unknown device {name!r}; valid: auto, cpu, gpu, cuda")
    try:  # local: under jax.distributed, jax.devices()[0] is process 0's
        return jax.local_devices(backend=platform)[0] if platform else jax.local_devices()[0]
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise RunError(f"device {name!r} is not available to JAX (available: {', '.join(have)})") from None


def process_index() -> int:
    """0 on the process that writes the run folder (the only one without jax.distributed)."""
    return jax.process_index()


def device_name(device: jax.Device) -> str:
    return f"{device.platform}:{device.id} ({device.device_kind})"


def program_config(cfg: VAEConfig) -> VAEConfig:
    """The config fields that shape the compiled programs: the seed (keys are arguments), the run
    length (host-side) and the dataset's name and split (the data are arguments; its size is in
    input_dim and the layout) are reset, so runs differing only in those share compilations."""
    return dataclasses.replace(cfg, seed=0, epochs=0, steps=0, dataset="mnist", test_fraction=0.5)


@dataclasses.dataclass
class Programs:
    """The jitted functions of one program key, built once per process."""

    tx: optax.GradientTransformation
    chunk: Any  # a jax.jit-wrapped function (it has .lower)
    step: Callable
    init: Callable
    eval: Callable
    decode: Callable
    encode: Callable
    compiled: dict = dataclasses.field(default_factory=dict)  # AOT chunks: (S, B, N, device) -> exe
    progress: Progress | None = None  # where the chunk's ticks go (programs built with a tick)


# (program config, steps per epoch, tick, mesh, api)
ProgramKey = tuple[VAEConfig, int, bool, Any, Api]
PROGRAMS: dict[ProgramKey, Programs] = {}  # the one program cache: runs (seeds, tests, resumes) reuse it


def programs(key: ProgramKey) -> Programs:
    """The Programs of (program config, steps per epoch, progress tick, data-parallel mesh or None,
    model API): one builder for both APIs, which differ only in the model the functions apply."""
    if key not in PROGRAMS:
        pcfg, steps_per_epoch, tick, mesh, api = key
        tx = make_optimizer(pcfg, steps_per_epoch=steps_per_epoch)
        graphdef = nnx.graphdef(nnx_models.abstract_model(pcfg)) if api == "nnx" else None
        init, apply_loss, decode, encode = _model_fns(pcfg, graphdef)
        if mesh is not None:
            step = parallel.make_parallel_train_step(pcfg, tx, mesh, apply_loss)
        elif graphdef is not None:
            step = make_functional_step(graphdef, pcfg, tx)
        else:
            step = make_train_step(pcfg, tx)
        progress = Progress() if tick else None
        PROGRAMS[key] = Programs(
            tx=tx,
            progress=progress,
            chunk=make_chunk_fn(pcfg, tx, progress, mesh, apply_loss),
            step=step,
            init=jax.jit(lambda key: _fresh_state(init(key), tx)),
            eval=jax.jit(functools.partial(_eval_sums, cfg=pcfg, apply_loss=apply_loss)),
            decode=jax.jit(decode),
            encode=jax.jit(encode),
        )
    return PROGRAMS[key]


def _model_fns(cfg: VAEConfig, graphdef: nnx.GraphDef | None) -> tuple[Callable, LossFn, Callable, Callable]:
    """(init(key) -> variables, loss(params, x, eps, cfg, beta, batch_stats, train), decode(weights,
    z), encode(weights, x)) of the Linen model, or with the NNX model's graphdef of the NNX model
    (nnx.merge inside each); `weights` are models.weights (params, or params and running statistics)."""
    if graphdef is not None:
        merge = lambda w: nnx.merge(graphdef, *split_weights(w, cfg)[: 2 if cfg.batch_norm else 1])
        return (
            lambda key: init_variables(key, cfg),  # nnx_models.init_model draws through it too
            nnx_models.params_loss(graphdef),
            lambda w, z: merge(w).decode(z),  # [N, Z] -> [N, D]
            lambda w, x: merge(w).encode(x),  # [N, D] -> ([N, Z], [N, Z])
        )
    model = VAE(cfg)
    return (
        lambda key: init_variables(key, cfg),
        loss_fn,
        lambda w, z: model.apply(variables(w, cfg), z, method=VAE.decode),
        lambda w, x: model.apply(variables(w, cfg), x, method=VAE.encode),
    )


class Trainer:
    """JAX implementation of backends.Trainer: the device data, the TrainState, the compiled chunks and
    the run's orbax checkpoints."""

    framework = "jax"

    def __init__(
        self,
        cfg: VAEConfig,
        data: dict[str, np.ndarray],
        opts: TrainOptions,
        checkpoint_dir: Path,
        tick: Tick | None = None,
    ) -> None:
        self.cfg, self.jit, self.device = cfg, opts.jit, resolve_device(opts.device)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.ckpts = Checkpoints(self.checkpoint_dir)
        layout = plan.Layout(len(data["train"]), cfg.batch_size, cfg.drop_last)
        self.mesh = _data_parallel_mesh(self.device, layout) if opts.data_parallel else None
        self.p = programs(
            (program_config(cfg), layout.steps_per_epoch, tick is not None, self.mesh, opts.api)
        )
        if self.p.progress is not None:  # the running trainer's callback: programs are shared
            self.p.progress.target = tick
        root = jax.random.key(cfg.seed)
        self.init_key, self.eps_key, self.eval_key, self.bin_key = (
            jax.random.fold_in(root, stream) for stream in plan.Stream
        )
        if self.mesh is not None:  # checkpointed: a global (replicated) array under jax.distributed
            self.eps_key = self._put_key(self.eps_key)
        self.train_grey = self._put(np.asarray(data["train"], np.float32))  # [N, D]
        self.train_x = self.train_grey
        self.test_x = self._put(np.asarray(data["test"], np.float32))  # [M, D]
        self.state: TrainState = None  # type: ignore[assignment]  # set by init_state or restore
        sharding = None if self.mesh is None else parallel.batch_sharded(self.mesh)
        self._gather = jax.jit(lambda data, rows: data[rows], out_shardings=sharding)  # --jit step

    def versions(self) -> dict[str, str]:
        return {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "orbax-checkpoint": getattr(ocp, "__version__", "?"),
        }

    def device_name(self) -> str:
        if self.mesh is not None:
            return (
                f"{self.mesh.size} x {self.device.platform} ({self.device.device_kind}) in "
                f"{jax.process_count()} process(es), data-parallel"
            )
        return device_name(self.device)

    def _put(self, tree: Any) -> Any:
        """Onto the run's device, or replicated over the data-parallel mesh."""
        return jax.device_put(tree, self.device) if self.mesh is None else parallel.replicate(tree, self.mesh)

    def _put_key(self, key: Array) -> Array:
        """A typed key onto the device or mesh (moved as its raw uint32 data)."""
        return jax.random.wrap_key_data(self._put(jax.random.key_data(key)))

    def init_state(self, params: Any | None = None) -> None:
        """Step-0 state: the preset's init, or `params` (the JAX weights, e.g. --init-from) with a
        fresh optimizer state, cast to the run's dtypes."""
        self.state = self._template()
        if params is not None:
            given, stats = split_weights(params, self.cfg)
            cast = lambda t, p: jnp.asarray(p, t.dtype)  # same tree as the template, or a ValueError
            given = jax.tree_util.tree_map(cast, self.state.params, given)
            stats = jax.tree_util.tree_map(cast, self.state.batch_stats, stats or {})
            fresh = jax.jit(lambda p, b: create_state(p, self.p.tx, b))
            self.state = self._put(fresh(given, stats))

    def _template(self) -> TrainState:
        """Step-0 state on the device, every leaf its own buffer (the scan donates the state, and an
        optimizer may init two moments as one shared zeros tree)."""
        state = self.p.init(jax.device_put(self.init_key, self.device))  # jitted: distinct buffers
        return state if self.mesh is None else self._put(state)

    def latest_checkpoint(self) -> int | None:
        """The newest intact checkpoint step (a note on stderr for each newer broken one)."""
        return self.ckpts.latest_step()

    def checkpoint_config(self, step: int | None = None) -> dict[str, Any]:
        return self.ckpts.read_meta(step)["config"]

    def restore(self, step: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """(data order, meta) of checkpoint `step`, the newest intact one when None; a step that is
        absent or broken is a RunError listing the intact steps."""
        state, order, key_data, meta = self.ckpts.restore(
            self._template(), len(self.train_grey), jax.random.key_data(self.eps_key), step
        )
        self.state = self._put(state)
        self.eps_key = self._put_key(jax.random.wrap_key_data(key_data))
        return order, meta

    def save(self, step: int, order: np.ndarray, meta: dict[str, Any]) -> None:
        self.ckpts.save(step, self.state, order, jax.random.key_data(self.eps_key), meta)

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

    def run_chunk(self, idx: np.ndarray) -> StepMetrics[np.ndarray]:
        """Train on batches idx [S, B] (scan or per-step jit); per-step metrics as numpy [S]."""
        if self.jit == "scan":
            exe = self.p.compiled[(*idx.shape, self.train_x.shape, self.device)]
            self.state, metrics = exe(self.state, self.train_x, self._put(idx), self.eps_key)
        else:  # the host row idx[s] goes straight into the gather (a device slice is one more dispatch)
            out = []
            for s in range(idx.shape[0]):
                self.state, m = self.p.step(self.state, self._gather(self.train_x, idx[s]), self.eps_key)
                out.append(m)
            metrics = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *out)
        m = parallel.to_host(metrics)
        return m._replace(finite=m.finite & np.isfinite(m.loss))

    def evaluate(self) -> dict[str, float]:
        """Test-set -ELBO per image (beta = 1), fixed eval key; z = mean for eval_use_mean presets."""
        total = np.zeros(3)
        m = self.test_x.shape[0]
        for i, lo in enumerate(range(0, m, EVAL_BATCH)):
            x = self.test_x[lo : lo + EVAL_BATCH]
            sums = self.p.eval(self._weights(), x, jax.random.fold_in(self.eval_key, i))
            total += np.asarray(parallel.to_host(sums), np.float64)
        return {"test_loss": total[0] / m, "test_recon": total[1] / m, "test_kl": total[2] / m}

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Decoder outputs for codes z [N, Z] -> [N, D]."""
        z = jax.device_put(np.asarray(z, np.float32), self.device)
        return np.asarray(self.p.decode(self._local_params(), z))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoder outputs at z = mean of q(z|x): [N, D] -> [N, D]."""
        mean, _ = self.p.encode(self._local_params(), jax.device_put(np.asarray(x, np.float32), self.device))
        return self.decode(np.asarray(mean))

    def _weights(self) -> dict:
        """models.weights of the state: params, or params and BatchNorm running statistics."""
        return weights(self.state.params, self.state.batch_stats, self.cfg)

    def _local_params(self) -> dict:
        """The weights on this process's device: images are drawn by process 0 alone, so no collective."""
        if self.mesh is None:
            return self._weights()
        return jax.device_put(parallel.to_host(self._weights()), self.device)

    def close(self) -> None:
        if self.p.progress is not None:
            self.p.progress.target = None
        self.ckpts.close()


def _fresh_state(variables: dict, tx: optax.GradientTransformation) -> TrainState:
    """Step-0 state of fresh Flax variables (params, and a BatchNorm model's running statistics)."""
    return create_state(variables["params"], tx, variables.get("batch_stats"))


def _eval_sums(w: dict, x: Array, key: Array, cfg: VAEConfig, apply_loss: LossFn = loss_fn) -> Array:
    """[sum of -ELBO, sum of recon, sum of KL] over the batch x [B, D] (BatchNorm: running statistics)."""
    eps = sample_eps(key, cfg, x.shape[0], dtype=x.dtype)  # [L, B, Z]
    if cfg.eval_use_mean:
        eps = jnp.zeros_like(eps)
    params, batch_stats = split_weights(w, cfg)
    _, aux = apply_loss(params, x, eps, cfg, 1.0, batch_stats, False)
    return jnp.stack([aux["per_example"].sum(), aux["recon"].sum(), aux["kl"].sum()])


def _data_parallel_mesh(device: jax.Device, layout: plan.Layout) -> parallel.Mesh:
    """Mesh over every device of `device`'s platform (all processes); batches must split evenly."""
    mesh = parallel.make_mesh(jax.devices(device.platform))
    if layout.batch_size % mesh.size:
        raise RunError(
            f"data-parallel over {mesh.size} devices: batch size {layout.batch_size} does not split "
            f"evenly; use a multiple of {mesh.size}"
        )
    if layout.last_batch_size % mesh.size:
        raise RunError(
            f"data-parallel over {mesh.size} devices: the last batch of each epoch has "
            f"{layout.last_batch_size} images; pass --set drop_last=true or another batch size"
        )
    return mesh
