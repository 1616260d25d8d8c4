"""A server hosting many idle one-signer entities, made by real transactions.

Block 1 creates the signers (``create_signer``, proofs of possession checked); block
2 has each signer create its one-member entities (``create_entity``). Shared by the
machine and storage tests of the server's and signers' maps.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.crypto import bls
from node.machines import replica as rep
from node.machines.counter import Increment
from node.machines.entity import sign_batch
from node.machines.governance import Config, Member
from node.machines.server import CreateSigner, ServerState, Step, apply_block
from node.machines.signer import CreateEntity
from node.mempool import Mempool
from node.txs import Tx

FIRST_SK = 5000


@dataclass
class Hosted:
    steps: list[Step]  # the blocks that made the server: write them in order
    routes: list[tuple[bytes, bytes]]  # (signer, entity), one per entity, as created
    sks: dict[bytes, int]  # signer id -> secret key

    @property
    def state(self) -> ServerState:
        return self.steps[-1].state


def host(entities: int, *, signers: int | None = None, first_sk: int = FIRST_SK) -> Hosted:
    """``entities`` one-signer entities spread over ``signers`` signers (one each by
    default; secret keys from ``first_sk`` on), in two blocks; entity ``e``'s salt
    is ``e`` as 32 bytes."""
    signers = entities if signers is None else signers
    keys = [(first_sk + i, bls.sk_to_pk(first_sk + i)) for i in range(signers)]
    pops = [bls.pop_prove(sk) for sk, _ in keys]
    create = Mempool.build(
        txs=[Tx.of(CreateSigner(pk, pop)) for (_, pk), pop in zip(keys, pops, strict=True)]
    )
    first = apply_block(ServerState(), create, 1000)
    assert all(r.error is None for r in first.receipts)
    txs: dict[bytes, list[Tx]] = {}
    routes = []
    for e in range(entities):
        i = e % signers
        member = Member(keys[i][1], 1)
        genesis = rep.Genesis(Config((member,), 1, member.id), e.to_bytes(32, "big"), (pops[i],))
        tx = CreateEntity(genesis)
        txs.setdefault(member.id, []).append(Tx.of(tx))
        routes.append((member.id, tx.entity_id))
    ids = sorted(txs)
    second = apply_block(
        first.state, Mempool.build(ids, [Mempool.build(txs=txs[i]) for i in ids]), 2000
    )
    assert all(r.error is None for r in second.receipts)
    sks = {Member(pk, 1).id: sk for sk, pk in keys}
    return Hosted([first, second], routes, sks)


def touch_signer(signer: bytes) -> Mempool:
    """A block's mempool holding one signer-level ``increment(1)``."""
    return Mempool.build([signer], [Mempool.build(txs=[Tx.of(Increment(1))])])


def touch_entity(hosted: Hosted, index: int, nonce: int = 1) -> Mempool:
    """A block's mempool holding one member's signed ``increment(1)`` for one entity."""
    signer, entity = hosted.routes[index]
    batch = sign_batch(entity, hosted.sks[signer], signer, nonce, [Tx.of(Increment(1))])
    leaf = Mempool.build(txs=[Tx.of(rep.SubmitBatch(batch))])
    return Mempool.build([signer], [Mempool.build([entity], [leaf])])
