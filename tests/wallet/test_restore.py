"""A wallet restored from the phrase into a new folder finds its entities.

Two real ``xln-node run`` processes (``node/cluster.py``) peer with each other; an
entity of k0 (server 0) and k1 (server 1), threshold 2, k0 proposing, has a
certified frame. Server 1 is SIGKILLed and its data folder and k1's guard are
lost; a new server 1 starts at the same URL. A wallet with k1's key in a new
folder, marked restored (as onboarding marks an imported phrase), connects to it
as a remote node: it registers the signer, asks ``FIND_ENTITIES``, and shows the
entity found through server 0, caught up, instead of "No entity yet". Its guard
is restored with the floor the peers gave, and it signs the next frame (which
needs its share); an entity that reaches it later gets a floor and is signed too.
A restore with an old backup of the folder (wallet/flows/backup.py) says how much
older it is, and keeps the peers' floor.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.agent import Agent, SignedAt
from node.cluster import PASSWORD as CLUSTER_PASSWORD
from node.cluster import Cluster, SignerKey
from node.crypto import keystore
from node.machines import entity as ent
from tests.wallet.conftest import PASSWORD, Waiter
from wallet import backup
from wallet.agent import GUARD_DIR
from wallet.flows import backup as backup_flow
from wallet.flows import restore as restore_flow
from wallet.keys.backends import choose_backend
from wallet.keys.vault import Vault
from wallet.model import WalletModel
from wallet.service import WalletService
from wallet.settings import Settings

WAIT_S = 60.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(
        tmp_path / "servers",
        servers=2,
        signers=2,
        tick_ms=20,
        round_timeout_ms=1000,
        external_agents=True,
    )
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


async def lose_signer(cluster: Cluster, key: SignerKey) -> None:
    """SIGKILL ``key``'s server and agent; lose the server's folder and the guard;
    start a new server at the same URL."""
    proc = cluster.agents.pop(key.index)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    await cluster.lose_server(key.server)
    shutil.rmtree(cluster.root / "guards" / key.id.hex())
    await cluster.restart_server(key.server)


async def test_a_restored_wallet_finds_its_entity_through_the_peers(
    cluster: Cluster, tmp_path: Path
) -> None:
    k0, k1 = cluster.keys
    entity = await cluster.create_entity(cluster.keys, [1, 1], 2, proposer=0)
    batch = await cluster.submit(k0, entity, [ent.Increment(1)])
    routes = [(k.id, entity) for k in cluster.keys]
    assert await cluster.wait_committed(batch, routes, WAIT_S) is not None
    await lose_signer(cluster, k1)
    server1 = cluster.servers[k1.server]

    # The restored wallet: k1's key in a new folder, marked restored by onboarding.
    data = tmp_path / "restored-wallet"
    data.mkdir(mode=0o700)
    vault = Vault(data, choose_backend(data, prefer="file"), fast_kdf=True)
    stored = keystore.load(cluster.keystore(k1))
    key = vault.add_keystore(stored, CLUSTER_PASSWORD, PASSWORD, "restored")
    assert key.signer_id == k1.id
    restore_flow.mark(data, k1.id)

    model = WalletModel()
    service = WalletService(
        data,
        model,
        vault,
        Settings(tick_ms=20, accountant_on=True),
        node_url=server1.url,
        token=server1.token,
        ttl_s=20.0,
    )
    waiter = Waiter()
    for changed in (model.entities_changed, model.restore_changed, model.connection_changed):
        changed.connect(waiter.wake)
    service.queue.added.append(waiter.wake)

    def counter() -> int:
        entry = model.entities.get((k1.id, entity))
        return -1 if entry is None else entry.state.counter

    later = b""
    try:
        await service.start()
        assert service.agents[k1.id].restored
        await service.unlock(PASSWORD)
        # Found through server 0, joined on the new server 1, caught up to height 1.
        await waiter.until(lambda: counter() == 1, WAIT_S)
        await waiter.until(lambda: model.restore_note.startswith("Found"), WAIT_S)
        assert model.restore_note == (
            "Found 1 entity of this signer (1 new here, catching up); "
            "1 of 1 other servers answered."
        )
        assert restore_flow.load(data).pending == []  # final: not asked again
        assert restore_flow.load(data).restored == [k1.id]
        assert [e for (s, e) in model.entities if s == k1.id] == [entity]

        # The next frame needs k1's share: the restored wallet signs it (the
        # accountant's default rules approve a counter).
        batch = await cluster.submit(k0, entity, [ent.Increment(2)])
        assert await cluster.wait_committed(batch, [(k0.id, entity)], WAIT_S) is not None
        await waiter.until(lambda: counter() == 3, WAIT_S)

        # An entity that reaches the restored signer afterwards gets its floor from
        # what is in flight then (nothing), so the wallet signs its first frame.
        later = await cluster.create_entity(cluster.keys, [1, 1], 2, proposer=0)
        batch = await cluster.submit(k0, later, [ent.Increment(5)])
        assert await cluster.wait_committed(batch, [(k0.id, later)], WAIT_S) is not None
        await waiter.until(lambda: (k1.id, later) in model.entities, WAIT_S)
    finally:
        await service.stop()

    # The guard was marked restored before it signed, and holds the peers' floor.
    guard = Agent(k1.sk, data / GUARD_DIR / k1.id.hex())
    try:
        assert guard.restored
        assert guard.floor(entity) == 1
        assert guard.floor(later) == 0
    finally:
        guard.close()


def test_a_find_is_final_only_when_every_peer_answered() -> None:
    from node.memberships import FindResult

    assert restore_flow.complete(FindResult(asked=2, answered=2))
    # No peers and nothing found: asked again at the next connection (peers may come).
    assert not restore_flow.complete(FindResult())
    partial = FindResult(asked=2, answered=1, errors=["ws://b: not connected"])
    assert not restore_flow.complete(partial)
    assert restore_flow.summary(partial) == (
        "No entity of this signer found yet; 1 of 2 other servers answered. "
        "Asked again at the next connection."
    )
    assert restore_flow.summary(FindResult(), peers_configured=False) == (
        "No entity of this signer found yet; this node has no peers: add your "
        "co-signers' servers in Settings. Asked again at the next connection."
    )


async def test_the_restore_record_round_trips_and_refuses_garbage(tmp_path: Path) -> None:
    signer = b"\x01" * 32
    assert restore_flow.load(tmp_path) == restore_flow.RestoreRecord()
    restore_flow.mark(tmp_path, signer)
    record = restore_flow.load(tmp_path)
    assert (record.restored, record.pending) == ([signer], [signer])
    record.found(signer)
    restore_flow.save(tmp_path, record)
    assert restore_flow.load(tmp_path) == restore_flow.RestoreRecord([signer], [])
    assert (tmp_path / restore_flow.RESTORE_FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / restore_flow.RESTORE_FILE).write_text('{"restored": 1}')
    with pytest.raises(restore_flow.RestoreFileError, match="not a restore record"):
        await asyncio.to_thread(restore_flow.load, tmp_path)


async def test_a_restore_from_an_old_backup_reports_it_and_keeps_the_peers_floors(
    cluster: Cluster, tmp_path: Path
) -> None:
    """k1's backup was made at height 1 (its record: it pre-committed height 1); the
    entity went on to height 3; the folder is lost. Restored from the phrase and that
    backup: the guard takes the backup's floor first, the find raises it to what the
    peers show, and the find's line says the backup is 2 frames older."""
    k0, k1 = cluster.keys
    entity = await cluster.create_entity(cluster.keys, [1, 1], 2, proposer=0)
    routes = [(k.id, entity) for k in cluster.keys]
    for n in (1, 2, 3):
        batch = await cluster.submit(k0, entity, [ent.Increment(n)])
        assert await cluster.wait_committed(batch, routes, WAIT_S) is not None
    await lose_signer(cluster, k1)
    server1 = cluster.servers[k1.server]

    data = tmp_path / "restored-wallet"
    data.mkdir(mode=0o700)
    vault = Vault(data, choose_backend(data, prefer="file"), fast_kdf=True)
    vault.add_keystore(keystore.load(cluster.keystore(k1)), CLUSTER_PASSWORD, PASSWORD, "k1")
    vault.unlock(PASSWORD)
    # The old backup (as the lost wallet wrote it a day before: at height 1).
    data_key, key_store = backup.new_data_key(PASSWORD, fast=True)
    made = 1_765_000_000
    header = backup.Header(made, "0123456789abcdef", (k1.id,), {entity: 1}, key_store)
    payload = backup.Payload(
        files={"contacts.json": json.dumps({"version": 1, "names": {k0.id.hex(): "zero"}})},
        signing_record={k1.id: {entity: SignedAt(1, 0, b"\x01" * 32)}},
    )
    raw = backup.seal(header, payload, data_key)
    opened, report = await asyncio.to_thread(
        backup_flow.restore_offline, data, vault, raw, PASSWORD
    )
    assert report.floors == {k1.id: {entity: 1}}
    assert restore_flow.load(data).pending == [k1.id]

    model = WalletModel()
    service = WalletService(
        data,
        model,
        vault,
        Settings(tick_ms=20, accountant_on=True),
        node_url=server1.url,
        token=server1.token,
        ttl_s=20.0,
        wall_clock=lambda: made + 86_400 + 5,
        restored_backup=opened,
    )
    waiter = Waiter()
    for changed in (model.entities_changed, model.restore_changed, model.connection_changed):
        changed.connect(waiter.wake)
    try:
        await service.start()
        assert service.agents[k1.id].restored
        await service.unlock(PASSWORD)
        await waiter.until(lambda: model.restore_note.startswith("Found"), WAIT_S)
        assert model.restore_note.endswith(
            f"This backup is 1 day older than entity {entity.hex()[:12]}: 2 frames since "
            "(certified at 3, the backup at 1)."
        )
        assert model.contacts == {k0.id: "zero"}
        # The floor is the peers' (height 3), not the backup's lower one.
        assert await service.agents[k1.id].floor_of(entity) == 3
    finally:
        await service.stop()
