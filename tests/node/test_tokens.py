"""API tokens: hashed at rest, scoped, revocable, shared safely between processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.tokens import Scope, ScopeError, TokenStore
from tests.conftest import xln_node


def test_created_tokens_authenticate_and_are_stored_hashed(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    tokens = [store.create(Scope("server"), f"t{i}")[0] for i in range(300)]
    text = store.path.read_text()
    for token in tokens:
        # Secrets contain '_' about half the time (base64url); all must work.
        record = store.authenticate(token)
        assert record is not None
        assert record.scope == "server"
        assert token.split("_", 2)[2] not in text
    assert (store.path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    "bad", ["", "xln", "xln__", "xln_00000000_x", "bearer abc", "xln_" + "a" * 200, "\x00"]
)
def test_garbage_never_authenticates(tmp_path: Path, bad: str) -> None:
    store = TokenStore(tmp_path)
    store.create(Scope("server"))
    assert store.authenticate(bad) is None


def test_a_right_id_with_a_wrong_secret_fails(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token, record = store.create(Scope("server"))
    assert store.authenticate(f"xln_{record.id}_{'A' * 43}") is None
    assert store.authenticate(token + "x") is None


def test_revocation_reaches_another_instance_on_refresh(tmp_path: Path) -> None:
    writer, reader = TokenStore(tmp_path), TokenStore(tmp_path)
    token, record = writer.create(Scope("server"))
    assert reader.authenticate(token) is None  # not yet reloaded
    assert reader.refresh() is True
    assert reader.authenticate(token) is not None
    assert reader.refresh() is False
    assert writer.revoke(record.id)
    reader.refresh()
    assert reader.authenticate(token) is None
    assert not reader.is_live(record.id)
    assert not writer.revoke(record.id)


def test_scopes() -> None:
    signer, entity = b"\x01" * 32, b"\x02" * 32
    assert Scope.parse("server").allows(())
    assert Scope.parse("server").allows((signer, entity))
    s = Scope.parse("signer:" + signer.hex())
    assert s.allows((signer,))
    assert s.allows((signer, entity))
    assert not s.allows(())
    assert not s.allows((entity,))
    e = Scope.parse("entity:" + entity.hex())
    assert e.allows((signer, entity))
    assert not e.allows((signer,))
    assert not e.allows(())
    assert str(e) == "entity:" + entity.hex()
    for bad in ("root", "signer:", "signer:zz", "entity:" + "00" * 31, "server:00"):
        with pytest.raises(ScopeError):
            Scope.parse(bad)


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    created = xln_node("token", "create", "--data", data, "--scope", "server", "--label", "ops")
    assert created.returncode == 0
    token = created.stdout.strip()
    assert token.startswith("xln_")
    assert "shown only once" in created.stderr
    listed = json.loads(xln_node("token", "list", "--data", data, "--json").stdout)
    assert [(r["scope"], r["label"]) for r in listed] == [("server", "ops")]
    assert token not in xln_node("token", "list", "--data", data).stdout
    assert xln_node("token", "revoke", "--data", data, listed[0]["id"]).returncode == 0
    assert json.loads(xln_node("token", "list", "--data", data, "--json").stdout) == []
    assert xln_node("token", "revoke", "--data", data, "nope").returncode == 1
    bad_scope = xln_node("token", "create", "--data", data, "--scope", "everything")
    assert bad_scope.returncode == 2
    assert "scope" in bad_scope.stderr


def test_an_unreadable_token_file_keeps_the_last_good_set(tmp_path: Path) -> None:
    writer = TokenStore(tmp_path)
    token, _ = writer.create(Scope("server"))
    reader = TokenStore(tmp_path)
    for broken in (
        "{not json",
        '{"version": 99, "tokens": []}',
        '{"version": 1, "tokens": [{"id": 1}]}',
        '{"version": 1, "tokens": [{"id": "a", "sha256": "b", "scope": "root", "created": ""}]}',
    ):
        writer.path.write_text(broken)
        assert reader.refresh() is False
        assert reader.authenticate(token) is not None
    with pytest.raises(ValueError, match="token"):
        writer.create(Scope("server"))  # never overwrites a file it cannot read
