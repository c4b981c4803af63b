"""PyTorch side of the throughput benchmark: one process times one (preset, mode, precision).

Modes and their steps: benchmarks/torch_steps.py. Precisions: fp32 (TF32 off for matmul and cuDNN),
tf32 (TF32 on, GPU), bf16 (GPU: autocast bf16 model, fp32 loss, fp32 master weights and optimizer).
Threads: torch.set_num_threads(visible cores). Data: the same synthetic pool as the JAX side, on device.
Run: python -m benchmarks.bench_torch --preset P --mode M --precision X --batch-sizes 16,64 --json out.json
"""
from __future__ import annotations

import gc
import json
from typing import Any

import torch

from benchmarks import common
from benchmarks.torch_steps import build_step, fast_optimizer
from jax_vae.common.presets import get_preset
from torch_reference.models import init_params


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_precision(precision: str) -> dict[str, Any]:
    """Pin TF32 on (tf32) or off (fp32, bf16) for matmuls and cuDNN; returns the flags read back."""
    tf32 = precision == "tf32"
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):           # torch >= 2.9 API
        value = "tf32" if tf32 else "ieee"
        matmul.fp32_precision = value
        torch.backends.cudnn.conv.fp32_precision = value
        flags = {"cuda.matmul.fp32_precision": matmul.fp32_precision,
                 "cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision}
        mkldnn = getattr(torch.backends.mkldnn, "matmul", None)
        if mkldnn is not None and hasattr(mkldnn, "fp32_precision"):   # CPU (oneDNN) matmuls: IEEE fp32
            mkldnn.fp32_precision = "ieee"
            flags["mkldnn.matmul.fp32_precision"] = mkldnn.fp32_precision
        return flags
    matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return {"cuda.matmul.allow_tf32": matmul.allow_tf32, "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def device_info() -> dict[str, Any]:
    """Device name, versions and thread settings of this torch process."""
    dev = _device()
    info = {"framework": "torch", "torch": torch.__version__, "platform": dev.type,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
            "num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(), "mkl": torch.backends.mkl.is_available()}
    if dev.type == "cuda":
        info.update(device_kind=torch.cuda.get_device_name(0),
                    compute_capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    else:
        info.update(device_kind=common.cpu_model(), compute_capability=None)
    return info


def availability(info: dict[str, Any]) -> dict[str, Any]:
    """Which modes and precisions this device runs, with the reason for each skip."""
    cuda = info["platform"] == "cuda"
    modes = {m: None for m in common.MODES["torch"]}
    precisions = {p: None for p in common.PRECISIONS}
    if not cuda:
        modes["torch-cuda-graph"] = "CUDA graphs need a CUDA device"
        precisions["tf32"] = "TF32 is a GPU tensor-core format; torch on CPU computes FP32 (identical to fp32)"
        precisions["bf16"] = "bf16 mixed precision is benchmarked on GPU only (no bf16 matmul units on this CPU path)"
    elif float(info["compute_capability"]) < 8.0:
        precisions["tf32"] = precisions["bf16"] = "compute capability < 8.0 has no TF32/bf16 tensor cores"
    return {"modes": modes, "precisions": precisions}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_batch(preset: str, mode: str, precision: str, batch: int, timing: dict[str, Any],
              micro_batch: int = common.MICRO_BATCH) -> dict[str, Any]:
    """Time one batch size on fresh model and optimizer; returns the record's measured fields."""
    cfg, device = get_preset(preset), _device()
    torch._dynamo.reset()                 # fresh compile caches: each batch size compiles its own graph
    counters = torch._dynamo.utils.counters
    counters.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = init_params(cfg.seed, cfg).to(device)
    opt, opt_desc = fast_optimizer(cfg, model, mode, device)
    n_pool = common.pool_batches(batch, dim=cfg.input_dim)
    pool = torch.from_numpy(common.synthetic_pool(n_pool, batch, cfg.input_dim)).to(device)   # [K, B, D]
    batches = list(pool.unbind(0))
    step, details = build_step(cfg, mode, precision, model, opt, batch, device, micro_batch)
    box = {"i": 0, "metrics": None}

    def run() -> None:
        box["metrics"] = step(batches[box["i"] % n_pool])
        box["i"] += 1

    gc.collect()
    rss_reset = common.reset_peak_rss()      # peak RSS from here: compile + timed steps of this mode
    rss_before = common.current_rss_bytes()
    result = common.time_unit(run, lambda: _sync(device), 1, batch, **timing)
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated (reset per batch size)"
    else:
        peak, kind = common.peak_rss_bytes(), "process peak RSS (VmHWM, reset per batch size)"
    inductor = {k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")}
    if inductor:   # compile_s depends on the on-disk inductor cache: record hits and misses
        result["inductor_cache"] = inductor
    result.update(details, optimizer=opt_desc, pool_batches=n_pool, params_finite=finite,
                  steps_done=box["i"], peak_memory_bytes=peak, peak_memory_kind=kind,
                  rss_before_bytes=rss_before if rss_reset else None)
    return result


def run(preset: str, mode: str, precision: str, batch_sizes: list[int], timing: dict[str, Any],
        micro_batch: int = common.MICRO_BATCH) -> dict[str, Any]:
    """Time every batch size (ascending); errors are recorded per batch size, not raised."""
    torch.set_num_threads(common.cpu_threads())
    flags = set_precision(precision)
    flags["mixed_precision"] = "autocast bf16 model, fp32 loss/master/optimizer" if precision == "bf16" else None
    records, oom = [], False
    for batch in sorted(batch_sizes):
        rec = {"framework": "torch", "mode": mode, "preset": preset, "precision": precision, "batch_size": batch}
        if oom:
            rec.update(status="skipped", reason="out of memory at a smaller batch size")
        else:
            try:
                rec.update(run_batch(preset, mode, precision, batch, timing, micro_batch), status="ok")
            except Exception as e:  # e.g. a compile failure or OOM, recorded for this batch size
                oom = isinstance(e, torch.OutOfMemoryError) if hasattr(torch, "OutOfMemoryError") else False
                rec.update(status="error", reason=f"{type(e).__name__}: {str(e)[:400]}")
        print(json.dumps({k: rec.get(k) for k in ("mode", "preset", "precision", "batch_size", "status")}
                         | {"img_s": rec.get("images_per_s", {}).get("median")}), flush=True)
        records.append(rec)
    return {"info": device_info(), "flags": flags, "records": records}


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(common.cpu_threads())
    common.bench_main(argv, __doc__.splitlines()[0], common.MODES["torch"], device_info, availability, run)


if __name__ == "__main__":
    main()
