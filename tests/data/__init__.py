"""Tests: datasets, IDX files, user data."""
