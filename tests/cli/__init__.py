"""Tests: the CLI's one-line errors."""
