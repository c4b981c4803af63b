"""A checkpoint saved by a source's own module, imported through its key map (jax_vae.common.weights.sources),
gives jax-vae the source's own loss and every gradient, in float64, on both twins.

Each test has the source's half (its module as the source describes it: parity_tests/source_modules.py,
its state_dict saved to a file, its own loss and autograd/jax.grad gradients) and jax-vae's halves (the
file read back through `sources.load`, the JAX loss_fn and the PyTorch twin's loss_fn on the same x
and eps); gradients are compared in jax-vae's layout after mapping the source's gradients with the
same key map.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch

from jax_vae import losses as jax_losses
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.weights import sources
from jax_vae.common.weights.convert import flax_to_torch, torch_to_flax
from jax_vae.common.weights.formats import flatten
from parity_tests.source_modules import (
    TORCH_SOURCES,
    FlaxVAE,
    flax_examples_loss,
    wiseodd_loss,
    wiseodd_tensors,
)
from parity_tests.tolerances import TOLERANCES, assert_close
from torch_reference import losses as torch_losses
from torch_reference.nn.models import VAE as TorchVAE

BATCH = 8
LOSS, GRAD = TOLERANCES[("float64", "loss")], TOLERANCES[("float64", "grad")]


def _inputs(latent: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """x [B, 784] grey levels in [0, 1] and eps [B, Z], float64."""
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(BATCH, 784)), rng.standard_normal((BATCH, latent))


def _jax_half(state: dict, cfg: VAEConfig, x: np.ndarray, eps: np.ndarray) -> tuple[float, dict]:
    """jax-vae's JAX loss and gradients (PyTorch layout) of the imported state_dict."""
    params = jax.tree_util.tree_map(jnp.asarray, torch_to_flax(state, cfg))
    grad_fn = jax.value_and_grad(jax_losses.loss_fn, has_aux=True)
    (loss, _), grads = grad_fn(params, jnp.asarray(x), jnp.asarray(eps)[None], cfg)
    return float(loss), flax_to_torch(jax.tree_util.tree_map(np.asarray, grads), cfg)


def _torch_half(state: dict, cfg: VAEConfig, x: np.ndarray, eps: np.ndarray) -> tuple[float, dict]:
    """jax-vae's PyTorch-twin loss and gradients of the imported state_dict."""
    model = TorchVAE(cfg).double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    loss, _ = torch_losses.loss_fn(model, torch.from_numpy(x), torch.from_numpy(eps)[None], cfg)
    loss.backward()
    return float(loss), {k: _grad(p) for k, p in model.named_parameters()}


def _grad(t: torch.Tensor) -> np.ndarray:
    assert t.grad is not None
    return t.grad.numpy()


def _compare(name: str, source_loss: float, source_grads: dict, state: dict, cfg: VAEConfig, x, eps) -> None:
    """Both twins' loss and every gradient against the source's (its gradients mapped like its weights)."""
    want = sources.map_keys(source_grads, sources.SOURCES[name])  # jax-vae layout
    for twin, (loss, grads) in (
        ("jax", _jax_half(state, cfg, x, eps)),
        ("torch", _torch_half(state, cfg, x, eps)),
    ):
        assert_close(f"{name} -> {twin} loss", loss, source_loss, LOSS)
        assert grads.keys() == want.keys()
        for key in want:
            assert_close(f"{name} -> {twin} grad {key}", grads[key], want[key], GRAD)


@pytest.mark.parametrize("name", [*TORCH_SOURCES, "wiseodd"])
def test_torch_source_checkpoint_gives_the_source_loss_and_gradients(name: str, tmp_path: Path) -> None:
    # --- the source's half: its module, its saved state_dict, its own loss and gradients
    torch.manual_seed(0)
    if name == "wiseodd":
        leaves = wiseodd_tensors(torch.float64)
        saved = {k: v.detach().clone() for k, v in leaves.items()}
        latent, loss_of = 100, lambda xt, et: wiseodd_loss(leaves, xt, et)
    else:
        module_cls, source_loss = TORCH_SOURCES[name]
        model = module_cls().double()
        leaves, saved = dict(model.named_parameters()), model.state_dict()
        latent, loss_of = _latent(name, model), lambda xt, et: source_loss(model, xt, et)
    torch.save(saved, tmp_path / "source.pt")
    x, eps = _inputs(latent)
    loss = loss_of(torch.from_numpy(x), torch.from_numpy(eps))
    loss.backward()
    grads = {k: _grad(v) for k, v in leaves.items()}
    # --- jax-vae's halves: the file imported through the key map
    state, cfg, meta = sources.load(tmp_path / "source.pt", name)
    assert cfg.name == sources.SOURCES[name].preset and meta["source"] == name
    _compare(name, float(loss.detach()), grads, state, cfg, x, eps)


def _latent(name: str, model: torch.nn.Module) -> int:
    """The latent width of a source module (the input width of its first decoder layer)."""
    first_decoder = next(
        layer for layer in sources.SOURCES[name].layers if layer.target.startswith("decoder")
    )
    return int(model.state_dict()[first_decoder.weight].shape[1])


@pytest.mark.parametrize("saved_as", ["npz", "orbax"])
def test_flax_examples_checkpoint_gives_the_source_loss_and_gradients(saved_as: str, tmp_path: Path) -> None:
    # --- the source's half: the Flax example's Linen VAE, saved as a flat .npz or with orbax
    x, eps = _inputs(20)
    variables = FlaxVAE().init(jax.random.key(0), jnp.zeros((1, 784)), jnp.zeros((1, 20)))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables["params"])
    loss, grads = jax.value_and_grad(flax_examples_loss)(params, jnp.asarray(x), jnp.asarray(eps))
    path = tmp_path / ("params.npz" if saved_as == "npz" else "params")
    if saved_as == "npz":  # keys under params/, as a TrainState's params are saved
        np.savez(path, allow_pickle=False, **{f"params/{k}": v for k, v in flatten(params).items()})
    else:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(path, params)
        checkpointer.wait_until_finished()
    # --- jax-vae's halves
    state, cfg, _ = sources.load(path, "flax-examples")
    assert cfg.name == "flax-examples" and (cfg.input_dim, cfg.latent_dim) == (784, 20)
    _compare(
        "flax-examples", float(loss), flatten(jax.tree_util.tree_map(np.asarray, grads)), state, cfg, x, eps
    )
