"""Tests: IWAE-k evaluation."""
