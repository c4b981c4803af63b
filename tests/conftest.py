"""Fixtures shared by the tests in every folder below (plain helpers: tests/helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core box OpenMP spin-waits make
    them ~50x slower; the SIGKILL test also needs the same thread count in every process it compares."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
