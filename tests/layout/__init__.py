"""Tests: the house: layers, mirrors, the public face, the wheel."""
