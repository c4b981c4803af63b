"""Bottom of the stack: reparameterize, KL forms, every likelihood (values and gradients), the
torch-BCE and Lua-BCE edge cases, each as a JAX half and a torch half on the same numpy inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jax_vae import losses as jl
from jax_vae.common.config.presets import PRESETS
from jax_vae.linen import models as jm
from parity_tests.harness import DTYPES, variant
from parity_tests.tolerances import assert_close, tol
from torch_reference import losses as tl
from torch_reference.nn import models as tm


def _grad(t: torch.Tensor) -> np.ndarray:
    """The gradient backward() left on a leaf tensor, as numpy."""
    assert t.grad is not None, "backward() left no gradient"
    return t.grad.numpy()


def _rng_arrays(dtype, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(DTYPES[dtype][0]) for s in shapes]


@pytest.mark.parametrize("scale_param", ["logvar", "sigma"])
def test_reparameterize(dtype, scale_param):
    mean, scale, eps = _rng_arrays(dtype, (8, 5), (8, 5), (3, 8, 5))
    # JAX half
    z_j = jm.reparameterize(
        jnp.asarray(mean), jm.std_from_scale(jnp.asarray(scale), scale_param), jnp.asarray(eps)
    )
    # torch half
    z_t = tm.reparameterize(
        torch.from_numpy(mean), tm.std_from_scale(torch.from_numpy(scale), scale_param), torch.from_numpy(eps)
    )
    assert z_j.shape == (3, 8, 5)
    assert_close(f"{dtype}/z[{scale_param}]", z_j, z_t.numpy(), tol(dtype, "forward"))


@pytest.mark.parametrize("form", ["logvar", "sigma", "day37"])
def test_kl_value_and_grad(dtype, form):
    mean, scale = _rng_arrays(dtype, (8, 5), (8, 5), seed=1)
    if form == "day37":
        jfn = lambda m, s: jl.kl_day37(m, s, 784)
        tfn = lambda m, s: tl.kl_day37(m, s, 784)
    else:
        jfn = lambda m, s: jl.kl_normal(m, s, form)
        tfn = lambda m, s: tl.kl_normal(m, s, form)
    # JAX half
    kl_j = jfn(jnp.asarray(mean), jnp.asarray(scale))
    gm_j, gs_j = jax.grad(lambda m, s: jfn(m, s).sum(), argnums=(0, 1))(jnp.asarray(mean), jnp.asarray(scale))
    # torch half
    m_t, s_t = (torch.from_numpy(a).requires_grad_() for a in (mean, scale))
    kl_t = tfn(m_t, s_t)
    kl_t.sum().backward()
    assert_close(f"{dtype}/kl[{form}]", kl_j, kl_t.detach().numpy(), tol(dtype, "loss_terms"))
    assert_close(f"{dtype}/dkl/dmean[{form}]", gm_j, _grad(m_t), tol(dtype, "grad"))
    assert_close(f"{dtype}/dkl/dscale[{form}]", gs_j, _grad(s_t), tol(dtype, "grad"))


@pytest.mark.parametrize("scale_param", ["logvar", "sigma"])
@pytest.mark.parametrize("samples", [1, 3])
def test_kl_monte_carlo_value_and_grad(dtype, scale_param, samples):
    """kl='monte_carlo' (tf-cvae): log q(z|x) - log p(z) at z = eps exp(logvar / 2) + mean, averaged over
    L samples, per example [B] and its gradients, both twins; float64 also against numpy's
    sum(0.5 z^2 - 0.5 eps^2 - 0.5 logvar), the same number with the log 2 pi terms cancelled."""
    mean, scale, eps = _rng_arrays(dtype, (8, 5), (8, 5), (samples, 8, 5), seed=4)
    cfg = variant(PRESETS["pytorch-examples"], kl="monte_carlo", scale_param=scale_param)
    # JAX half
    fn_j = lambda m, s: jl.kl_term(m, s, cfg, jnp.asarray(eps))
    kl_j = fn_j(jnp.asarray(mean), jnp.asarray(scale))
    gm_j, gs_j = jax.grad(lambda m, s: fn_j(m, s).sum(), argnums=(0, 1))(
        jnp.asarray(mean), jnp.asarray(scale)
    )
    # torch half
    m_t, s_t = (torch.from_numpy(a).requires_grad_() for a in (mean, scale))
    kl_t = tl.kl_term(m_t, s_t, cfg, torch.from_numpy(eps))
    kl_t.sum().backward()
    assert kl_j.shape == (8,)
    assert_close(
        f"{dtype}/kl[mc,{scale_param},L={samples}]", kl_j, kl_t.detach().numpy(), tol(dtype, "loss_terms")
    )
    assert_close(f"{dtype}/dkl_mc/dmean[{scale_param}]", gm_j, _grad(m_t), tol(dtype, "grad"))
    assert_close(f"{dtype}/dkl_mc/dscale[{scale_param}]", gs_j, _grad(s_t), tol(dtype, "grad"))
    if dtype == "float64":
        logvar = scale if scale_param == "logvar" else np.log(np.square(scale))
        z = eps * np.exp(0.5 * logvar) + mean
        expected = (0.5 * (np.square(z) - np.square(eps) - logvar)).sum(-1).mean(0)
        assert_close("numpy kl[mc]", kl_t.detach().numpy(), expected, tol(dtype, "loss_terms"))
        # d/dmean of the one-sample estimate is z (the q terms cancel), averaged over the samples
        assert_close("numpy dkl_mc/dmean", _grad(m_t), z.mean(0), tol(dtype, "grad"))
    with pytest.raises(ValueError, match="needs the eps"):
        jl.kl_term(jnp.asarray(mean), jnp.asarray(scale), cfg)


def test_monte_carlo_objective_is_the_tutorials_loss(dtype):
    """objective() with bce_logits, kl='monte_carlo', reduction mean: -mean(log p(x|z) + log p(z) -
    log q(z|x)) as the TF CVAE tutorial's compute_loss writes it (numpy, float64), and both twins'
    loss and gradients (decoder logits, mean, logvar) agree."""
    cfg = variant(
        PRESETS["pytorch-examples"],
        kl="monte_carlo",
        likelihood="bce_logits",
        decoder_output="logits",
        reduction="mean",
        latent_dim=5,
        input_dim=12,
    )
    logits, mean, logvar, eps = _rng_arrays(dtype, (1, 8, 12), (8, 5), (8, 5), (1, 8, 5), seed=5)
    x = (np.random.default_rng(6).random((8, 12)) > 0.5).astype(DTYPES[dtype][0])
    # JAX half
    loss_j = lambda o, m, s: jl.objective(o, m, s, jnp.asarray(x), jnp.asarray(eps), cfg)[0]
    args_j = [jnp.asarray(a) for a in (logits, mean, logvar)]
    value_j, grads_j = jax.value_and_grad(loss_j, argnums=(0, 1, 2))(*args_j)
    # torch half
    args_t = [torch.from_numpy(a).requires_grad_() for a in (logits, mean, logvar)]
    lg_t, m_t, lv_t = args_t
    value_t = tl.objective(lg_t, m_t, lv_t, torch.from_numpy(x), torch.from_numpy(eps), cfg)[0]
    value_t.backward()
    assert_close(f"{dtype}/mc loss", value_j, value_t.detach().numpy(), tol(dtype, "loss"))
    for name, g_j, a_t in zip(("logits", "mean", "logvar"), grads_j, args_t):
        assert_close(f"{dtype}/dloss_mc/d{name}", g_j, _grad(a_t), tol(dtype, "grad"))
    if dtype == "float64":
        lg, z = logits[0], eps[0] * np.exp(logvar * 0.5) + mean
        cross_ent = np.maximum(lg, 0) - lg * x + np.log1p(np.exp(-np.abs(lg)))  # TF's stable form
        log2pi = np.log(2.0 * np.pi)
        logpz = (-0.5 * (z**2 + log2pi)).sum(1)
        logqz_x = (-0.5 * ((z - mean) ** 2 * np.exp(-logvar) + logvar + log2pi)).sum(1)
        expected = -np.mean(-cross_ent.sum(1) + logpz - logqz_x)
        assert_close(
            "numpy tutorial loss", value_t.detach().numpy(), np.float64(expected), tol(dtype, "loss")
        )


def test_kl_matches_closed_form_numbers():
    """KL(N(1, e^0) || N(0, 1)) = 0.5 per dimension; KL(N(0, 1) || N(0, 1)) = 0."""
    assert float(jl.kl_normal(jnp.ones((1, 4)), jnp.zeros((1, 4)), "logvar")[0]) == pytest.approx(2.0)
    assert float(tl.kl_normal(torch.zeros(1, 4), torch.ones(1, 4), "sigma")[0]) == pytest.approx(0.0)


@pytest.mark.parametrize("likelihood", ["bce_probs", "bce_lua", "bce_logits", "mse_sum", "mse_mean"])
def test_likelihood_value_and_grad(dtype, likelihood):
    rng = np.random.default_rng(2)
    np_dtype = DTYPES[dtype][0]
    out = rng.standard_normal((2, 6, 20)).astype(np_dtype)
    if likelihood in ("bce_probs", "bce_lua"):
        out = (1 / (1 + np.exp(-out))).astype(np_dtype)
    x = rng.uniform(size=(6, 20)).astype(np_dtype)
    # JAX half
    fn_j = jl.LIKELIHOODS[likelihood]
    val_j, grad_j = jax.value_and_grad(lambda o: fn_j(o, jnp.asarray(x)).sum())(jnp.asarray(out))
    per_j = fn_j(jnp.asarray(out), jnp.asarray(x))
    # torch half
    o_t = torch.from_numpy(out).requires_grad_()
    per_t = tl.LIKELIHOODS[likelihood](o_t, torch.from_numpy(x))
    per_t.sum().backward()
    assert per_j.shape == (2, 6)
    assert_close(f"{dtype}/{likelihood}", per_j, per_t.detach().numpy(), tol(dtype, "loss_terms"))
    assert_close(f"{dtype}/d{likelihood}/doutput", grad_j, _grad(o_t), tol(dtype, "grad"))


def test_bce_edge_cases(dtype):
    """Outputs exactly 0 and 1 against targets 0, 1 and grey: torch's -100 clamp on each log term
    and its backward (p - x) / max(p (1 - p), 1e-12), finite where a naive clamp gives NaN."""
    np_dtype = DTYPES[dtype][0]
    p = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 1e-30, 1 - 1e-7], np_dtype)
    x = np.array([0.0, 1.0, 0.3, 0.0, 1.0, 0.7, 0.5, 1.0, 0.0], np_dtype)
    # JAX half
    val_j, grad_j = jax.value_and_grad(lambda q: jl.bce_probs(q, jnp.asarray(x)))(jnp.asarray(p))
    elem_j = jax.vmap(lambda q, t: jl.bce_probs(q[None], t[None]))(jnp.asarray(p), jnp.asarray(x))
    # torch half
    p_t = torch.from_numpy(p).requires_grad_()
    val_t = torch.nn.functional.binary_cross_entropy(p_t, torch.from_numpy(x), reduction="sum")
    val_t.backward()
    elem_t = torch.nn.functional.binary_cross_entropy(
        torch.from_numpy(p), torch.from_numpy(x), reduction="none"
    )
    assert np.all(np.isfinite(np.asarray(grad_j))), "JAX BCE gradient is not finite at p in {0, 1}"
    assert float(elem_j[1]) == pytest.approx(100.0) and float(elem_j[3]) == pytest.approx(100.0)
    assert_close(f"{dtype}/bce_edge_values", elem_j, elem_t.numpy(), tol(dtype, "loss_terms"))
    assert_close(f"{dtype}/bce_edge_sum", val_j, val_t.detach().numpy(), tol(dtype, "loss"))
    assert_close(f"{dtype}/bce_edge_grad", grad_j, _grad(p_t), tol(dtype, "grad"))


def test_bce_logits_extreme_logits(dtype):
    """BCE with logits stays finite and matches torch at |logit| = 80 (sigmoid saturated)."""
    np_dtype = DTYPES[dtype][0]
    logits = np.array([-80.0, -80.0, 80.0, 80.0, 0.0], np_dtype)
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.5], np_dtype)
    val_j, grad_j = jax.value_and_grad(lambda z: jl.bce_logits(z, jnp.asarray(x)))(jnp.asarray(logits))
    l_t = torch.from_numpy(logits).requires_grad_()
    val_t = tl.bce_logits(l_t, torch.from_numpy(x))
    val_t.backward()
    assert_close(f"{dtype}/bce_logits_extreme", val_j, val_t.detach().numpy(), tol(dtype, "loss"))
    assert_close(f"{dtype}/bce_logits_extreme_grad", grad_j, _grad(l_t), tol(dtype, "grad"))


# Lua BCE edge cases: p exactly 0 and 1, p within 1e-12 of 0 and 1 (float32 rounds 1 - 1e-13 to 1),
# targets 0, 1 and fractional.
LUA_P = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1e-13, 1e-13, 1 - 1e-13, 1 - 1e-13, 5e-13, 0.5, 0.3, 1e-30]
LUA_X = [0.0, 1.0, 0.3, 0.0, 1.0, 0.7, 0.0, 1.0, 0.0, 1.0, 0.25, 0.5, 0.75, 1.0]


def _lua_bce_pair(dtype: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-element bce_lua value and d/dp on both sides (each element its own pixel row); JAX jitted,
    as the shipped step runs it (XLA may rewrite what eager dispatch runs op by op), and eager."""
    np_dtype = DTYPES[dtype][0]
    p = np.array(LUA_P, np_dtype)[:, None]  # [N, 1]: one pixel per example
    x = np.array(LUA_X, np_dtype)[:, None]

    # JAX half
    def value_and_grad(q):
        return jl.bce_lua(q, jnp.asarray(x)), jax.grad(lambda r: jl.bce_lua(r, jnp.asarray(x)).sum())(q)

    val_j, grad_j = jax.jit(value_and_grad)(jnp.asarray(p))  # [N], [N, 1]
    val_e, grad_e = value_and_grad(jnp.asarray(p))
    # torch half
    p_t = torch.from_numpy(p).requires_grad_()
    val_t = tl.bce_lua(p_t, torch.from_numpy(x))
    val_t.sum().backward()
    torch_grad = _grad(p_t)[:, 0]
    return {
        "value": (np.asarray(val_j), val_t.detach().numpy()),
        "grad": (np.asarray(grad_j)[:, 0], torch_grad),
        "value[eager]": (np.asarray(val_e), val_t.detach().numpy()),
        "grad[eager]": (np.asarray(grad_e)[:, 0], torch_grad),
    }


def test_bce_lua_edge_cases(dtype):
    """Lua BCECriterion at p in {0, 1} and within 1e-12 of them: finite, and JAX = torch elementwise
    (values up to 27.6 nats, gradients up to 1e12 next to ~0.09: no scale-relative atol)."""
    pairs = _lua_bce_pair(dtype)
    for name, (jax_value, torch_value) in pairs.items():
        assert np.all(np.isfinite(jax_value)), f"{dtype}/bce_lua_edge_{name}: JAX not finite"
        assert_close(f"{dtype}/bce_lua_edge_{name}", jax_value, torch_value, tol(dtype, "elementwise"))
    # p = 0, x = 1: -log(1e-12) = 27.63 nats (torch's bce_probs clamps at 100)
    assert pairs["value"][0][1] == pytest.approx(-np.log(np.float64(np.asarray(1e-12, DTYPES[dtype][0]))))


def test_bce_lua_matches_closed_form(dtype):
    """Value -(x log(p + 1e-12) + (1 - x) log(1 - p + 1e-12)) and gradient
    -(x - p) / ((1 - p + 1e-12)(p + 1e-12)), written out in numpy in the same dtype."""
    np_dtype = DTYPES[dtype][0]
    p, x = np.array(LUA_P, np_dtype), np.array(LUA_X, np_dtype)
    eps = np_dtype(jl.LUA_BCE_EPSILON)
    one = np_dtype(1)
    value = -(x * np.log(p + eps) + (one - x) * np.log((one - p) + eps))
    grad = -(x - p) / (((one - p) + eps) * (p + eps))
    assert value.dtype == grad.dtype == np_dtype
    pairs = _lua_bce_pair(dtype)
    for side, key, i in (("jax", "", 0), ("jax", "[eager]", 0), ("torch", "", 1)):
        for what, want in (("value", value), ("grad", grad)):
            got = pairs[what + key][i]
            assert_close(f"{dtype}/{side}/bce_lua {what}{key}", got, want, tol(dtype, "elementwise"))
    # Computed in the dtype: at p = x = 1 the loss is -log(1 + 1e-12), -1.0e-12 in float64 and
    # exactly 0 in float32, where 1 + 1e-12 rounds to 1.
    want = -np.log1p(1e-12) if dtype == "float64" else 0.0
    assert pairs["value"][0][4] == pytest.approx(want, rel=1e-3, abs=0.0)
    # The gradient is the criterion's backward, not the derivative of its forward, which is
    # (p - x + 1e-12 (1 - 2x)) / ((1 - p + 1e-12)(p + 1e-12)): at p = x = 0 that is ~1, the backward 0.
    assert pairs["grad"][0][0] == 0.0 and pairs["grad"][1][0] == 0.0
    exact = jax.grad(lambda q: -jnp.log((1 - q) + jl.LUA_BCE_EPSILON))(jnp.zeros((), np_dtype))
    assert float(exact) == pytest.approx(1.0, rel=1e-6)
