"""jax-vae, the JAX/Flax side: models, losses, optimizers, the pure train step, training, checkpoints."""
