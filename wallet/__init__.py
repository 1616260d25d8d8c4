"""xln-signer's desktop wallet and signing agent (PySide6 + qasync).

It drives the node only through the node's public API or its protocol, never
through its internals.
"""
