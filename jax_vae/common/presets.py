"""The named presets: each published VAE design as a VAEConfig, with its source and quirks beside it."""

from __future__ import annotations

from jax_vae.common.config import VAEConfig

PRESETS: dict[str, VAEConfig] = {}
PRESET_DOCS: dict[str, str] = {}


def _preset(cfg: VAEConfig, doc: str) -> None:
    PRESETS[cfg.name] = cfg
    PRESET_DOCS[cfg.name] = doc


_preset(
    VAEConfig(
        name="wiseodd",
        encoder_hidden=(128,),
        latent_dim=100,
        decoder_hidden=(128,),
        init="wiseodd",
        reduction="sum",
        batch_size=64,
        steps=100_000,
    ),
    "wiseodd's 'Variational Autoencoder: Intuition and Implementation' (PyTorch code of the post). "
    "Quirks: BCE and KL both SUMMED over the batch, as the post writes them "
    "(binary_cross_entropy(X_sample, X, size_average=False) + 0.5 * torch.sum(exp(z_var) + z_mu**2 "
    "- 1 - z_var), no division by mb_size); a later version of wiseodd/generative-models "
    "vanilla_vae divides by mb_size, which is --set reduction=mean; weights ~ N(0, "
    "std=1/sqrt(fan_in/2)), zero biases; trains by 100k iterations of batch 64, not by epochs.",
)

_preset(
    VAEConfig(
        name="minimalist",
        encoder_hidden=(500,),
        latent_dim=2,
        decoder_hidden=(500,),
        weight_decay=1e-5,
        batch_size=100,
        epochs=50,
        eval_use_mean=True,
    ),
    "Minimal 2-D latent VAE. Quirks: torch Adam weight_decay=1e-5 is coupled L2 (added to the "
    "gradient), not AdamW; evaluation decodes z = mu (no sampling).",
)

_preset(
    VAEConfig(
        name="deep-mse",
        encoder_hidden=(256, 128, 32),
        latent_dim=10,
        decoder_hidden=(32, 128, 256),
        decoder_output="identity",
        likelihood="mse_sum",
        batch_size=64,
        epochs=10,
        drop_last=True,
    ),
    "Deep MLP VAE with Gaussian-ish MSE loss. Quirks: decoder has no output activation; MSE is "
    "summed (not averaged); last incomplete batch dropped.",
)

_preset(
    VAEConfig(
        name="day37",
        encoder_hidden=(256, 64),
        latent_dim=10,
        decoder_hidden=(64, 256),
        activation="identity",
        encoder_head="split",
        scale_param="sigma",
        decoder_output="identity",
        likelihood="mse_mean",
        kl="day37",
        reduction="mean",
        batch_size=32,
        epochs=10,
    ),
    "'Day 37' VAE as printed. Quirks: no activations anywhere (a linear model); encoder emits "
    "sigma directly (split of 20 outputs, can be negative); loss = MSE mean over all elements + "
    "0.5*sum(mu^2+sigma^2-log(1e-8+sigma^2)-1) / (number of input elements).",
)

_preset(
    VAEConfig(
        name="stutz-rectangles",
        input_dim=576,
        encoder_hidden=(1152, 1152),
        latent_dim=2,
        decoder_hidden=(1152, 1152),
        init="lua",
        likelihood="bce_lua",
        optimizer="lua_adam",
        lr_decay=1e-4,
        dataset="rectangles",
        manifold_grid="linear",
        batch_size=16,
        epochs=10,
    ),
    "David Stutz's Lua-torch VAE on 24x24 rectangles. Quirks: Lua-torch Linear init "
    "U(+-1/sqrt(fan_in)) on weights and biases; Lua optim.adam: lr_t = lr/(1+t*1e-4), epsilon "
    "added to sqrt(v) BEFORE bias correction; nn.BCECriterion with sizeAverage=false (summed over "
    "pixels and batch), which is -(x log(p + 1e-12) + (1 - x) log(1 - p + 1e-12)) in the tensor's "
    "dtype (no -100 clamp) with its own backward -(x - p) / ((1 - p + 1e-12)(p + 1e-12)) "
    "(likelihood bce_lua); KL summed likewise.",
)

_preset(
    VAEConfig(name="pytorch-examples", batch_size=128, epochs=10),
    "pytorch/examples vae/main.py: BCE(sum) + KLD summed over the batch.",
)

_preset(
    VAEConfig(
        name="flax-examples",
        encoder_hidden=(500,),
        decoder_hidden=(500,),
        decoder_output="logits",
        likelihood="bce_logits",
        reduction="mean",
        init="flax",
        binarization="static",
        batch_size=128,
        epochs=30,
    ),
    "google/flax examples/vae: logits decoder, BCE-with-logits and KL each averaged over the "
    "batch; Flax Dense default init (lecun_normal kernel, zero bias), as its source does; trained "
    "on the (statically) binarized MNIST.",
)

_preset(
    VAEConfig(
        name="iwae-paper",
        encoder_hidden=(200, 200),
        latent_dim=50,
        decoder_hidden=(200, 200),
        activation="tanh",
        decoder_output="logits",
        likelihood="bce_logits",
        init="glorot",
        objective="iwae",
        num_samples=5,
        binarization="dynamic",
        adam_eps=1e-4,
        lr_schedule="iwae",
        batch_size=20,
        epochs=10,
        dataset="fashion_mnist",
    ),
    "Burda et al. (2016) one-stochastic-layer IWAE: 784-200-200 tanh, 50-d latent, Bernoulli "
    "logits, Glorot init, dynamic binarization, Adam(b1=0.9, b2=0.999, eps=1e-4) with lr 1e-3 * "
    "10**(-i/7) for 3**i epochs (i = 0..7 in the paper), k=5, batch 20.",
)


def get_preset(name: str) -> VAEConfig:
    """Look up a preset by name, with a one-line error listing the known names."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]
