"""Tests for node/net."""
