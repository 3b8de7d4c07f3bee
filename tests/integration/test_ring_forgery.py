"""Forgery against real ring daemons, over the real wire: a member with a valid key and valid
work lies about a live member's death and writes records it may not write; a node whose key
skipped the ring's key puzzle tries to join, and a member gossips its ALIVE.

Four daemons (``cortex-rm node`` with only its ring member, 200 ms probes, ``[ring]
resource_managers`` naming one in-process member) and two in-process ``RingService``s
-- the class the daemons run -- on the test's reactor: ``legit``, the one ring id
allowed to write ``cortex:resourcemanager``, and ``attacker``, a member like any
other (its own certificate, its own proof of work at the test ring's 16 bits).  The
attacker builds its envelopes from the project's own message types, signs them with
its own ``KeyTrust``, and its transport encodes them with the ring codec and carries
them over mutual TLS: what a hostile node running our code with its own key can send.

The daemons' views are read over HTTP (``/ws/v1/ring``, what ``cortex-rm ring``
prints) in a thread, so the in-process members keep answering probes.  Every wait is
on the state asserted; a lie is judged once the target has counted it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task, threads

from cortex_rm.config import RingSection, load_config
from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.errors import RingError
from cortex_rm.dht.kv_messages import PutRecord, StoreReplicas
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_trust import KeyTrust
from cortex_rm.dht.ring_work import DEFAULT_KEY_BITS, DEFAULT_WORK_BITS, key_ok, work_ok
from cortex_rm.dht.swim_messages import Ack, MemberStatus, MemberUpdate
from cortex_rm.dht.write_policy import node_key
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.node import CortexNode
from cortex_rm.roles.ring_records import RESOURCE_MANAGER_KEY
from cortex_rm.roles.ring_service import RingService
from tests.support.reactor import reactor
from tests.support.ring_daemons import (
    TEST_KEY_BITS,
    TEST_WORK_BITS,
    RingDaemon,
    key_failing_puzzle,
    made_daemons,
    make_daemons,
    start_ring,
    store_identity,
)

pytestmark = pytest.mark.integration

NODES = 4
PROBE_INTERVAL_MS = 200
WAIT_S = 90.0
DEAD = MemberStatus.DEAD


def ring_config(resource_managers: tuple[str, ...]) -> RingConfig:
    """What the daemons run with (RingSection's LAN profile at 200 ms probes), for the in-process members."""
    section = RingSection(
        probe_interval_ms=PROBE_INTERVAL_MS, resource_managers=resource_managers, work_bits=TEST_WORK_BITS,
        key_bits=TEST_KEY_BITS,
    )  # fmt: skip
    return section.ring_config()


def peer_of(view: dict[str, Any]) -> Peer:
    return Peer(int(view["node"]["id"], 16), view["node"]["address"])


def service(state_dir: Path, identity: NodeIdentity, config: RingConfig, introducer: str) -> RingService:
    state_dir.mkdir(parents=True)
    return RingService(
        identity, config, reactor(), state_dir, listen_host="127.0.0.1", advertise_host="127.0.0.1", port=0,
        introducers=[introducer], leave_flush=0.2, connect_timeout=2.0,
    )  # fmt: skip


def summary(view: dict[str, Any] | None) -> tuple[str, str | None, tuple[str, ...]] | None:
    """A daemon's routing state: (state, predecessor id, successor ids)."""
    if view is None:
        return None
    predecessor = view["predecessor"]["id"] if view["predecessor"] else None
    return view["state"], predecessor, tuple(s["id"] for s in view["successors"])


@defer.inlineCallbacks
def wait_views(daemons: list[RingDaemon], condition: Callable[[list[dict[str, Any]]], bool], what: str):  # type: ignore[no-untyped-def]
    """The daemons' views (read in threads) once ``condition`` holds of them (bounded by WAIT_S)."""
    deadline = reactor().seconds() + WAIT_S
    while True:
        views = yield defer.gatherResults([threads.deferToThread(d.view) for d in daemons])
        if all(v is not None for v in views) and condition(views):
            return views
        if reactor().seconds() > deadline:
            raise AssertionError(f"timed out after {WAIT_S:g} s waiting until {what}: {[summary(v) for v in views]}")
        yield task.deferLater(reactor(), 0.2, lambda: None)


def ring_is_whole(views: list[dict[str, Any]], services: list[RingService]) -> bool:
    """Every daemon and service has its true neighbours by ring id (its whole successor list: a
    member whose list is still filling would change it later, forged rumour or not) and holds
    every other member ALIVE."""
    ids = sorted([int(v["node"]["id"], 16) for v in views] + [s.me.node_id for s in services])
    routing = {int(v["node"]["id"], 16): summary(v) for v in views}
    for s in services:
        view = s.view()
        routing[s.me.node_id] = (
            view.state.value,
            None if view.predecessor is None else f"{view.predecessor.node_id:040x}",
            tuple(f"{p.node_id:040x}" for p in view.successors),
        )
    for i, node_id in enumerate(ids):
        state, predecessor, successors = routing[node_id]  # type: ignore[misc]
        wanted = tuple(f"{ids[(i + k) % len(ids)]:040x}" for k in range(1, len(ids)))
        if state != "member" or tuple(successors) != wanted[: len(successors)] or len(successors) < len(wanted):
            return False
        if predecessor != f"{ids[i - 1]:040x}":
            return False
    for v in views:
        alive = {m["id"] for m in v["members"] if m["status"] == "alive"}
        if len(alive) != len(ids) - 1:
            return False
    return True


def status_of(view: dict[str, Any], peer: Peer) -> tuple[str, int] | None:
    return next(((m["status"], m["incarnation"]) for m in view["members"] if m["id"] == f"{peer.node_id:040x}"), None)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[RingDaemon]]:
    with made_daemons(tmp_path, NODES, PROBE_INTERVAL_MS) as daemons:
        yield daemons


@pytest_twisted.inlineCallbacks
def test_a_member_forging_deaths_and_records_changes_no_routing_state_and_no_replica_keeps_its_records(  # type: ignore[no-untyped-def]
    daemons: list[RingDaemon], tmp_path: Path
):
    """A real member (valid certificate, valid work) sends a daemon three DEADs about a live daemon:
    one signed as its own claim (checked by the target's probe, refuted), one signed by it but
    naming another accuser and one unsigned (both refused).  The target's predecessor, successors
    and the victim's status are unchanged at the target and at every daemon.  Then it writes
    ``cortex:resourcemanager`` and the victim's member key, which only others may write, straight
    to every member (as owner put and as replica push): every daemon and the legitimate writer
    count the refusals, none keeps a record, and a get returns the legitimate RM record and no
    forged member record.  The honest API refuses the attacker's put too."""
    legit_identity = NodeIdentity.generate(key_bits=TEST_KEY_BITS)
    allowed = (legit_identity.ring_id_hex,)
    for daemon in daemons:
        daemon.resource_managers = allowed
    start_ring(daemons)
    first = daemons[0].ring_address
    legit = service(tmp_path / "legit", legit_identity, ring_config(allowed), first)
    attacker = service(tmp_path / "attacker", NodeIdentity.generate(key_bits=TEST_KEY_BITS), ring_config(allowed), first)
    services = [legit, attacker]
    try:
        yield defer.gatherResults([s.start() for s in services])
        yield defer.gatherResults([s.joined() for s in services])
        views = yield wait_views(daemons, lambda vs: ring_is_whole(vs, services), "4 daemons and 2 services form a whole ring")
        for s in services:  # the daemons' class runs with keys, not OpenTrust
            assert s.live is not None and isinstance(s.live.member.trust, KeyTrust)
        assert attacker.live is not None
        trust = attacker.live.member.trust
        me = attacker.me

        # ---- forged deaths
        target, victim, bystander = (peer_of(v) for v in views[:3])
        before = views[0]
        victim_before = status_of(before, victim)
        assert victim_before is not None and victim_before[0] == "alive"
        incarnation = victim_before[1]
        claim = trust.sign_rumour(MemberUpdate(victim, DEAD, incarnation, me))
        framed = replace(claim, accuser=bystander)  # signed by us, in another member's name
        unsigned = MemberUpdate(victim, DEAD, incarnation, bystander)
        attacker.transport.send(target, Envelope(me, Ack(2**40), (claim, framed, unsigned), trust.work))
        refused = before["refusals"]
        views = yield wait_views(
            daemons,
            lambda vs: vs[0]["refusals"]["refutedDeathClaims"] > refused["refutedDeathClaims"]
            and vs[0]["refusals"]["rumours"] >= refused["rumours"] + 2,
            "the target refuted the claim and refused both forgeries",
        )
        after = views[0]
        assert summary(after) == summary(before)
        assert status_of(after, victim) == victim_before
        assert all((status_of(v, victim) or ("?",))[0] == "alive" for v in (views[0], *views[2:]))
        assert ring_is_whole(views, services)

        # ---- records it may not write
        legit_record = yield legit.put(RESOURCE_MANAGER_KEY, b"the real RM")
        views = yield wait_views(
            daemons,
            lambda vs: sum(v["records"] for v in vs) + sum(s.view().records for s in services) == 4,
            "the RM's record is on its owner and its 3 replicas",
        )
        records_before = [v["records"] for v in views] + [s.view().records for s in services]
        refused_before = [v["refusals"]["records"] for v in views]
        legit_refused = legit.view().refusals.records
        forged_rm = trust.sign_record(RESOURCE_MANAGER_KEY, b"the attacker's RM", legit_record.version + 100)
        forged_node = trust.sign_record(node_key(victim.node_id), b"forged capacity", 1000)
        members = [peer_of(v) for v in views] + [legit.me]
        for i, to in enumerate(members):
            for body in (PutRecord(10**6 + 2 * i, forged_rm), PutRecord(10**6 + 2 * i + 1, forged_node), StoreReplicas((forged_rm, forged_node))):
                attacker.transport.send(to, Envelope(me, body, (), trust.work))
        views = yield wait_views(
            daemons,
            lambda vs: all(v["refusals"]["records"] >= n + 2 for v, n in zip(vs, refused_before, strict=True))
            and legit.view().refusals.records >= legit_refused + 2,
            "every member refused both forged records",
        )
        assert [v["records"] for v in views] + [s.view().records for s in services] == records_before
        got = yield legit.get(RESOURCE_MANAGER_KEY)
        assert got is not None and (got.value, got.writer) == (b"the real RM", legit_identity.ring_id)
        got = yield legit.get(node_key(victim.node_id))
        assert got is None or got.writer == victim.node_id
        with pytest.raises(RingError, match="may not write"):
            yield attacker.put(RESOURCE_MANAGER_KEY, b"through the front door")
        views = yield wait_views(daemons, lambda vs: True, "the daemons answer")
        assert [v["records"] for v in views] + [s.view().records for s in services] == records_before
    except BaseException:
        for daemon in daemons:
            print(f"==== {daemon.name} ====\n{daemon.log()[-3000:]}")
        raise
    finally:
        yield defer.gatherResults([s.stop(graceful=False) for s in services], consumeErrors=True)


@pytest_twisted.inlineCallbacks
def test_a_node_whose_key_fails_the_key_puzzle_is_refused_while_an_honest_one_joins(  # type: ignore[no-untyped-def]
    daemons: list[RingDaemon], tmp_path: Path
):
    """Four daemons at the test ring's key puzzle (``[ring] key_bits``).  A grinder whose key does not
    solve it -- but whose id is its key's hash and whose work checks -- asks the first daemon to let it
    join: every envelope is dropped and counted, and no member ever lists it.  An honest node (a key that
    solves the puzzle) joins through the same daemon and the ring is whole.  Then the honest member
    relays an ALIVE the grinder signed (with its work): the daemon refuses the rumour and counts it."""
    start_ring(daemons)
    first = daemons[0].ring_address
    weak = key_failing_puzzle(TEST_KEY_BITS)
    # the grinder runs our code with the puzzle switched off for itself (it could not start otherwise)
    grinder = service(tmp_path / "grinder", weak, replace(ring_config(()), key_bits=0), first)
    honest = service(tmp_path / "honest", NodeIdentity.generate(key_bits=TEST_KEY_BITS), ring_config(()), first)
    grinder_id = f"{grinder.me.node_id:040x}"
    try:
        yield wait_views(daemons, lambda vs: ring_is_whole(vs, []), "the 4 daemons form a ring")
        yield grinder.start()
        assert grinder.live is not None and work_ok(weak.spki, grinder.live.member.trust.work, TEST_WORK_BITS)
        yield wait_views(daemons, lambda vs: vs[0]["refusals"]["senders"] > 0, "the first daemon refused the grinder")
        assert f"the sender's key fails the key puzzle at {TEST_KEY_BITS} bits" in daemons[0].log()
        yield honest.start()
        yield honest.joined()
        views = yield wait_views(daemons, lambda vs: ring_is_whole(vs, [honest]), "4 daemons and the honest node form a ring")
        assert all(m["id"] != grinder_id for v in views for m in v["members"])
        assert all(p.node_id != grinder.me.node_id for p in honest.view().successors)

        # a member gossips the grinder's own ALIVE, signed and with its work
        assert honest.live is not None
        alive = grinder.live.member.trust.sign_rumour(MemberUpdate(grinder.me, MemberStatus.ALIVE, 10**12))  # a past stamp
        target = peer_of(views[1])
        rumours = views[1]["refusals"]["rumours"]
        honest.transport.send(target, Envelope(honest.me, Ack(2**40), (alive,), honest.live.member.trust.work))
        views = yield wait_views(
            daemons, lambda vs: vs[1]["refusals"]["rumours"] > rumours, "the target refused the grinder's ALIVE"
        )
        assert all(m["id"] != grinder_id for v in views for m in v["members"])
        assert ring_is_whole(views, [honest])
    except BaseException:
        for daemon in daemons:
            print(f"==== {daemon.name} ====\n{daemon.log()[-3000:]}")
        raise
    finally:
        yield defer.gatherResults([s.stop(graceful=False) for s in (grinder, honest)], consumeErrors=True)


@pytest_twisted.inlineCallbacks
def test_the_daemon_runs_its_ring_member_with_key_trust_at_the_default_puzzles_replacing_an_older_key(  # type: ignore[no-untyped-def]
    tmp_path: Path,
):
    """``cortex-rm node``'s own start (CortexNode, from a ring-only config file that names neither
    ``key_bits`` nor ``work_bits``: the defaults) on a state dir holding a key from before the key
    puzzle: the node does not die, it makes a key that solves the puzzle at the default bits (in a
    thread), keeps the old one aside, and builds its ring member with KeyTrust on the new key and work
    that solves the nonce puzzle at the default bits (OpenTrust, which believes anything, is for
    simulations only)."""
    [daemon] = make_daemons(tmp_path, 1, PROBE_INTERVAL_MS)
    daemon.work_bits = daemon.key_bits = None
    old = key_failing_puzzle(DEFAULT_KEY_BITS)
    store_identity(daemon.directory, old)
    node = CortexNode(load_config(daemon.write_config([])), reactor())
    yield node.start()
    try:
        assert node.ring is not None and node.ring.live is not None and node.identity is not None
        assert (node.config.ring.key_bits, node.config.ring.work_bits) == (DEFAULT_KEY_BITS, DEFAULT_WORK_BITS)
        assert node.identity.ring_id != old.ring_id and key_ok(node.identity.spki, DEFAULT_KEY_BITS)
        assert (daemon.directory / "identity" / "node.key.replaced").exists()
        trust = node.ring.live.member.trust
        assert isinstance(trust, KeyTrust) and trust.signs and trust.key_bits == DEFAULT_KEY_BITS
        assert trust.node_id == node.identity.ring_id == node.ring.me.node_id
        assert work_ok(node.identity.spki, trust.work, DEFAULT_WORK_BITS)
    finally:
        yield node.stop()
