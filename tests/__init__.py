"""jax-vae's tests, by concern; shared fixtures in conftest.py, shared helpers in helpers.py."""
