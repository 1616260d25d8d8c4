"""What Settings does with the keys, after the wallet password: change that
password, show a key's recovery phrase, export a key as an EIP-2335 keystore.

Plain Python (no Qt), so the rules are tested headless; each action runs the
vault's slow KDF off the event loop (``asyncio.to_thread``) and raises
:class:`KeyActionError` with a message for the person, or ``WrongPassword``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from node.crypto import keystore
from wallet.flows import backup as backup_flow
from wallet.flows.onboarding import MIN_PASSWORD
from wallet.keys.vault import Vault


class KeyActionError(ValueError):
    """A request refused before the vault was asked, with what to fix."""


def check_new_password(new: str, again: str) -> None:
    """The rule onboarding applies to a new password, and the two copies agree."""
    if len(new) < MIN_PASSWORD:
        raise KeyActionError(f"The new password needs at least {MIN_PASSWORD} characters.")
    if new != again:
        raise KeyActionError("The two copies of the new password differ.")


async def change_password(vault: Vault, old: str, new: str, again: str) -> None:
    check_new_password(new, again)
    if new == old:
        raise KeyActionError("The new password is the current one.")
    await asyncio.to_thread(vault.change_password, old, new)
    # The backups' data key: later backups open with the new password.
    await asyncio.to_thread(backup_flow.rekey, vault, new)


async def recovery_phrase(vault: Vault, signer_id: bytes, password: str) -> str:
    phrase = await asyncio.to_thread(vault.recovery_phrase, signer_id, password)
    if phrase is None:
        raise KeyActionError(
            "This key has no recovery phrase kept here: it was imported from a keystore, "
            "or added before the wallet kept phrases. Export it as a keystore instead."
        )
    return phrase


async def export_key(
    vault: Vault, signer_id: bytes, password: str, file_password: str, again: str, path: Path
) -> None:
    """Write the key to ``path`` (0600, atomically) under ``file_password``."""
    check_new_password(file_password, again)
    if await asyncio.to_thread(path.exists):
        raise KeyActionError(f"{path} exists already: choose a new file name.")
    exported = await asyncio.to_thread(vault.export_key, signer_id, password, file_password)
    await asyncio.to_thread(keystore.save, path, exported)
