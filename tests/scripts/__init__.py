"""Tests for scripts/."""
