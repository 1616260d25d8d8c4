"""The collector's settings for long-running processes (node/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from node import collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_tune_sets_the_thresholds() -> None:
    collector.tune()
    assert gc.get_threshold() == (
        collector.YOUNG_THRESHOLD,
        collector.MIDDLE_THRESHOLD,
        collector.OLD_THRESHOLD,
    )
    assert collector.YOUNG_THRESHOLD > 700  # the point: fewer promotions than CPython's


@pytest.mark.usefixtures("restored_collector")
def test_freeze_keeps_live_objects_out_and_still_collects_new_cycles() -> None:
    gc.unfreeze()
    collector.freeze_startup()
    assert gc.get_freeze_count() > 1_000  # the modules and classes alive now

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after the freeze
    del a, b
    assert gc.collect() >= 2  # still found and freed
