"""Signer keys: mnemonics and derivation, keyring backends, and the vault.

The public names the rest of the wallet uses; see docs/WALLET.md ("Keys").
"""

from wallet.keys.backends import (
    SERVICE,
    BackendChoice,
    BackendError,
    EncryptedFileKeyring,
    choose_backend,
)
from wallet.keys.mnemonic import MnemonicError
from wallet.keys.vault import KeyInfo, Locked, Vault, VaultError, WrongPassword

__all__ = [
    "SERVICE",
    "BackendChoice",
    "BackendError",
    "EncryptedFileKeyring",
    "KeyInfo",
    "Locked",
    "MnemonicError",
    "Vault",
    "VaultError",
    "WrongPassword",
    "choose_backend",
]
