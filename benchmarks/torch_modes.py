"""PyTorch side of the throughput benchmark: every mode times the shipped torch_reference step. Mirror of
jax_modes.py.

Every mode runs torch_reference.step.train_step on state = create_state(model,
make_optimizer(cfg, steps_per_epoch, foreach=..., fused=...)), one call per step on a batch gathered
from the device dataset as the trainer does; the modes differ in how the step runs:
  torch-eager:      as `python -m torch_reference train` runs it, eps from the trainer's generator,
                    with the fastest implementation of the optimizer: Adam foreach (CPU; the trainer
                    takes torch's default, the for-loop) / fused (CUDA); LuaAdam as the trainer (CPU) /
                    LuaAdam(foreach=True) (CUDA);
  torch-compile:    torch.compile(train_step) (dynamo splits it at backward and at the optimizer's graph
                    breaks: model + loss one graph, the optimizer step another); eps from torch's global
                    RNG inside the graph (a generator argument would break it);
  torch-compile-mb: torch-compile with cfg.micro_batch: the shipped value_and_grad loops over chunks,
                    each chunk's loss_fn one compiled graph, a backward each, then one optimizer step;
  torch-compile-ro: torch-compile with mode="reduce-overhead" (CUDA graphs on GPU; on CPU it only runs
                    inductor);
  torch-cuda-graph: the whole eager train_step (zero_grad, forward, backward, capturable Adam) captured
                    once in a torch.cuda.CUDAGraph and replayed; the batch is copied into the static input.
Precisions: fp32 (TF32 off for matmul and cuDNN, oneDNN IEEE), tf32 (TF32 on, GPU), bf16 (GPU): the model
wrapped in the benchmark-only `Autocast` (bf16 autocast, outputs cast to fp32), so the loss terms,
gradients, master weights and optimizer stay fp32.
Threads: torch.set_num_threads(visible cores). Data: the same synthetic epoch as the JAX side, on device.
Run: python -m benchmarks.torch_modes --preset P --mode M --precision X --batch-sizes 16,64 --json out.json
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks import common, host
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.data.datasets import derive_seed
from jax_vae.common.metrics import StepMetrics
from jax_vae.common.training import plan
from torch_reference.losses import loss_fn
from torch_reference.nn.models import VAE, init_params
from torch_reference.optim import make_optimizer
from torch_reference.step import TrainState, create_state, make_train_step

Step = Callable[[TrainState, Tensor, "torch.Generator | None"], tuple[TrainState, StepMetrics]]

torch.set_num_threads(host.cpu_threads())  # both frameworks get the visible cores


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_info() -> dict[str, Any]:
    """Device name, versions and thread settings of this torch process."""
    dev = _device()
    info = {
        "framework": "torch",
        "torch": torch.__version__,
        "platform": dev.type,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "mkl": torch.backends.mkl.is_available(),
    }
    if dev.type == "cuda":
        info.update(
            device_kind=torch.cuda.get_device_name(0),
            compute_capability=".".join(map(str, torch.cuda.get_device_capability(0))),
        )
    else:
        info.update(device_kind=host.cpu_model(), compute_capability=None)
    return info


def availability(info: dict[str, Any]) -> dict[str, Any]:
    """Which modes, precisions and pairs of them this device runs, with the reason for each skip."""
    modes: dict[str, str | None] = {m: None for m in common.MODES["torch"]}
    precisions: dict[str, str | None] = {p: None for p in common.PRECISIONS}
    if info["platform"] != "cuda":
        modes["torch-cuda-graph"] = "CUDA graphs need a CUDA device"
        precisions["tf32"] = (
            "TF32 is a GPU tensor-core format; torch on CPU computes FP32 (identical to fp32)"
        )
        precisions["bf16"] = (
            "bf16 mixed precision is benchmarked on GPU only (no bf16 matmul units on this CPU path)"
        )
    elif float(info["compute_capability"]) < 8.0:
        precisions["tf32"] = precisions["bf16"] = "compute capability < 8.0 has no TF32/bf16 tensor cores"
    return {"modes": modes, "precisions": precisions, "pairs": {}}


def set_precision(precision: str) -> dict[str, Any]:
    """Pin TF32 on (tf32) or off (fp32, bf16) for matmuls and cuDNN; returns the flags read back."""
    tf32 = precision == "tf32"
    matmul = torch.backends.cuda.matmul
    flags: dict[str, Any] = {
        "mixed_precision": "autocast bf16 model, fp32 loss/master/optimizer" if precision == "bf16" else None
    }
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9 API
        value = "tf32" if tf32 else "ieee"
        matmul.fp32_precision = value
        conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]
        conv.fp32_precision = value
        flags.update(
            {
                "cuda.matmul.fp32_precision": matmul.fp32_precision,
                "cudnn.conv.fp32_precision": conv.fp32_precision,
            }
        )
        mkldnn = getattr(torch.backends.mkldnn, "matmul", None)
        if mkldnn is not None and hasattr(mkldnn, "fp32_precision"):  # CPU (oneDNN) matmuls: IEEE fp32
            mkldnn.fp32_precision = "ieee"
            flags["mkldnn.matmul.fp32_precision"] = mkldnn.fp32_precision
        return flags
    matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return flags | {
        "cuda.matmul.allow_tf32": matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def put(a: np.ndarray) -> Tensor:
    """Onto the device; integer rows as int64, as the trainer puts each chunk's rows."""
    return torch.from_numpy(a.astype(np.int64) if a.dtype.kind in "iu" else a).to(_device())


class Autocast(nn.Module):
    """Benchmark-only bf16 mixed precision: `model` under autocast, its outputs cast to fp32 (the loss
    terms run in fp32; parameters, gradients and optimizer stay fp32)."""

    def __init__(self, model: VAE, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.autocast(x.device.type, dtype=self.dtype, cache_enabled=False):  # graph-safe
            outputs, mean, scale = self.model(x, eps)  # [L, B, D], [B, Z] x2
        return outputs.float(), mean.float(), scale.float()


def optimizer_options(cfg: VAEConfig, mode: str, device: torch.device) -> dict[str, bool]:
    """make_optimizer's implementation switches: the fastest each mode can use on this device."""
    if cfg.optimizer == "lua_adam":
        # Eager on CPU the trainer's for-loop step is faster than the foreach one (which allocates every
        # temporary at once); compiled and captured steps need foreach's device step counts.
        return {} if mode == "torch-eager" and device.type == "cpu" else {"foreach": True}
    if mode == "torch-cuda-graph":
        return {"fused": True, "capturable": True}
    if mode == "torch-eager" and device.type == "cuda":
        return {"fused": True}
    return {"foreach": True}  # compiled: inductor fuses the foreach ops itself


def build_step(
    cfg: VAEConfig, mode: str, precision: str, batch_size: int, steps_per_epoch: int
) -> tuple[common.Run, TrainState, dict[str, Any]]:
    """(run(state, data [N, D], rows [S, B]) -> (state, metrics), step-0 state, details) for one mode;
    compiled modes compile on the first call."""
    if mode not in common.MODES["torch"]:
        raise ValueError(f"unknown torch mode {mode!r}")
    device = _device()
    kw = optimizer_options(cfg, mode, device)
    state = create_state(init_params(cfg.seed, cfg).to(device), make_optimizer(cfg, steps_per_epoch, **kw))
    options = ", ".join(f"{k}={v}" for k, v in kw.items())
    details: dict[str, Any] = {
        "step": "torch_reference.step.train_step",
        "optimizer": f"{type(state.optimizer).__name__}({options})",
        "autocast": "torch.bfloat16" if precision == "bf16" else None,
    }
    if precision == "bf16":
        state.model = cast(VAE, Autocast(state.model))
    step: Step = make_train_step(cfg)
    eps_seed = derive_seed(cfg.seed, plan.Stream.EPS)  # the trainer's eps generator
    generator: torch.Generator | None = torch.Generator(device).manual_seed(eps_seed)
    if mode in common.COMPILE_MODES:
        step, generator = _compiled(step, mode, details), None
    elif mode == "torch-cuda-graph":
        step, generator = _cuda_graph_step(step, state, batch_size, cfg, device), None
        details["capture"] = "whole train_step"
    if generator is None:
        torch.manual_seed(eps_seed)  # the global RNG draws eps

    def run(state: TrainState, data: Tensor, rows: Tensor) -> tuple[TrainState, StepMetrics]:
        for s in range(rows.shape[0]):
            state, metrics = step(state, data[rows[s]], generator)
        return state, metrics

    return run, state, details


def _compiled(step: Step, mode: str, details: dict[str, Any]) -> Step:
    """torch.compile of the whole shipped step. dynamic=None: the host step count becomes symbolic
    after one recompile; the shapes stay static (every call has the same ones)."""
    cmode = "reduce-overhead" if mode == "torch-compile-ro" else "default"
    compiled = cast(Step, torch.compile(step, mode=cmode, dynamic=None))
    details.update(compile_mode=cmode, dynamic=None, compiled=["torch_reference.step.train_step"])
    if cmode != "reduce-overhead":
        return compiled
    if not torch.cuda.is_available():
        details["note"] = "CPU: reduce-overhead has no CUDA graphs; it runs the inductor CPU code"
        return compiled

    def marked(state: TrainState, x: Tensor, generator: torch.Generator | None):
        torch.compiler.cudagraph_mark_step_begin()  # a new iteration: CUDA-graph trees may reuse outputs
        return compiled(state, x, generator)

    return marked


def _cuda_graph_step(step: Step, state: TrainState, batch: int, cfg: VAEConfig, device: torch.device) -> Step:
    """`step` captured whole on its first call (the capture counts as compile time), then replayed: x
    copied into the static input, the host step count advanced; eps from the default CUDA generator
    (graph-safe), the generator argument unused."""
    if cfg.kl_warmup_steps > 0 or state.scheduler is not None:
        raise ValueError("a captured step replays host values: it needs a constant KL weight and lr")
    static_x = torch.zeros(batch, cfg.input_dim, device=device)  # [B, D]
    box: dict[str, Any] = {}

    def capture() -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream (cuBLAS handles, optimizer state)
            for _ in range(3):
                step(state, static_x, None)
        torch.cuda.current_stream().wait_stream(side)
        box["graph"] = torch.cuda.CUDAGraph()
        state.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(box["graph"]):
            _, box["metrics"] = step(state, static_x, None)
        state.step -= 1  # capturing ran the host code, not the update

    def replay(state: TrainState, x: Tensor, generator: torch.Generator | None):
        if "graph" not in box:
            capture()
        static_x.copy_(x)
        box["graph"].replay()
        state.step += 1
        return state, box["metrics"]

    return replay


def sync(state: TrainState) -> None:
    if _device().type == "cuda":
        torch.cuda.synchronize()


def begin_batch() -> None:
    """Fresh compile caches (each batch size compiles its own graphs) and memory statistics."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def end_batch(state: TrainState) -> dict[str, Any]:
    """Steps done, finite parameters, the peak memory and inductor-cache counters of this batch size."""
    finite = all(bool(torch.isfinite(p).all()) for p in state.model.parameters())
    out: dict[str, Any] = {"steps_done": state.step, "params_finite": finite}
    if torch.cuda.is_available():
        out.update(
            peak_memory_bytes=torch.cuda.max_memory_allocated(),
            peak_memory_kind="torch.cuda.max_memory_allocated (reset per batch size)",
        )
    else:
        out.update(
            peak_memory_bytes=host.peak_rss_bytes(),
            peak_memory_kind="process peak RSS (VmHWM, reset per batch size)",
        )
    counters = torch._dynamo.utils.counters["inductor"]
    inductor = {k: v for k, v in counters.items() if k.startswith("fxgraph_cache")}
    if inductor:  # compile_s depends on the on-disk inductor cache: record hits and misses
        out["inductor_cache"] = inductor
    return out


def make_eval(cfg: VAEConfig, test: Tensor) -> Callable[[TrainState], float]:
    """state -> test -ELBO per image (beta = 1) on test [M, D], the same eval noise every call."""

    @torch.no_grad()
    def evaluate(state: TrainState) -> float:
        generator = torch.Generator(test.device).manual_seed(derive_seed(cfg.seed, plan.Stream.EVAL))
        return float(loss_fn(state.model, test, generator, cfg, beta=1.0)[1]["per_example"].mean())

    return evaluate


if __name__ == "__main__":
    common.bench_main(sys.argv[1:], sys.modules[__name__], "torch", __doc__.splitlines()[0])
