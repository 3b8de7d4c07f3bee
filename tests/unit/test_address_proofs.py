"""Proving members' ring addresses: the ``AddressProofs`` core on a fake timeline, and ``AddressChecks``
driving it on a ``Clock`` with a scripted ``discover`` (the transport's dial, whose answers the test gives)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.dht.address_proofs import (
    DISPROVEN,
    LOG_INTERVAL_S,
    MAX_LOGGED,
    PENDING,
    PROVEN,
    AddressProofs,
)
from cortex_rm.dht.errors import IntroducerUnreachable
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.roles.address_checks import POLL_S, AddressChecks

ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
ME = 1
A = Peer(0xA0, "10.0.0.10:7946")
B = Peer(0xB0, "10.0.0.11:7946")


def proofs(**kwargs: Any) -> AddressProofs:
    settings: dict[str, Any] = dict(recheck=600.0, retry_min=5.0, retry_max=40.0, max_checks=4, check_timeout=60.0)
    return AddressProofs(ME, **(settings | kwargs))


def warnings(events: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [e for e in events if text in str(e.get("log_format", "")) and e["log_level"].name == "warn"]


def test_a_new_member_is_pending_until_our_dial_meets_its_key():
    """A live member is checked at once and counts as proven only once a check met its key; we never check ourselves."""
    p = proofs()
    assert p.update([(A, ALIVE, 1), (Peer(ME, "10.0.0.1:7946"), ALIVE, 1)], now=0.0) == [A]
    assert p.state_of(A) == PENDING and p.proven() == frozenset() and p.dialling() == 1
    assert p.update([(A, ALIVE, 1)], now=1.0) == []  # dialling: not started twice
    p.proved(A, now=1.5)
    assert p.state_of(A) == PROVEN and p.proven() == {A} and p.dialling() == 0


@pytest.mark.parametrize("error", ["the listener there is ring member b0", "connection refused"])
def test_a_member_whose_address_shows_another_key_or_nothing_is_not_believed_and_retried_with_back_off(
    error: str, logged: list[dict[str, Any]]
):
    """Another key at the address, or nothing answering, disproves it: not proven, logged once, retried
    after 5, 10, 20, 40, 40 s; a later proof makes it proven."""
    p = proofs()
    p.update([(A, ALIVE, 1)], now=0.0)
    p.disproved(A, error, now=0.0)
    assert p.state_of(A) == DISPROVEN and p.proven() == frozenset() and p.failed == 1
    now, retries = 0.0, []
    for _ in range(5):
        waited = 0.0
        while not p.update([(A, SUSPECT, 1)], now=now + waited):
            waited += 1.0
        retries.append(waited)
        now += waited
        p.disproved(A, error, now=now)
    assert retries == [5.0, 10.0, 20.0, 40.0, 40.0] and p.proven() == frozenset()
    [line] = warnings(logged, "not believing member")
    assert line["error"] == error and line["address"] == A.address
    p.update([(A, ALIVE, 1)], now=now + 40.0)
    p.proved(A, now=now + 40.0)
    assert p.proven() == {A}


def test_a_member_at_a_new_address_is_proven_again_and_a_stale_outcome_counts_for_nothing():
    """A new incarnation at a new address drops the old proof until the new address is checked; the
    outcome of a check of the old address (still in flight) neither proves nor disproves the new one."""
    p = proofs()
    p.update([(A, ALIVE, 1)], now=0.0)
    p.proved(A, now=0.0)
    moved = Peer(A.node_id, "192.168.1.1:22")
    assert p.update([(moved, ALIVE, 2)], now=10.0) == [moved]
    assert p.proven() == frozenset() and p.state_of(moved) == PENDING and p.state_of(A) is None
    p.proved(A, now=10.5)  # e.g. a link to the old address, dialled earlier
    assert p.proven() == frozenset() and p.state_of(moved) == PENDING
    p.disproved(moved, "the listener there is ring member b0", now=11.0)
    assert p.proven() == frozenset() and p.state_of(moved) == DISPROVEN


def test_a_restart_at_the_same_address_keeps_the_proof_while_it_is_checked_again():
    """A new incarnation at the same address is checked at once; the proof stands until that check fails."""
    p = proofs()
    p.update([(A, ALIVE, 1)], now=0.0)
    p.proved(A, now=0.0)
    assert p.update([(A, ALIVE, 1)], now=30.0) == []  # same incarnation: nothing due before the recheck
    assert p.update([(A, ALIVE, 2)], now=31.0) == [A] and p.proven() == {A}
    p.disproved(A, "connection refused", now=31.5)
    assert p.proven() == frozenset()


def test_a_proven_address_is_checked_again_every_recheck_interval():
    """A proven member is checked again ``recheck`` seconds after its last proof."""
    p = proofs(recheck=600.0)
    p.update([(A, ALIVE, 1)], now=0.0)
    p.proved(A, now=2.0)
    assert p.update([(A, ALIVE, 1)], now=601.9) == []
    assert p.update([(A, ALIVE, 1)], now=602.0) == [A] and p.proven() == {A}


def test_a_member_that_dies_is_forgotten_and_checked_again_when_it_comes_back():
    """DEAD and LEFT members lose their proof; back (same address), they are pending again."""
    p = proofs()
    p.update([(A, ALIVE, 1), (B, ALIVE, 1)], now=0.0)
    p.proved(A, now=0.0)
    p.proved(B, now=0.0)
    p.update([(A, DEAD, 1), (B, LEFT, 1)], now=5.0)
    assert p.proven() == frozenset() and p.state_of(A) is None
    p.proved(A, now=5.5)  # an outcome for a member no longer live: ignored
    assert p.update([(A, ALIVE, 2)], now=6.0) == [A] and p.proven() == frozenset()


def test_at_most_max_checks_dial_at_once_and_a_lost_outcome_frees_its_slot():
    """Ten new members start four checks, the rest as outcomes come back; a check never reported back
    fails after ``check_timeout``."""
    p = proofs(max_checks=4, check_timeout=60.0)
    members = [(Peer(0x100 + i, f"10.0.1.{i}:7946"), ALIVE, 1) for i in range(10)]
    first = p.update(members, now=0.0)
    assert len(first) == 4 and p.update(members, now=1.0) == []
    p.proved(first[0], now=1.0)
    p.disproved(first[1], "connection refused", now=1.0)
    assert len(p.update(members, now=2.0)) == 2 and p.dialling() == 4
    assert len(p.update(members, now=62.0)) == 4  # the four silent ones timed out, four more start
    assert p.state_of(first[2]) == DISPROVEN and p.proven() == {first[0]}


def test_disproven_members_are_logged_at_most_max_logged_per_interval(logged: list[dict[str, Any]]):
    """A flood of members with false addresses logs MAX_LOGGED lines, then one line with the rest's count."""
    p = proofs()
    liars = [(Peer(0x200 + i, f"192.168.1.{i}:22"), ALIVE, 1) for i in range(30)]
    for _ in range(8):  # four at a time
        for peer in p.update(liars, now=0.0):
            p.disproved(peer, "the TLS handshake failed", now=0.0)
    assert p.failed == 30 and p.unlogged == 30 - MAX_LOGGED
    assert len(warnings(logged, "not believing member")) == MAX_LOGGED
    late = Peer(0x300, "192.168.2.1:22")
    p.update([(late, ALIVE, 1)], now=LOG_INTERVAL_S)
    p.disproved(late, "connection refused", now=LOG_INTERVAL_S)
    assert [e["count"] for e in warnings(logged, "more members' ring addresses")] == [30 - MAX_LOGGED]
    assert len(warnings(logged, "not believing member")) == MAX_LOGGED + 1


# ------------------------------------------------------------- the edge on a fake clock


class Dials:
    """``discover`` for the checker: records each dial; ``answer_all`` answers as the network would."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, defer.Deferred[Peer]]] = []

    def __call__(self, address: str) -> defer.Deferred[Peer]:
        d: defer.Deferred[Peer] = defer.Deferred()
        self.pending.append((address, d))
        return d

    def answer_all(self, listeners: dict[str, int]) -> None:
        """Each dialled address answers with the id of its listener, or fails when none listens there."""
        dialled, self.pending = self.pending, []
        for address, d in dialled:
            if address in listeners:
                d.callback(Peer(listeners[address], address))
            else:
                d.errback(IntroducerUnreachable(f"cannot reach the ring at {address}: connection refused"))


def test_the_checker_dials_each_member_and_believes_only_its_key_there(logged: list[dict[str, Any]]):
    """Each poll dials the due members' addresses; the listener's id proves the member (its own id)
    or disproves it (another member's id, or a failed dial); a link's handshake counts too; after
    stop nothing more is dialled and late outcomes change nothing."""
    clock, dials = Clock(), Dials()
    liar = Peer(0xC0, A.address)  # claims A's address
    phantom = Peer(0xD0, "10.0.0.99:7946")  # claims an address where nothing listens
    listeners = {A.address: A.node_id, B.address: B.node_id}
    members = [(A, ALIVE, 1), (liar, ALIVE, 1), (phantom, SUSPECT, 1), (B, ALIVE, 1)]
    checker = AddressChecks(clock, proofs(max_checks=3), lambda: members, dials)
    checker.start()
    assert len(dials.pending) == 3
    dials.answer_all(listeners)
    clock.advance(POLL_S)
    assert len(dials.pending) == 1
    dials.answer_all(listeners)
    assert checker.proofs.proven() == {A, B}
    assert checker.proofs.state_of(liar) == DISPROVEN and checker.proofs.state_of(phantom) == DISPROVEN
    errors = {e["member"]: e["error"] for e in warnings(logged, "not believing member")}
    assert errors == {
        liar.short(): "the listener there is ring member " + f"{A.node_id:040x}"[:10],
        phantom.short(): "cannot reach the ring at 10.0.0.99:7946: connection refused",
    }
    checker.link_checked(B, 0xC0)  # a link to B's address met another key: B is no longer believed
    assert checker.proofs.proven() == {A}
    checker.link_checked(B, B.node_id)
    assert checker.proofs.proven() == {A, B}
    members.append((Peer(0xE0, "10.0.0.12:7946"), ALIVE, 1))
    checker.stop()
    clock.advance(10 * POLL_S)
    assert dials.pending == []
    checker.link_checked(A, 0xC0)
    assert checker.proofs.proven() == {A, B}
