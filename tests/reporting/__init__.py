"""Tests: plots, compare, TensorBoard."""
