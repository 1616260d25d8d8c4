"""The entity configs the wallet trusts survive a restart (``wallet/pins.py``): the
first run pins each entity's config as it reads it, the file holds it, and the next
run starts its reader from it rather than from first use."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from node.codec import encode_tree
from node.crypto import bls
from node.machines.governance import Config, Member
from tests.wallet.conftest import Kit, running_service
from wallet import pins
from wallet.model import NewMember


def _config(sk: int, shares: int = 1) -> Config:
    pk = bls.sk_to_pk(sk)
    return Config((Member(pk, shares),), 1, Member(pk, shares).id)


def test_pins_round_trip_and_bad_files_pin_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert pins.load(tmp_path) == {}
    saved = {b"\x01" * 32: _config(11), b"\x02" * 32: _config(12)}
    pins.save(tmp_path, saved)
    path = tmp_path / pins.PINS_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert pins.load(tmp_path) == saved
    doc = json.loads(path.read_text())
    assert doc["configs"][(b"\x01" * 32).hex()] == encode_tree(_config(11).to_tree()).hex()
    for bad in ("{", '{"version": 2, "configs": {}}', '{"version": 1, "configs": {"00": "c0"}}'):
        path.write_text(bad)
        with caplog.at_level(logging.WARNING):
            assert pins.load(tmp_path) == {}
        assert "start from first use" in caplog.text
        caplog.clear()


async def test_a_restarted_wallet_starts_from_the_configs_it_trusted(kit: Kit) -> None:
    key = kit.key
    async with running_service(kit) as run:
        me = [NewMember(key.pubkey, key.pop, 1)]
        entity = await run.service.create_entity(key.signer_id, me, 1, 0)
        await run.waiter.until(lambda: (key.signer_id, entity) in run.model.entities)
        await run.service.increment(key.signer_id, entity, 1)
        await run.waiter.until(
            lambda: run.model.entities[(key.signer_id, entity)].state.height >= 1
        )
        config = run.model.entities[(key.signer_id, entity)].state.config
        assert run.service.session.reader.pins[entity] == config
    assert pins.load(kit.data) == {entity: config}
    async with running_service(kit) as again:
        assert again.service.session.reader.pins == {entity: config}
