"""`python -m torch_reference <train|evaluate|export|compare> ...`: the PyTorch side of
jax_vae.common.cli (same flags)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jax_vae.common import cli


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, framework="torch")


if __name__ == "__main__":
    sys.exit(main())
