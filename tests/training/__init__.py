"""Tests: training from both CLIs and the library, data-parallel, threads."""
