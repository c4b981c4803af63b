"""Tests: weight files and the sources' checkpoints."""
