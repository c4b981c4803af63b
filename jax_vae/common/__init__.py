"""Framework-free core of jax-vae: imports neither jax nor torch nor either twin
(tests/test_architecture.py)."""
