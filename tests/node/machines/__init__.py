"""Tests for node/machines."""
