"""PyTorch training: the dataset lives on the device and each step is one call of the train step.

Mirror of jax_vae/train.py; the run loop itself is framework-free (jax_vae/loop.py).
RNG: parameters from torch.manual_seed(seed); eps from one torch.Generator seeded with
derive_seed(seed, 1) whose state is saved in every checkpoint; epoch e binarizes (dynamic presets)
with a generator seeded derive_seed(seed, 3, e); evaluation with a fresh generator derive_seed(seed, 2).
The data order is the same numpy permutation as on the JAX side (jax_vae.common.plan.epoch_order).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from jax_vae.common import loop, plan
from jax_vae.common.config import VAEConfig
from jax_vae.common.data import derive_seed
from jax_vae.common.runs import RunError
from torch_reference.checkpoint import Checkpoints
from torch_reference.losses import loss_fn
from torch_reference.models import init_params, sample_eps
from torch_reference.optim import make_optimizer
from torch_reference.step import TrainState, create_state, make_train_step

EVAL_BATCH = 1000
EPS_KEY, EVAL_KEY, BINARIZE_KEY = 1, 2, 3
NAN_PROBS_ERROR = "all elements of input should be between 0 and 1"   # torch BCE on NaN probabilities


def resolve_device(name: str) -> torch.device:
    """'auto' (cuda when available), 'cpu', or 'gpu'/'cuda' -> a torch.device; one-line error if absent."""
    if name not in ("auto", "cpu", "gpu", "cuda"):
        raise RunError(f"unknown device {name!r}; valid: auto, cpu, gpu, cuda")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RunError(f"device {name!r} is not available to PyTorch (no CUDA device)")
    return torch.device("cuda")


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class Trainer:
    """PyTorch backend of jax_vae.common.loop: owns the device data, the TrainState and the eps generator."""

    framework = "torch"

    def __init__(self, cfg: VAEConfig, data: dict[str, np.ndarray], *, device: str = "auto",
                 jit: str = "scan", tick: Callable[[Any], None] | None = None) -> None:
        self.cfg, self.jit, self.tick, self.device = cfg, jit, tick, resolve_device(device)
        self.steps_per_epoch = plan.Layout(len(data["train"]), cfg.batch_size, cfg.drop_last).steps_per_epoch
        put = lambda a: torch.from_numpy(np.asarray(a, np.float32)).to(self.device)
        self.train_grey = put(data["train"])                                  # [N, D]
        self.train_x = self.train_grey
        self.test_x = put(data["test"])                                       # [M, D]
        self.generator = _generator(self.device, derive_seed(cfg.seed, EPS_KEY))
        self.state: TrainState | None = None
        self._step = make_train_step(cfg)

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
        return f"cpu ({torch.get_num_threads()} threads)"

    def init_state(self) -> None:
        model = init_params(self.cfg.seed, self.cfg).to(self.device)
        optimizer, scheduler = make_optimizer(self.cfg, model.parameters(), self.steps_per_epoch)
        self.state = create_state(model, optimizer, scheduler)

    def restore(self, ckpts: Checkpoints) -> tuple[np.ndarray, dict[str, Any]]:
        self.init_state()
        self.state, order, rng, meta = ckpts.restore(self.state, len(self.train_grey), self.generator.get_state())
        self.generator.set_state(rng)
        return order, meta

    def save(self, ckpts: Checkpoints, step: int, order: np.ndarray, meta: dict[str, Any]) -> None:
        ckpts.save(step, self.state, order, self.generator.get_state(), meta)

    def set_epoch(self, epoch: int) -> None:
        """Dynamic binarization: a fresh Bernoulli draw of the grey training set for epoch `epoch`."""
        if self.cfg.binarization == "dynamic":
            gen = _generator(self.device, derive_seed(self.cfg.seed, BINARIZE_KEY, epoch))
            self.train_x = torch.bernoulli(self.train_grey, generator=gen)

    def compile(self, num_steps: int, batch_size: int) -> float:
        return 0.0                                                            # eager: nothing to compile

    def run_chunk(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Train on batches idx [S, B], one train-step call each; per-step metrics as numpy [S]."""
        rows = torch.from_numpy(idx.astype(np.int64)).to(self.device)
        self.state.model.train()
        out = []
        for s in range(rows.shape[0]):
            try:
                self.state, m = self._step(self.state, self.train_x[rows[s]], self.generator)
            except RuntimeError as err:
                if NAN_PROBS_ERROR not in str(err):
                    raise
                # F.binary_cross_entropy refuses NaN probabilities: the loss of this step is not finite.
                out.append(torch.tensor([float("nan")] * 3 + [0.0], device=self.device))
                break
            out.append(torch.stack([m["objective"], m["recon"], m["kl"], m["finite"].to(m["objective"].dtype)]))
            if self.tick is not None:
                self.tick(self.state.step)
        stacked = torch.stack(out).double().cpu().numpy()                       # [S, 4]
        return {"loss": stacked[:, 0], "recon": stacked[:, 1], "kl": stacked[:, 2],
                "finite": (stacked[:, 3] > 0) & np.isfinite(stacked[:, 0])}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test-set -ELBO per image (beta = 1), fixed eval generator; z = mean for eval_use_mean presets."""
        self.state.model.eval()
        gen = _generator(self.device, derive_seed(self.cfg.seed, EVAL_KEY))
        total = np.zeros(3)
        m = self.test_x.shape[0]
        for lo in range(0, m, EVAL_BATCH):
            x = self.test_x[lo:lo + EVAL_BATCH]
            eps = sample_eps(gen, self.cfg, x.shape[0], dtype=x.dtype, device=x.device)   # [L, B, Z]
            if self.cfg.eval_use_mean:
                eps = torch.zeros_like(eps)
            _, aux = loss_fn(self.state.model, x, eps, self.cfg, beta=1.0)
            total += np.array([aux["per_example"].sum().item(), aux["recon"].sum().item(), aux["kl"].sum().item()])
        return {"test_loss": total[0] / m, "test_recon": total[1] / m, "test_kl": total[2] / m}

    @torch.no_grad()
    def decode(self, z: np.ndarray) -> np.ndarray:
        return self.state.model.decode(torch.from_numpy(np.asarray(z, np.float32)).to(self.device)).cpu().numpy()

    @torch.no_grad()
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoder outputs at z = mean of q(z|x): [N, D] -> [N, D]."""
        mean, _ = self.state.model.encode(torch.from_numpy(np.asarray(x, np.float32)).to(self.device))
        return self.decode(mean.cpu().numpy())

    def params_numpy(self) -> dict:
        return {k: v.detach().cpu().numpy() for k, v in self.state.model.state_dict().items()}


def train(cfg: VAEConfig, run_dir: str | Path, *, data_dir: str | Path | None = None, device: str = "auto",
          jit: str = "scan", checkpoint_every: int = 0, log_every: int = 10, chunk_steps: int = 0,
          resume: bool = False, progress: bool = True, images: bool = True, download: bool = True,
          data: dict[str, np.ndarray] | None = None, log: Callable[[str], None] | None = None
          ) -> dict[str, Any]:
    """Train `cfg` (seed = cfg.seed) into `run_dir`; returns the summary (see jax_vae.common.loop.run).
    `jit` is accepted for a CLI shared with JAX and ignored: PyTorch runs eagerly, step by step."""
    opts = loop.TrainOptions(device=device, jit=jit, checkpoint_every=checkpoint_every, log_every=log_every,
                             chunk_steps=chunk_steps, progress=progress, images=images)
    return loop.run(Trainer, Checkpoints, cfg, Path(run_dir), opts, resume=resume, data_dir=data_dir,
                    download=download, data=data, log=log)
