"""Tests: the benchmark modes and drivers."""
