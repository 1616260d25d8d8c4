"""Errors the node's public API raises at submission time, before anything is queued."""


class Refused(Exception):
    """A request the node turns down; nothing changed."""


class Busy(Refused):
    """The inbox is at its cap. Retry after the next block."""


class UnknownRoute(Refused):
    """No machine at that route on this server."""


class TooLarge(Refused):
    """A submission that could never fit in one block or in the inbox."""


class ShuttingDown(Refused):
    """The node is stopping (or its storage failed) and takes nothing more."""


class NotFound(Refused):
    """What was asked for is not (or no longer) held here."""
