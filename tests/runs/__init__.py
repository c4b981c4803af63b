"""Tests: run folders, checkpoints, locks, OS errors, legacy files."""
