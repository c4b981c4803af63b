"""Optimizers matching jax_vae/optim.py, one for one.

adam:     torch.optim.Adam(lr, betas, eps, weight_decay) (coupled L2, as the sources use it);
lua_adam: Lua-torch optim.adam: lr_t = lr / (1 + t * lr_decay), epsilon added to sqrt(v) BEFORE
          the bias correction: p -= lr_t * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import torch

from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.training import plan


class LuaAdam(torch.optim.Optimizer):
    """Lua-torch optim.adam (coupled weight decay like the Lua code: g += wd * p). A class where JAX
    has the `lua_adam` transform: torch optimizers are Optimizer subclasses.

    foreach=True: the same math with one multi-tensor (_foreach) kernel per op and each step count a
    0-d tensor on the parameter's device (in its dtype, as JAX counts in its float type), so a step
    needs no host sync: torch.compile traces it whole and a CUDA graph can capture it. Eager on CPU
    the default step is faster (it frees each temporary before the next parameter's).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        lr_decay: float = 0.0,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, lr_decay=lr_decay, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, foreach=foreach
        )
        super().__init__(params, defaults)
        if foreach:  # state up front: a compiled step sees the same state on every call (no recompile)
            for group in self.param_groups:
                for p in group["params"]:
                    self._foreach_state(p)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params if p.grad is not None]
            if params:
                (self._foreach_step if group["foreach"] else self._single_tensor_step)(group, params, grads)
        return loss

    def _single_tensor_step(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """One parameter at a time, the step count a Python int and the step size a Python float."""
        b1, b2, eps = group["b1"], group["b2"], group["eps"]
        for p, grad in zip(params, grads):
            if group["weight_decay"] != 0:
                grad = grad.add(p, alpha=group["weight_decay"])
            state = self.state[p]
            if not state:
                state["t"] = 0
                state["m"] = torch.zeros_like(p)
                state["v"] = torch.zeros_like(p)
            clr = group["lr"] / (1 + state["t"] * group["lr_decay"])
            state["t"] += 1
            t = state["t"]
            state["m"].mul_(b1).add_(grad, alpha=1 - b1)
            state["v"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = state["v"].sqrt().add_(eps)
            step_size = clr * math.sqrt(1 - b2**t) / (1 - b1**t)
            p.addcdiv_(state["m"], denom, value=-step_size)

    def _foreach_step(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """All parameters per kernel; step counts and step sizes stay on the device."""
        b1, b2 = group["b1"], group["b2"]
        for p in params:
            self._foreach_state(p)
        ts, m, v = ([self.state[p][k] for p in params] for k in ("t", "m", "v"))
        if group["weight_decay"] != 0:
            grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
        t = torch.stack(ts)  # [P] counts before the update
        clr = group["lr"] / (1 + t * group["lr_decay"])
        torch._foreach_add_(ts, 1)
        t = t + 1
        step_size = clr * torch.sqrt(1 - b2**t) / (1 - b1**t)  # [P]
        torch._foreach_mul_(m, b1)
        torch._foreach_add_(m, grads, alpha=1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_div_(denom, list((-step_size).unbind()))  # p += m / (denom / -step)
        torch._foreach_addcdiv_(params, m, denom)

    def _foreach_state(self, p: torch.Tensor) -> None:
        """Zero moments and a 0-d step count on p's device, in p's dtype, unless p has state."""
        if not self.state[p]:
            self.state[p].update(
                t=torch.zeros([], dtype=p.dtype, device=p.device),
                m=torch.zeros_like(p),
                v=torch.zeros_like(p),
            )


def iwae_lr_schedule(steps_per_epoch: int, stages: int = 8) -> Callable[[int], float]:
    """Burda et al.: factor 10**(-i/7) during stage i, which lasts 3**i epochs (then held)."""
    boundaries = plan.iwae_lr_boundaries(steps_per_epoch, stages)
    return lambda step: 10 ** (-sum(step >= b for b in boundaries) / 7)


Scheduler = torch.optim.lr_scheduler.LRScheduler


class EpochExponentialLR(torch.optim.lr_scheduler.ExponentialLR):
    """torch's ExponentialLR (lr *= gamma) stepped once per epoch although TrainState steps its
    scheduler after every optimizer step: only every steps_per_epoch-th call steps the ExponentialLR.
    The call count is an attribute, so it travels in state_dict() (checkpoints, bit-identical resume)."""

    def __init__(self, optimizer: torch.optim.Optimizer, gamma: float, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        super().__init__(optimizer, gamma)  # its initial step() runs before `calls` exists
        self.calls = 0

    def step(self, epoch: None = None) -> None:  # type: ignore[override]
        """One optimizer step done; at an epoch's end, ExponentialLR.step()."""
        if not hasattr(self, "calls"):  # the base constructor's initial step
            return super().step()
        self.calls += 1
        if self.calls % self.steps_per_epoch == 0:
            super().step()


@dataclasses.dataclass(frozen=True)
class Transform:
    """torch's counterpart of an optax GradientTransformation: `init(params)` builds the optimizer over
    `params` and its per-step learning-rate scheduler (None for a constant rate)."""

    init: Callable[[Iterable[torch.Tensor]], tuple[torch.optim.Optimizer, Scheduler | None]]


def make_optimizer(
    cfg: VAEConfig,
    steps_per_epoch: int | None = None,
    foreach: bool | None = None,
    fused: bool | None = None,
    capturable: bool = False,
) -> Transform:
    """The preset's optimizer as a Transform. foreach/fused pick torch.optim.Adam's implementation
    (LuaAdam: foreach=True is its multi-tensor step; it has no fused one); capturable keeps Adam's
    step count on the device (CUDA-graph capture; LuaAdam's foreach step always does). Parity tests
    pin foreach=False, fused=False."""
    if cfg.lr_schedule in ("iwae", "exponential") and not steps_per_epoch:
        raise ValueError(f"lr_schedule={cfg.lr_schedule!r} needs steps_per_epoch")

    def init(params: Iterable[torch.Tensor]) -> tuple[torch.optim.Optimizer, Scheduler | None]:
        opt: torch.optim.Optimizer
        if cfg.optimizer == "lua_adam":
            if fused:
                raise ValueError("LuaAdam has no fused implementation (foreach=True is its fast one)")
            opt = LuaAdam(
                params,
                cfg.lr,
                cfg.lr_decay,
                cfg.b1,
                cfg.b2,
                cfg.adam_eps,
                cfg.weight_decay,
                foreach=bool(foreach),
            )
        else:
            opt = torch.optim.Adam(
                params,
                lr=cfg.lr,
                betas=(cfg.b1, cfg.b2),
                eps=cfg.adam_eps,
                weight_decay=cfg.weight_decay,
                foreach=foreach,
                fused=fused,
                capturable=capturable,
            )
        if cfg.lr_schedule == "iwae":
            assert steps_per_epoch
            return opt, torch.optim.lr_scheduler.LambdaLR(opt, iwae_lr_schedule(steps_per_epoch))
        if cfg.lr_schedule == "exponential":
            assert steps_per_epoch
            return opt, EpochExponentialLR(opt, cfg.lr_gamma, steps_per_epoch)
        return opt, None

    return Transform(init)
