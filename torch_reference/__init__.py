"""The PyTorch twin of jax_vae: the same files, names and parameters (tests/test_architecture.py)."""
