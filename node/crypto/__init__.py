"""Cryptography for entity signers: BLS12-381 signatures and EIP-2335 keystores."""
