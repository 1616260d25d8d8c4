"""Tests for node."""
