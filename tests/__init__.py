"""Test suite; mirrors the package tree."""
