"""PyTorch train steps for the benchmark: the fastest optimizer available, and one step per mode.

torch-eager:      torch_reference.step.make_train_step as shipped (eps ~ torch.randn on the device);
torch-compile:    model + loss (eps drawn inside) compiled with fullgraph=True, backward through
                  the compiled graph, optimizer.step compiled separately (the compiled-optimizer recipe);
torch-compile-mb: torch-compile with gradient accumulation (cfg.micro_batch): the compiled model + loss
                  runs on chunks of micro_batch examples, one backward each, then one optimizer step;
torch-compile-ro: the same with mode="reduce-overhead" (CUDA graphs on GPU; on CPU it only runs inductor);
torch-cuda-graph: the whole step (zero_grad, forward, backward, capturable Adam) captured once in a
                  torch.cuda.CUDAGraph and replayed; the batch is copied into the static input buffer.
All modes share the semantics of jax_vae.step.update: forward + backward + optimizer update + metrics.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from jax_vae.common.config import VAEConfig
from torch_reference.losses import objective
from torch_reference.models import VAE, sample_eps
from torch_reference.step import create_state, make_train_step


class ForeachLuaAdam(torch.optim.Optimizer):
    """torch_reference.optim.LuaAdam with _foreach kernels and a device-tensor step count.

    Same math (lr_t = lr/(1 + t lr_decay), eps added to sqrt(v) before bias correction), but one
    multi-tensor kernel per op and no host sync, so it is traceable by torch.compile and capturable
    in a CUDA graph. The step counter lives in param_groups[i]['step'] as a float32 device tensor.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, lr_decay: float = 0.0, b1: float = 0.9,
                 b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, b1=b1, b2=b2, eps=eps,
                                      weight_decay=weight_decay))
        for group in self.param_groups:
            p0 = group["params"][0]
            group["step"] = torch.zeros([], dtype=torch.float32, device=p0.device)
            for p in group["params"]:
                self.state[p]["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[p]["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            m = [self.state[p]["m"] for p in params]
            v = [self.state[p]["v"] for p in params]
            b1, b2, t = group["b1"], group["b2"], group["step"]
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            clr = group["lr"] / (1 + t * group["lr_decay"])                   # uses t before the update
            t.add_(1)
            torch._foreach_mul_(m, b1)
            torch._foreach_add_(m, grads, alpha=1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_add_(denom, group["eps"])
            step_size = clr * torch.sqrt(1 - b2 ** t) / (1 - b1 ** t)        # 0-d device tensor
            upd = torch._foreach_div(m, denom)
            torch._foreach_mul_(upd, step_size)
            torch._foreach_sub_(params, upd)
        return loss


def fast_optimizer(cfg: VAEConfig, model: VAE, mode: str, device: torch.device
                   ) -> tuple[torch.optim.Optimizer, str]:
    """(optimizer, description): the fastest implementation each mode can use on this device."""
    cuda = device.type == "cuda"
    if cfg.optimizer == "lua_adam":
        opt = ForeachLuaAdam(model.parameters(), cfg.lr, cfg.lr_decay, cfg.b1, cfg.b2, cfg.adam_eps,
                             cfg.weight_decay)
        return opt, "ForeachLuaAdam (benchmarks.torch_steps; _foreach ops, device step tensor)"
    if mode == "torch-cuda-graph":
        kw = {"fused": True, "capturable": True}
    elif mode == "torch-eager":
        kw = {"fused": True} if cuda else {"foreach": True}
    else:  # compiled: inductor fuses the foreach ops itself; capturable keeps the step on the GPU
        kw = {"foreach": True, "capturable": True} if cuda else {"foreach": True}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.b1, cfg.b2), eps=cfg.adam_eps,
                           weight_decay=cfg.weight_decay, **kw)
    return opt, "torch.optim.Adam(" + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"


def loss_from_eps(model: VAE, x: Tensor, eps: Tensor, cfg: VAEConfig, beta: float | Tensor,
                  autocast_dtype: torch.dtype | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """torch_reference.losses.loss_fn given eps [L, B, Z] (no generator branch, so dynamo traces it
    whole); with autocast_dtype the model runs under autocast and the loss terms in fp32."""
    ctx = (torch.autocast(x.device.type, dtype=autocast_dtype, cache_enabled=False)   # graph-safe
           if autocast_dtype is not None else contextlib.nullcontext())
    with ctx:
        outputs, mean, scale = model(x, eps)                                # [L, B, D], [B, Z] x2
    outputs, mean, scale = outputs.float(), mean.float(), scale.float()
    return objective(outputs, mean, scale, x, eps, cfg, beta)             # fp32 loss terms


def _metrics(loss: Tensor, aux: dict[str, Tensor]) -> dict[str, Tensor]:
    """The metric dict of torch_reference.step.update."""
    return {"loss": loss.detach(), "recon": aux["recon"].detach().mean(), "kl": aux["kl"].detach().mean(),
            "objective": aux["per_example"].detach().mean(), "finite": torch.isfinite(loss.detach())}


def build_step(cfg: VAEConfig, mode: str, precision: str, model: VAE, opt: torch.optim.Optimizer,
               batch: int, device: torch.device, micro_batch: int = 0
               ) -> tuple[Callable[[Tensor], Any], dict[str, Any]]:
    """(step(x [B, D]) -> metrics, details) for one mode; compiled modes compile on the first call."""
    if cfg.kl_warmup_steps > 0:
        raise ValueError("the benchmark steps assume a constant KL weight (kl_warmup_steps=0)")
    amp = torch.bfloat16 if precision == "bf16" else None
    details: dict[str, Any] = {"autocast": str(amp) if amp else None}
    if mode == "torch-eager" and amp is None:
        state, train_step = create_state(model, opt), make_train_step(cfg)
        return (lambda x: train_step(state, x, None)[1]), details | {"step": "torch_reference.step"}

    def forward(x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        eps = sample_eps(None, cfg, x.shape[0], dtype=x.dtype, device=x.device)   # [L, B, Z]
        loss, aux = loss_from_eps(model, x, eps, cfg, cfg.beta, amp)
        return loss, _metrics(loss, aux)

    if mode == "torch-compile-mb":
        return _micro_batch_step(cfg, forward, opt, batch, micro_batch), details | {
            "compile_mode": "default", "dynamic": False, "micro_batch": micro_batch,
            "compiled": ["model+loss per chunk (fullgraph)", "optimizer.step"]}
    if mode in ("torch-eager", "torch-compile", "torch-compile-ro"):
        if mode == "torch-eager":
            fwd, opt_step = forward, opt.step
        else:
            cmode = "reduce-overhead" if mode == "torch-compile-ro" else "default"
            fwd = torch.compile(forward, mode=cmode, fullgraph=True, dynamic=False)
            opt_step = torch.compile(opt.step, mode=cmode, dynamic=False)
            details.update(compile_mode=cmode, dynamic=False, compiled=["model+loss (fullgraph)", "optimizer.step"])
            if device.type != "cuda" and cmode == "reduce-overhead":
                details["note"] = "CPU: reduce-overhead has no CUDA graphs; it runs the inductor CPU code"

        mark = (getattr(torch.compiler, "cudagraph_mark_step_begin", None)
                if mode == "torch-compile-ro" and device.type == "cuda" else None)

        def step(x: Tensor) -> dict[str, Tensor]:
            if mark is not None:     # a new iteration for CUDA-graph trees: earlier outputs may be reused
                mark()
            opt.zero_grad(set_to_none=True)
            loss, metrics = fwd(x)
            loss.backward()
            opt_step()
            return metrics

        return step, details
    if mode == "torch-cuda-graph":
        return _cuda_graph_step(forward, opt, batch, cfg, device), details | {"capture": "whole step"}
    raise ValueError(f"unknown torch mode {mode!r}")


def _micro_batch_step(cfg: VAEConfig, forward: Callable, opt: torch.optim.Optimizer, batch: int,
                      micro_batch: int) -> Callable[[Tensor], dict[str, Tensor]]:
    """torch_reference.step.value_and_grad's accumulation with the compiled forward: chunk c of
    m rows backprops its loss times m/B (mean) or 1 (sum); batch must be a multiple of m."""
    if not 0 < micro_batch < batch or batch % micro_batch:
        raise ValueError(f"torch-compile-mb needs 0 < micro_batch < batch and batch % micro_batch == 0, "
                         f"got micro_batch={micro_batch}, batch={batch}")
    fwd = torch.compile(forward, mode="default", fullgraph=True, dynamic=False)
    opt_step = torch.compile(opt.step, mode="default", dynamic=False)
    weight = 1.0 if cfg.reduction == "sum" else micro_batch / batch

    def step(x: Tensor) -> dict[str, Tensor]:
        opt.zero_grad(set_to_none=True)
        parts = []
        for chunk in x.split(micro_batch):
            loss, metrics = fwd(chunk)
            (loss * weight).backward()
            parts.append(metrics)
        opt_step()
        metrics = {k: torch.stack([m[k].float() for m in parts]).mean() for k in parts[0]}   # equal chunks
        metrics["loss"] = metrics["loss"] * (len(parts) * weight)
        return metrics

    return step


def _cuda_graph_step(forward: Callable, opt: torch.optim.Optimizer, batch: int, cfg: VAEConfig,
                     device: torch.device) -> Callable[[Tensor], dict[str, Tensor]]:
    """Step that captures zero_grad + forward + backward + optimizer.step on its first call (the
    capture counts as compile time), then copies x into the static input and replays the graph."""
    static_x = torch.rand(batch, cfg.input_dim, device=device)               # [B, D]
    box: dict[str, Any] = {}

    def whole_step() -> dict[str, Tensor]:
        opt.zero_grad(set_to_none=True)
        loss, metrics = forward(static_x)
        loss.backward()
        opt.step()
        return metrics

    def capture() -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):             # warm-up on a side stream (cuBLAS handles, state)
            for _ in range(3):
                whole_step()
        torch.cuda.current_stream().wait_stream(side)
        box["graph"] = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(box["graph"]):
            box["metrics"] = whole_step()

    def step(x: Tensor) -> dict[str, Tensor]:
        if "graph" not in box:
            capture()
        static_x.copy_(x)
        box["graph"].replay()
        return box["metrics"]

    return step
