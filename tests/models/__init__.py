"""Tests: models, losses and objectives, NNX."""
