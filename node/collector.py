"""The cyclic garbage collector's settings for a process that runs all day.

CPython collects its youngest generation every 700 net allocations of container
objects. A node or an agent that handles a thousand payments a second makes far
more than that per frame (decoded RLP trees, transactions, trie nodes on a
walk), so at the default most of a frame's short-lived objects are still alive
at a young collection, are promoted, and die in an older generation; and each
object promoted into the oldest generation is traversed, on average, about four
more times by the full collections that follow (a full collection runs when the
objects promoted since the last one reach a quarter of those that survived it).
The payments benchmark's nodes and accountants spent a quarter of their CPU
there (``docs/PERFORMANCE.md``).

``tune()`` raises the young threshold so that a frame's temporaries die young
and are freed there; the older thresholds are CPython's. ``freeze_startup()``,
called once a process has loaded its modules and state and before it serves,
moves everything alive then (modules, classes, the loaded state) to the
permanent generation, which no collection traverses. Objects in it are still
freed by reference counting; only reference cycles made entirely of them and
dropped later are never freed, which bounds the cost at the start-up heap.

Memory: the young generation holds at most ``YOUNG_THRESHOLD`` objects more
than the default before it is collected (a few MiB). Reference cycles are
still collected, as before.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
MIDDLE_THRESHOLD = 20  # young collections between two of the middle generation
OLD_THRESHOLD = 10  # CPython's default


def tune() -> None:
    """Set the collector's thresholds for a long-running process."""
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


def freeze_startup() -> None:
    """Collect once, then keep everything alive now out of later collections."""
    gc.collect()
    gc.freeze()
