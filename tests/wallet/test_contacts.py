"""Co-signers' names (wallet/contacts.py): kept atomically, checked, forgotten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wallet import contacts
from wallet.contacts import ContactsError

A, B = b"\xaa" * 32, b"\xbb" * 32


def test_names_kept_and_forgotten(tmp_path: Path) -> None:
    assert contacts.load(tmp_path) == {}
    assert contacts.set_name(tmp_path, A, "  Alice ") == {A: "Alice"}
    assert contacts.set_name(tmp_path, B, "Bob 🚀") == {A: "Alice", B: "Bob 🚀"}
    assert contacts.load(tmp_path) == {A: "Alice", B: "Bob 🚀"}
    assert contacts.set_name(tmp_path, A, "") == {B: "Bob 🚀"}
    doc = json.loads((tmp_path / contacts.CONTACTS_FILE).read_text("utf-8"))
    assert doc == {"version": 1, "names": {B.hex(): "Bob 🚀"}}
    assert not list(tmp_path.glob(".contacts.json.*"))  # no temporary file left


def test_bad_names_and_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ContactsError, match="at most 40"):
        contacts.set_name(tmp_path, A, "x" * 41)
    with pytest.raises(ContactsError, match="control"):
        contacts.set_name(tmp_path, A, "a\nb")
    with pytest.raises(ContactsError, match="32 bytes"):
        contacts.set_name(tmp_path, b"\x01", "a")
    assert contacts.load(tmp_path) == {}
    path = tmp_path / contacts.CONTACTS_FILE
    for text, match in (
        ("{", "damaged"),
        ('{"version": 2, "names": {}}', "version-1"),
        ('{"version": 1, "names": {"zz": "a"}}', "not a signer id"),
        ('{"version": 1, "names": {"' + "ab" * 32 + '": 5}}', "bad entry"),
    ):
        path.write_text(text, "utf-8")
        with pytest.raises(ContactsError, match=match):
            contacts.load(tmp_path)
