"""Signer keys: mnemonics and derivation, keyring backends, and the vault."""
