"""Unit tests of meta.optimize."""
