"""The named presets: each published VAE design as a VAEConfig, with its source and quirks beside it."""

from __future__ import annotations

from jax_vae.common.config.vae_config import VAEConfig

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


_preset(
    VAEConfig(
        name="tf-cvae",
        arch="conv",
        input_dim=784,
        image_shape=(28, 28),
        conv_channels=(32, 64),
        conv_padding="valid",
        encoder_hidden=(),
        latent_dim=2,
        encoder_head="split",
        decoder_hidden=(),
        decoder_start=(32, 7, 7),
        deconv_channels=(64, 32),
        deconv_padding="same",
        final_layer="conv_transpose",
        decoder_output="logits",
        likelihood="bce_logits",
        kl="monte_carlo",
        reduction="mean",
        init="glorot",
        optimizer="lua_adam",
        adam_eps=1e-7,
        lr=1e-4,
        binarization="threshold",
        batch_size=32,
        epochs=10,
        dataset="fashion_mnist",
    ),
    "TensorFlow's 'Convolutional Variational Autoencoder' tutorial (docs/conv-presets.md): encoder "
    "Conv2D(32, 3, s2, valid, relu) -> Conv2D(64, 3, s2, valid, relu) -> Flatten (H, W, C order) -> "
    "Dense(2 x 2) split into mean and logvar; decoder Dense(7*7*32, relu) -> (7, 7, 32) -> "
    "Conv2DTranspose(64, 3, s2, same, relu) -> Conv2DTranspose(32, 3, s2, same, relu) -> "
    "Conv2DTranspose(1, 3, s1, same) logits. Quirks: the single-sample Monte Carlo ELBO log p(x|z) + "
    "log p(z) - log q(z|x) (kl=monte_carlo, not the analytic KL), averaged over the batch; 'static "
    "binarization' is a threshold x > 0.5; Keras Adam(1e-4) has epsilon 1e-7 added before the bias "
    "correction (the lua_adam form, no decay); Keras Glorot-uniform kernels, zero biases; batch 32, "
    "10 epochs; the tutorial trains MNIST, here Fashion-MNIST.",
)

_preset(
    VAEConfig(
        name="antixk-vanilla",
        arch="conv",
        input_dim=64 * 64,
        image_shape=(64, 64),
        resize=64,
        conv_channels=(32, 64, 128, 256, 512),
        conv_padding="1",
        encoder_hidden=(),
        latent_dim=128,
        decoder_hidden=(),
        decoder_start=(512, 2, 2),
        decoder_start_activation=False,
        deconv_channels=(256, 128, 64, 32, 32),
        deconv_padding="1",
        output_padding=1,
        final_layer="conv",
        batch_norm=True,
        activation="leaky_relu",
        decoder_output="tanh",
        likelihood="mse_mean",
        reduction="mean",
        beta=0.00025,
        lr=0.005,
        lr_schedule="exponential",
        lr_gamma=0.95,
        batch_size=64,
        epochs=100,
        dataset="fashion_mnist",
    ),
    "AntixK/PyTorch-VAE VanillaVAE (models/vanilla_vae.py, configs/vae.yaml; docs/conv-presets.md): "
    "5 x [Conv2d(k3, s2, p1) -> BatchNorm2d -> LeakyReLU] with 32..512 channels, fc_mu / fc_var from "
    "the NCHW flatten of 512 x 2 x 2; decoder Linear(128, 512*4) (no activation) -> 512 x 2 x 2 -> 4 x "
    "[ConvTranspose2d(k3, s2, p1, output_padding 1) -> BatchNorm2d -> LeakyReLU] -> the final "
    "ConvTranspose2d(32, 32) -> BatchNorm2d -> LeakyReLU -> Conv2d(32, C, k3, p1) -> Tanh. Quirks: "
    "loss = MSE mean over every element + kld_weight 0.00025 x the batch-mean analytic KL; Adam lr "
    "0.005, ExponentialLR gamma 0.95 stepped per epoch; BatchNorm momentum 0.1 (torch's, the unbiased "
    "running variance); the source's targets are [0, 1] images under a Tanh decoder (its current "
    "code); its CelebA (3 channels, CenterCrop 148, Resize 64) needs a download: here Fashion-MNIST "
    "resized to 64 x 64 with 1 channel (celeba:PATH reads the source's data); batch 64, 100 epochs.",
)


def get_preset(name: str) -> VAEConfig:
    """Look up a preset by name, with a one-line error listing the known names."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]
