"""Ring services on 127.0.0.1: real reactor, real sockets, real mutual TLS, fast ring timings.

Each scenario waits on the state it asserts (bounded by ``WAIT_S`` only so that a
broken test cannot hang); none sleeps for correctness.  The oracle is the sorted
ring ids of the services still running: every member's successor and
predecessor must be its true neighbours.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.logger import LogEvent, LogLevel, formatEvent

from cortex_rm.dht.member_table import MemberDied, MemberLeft, MembershipEvent
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_join import JoinState
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.internal.ring_work_store import stored_work
from cortex_rm.roles.ring_service import RingService, ServiceState
from tests.support.reactor import reactor
from tests.support.reactor import wait_until as wait_for
from tests.support.ring_daemons import TEST_KEY_BITS, TEST_WORK_BITS

pytestmark = pytest.mark.integration

WAIT_S = 30.0

FAST = RingConfig(
    work_bits=TEST_WORK_BITS,  # each node a fresh key: not the defaults' seconds each
    key_bits=TEST_KEY_BITS,
    request_timeout=1.0,
    stabilize_interval=0.2,
    fix_fingers_interval=0.1,
    replicate_interval=1.0,
    neighbour_log_interval=0.3,
    join_retry_interval=0.5,
    tick_interval=0.1,
    swim=SwimConfig(
        probe_interval=0.3,
        probe_timeout=0.15,
        indirect_probe_timeout=0.1,
        suspicion_mult=3,
        suspicion_max_timeout_mult=2,
        dead_probe_interval=1.0,
    ),
)
"""Every timing about ten times the LAN profile's speed (a probe every 0.3 s)."""


def wait_until(condition: Callable[[], bool], what: str, detail: Callable[[], object] = lambda: "") -> defer.Deferred:
    """Wait (bounded by WAIT_S) until ``condition`` holds; on timeout the error adds ``detail()``."""

    def explain(failure):  # type: ignore[no-untyped-def]
        failure.trap(AssertionError)
        raise AssertionError(f"{failure.getErrorMessage()}: {detail()}")

    return wait_for(condition, what, WAIT_S).addErrback(explain)


@dataclass
class Node:
    """One ring service, its state directory, and the membership events it reported."""

    service: RingService
    state_dir: Path
    events: list[MembershipEvent] = field(default_factory=list)

    @property
    def peer(self) -> Peer:
        return self.service.me

    def saw(self, kind: type, peer: Peer) -> bool:
        """Whether this node reported a ``kind`` event (MemberDied...) about ``peer``."""
        return any(isinstance(e, kind) and e.peer == peer for e in self.events)


def node(
    state_dir: Path, introducers: list[str], identity: NodeIdentity | None = None, port: int = 0,
    config: RingConfig = FAST,
) -> Node:
    """A ring service on 127.0.0.1 (not started) whose membership events are recorded."""
    service = RingService(
        identity or NodeIdentity.generate(key_bits=TEST_KEY_BITS),
        config,
        reactor(),
        state_dir,
        listen_host="127.0.0.1",
        advertise_host="127.0.0.1",
        port=port,
        introducers=introducers,
        leave_flush=0.3,
        connect_timeout=1.0,
    )
    n = Node(service, state_dir)
    service.add_membership_listener(n.events.append)
    return n


@defer.inlineCallbacks
def started(n: Node):  # type: ignore[no-untyped-def]
    """``n`` listening (its address is known once this fires)."""
    yield n.service.start()
    return n


def ring_errors(nodes: list[Node]) -> list[str]:
    """Every running node whose successor or predecessor is not its true neighbour by ring id."""
    ring = sorted((n for n in nodes if n.service.state is ServiceState.RUNNING), key=lambda n: n.peer.node_id)
    errors = []
    for i, n in enumerate(ring):
        view = n.service.view()
        succ, pred = ring[(i + 1) % len(ring)].peer, ring[i - 1].peer
        if not view.successors or view.successors[0] != succ:
            errors.append(f"{n.peer.short()}: successor {view.successors[:1]}, should be {succ.short()}")
        if len(ring) > 1 and view.predecessor != pred:
            errors.append(f"{n.peer.short()}: predecessor {view.predecessor}, should be {pred.short()}")
    return errors


def membership_errors(nodes: list[Node]) -> list[str]:
    """Every running node that does not hold every other running node as ALIVE.

    (Not at its current incarnation: a member first heard of directly is taken at
    incarnation 0 until its own announcement reaches that node, which may never
    happen while nothing is wrong.)
    """
    running = [n for n in nodes if n.service.state is ServiceState.RUNNING]
    errors = []
    for n in running:
        statuses = {peer: status for peer, status, _ in n.service.view().members}
        for other in running:
            if other is not n and statuses.get(other.peer) is not MemberStatus.ALIVE:
                errors.append(f"{n.peer.short()} holds {other.peer.short()} as {statuses.get(other.peer)}")
    return errors


def credited(n: Node) -> int:
    """The acks ``n``'s uptime witness credited so far."""
    live = n.service.live
    witness = None if live is None else live.member.uptime.witness
    return 0 if witness is None else witness.credited


def messages(events: list[LogEvent], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e.get("log_level") is level]


@defer.inlineCallbacks
def stop_all(nodes: list[Node]):  # type: ignore[no-untyped-def]
    yield defer.gatherResults([n.service.stop(graceful=False) for n in nodes], consumeErrors=True)


# ------------------------------------------------------------- the scenarios


@pytest_twisted.inlineCallbacks
def test_five_services_form_a_ring_survive_a_crash_a_restart_and_a_leave(  # type: ignore[no-untyped-def]
    tmp_path: Path, log_events: list[LogEvent]
):
    """Five join through the first; a record outlives a crash; the crashed one rejoins by its log; a leave is LEFT."""
    first = yield started(node(tmp_path / "n0", introducers=[]))
    nodes = [first]
    try:
        yield first.service.joined()  # the first node of a new ring: at once
        assert any("starting a new ring" in m for m in messages(log_events))
        for i in range(1, 5):
            nodes.append((yield started(node(tmp_path / f"n{i}", introducers=[first.peer.address]))))
        yield defer.gatherResults([n.service.joined() for n in nodes])
        yield wait_until(lambda: not ring_errors(nodes), "the five services form a correct ring", lambda: ring_errors(nodes))

        # a put through one member is read through another
        record = yield nodes[1].service.put("nodes/nm-7", b"capacity=8")
        assert record.value == b"capacity=8"
        got = yield nodes[4].service.get("nodes/nm-7")
        assert got is not None and got.value == b"capacity=8"
        owner = yield nodes[3].service.lookup(nodes[2].peer.node_id)
        assert owner == nodes[2].peer

        # a crash (no goodbye): the others report it dead, the ring repairs, the record survives
        yield wait_until(lambda: not membership_errors(nodes), "everyone knows everyone", lambda: membership_errors(nodes))
        crashed = nodes[2]
        yield wait_until(lambda: credited(crashed) >= 16, "its witness credited acks of the others", lambda: credited(crashed))
        crashed_identity, crashed_port = crashed.service.identity, int(crashed.peer.address.rsplit(":", 1)[1])
        yield crashed.service.stop(graceful=False)
        down_from = time.time() * 1000
        kept = crashed.service.take_attestations()  # its witness, flushed by the stop: what it saw of the others
        assert kept and {a.subject for a in kept} <= {n.peer.node_id for n in nodes} - {crashed.peer.node_id}
        assert crashed.service.take_attestations() == []
        others = [n for n in nodes if n is not crashed]
        yield wait_until(
            lambda: all(n.saw(MemberDied, crashed.peer) for n in others),
            "every other node saw it die",
            lambda: [[type(e).__name__ for e in n.events if e.peer == crashed.peer] for n in others],
        )
        assert not any(n.saw(MemberLeft, crashed.peer) for n in others)
        yield wait_until(lambda: not ring_errors(others), "the four services repaired the ring", lambda: ring_errors(others))
        got = yield others[0].service.get("nodes/nm-7")
        assert got is not None and got.value == b"capacity=8"

        # the crashed node restarts with its state directory and no introducer: its neighbour log brings it back
        down_until = time.time() * 1000
        restarted = yield started(node(crashed.state_dir, [], identity=crashed_identity, port=crashed_port))
        nodes[2] = restarted
        yield restarted.service.joined()
        assert any("rejoining through the" in m and "neighbour log" in m for m in messages(log_events))
        yield wait_until(lambda: not ring_errors(nodes), "the restarted node is back in its place", lambda: ring_errors(nodes))
        assert restarted.service.view().incarnation > 0

        # a graceful stop is a LEFT at the others, not a death
        yield wait_until(lambda: not membership_errors(nodes), "everyone knows everyone", lambda: membership_errors(nodes))
        leaver = nodes[3]
        yield leaver.service.stop(graceful=True)
        rest = [n for n in nodes if n is not leaver]
        yield wait_until(lambda: all(n.saw(MemberLeft, leaver.peer) for n in rest), "every other node saw it leave",
            lambda: [[type(e).__name__ for e in n.events if e.peer == leaver.peer] for n in rest],
        )
        assert not any(n.saw(MemberDied, leaver.peer) for n in rest)
        yield wait_until(lambda: not ring_errors(rest), "the ring closed the gap", lambda: ring_errors(rest))
        got = yield rest[-1].service.get("nodes/nm-7")
        assert got is not None and got.value == b"capacity=8"

        # each witnessed the others (r = 8 covers this ring) in Unix ms, never itself, and not the restarted
        # node's downtime; the leaver's stop kept what its witness held
        yield wait_until(lambda: credited(restarted) >= 16, "the restarted witness credited acks", lambda: credited(restarted))
        for n in rest:
            seen = n.service.take_attestations(flush=True)
            assert {a.subject for a in seen} >= {o.peer.node_id for o in rest if o is not n}
            assert all(a.witness == n.peer.node_id != a.subject and a.start_ms > 1.7e12 for a in seen)
            back = [a for a in seen if a.subject == restarted.peer.node_id]
            assert not [a for a in back if a.start_ms < down_until and a.end_ms > down_from], back
        assert {a.witness for a in leaver.service.take_attestations()} == {leaver.peer.node_id}
        assert messages(log_events, LogLevel.error) + messages(log_events, LogLevel.critical) == []
    finally:
        yield stop_all(nodes)


@pytest_twisted.inlineCallbacks
def test_a_silent_introducer_is_retried_until_it_appears(  # type: ignore[no-untyped-def]
    tmp_path: Path, log_events: list[LogEvent]
):
    """Nobody at the introducer's address: the service keeps trying and says so; once it listens, the join succeeds."""
    from cortex_rm.local_cluster import free_ports

    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    waiting = yield started(node(tmp_path / "waiting", introducers=[address]))
    nodes = [waiting]
    try:
        joined = waiting.service.joined()

        def retries() -> list[str]:
            return [m for m in messages(log_events) if "trying again in 0.5 s" in m and address in m]

        yield wait_until(lambda: len(retries()) >= 2, "two retries were announced")
        assert not joined.called
        warned = [m for m in messages(log_events, LogLevel.warn) if address in m]
        assert warned and "connection refused" in warned[0] and "check" in warned[0]

        introducer = yield started(node(tmp_path / "introducer", introducers=[], port=port))
        nodes.append(introducer)
        yield joined
        assert waiting.service._attempts is not None and waiting.service._attempts.state is JoinState.JOINED
        yield wait_until(lambda: not ring_errors(nodes), "the two services form a ring")
    finally:
        yield stop_all(nodes)


@pytest_twisted.inlineCallbacks
def test_the_proof_of_work_is_solved_once_in_a_thread_and_said_so(  # type: ignore[no-untyped-def]
    tmp_path: Path, log_events: list[LogEvent]
):
    """On a key's first start the work is solved through ``run_blocking`` (here a real thread, as the
    daemon's), with a log line saying what the start waits for, and stored; a restart reads it."""
    solved_in: list[str] = []

    def in_thread(work):  # type: ignore[no-untyped-def]
        def run():  # type: ignore[no-untyped-def]
            solved_in.append(threading.current_thread().name)
            return work()

        return threads.deferToThread(run)

    identity = NodeIdentity.generate(key_bits=TEST_KEY_BITS)
    for start in ("first", "restart"):
        service = RingService(
            identity, replace(FAST, work_bits=14), reactor(), tmp_path, listen_host="127.0.0.1",
            advertise_host="127.0.0.1", port=0, introducers=[], run_blocking=in_thread,
        )  # fmt: skip
        yield service.start()
        try:
            assert service.state is ServiceState.RUNNING and service.live is not None
            assert service.live.member.trust.work == stored_work(tmp_path, identity.spki, 14)
            solving = [m for m in messages(log_events) if "solving the proof of work" in m]
            assert len(solving) == 1 and "14 bits" in solving[0] and "in a thread" in solving[0], start
        finally:
            yield service.stop(graceful=False)
    assert solved_in and threading.main_thread().name not in solved_in


@pytest_twisted.inlineCallbacks
def test_a_member_flooding_direct_messages_is_cut_to_its_limit_and_another_still_gets_through(  # type: ignore[no-untyped-def]
    tmp_path: Path, log_events: list[LogEvent]
):
    """Over real TLS links: a member sends 300 direct messages at once to one whose limit is 20 at once and
    1/s; the handler gets the burst (plus what the elapsed seconds refilled), the rest are dropped unread,
    counted and logged in one line; a third member's messages meanwhile all reach the handler."""
    limited = replace(FAST, direct_rate=1, direct_burst=20)
    target = yield started(node(tmp_path / "target", introducers=[], config=limited))
    nodes = [target]
    try:
        yield target.service.joined()
        for name in ("flooder", "honest"):
            nodes.append((yield started(node(tmp_path / name, introducers=[target.peer.address], config=limited))))
        yield defer.gatherResults([n.service.joined() for n in nodes])
        yield wait_until(lambda: not ring_errors(nodes), "the three services form a ring", lambda: ring_errors(nodes))
        flooder, honest = nodes[1], nodes[2]
        handled: list[tuple[Peer, bytes]] = []
        target.service.register_direct("test", lambda sender, body: handled.append((sender, body)))

        def from_(n: Node) -> list[bytes]:
            return [body for sender, body in handled if sender == n.peer]

        flooder.service.send_direct(target.peer, "test", b"warm-up")  # the link is up before the flood
        yield wait_until(lambda: len(from_(flooder)) == 1, "the warm-up message arrived")
        member = target.service.live.member
        began = time.monotonic()
        for i in range(300):
            flooder.service.send_direct(target.peer, "test", b"flood %d" % i)
        for i in range(5):
            honest.service.send_direct(target.peer, "test", b"honest %d" % i)
        yield wait_until(
            lambda: len(from_(flooder)) - 1 + member.direct_limit.dropped == 300 and len(from_(honest)) == 5,
            "every flood message was handled or dropped, and the honest ones handled",
            lambda: (len(from_(flooder)), member.direct_limit.dropped, len(from_(honest))),
        )
        elapsed = time.monotonic() - began
        taken = len(from_(flooder)) - 1
        assert 19 <= taken <= 20 + elapsed + 1, (taken, elapsed)  # the burst (less the warm-up) and the refill
        assert from_(honest) == [b"honest %d" % i for i in range(5)]
        assert member.view().refusals.rate_limited == 300 - taken
        drops = [m for m in messages(log_events, LogLevel.warn) if "over the per-sender rate limit" in m]
        assert 1 <= len(drops) <= 1 + elapsed / 60 and flooder.peer.short() in drops[0]
    finally:
        yield stop_all(nodes)
