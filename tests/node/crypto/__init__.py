"""Tests for node.crypto."""
