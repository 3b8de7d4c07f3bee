"""The ring service's own logic on a fake clock: join attempts, tick scheduling, incarnations, stopping.

``JoinAttempts`` runs on ``task.Clock`` with scripted discoveries and joins;
``RingService`` runs on ``MemoryReactorClock`` (its listening port is a fake, no
byte goes anywhere), as a ring of one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, LogLevel, formatEvent

from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.errors import IntroducerUnreachable, RingError
from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.neighbour_log import NeighbourRecord
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_join import JOIN_ATTEMPTS, JoinAttempts, JoinEvent, JoinState
from cortex_rm.dht.ring_work import solve_work
from cortex_rm.dht.swim_messages import Ack
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.roles.ring_service import RingService, ServiceState
from cortex_rm.roles.ring_start import INCARNATION_FILE, next_incarnation
from cortex_rm.yarn.errors import IllegalTransition

ME = Peer(10, "10.0.0.1:7000")
A, B = Peer(20, "10.0.0.2:7000"), Peer(30, "10.0.0.3:7000")
RETRY = 5.0


def texts(events: list[LogEvent], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e.get("log_level") is level]


class Script:
    """JoinAttempts' collaborators, scripted: the log's candidates, who answers discovery, the joins asked for."""

    def __init__(self, log: list[Peer] | None = None, answering: dict[str, Peer] | None = None) -> None:
        self.log = log or []
        self.answering = answering or {}
        self.joins: list[list[Peer]] = []
        self.clock = task.Clock()

    def discover(self, address: str) -> defer.Deferred[Peer]:
        if address in self.answering:
            return defer.succeed(self.answering[address])
        return defer.fail(IntroducerUnreachable(f"cannot reach the ring at {address}: connection refused; check it"))

    def attempts(self, introducers: list[str]) -> JoinAttempts:
        return JoinAttempts(
            self.clock,
            ME,
            introducers,
            RETRY,
            log_candidates=lambda: list(self.log),
            discover=self.discover,
            join=self.joins.append,
        )


def test_the_table_handles_or_ignores_every_event_in_every_state() -> None:
    """The join-attempt lifecycle is complete: no (state, event) pair is left undeclared except true bugs."""
    undeclared = []
    for state in JoinState:
        for event in JoinEvent:
            try:
                JOIN_ATTEMPTS.next_state(state, event, JoinState.WAITING if event is JoinEvent.LOST else None)
            except IllegalTransition:
                undeclared.append((state.value, event.value))
    # the attempt's own steps happen only in the state that starts them
    assert all(e in {"attempt", "no-log", "discovered", "no-candidates", "failed"} for _, e in undeclared), undeclared


def test_no_log_and_no_introducer_founds_a_ring(log_events: list[LogEvent]) -> None:
    """Without candidates the node is the first of a new ring: settled at once, and the log says so."""
    script = Script()
    attempts = script.attempts([ME.address])  # our own address only: skipped
    attempts.begin()
    assert attempts.state is JoinState.FOUNDED and script.joins == []
    assert attempts.settled().called
    assert any("starting a new ring" in t for t in texts(log_events))
    assert any("is this node; skipped" in t for t in texts(log_events))


def test_a_fresh_log_is_tried_before_the_introducers() -> None:
    """Log candidates go to join first; only when they all fail are the introducers discovered."""
    script = Script(log=[A, B], answering={"intro:1": B})
    attempts = script.attempts(["intro:1"])
    settled = attempts.settled()
    attempts.begin()
    assert script.joins == [[A, B]] and attempts.state is JoinState.FROM_LOG
    attempts.observe(RingState.JOINING)
    attempts.join_failed()
    assert script.joins == [[A, B], [B]] and attempts.state is JoinState.FROM_INTRODUCERS
    assert not settled.called
    attempts.observe(RingState.MEMBER)
    assert attempts.state is JoinState.JOINED and settled.called


def test_unreachable_introducers_are_retried_forever_and_say_so(log_events: list[LogEvent]) -> None:
    """No introducer answers: each attempt warns per address and announces the wait; an answer ends it."""
    script = Script()
    attempts = script.attempts(["down:1", "down:2"])
    attempts.begin()
    for _ in range(3):
        assert attempts.state is JoinState.WAITING and script.joins == []
        script.clock.advance(RETRY)
    assert attempts.attempts == 4
    warned = texts(log_events, LogLevel.warn)
    assert sum("down:1" in w and "check" in w for w in warned) == 4
    assert sum("trying again in 5 s" in t for t in texts(log_events)) == 4
    script.answering["down:2"] = A
    script.clock.advance(RETRY)
    assert script.joins == [[A]] and attempts.state is JoinState.FROM_INTRODUCERS
    attempts.join_failed()  # A could not take us in: wait again
    assert attempts.state is JoinState.WAITING
    attempts.observe(RingState.MEMBER)  # ... but someone found us meanwhile
    assert attempts.state is JoinState.JOINED
    script.clock.advance(10 * RETRY)
    assert script.joins == [[A]]  # no attempt after joining


def test_introducers_are_tried_in_configured_order_among_those_that_answered() -> None:
    """Discovery runs for all introducers; the join list keeps the configured order and drops the silent ones."""
    script = Script(answering={"b:1": B, "a:1": A})
    attempts = script.attempts(["b:1", "down:1", "a:1"])
    attempts.begin()
    assert script.joins == [[B, A]]


def test_a_member_that_loses_every_peer_tries_again_or_waits_to_be_found() -> None:
    """ALONE after MEMBER: with introducers a new attempt follows the retry interval; without, it stays a founder."""
    script = Script(answering={"a:1": A})
    attempts = script.attempts(["a:1"])
    attempts.begin()
    attempts.observe(RingState.MEMBER)
    attempts.observe(RingState.ALONE)
    assert attempts.state is JoinState.WAITING
    script.clock.advance(RETRY)
    assert script.joins == [[A], [A]]

    lonely = Script()
    founder = lonely.attempts([])
    founder.begin()
    founder.observe(RingState.MEMBER)
    founder.observe(RingState.ALONE)
    assert founder.state is JoinState.FOUNDED and founder.settled().called


def test_stop_ends_the_attempts_and_fails_the_waiters() -> None:
    """After stop no retry fires, late discoveries are ignored, and settled() waiters get a RingError."""
    script = Script()
    attempts = script.attempts(["down:1"])
    attempts.begin()
    waiter = attempts.settled()
    attempts.stop()
    assert attempts.state is JoinState.STOPPED
    failures: list[Any] = []
    waiter.addErrback(failures.append)
    assert failures and failures[0].check(RingError)
    script.clock.advance(10 * RETRY)
    assert script.joins == [] and attempts.attempts == 1


# ------------------------------------------------------------- the service on a fake reactor


def service(tmp_path: Path, reactor: MemoryReactorClock, wall: float = 1_790_000_000.0) -> RingService:
    """A ring service with no introducers (a founder) on the fake reactor."""
    return RingService(
        NodeIdentity.generate(key_bits=4),
        RingConfig(work_bits=8, key_bits=4),  # solved inline: the defaults' seconds would be per test
        reactor,
        tmp_path,
        listen_host="127.0.0.1",
        advertise_host="127.0.0.1",
        port=7000,
        introducers=[],
        wall_clock=lambda: wall,
        rng=random.Random(4),
        leave_flush=1.0,
    )


def tick_calls(s: RingService, reactor: MemoryReactorClock) -> list[Any]:
    assert s.live is not None
    return [c for c in reactor.getDelayedCalls() if c.func == s.live._tick]


def test_incarnations_rise_across_restarts_even_when_the_clock_goes_back(tmp_path: Path) -> None:
    """Each start persists max(previous + 1, wall-clock ms); a clock set back still gives a higher one."""
    first = next_incarnation(tmp_path, lambda: 2000.0)
    second = next_incarnation(tmp_path, lambda: 1000.0)
    assert (first, second) == (2_000_000, 2_000_001)
    assert (tmp_path / INCARNATION_FILE).read_text().strip() == "2000001"
    (tmp_path / INCARNATION_FILE).write_text("garbage")
    assert next_incarnation(tmp_path, lambda: 3000.0) == 3_000_000


def test_a_founder_starts_joined_and_keeps_exactly_one_tick_at_its_deadline(tmp_path: Path) -> None:
    """start fires once listening; joined() at once; always one pending tick, never later than next_deadline."""
    reactor = MemoryReactorClock()
    s = service(tmp_path, reactor)
    started = s.start()
    assert started.called and s.state is ServiceState.RUNNING
    assert s.me.address == "127.0.0.1:7000" and s.joined().called
    assert s.view().incarnation == 1_790_000_000_000
    assert s.live is not None
    ticks = 0
    for _ in range(50):
        (call,) = tick_calls(s, reactor)
        # never later than the member's deadline (which, with nothing due, is ``now + tick_interval``)
        assert reactor.seconds() <= call.getTime() <= s.live.member.next_deadline(reactor.seconds())
        reactor.advance(0.1)
        ticks += call.called
    assert ticks >= 50 * 0.1 / RingConfig().tick_interval - 1
    assert s.view().state is RingState.ALONE


def test_operations_on_a_ring_of_one_and_pending_ones_fail_on_stop(tmp_path: Path) -> None:
    """lookup/put/get answer from the ring of one; RingError before start and for what is pending at stop."""
    reactor = MemoryReactorClock()
    s = service(tmp_path, reactor)
    early: list[Any] = []
    s.lookup(1).addErrback(early.append)
    assert early and early[0].check(RingError) and "new" in early[0].getErrorMessage()
    s.start()
    owner: list[Peer] = []
    s.lookup(12345).addCallback(owner.append)
    assert owner == [s.me]
    stored: list[Any] = []
    s.put("k", b"v").addCallback(stored.append)
    reactor.advance(0.5)
    assert stored and stored[0].value == b"v"
    got: list[Any] = []
    s.get("k").addCallback(got.append)
    reactor.advance(0.5)
    assert got and got[0].value == b"v"
    stopped = s.stop(graceful=True)
    assert not stopped.called  # the goodbyes get leave_flush to go out
    reactor.advance(1.0)
    assert stopped.called and s.state is ServiceState.STOPPED
    assert reactor.getDelayedCalls() == []
    assert s.stop().called  # (stopping twice is fine)


@pytest.mark.expect_logged_errors('the ring core failed in receive')
def test_a_core_exception_is_logged_and_the_service_goes_on(tmp_path: Path, log_events: list[LogEvent]) -> None:
    """An envelope the core chokes on is logged as a failure; ticks and operations continue."""
    reactor = MemoryReactorClock()
    s = service(tmp_path, reactor)
    s.start()
    assert s.live is not None

    def broken(envelope: Any, now: float) -> list[Any]:
        raise RuntimeError("core bug")

    s.live.member.receive = broken  # type: ignore[method-assign]
    s._on_envelope(object())  # type: ignore[arg-type]
    assert any("failed in receive" in t for t in texts(log_events, LogLevel.critical))
    assert len(tick_calls(s, reactor)) == 1
    owner: list[Peer] = []
    s.lookup(7).addCallback(owner.append)
    assert owner == [s.me]


def test_the_neighbour_log_is_written_only_while_it_names_a_peer(tmp_path: Path) -> None:
    """A ring of one writes nothing (a good record is kept); a record with peers is written every interval."""
    reactor = MemoryReactorClock()
    s = service(tmp_path, reactor)
    s.start()
    reactor.advance(RingConfig().neighbour_log_interval * 2)
    assert not s.neighbour_log.path.exists()
    assert s.live is not None
    s.live.member.chord.consider(A)
    reactor.advance(RingConfig().neighbour_log_interval)
    record = s.neighbour_log.read(s.me.node_id)
    assert isinstance(record, NeighbourRecord) and A in record.successors


def test_a_step_that_brings_the_deadline_forward_moves_the_tick_earlier_never_later(tmp_path: Path) -> None:
    """The one pending tick follows the member's deadline forward after any step, and is not pushed back."""
    reactor = MemoryReactorClock()
    s = service(tmp_path, reactor)
    s.start()
    assert s.live is not None
    member: Any = s.live.member
    member.next_deadline = lambda now: now + 5.0
    reactor.advance(0.3)  # the pending tick runs and reschedules at the (fake) deadline
    (call,) = tick_calls(s, reactor)
    assert call.getTime() == pytest.approx(0.3 + 5.0)
    member.next_deadline = lambda now: now + 0.01
    s.lookup(1)  # a step: the deadline came forward
    (call,) = tick_calls(s, reactor)
    assert call.getTime() == pytest.approx(0.3 + 0.01)
    member.next_deadline = lambda now: now + 3.0
    s.lookup(2)  # a later deadline leaves the earlier tick alone
    (again,) = tick_calls(s, reactor)
    assert again is call


def test_attestations_are_handed_over_once_and_a_stop_keeps_the_witness_flush(tmp_path: Path) -> None:
    """A neighbour that answers every probe: nothing is due before the attestation interval, a flush takes its run
    (reactor milliseconds, our ring id as witness), each piece is handed over once; stop flushes the rest into a
    list that the next take_attestations returns once; [] before start and after."""
    reactor = MemoryReactorClock()
    s = service(tmp_path, reactor)
    assert s.take_attestations() == []
    s.start()
    assert s.live is not None
    neighbour = NodeIdentity.generate(key_bits=4)
    peer, work = Peer(neighbour.ring_id, "127.0.0.9:7000"), solve_work(neighbour.spki, 8)
    s.live.member.chord.consider(peer)

    def answer_everything(seconds: float) -> None:
        """``peer`` acks whatever probe of ours is in flight (it knows no seq: it acks them all), every 0.1 s."""
        for _ in range(int(seconds * 10)):
            reactor.advance(0.1)
            for seq in range(1, 200):
                s._on_envelope(Envelope(peer, Ack(seq), (), work, neighbour.spki))

    answer_everything(30)
    assert s.take_attestations() == []  # an interval (an hour) has not passed
    [first] = s.take_attestations(flush=True)
    assert (first.witness, first.subject) == (s.me.node_id, peer.node_id)
    assert 0 <= first.start_ms < first.end_ms <= reactor.seconds() * 1000
    assert s.take_attestations(flush=True) == []  # handed over
    answer_everything(10)
    stopped = s.stop(graceful=False)
    reactor.advance(1)
    assert stopped.called and s.state is ServiceState.STOPPED
    [last] = s.take_attestations()
    assert last.start_ms == first.end_ms and last.end_ms > first.end_ms + 5_000 and last.sequence > first.sequence
    assert s.take_attestations() == s.take_attestations(flush=True) == []
