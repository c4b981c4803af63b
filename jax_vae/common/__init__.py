"""Framework-free core of jax-vae: numpy, matplotlib and Pillow, never jax, torch or either twin.

Concern packages, bottom up (a layer imports only the layers below it; tests/layout/test_layering.py):
errors, files, metrics (the base) < data < config < backends (the seam) < runs < weights | reporting
< training | evaluation < cli. ARCHITECTURE.md describes each.
"""

__all__ = [
    "errors",
    "files",
    "metrics",
    "data",
    "config",
    "backends",
    "runs",
    "weights",
    "reporting",
    "training",
    "evaluation",
    "cli",
]
