"""PyTorch training: the dataset lives on the device and each step is one call of the train step.

Mirror of jax_vae/trainer.py; the run loop itself is framework-free (jax_vae/common/training/loop.py).
RNG: parameters from a forked global RNG seeded with the seed (models.init_params); the eps, eval and
binarize generators are seeded derive_seed(seed, stream) for the plan.Stream numbers (binarize: and
the epoch); the eps generator's state is saved in every checkpoint. The data order is the same numpy
permutation as on the JAX side (jax_vae.common.training.plan.epoch_order).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jax_vae.common.config.options import Tick, TrainOptions, thread_count
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.data.datasets import derive_seed
from jax_vae.common.errors import RunError
from jax_vae.common.metrics import StepMetrics
from jax_vae.common.training import plan
from torch_reference.checkpoint import Checkpoints
from torch_reference.functional import sample_eps
from torch_reference.losses import loss_fn
from torch_reference.nn.models import init_params
from torch_reference.optim import make_optimizer
from torch_reference.step import TrainState, create_state, make_train_step

EVAL_BATCH = 1000
NAN_PROBS_ERROR = "all elements of input should be between 0 and 1"  # torch BCE on NaN probabilities


def resolve_device(name: str) -> torch.device:
    """'auto' (cuda when available), 'cpu', or 'gpu'/'cuda' -> a torch.device; one-line error if absent."""
    if name not in ("auto", "cpu", "gpu", "cuda"):
        raise RunError(f"unknown device {name!r}; valid: auto, cpu, gpu, cuda")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RunError(f"device {name!r} is not available to PyTorch (no CUDA device)")
    return torch.device("cuda")


def process_index() -> int:
    """0: a PyTorch run is one process."""
    return 0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    return f"cpu ({torch.get_num_threads()} threads)"


def set_threads(threads: str) -> int:
    """torch.set_num_threads(options.thread_count(threads, "torch")); the inter-op pool too while torch
    allows it (before its first inter-op work)."""
    n = thread_count(threads, "torch")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already started: only settable once per process
        pass
    return n


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class Trainer:
    """PyTorch implementation of backends.Trainer: the device data, the TrainState, the eps generator and
    the run's checkpoint files."""

    framework = "torch"

    def __init__(
        self,
        cfg: VAEConfig,
        data: dict[str, np.ndarray],
        opts: TrainOptions,
        checkpoint_dir: Path,
        tick: Tick | None = None,
    ) -> None:
        if opts.api != "linen":  # before anything is set up; loop.train's run lock removes what it made
            raise RunError(
                f"--api {opts.api} is JAX-only (Flax NNX): PyTorch has one model API; "
                "use python -m jax_vae train --api nnx"
            )
        self.cfg, self.tick, self.device = (
            cfg,
            tick,
            resolve_device(opts.device),
        )  # opts.jit: eager either way
        set_threads(opts.threads)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.ckpts = Checkpoints(self.checkpoint_dir)
        self.steps_per_epoch = plan.Layout(len(data["train"]), cfg.batch_size, cfg.drop_last).steps_per_epoch
        put = lambda a: torch.from_numpy(np.asarray(a, np.float32)).to(self.device)
        self.train_grey = put(data["train"])  # [N, D]
        self.train_x = self.train_grey
        self.test_x = put(data["test"])  # [M, D]
        self.generator = _generator(self.device, derive_seed(cfg.seed, plan.Stream.EPS))
        self.state: TrainState = None  # type: ignore[assignment]  # set by init_state or restore
        self._step = make_train_step(cfg)

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def device_name(self) -> str:
        return device_name(self.device)

    def init_state(self, params: Any | None = None) -> None:
        """Step-0 state: the preset's init, or `params` (a state_dict, e.g. --init-from) with a fresh
        optimizer."""
        model = init_params(self.cfg.seed, self.cfg).to(self.device)
        if params is not None:
            model.load_state_dict(params)
        self.state = create_state(model, make_optimizer(self.cfg, self.steps_per_epoch))

    def latest_checkpoint(self) -> int | None:
        """The newest intact checkpoint step (a note on stderr for each newer broken one)."""
        return self.ckpts.latest_step()

    def checkpoint_config(self, step: int | None = None) -> dict[str, Any]:
        return self.ckpts.read_meta(step)["config"]

    def restore(self, step: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """(data order, meta) of checkpoint `step`, the newest intact one when None; a step that is
        absent or broken is a RunError listing the intact steps."""
        self.init_state()
        self.state, order, rng, meta = self.ckpts.restore(
            self.state, len(self.train_grey), self.generator.get_state(), step
        )
        self.generator.set_state(rng)
        return order, meta

    def save(self, step: int, order: np.ndarray, meta: dict[str, Any]) -> None:
        self.ckpts.save(step, self.state, order, self.generator.get_state(), meta)

    def set_epoch(self, epoch: int) -> None:
        """Dynamic binarization: a fresh Bernoulli draw of the grey training set for epoch `epoch`."""
        if self.cfg.binarization == "dynamic":
            gen = _generator(self.device, derive_seed(self.cfg.seed, plan.Stream.BINARIZE, epoch))
            self.train_x = torch.bernoulli(self.train_grey, generator=gen)

    def compile(self, num_steps: int, batch_size: int) -> float:
        return 0.0  # eager: nothing to compile

    def run_chunk(self, idx: np.ndarray) -> StepMetrics[np.ndarray]:
        """Train on batches idx [S, B], one train-step call each; per-step metrics as numpy [S]."""
        rows = torch.from_numpy(idx.astype(np.int64)).to(self.device)
        self.state.model.train()
        out: list[StepMetrics[torch.Tensor]] = []
        for s in range(rows.shape[0]):
            try:
                self.state, m = self._step(self.state, self.train_x[rows[s]], self.generator)
            except RuntimeError as err:
                if NAN_PROBS_ERROR not in str(err):
                    raise
                # F.binary_cross_entropy refuses NaN probabilities: the loss of this step is not finite.
                nan = torch.tensor(float("nan"), device=self.device)
                values = {name: nan for name in StepMetrics._fields}
                out.append(StepMetrics(**{**values, "finite": torch.tensor(False, device=self.device)}))
                break
            out.append(m)
            if self.tick is not None:
                self.tick(self.state.step)
        host = StepMetrics(*(torch.stack(field).double().cpu().numpy() for field in zip(*out)))  # [S] each
        return host._replace(finite=(host.finite > 0) & np.isfinite(host.loss))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test-set -ELBO per image (beta = 1), fixed eval generator; z = mean for eval_use_mean presets."""
        self.state.model.eval()
        if not all(bool(torch.isfinite(p).all()) for p in self.state.model.parameters()):
            # diverged weights: torch's BCE raises on NaN probabilities where JAX returns NaN
            return {"test_loss": math.nan, "test_recon": math.nan, "test_kl": math.nan}
        gen = _generator(self.device, derive_seed(self.cfg.seed, plan.Stream.EVAL))
        total = np.zeros(3)
        m = self.test_x.shape[0]
        for lo in range(0, m, EVAL_BATCH):
            x = self.test_x[lo : lo + EVAL_BATCH]
            eps = sample_eps(gen, self.cfg, x.shape[0], dtype=x.dtype, device=x.device)  # [L, B, Z]
            if self.cfg.eval_use_mean:
                eps = torch.zeros_like(eps)
            _, aux = loss_fn(self.state.model, x, eps, self.cfg, beta=1.0)
            total += np.array(
                [aux["per_example"].sum().item(), aux["recon"].sum().item(), aux["kl"].sum().item()]
            )
        return {"test_loss": total[0] / m, "test_recon": total[1] / m, "test_kl": total[2] / m}

    @torch.no_grad()
    def decode(self, z: np.ndarray) -> np.ndarray:
        return (
            self.state.model.decode(torch.from_numpy(np.asarray(z, np.float32)).to(self.device)).cpu().numpy()
        )

    @torch.no_grad()
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoder outputs at z = mean of q(z|x): [N, D] -> [N, D]."""
        mean, _ = self.state.model.encode(torch.from_numpy(np.asarray(x, np.float32)).to(self.device))
        return self.decode(mean.cpu().numpy())

    def close(self) -> None:
        self.ckpts.close()
