"""xln-signer's light node: the server machine, its chain in LevelDB, and its WebSocket API.

This package never imports Qt; the wallet drives it through :mod:`node.runtime`
or the protocol in ``docs/PROTOCOL.md``.
"""

__version__ = "0.1.0"
