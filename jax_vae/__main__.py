"""`python -m jax_vae <train|evaluate|export|compare> ...` (the `jax-vae` script): the JAX side of
jax_vae.common.cli."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jax_vae.common import cli


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, framework="jax")


if __name__ == "__main__":
    sys.exit(main())
