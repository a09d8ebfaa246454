"""Unit tests of the meta-portfolio stages."""
