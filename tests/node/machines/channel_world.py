"""A pure, in-process world of entities with channels between them, for tests.

It plays the network and the coordinator (``node/coordinator.py``) for several
entities at once: ``Send`` goes to another replica of the same entity,
``Transmit`` to a member's replica of a counterparty entity; ``ProposeFrame``
asks the proposer's real :class:`Agent` (LevelDB guard) for its pre-commit and
outgoing signatures, and every other member answers when ``check_proposal``
accepts the frame. Each key is a server of its own, with its own cache of frame
outcomes. Every step checks that the replica's encoding round-trips.
A ``drop`` hook lets a test lose messages between entities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from node.agent import Agent
from node.crypto import bls
from node.machines import accounts
from node.machines import replica as rep
from node.machines.entity import EntityAction, EntityState, FrameEvents, Propose, Vote, sign_batch
from node.machines.frames import aggregate_approvals
from node.machines.governance import Config, Member, signer_id
from node.machines.outcomes import Outcomes
from node.machines.replica import Genesis, Replica
from node.txs import Tx, TxBody

N_KEYS = 8
SKS = [bls.keygen(bytes([0x40 + i]) * 32) for i in range(N_KEYS)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
POPS = [bls.pop_prove(sk) for sk in SKS]
ASSET = 1


@dataclass
class World:
    guard_root: Path
    simulation: bool = True
    replicas: dict[tuple[int, bytes], Replica] = field(default_factory=dict)
    inbox: dict[tuple[int, bytes], list[Tx]] = field(default_factory=dict)
    agents: dict[int, Agent] = field(default_factory=dict)
    nonces: dict[tuple[int, bytes], int] = field(default_factory=dict)
    names: dict[str, bytes] = field(default_factory=dict)
    members: dict[bytes, list[int]] = field(default_factory=dict)
    events: dict[bytes, list[FrameEvents]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Each key's server's cache of frame outcomes: a member checks a proposal itself.
    outcomes: dict[int, Outcomes] = field(default_factory=dict)
    # (from entity, to entity, tx) -> deliver it? Lost messages come again by resend.
    drop: Callable[[bytes, bytes, Tx], bool] = lambda src, dst, tx: False
    # With ``hold``, messages between entities wait on this wire until ``release``
    # delivers them (in any order, some twice, some never: see the property test).
    hold: bool = False
    wire: list[tuple[tuple[int, bytes], Tx]] = field(default_factory=list)

    def close(self) -> None:
        for agent in self.agents.values():
            agent.close()

    # Set-up -------------------------------------------------------------------------

    def entity(self, name: str, keys: list[int], threshold: int, salt: int = 0) -> bytes:
        config = Config(tuple(Member(PKS[k], 1) for k in keys), threshold, IDS[keys[0]])
        genesis = Genesis(config, bytes([salt]) * 32, tuple(POPS[k] for k in keys))
        eid = b""
        for k in keys:
            r = rep.create(IDS[k], genesis)
            eid = r.entity_id
            self.replicas[(k, eid)] = r
            self.inbox[(k, eid)] = []
            if k not in self.agents:
                self.agents[k] = Agent(SKS[k], self.guard_root / f"agent-{k}")
        self.names[name] = eid
        self.members[eid] = keys
        self.events[eid] = []
        return eid

    def state(self, name_or_id: str | bytes) -> EntityState:
        eid = self.names[name_or_id] if isinstance(name_or_id, str) else name_or_id
        states = {self.replicas[(k, eid)].entity.hash for k in self.members[eid]}
        assert len(states) == 1, "replicas of one entity disagree"
        return self.replicas[(self.members[eid][0], eid)].entity

    def config_of(self, name: str) -> tuple[Config, int]:
        s = self.state(name)
        return s.config, s.config_height

    def submit(self, name: str, *bodies: TxBody, key: int | None = None) -> None:
        eid = self.names[name]
        k = self.members[eid][0] if key is None else key
        n = self.nonces.get((k, eid), 0) + 1
        self.nonces[(k, eid)] = n
        batch = sign_batch(eid, SKS[k], IDS[k], n, [Tx.of(b) for b in bodies])
        self.inbox[(k, eid)].append(Tx.of(rep.SubmitBatch(batch)))

    def mint(self, name: str, amount: int, asset: int = ASSET) -> None:
        """The faucet: the entity's first member signs ``faucet(asset, amount)``."""
        self.submit(name, accounts.Faucet(asset, amount))

    def open(self, a: str, b: str, collateral: int = 0, asset: int = ASSET) -> None:
        """``a`` proposes a channel with ``b`` (each member votes if the threshold needs it)."""
        config, height = self.config_of(b)
        action = accounts.OpenChannel(self.names[b], config, height, asset, collateral)
        self.propose(a, action)

    def propose(self, name: str, action: EntityAction) -> None:
        eid = self.names[name]
        state = self.state(name)
        pid = state.next_proposal_id
        self.submit(name, Propose(action, state.height + 1000))
        self.run()
        for k in self.members[eid][1:]:
            if all(p.id != pid for p in self.state(name).proposals):
                break
            self.submit(name, Vote(pid), key=k)
            self.run()

    # The network ------------------------------------------------------------------

    def step(self, k: int, eid: bytes) -> bool:
        inputs = self.inbox[(k, eid)]
        self.inbox[(k, eid)] = []
        before = self.replicas[(k, eid)]
        replica, effects = rep.step(
            before, inputs, simulation=self.simulation, outcomes=self.outcomes_of(k)
        )
        again = Replica.decode(replica.encoded)
        assert again.encoded == replica.encoded
        self.replicas[(k, eid)] = replica
        for effect in effects:
            self._effect(k, eid, effect)
        return bool(inputs) or replica is not before

    def outcomes_of(self, k: int) -> Outcomes:
        return self.outcomes.setdefault(k, Outcomes())

    def _effect(self, k: int, eid: bytes, effect: rep.Effect) -> None:
        match effect:
            case rep.Send(to=to, tx=tx):
                self.inbox[(IDS.index(to), eid)].append(tx)
            case rep.Transmit(entity=dst, to=to, tx=tx):
                key = (IDS.index(to), dst)
                if key in self.replicas and not self.drop(eid, dst, tx):
                    if self.hold:
                        self.wire.append((key, tx))
                    else:
                        self.inbox[key].append(tx)
            case rep.ProposeFrame(frame=frame, round=round_, members=members):
                # The two steps at once: every member that accepts approves, the polka
                # of those approvals, then each of them pre-commits to the proposer.
                config = self.replicas[(k, eid)].entity.config
                own = self.agents[k].approve(frame.raw, round_, config)
                approvals = {config.index[IDS[k]]: own}
                voters = [k]
                for m in members:
                    mk = IDS.index(m)
                    if mk == k:
                        continue
                    if self.inbox[(mk, eid)]:
                        self.step(mk, eid)  # the commit before may still be in its inbox
                    reason = rep.check_proposal(
                        self.replicas[(mk, eid)],
                        frame,
                        round_,
                        own,
                        simulation=self.simulation,
                        outcomes=self.outcomes_of(mk),
                    )
                    if reason is not None:
                        self.notes.append(reason)
                        continue
                    approvals[config.index[m]] = self.agents[mk].approve(frame.raw, round_, config)
                    voters.append(mk)
                polka, _ = aggregate_approvals(config, frame, round_, approvals)
                if polka is None:
                    self.notes.append("no polka")
                    return
                for v in voters:
                    signed = self.agents[v].sign_precommit(
                        frame.entity_id, frame.height, round_, frame.hash, polka, config
                    )
                    pc = rep.Precommit(
                        frame.height, round_, frame.hash, IDS[v], signed.precommit, signed.outbox
                    )
                    self.inbox[(k, eid)].append(Tx.of(pc))
            case rep.Committed(events=events):
                if k == self.members[eid][0]:
                    self.events[eid].append(events)
            case rep.Note(message=message):
                self.notes.append(message)
            case _:
                pass

    def release(self, index: int, *, twice: bool = False) -> None:
        """Deliver the message at ``index`` of the wire (and keep a copy if ``twice``)."""
        key, tx = self.wire[index]
        if not twice:
            del self.wire[index]
        self.inbox[key].append(tx)

    def crash(self, key: tuple[int, bytes]) -> None:
        """The replica's server dies: what it had not put in a block is lost; it comes
        back from its persisted state (its encoding)."""
        self.inbox[key] = []
        self.replicas[key] = Replica.decode(self.replicas[key].encoded)

    def run(self, max_rounds: int = 10_000) -> None:
        """Step every replica with inputs until none has any."""
        for _ in range(max_rounds):
            busy = [key for key, txs in self.inbox.items() if txs]
            if not busy:
                return
            for k, eid in busy:
                self.step(k, eid)
        raise AssertionError("the world did not quiesce")

    def resend_all(self) -> None:
        for (k, eid), replica in list(self.replicas.items()):
            if k != self.members[eid][0]:
                continue
            for effect in rep.resend(replica):
                self._effect(k, eid, effect)

    def settle(self, rounds: int = 50) -> None:
        """Run, and resend until no channel waits for an ack."""
        for _ in range(rounds):
            self.run()
            if not any(
                c.side.pending is not None
                for r in self.replicas.values()
                for c in r.entity.channels.values()
            ):
                return
            self.resend_all()
        raise AssertionError("channels did not settle")

    def payments(self, name: str, kind: str) -> list[accounts.PaymentEvent]:
        return [p for ev in self.events[self.names[name]] for p in ev.payments if p.kind == kind]
