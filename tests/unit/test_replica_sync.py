"""The anti-entropy exchange: what a digest's receiver wants and sends back, and which wants are honoured."""

from __future__ import annotations

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.kv_messages import Record, ReplicaDigest, ReplicaWant, StoreReplicas
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.record_store import RecordStore
from cortex_rm.dht.replica_sync import ReplicaOffers, answer_digest, compare_digest

OWNER, REPLICA = Peer(1, "owner"), Peer(2, "replica")


def test_a_digest_is_answered_with_wants_for_missing_or_older_keys_and_our_newer_records() -> None:
    """Missing and older keys are wanted; newer ones are sent back; equal ones and bad keys are left alone."""
    newer_here = Record("newer-here", b"n", 9, 1)
    store = RecordStore([Record("older-here", b"o", 1, 1), newer_here, Record("same", b"s", 5, 1)])
    entries = (("missing", 3), ("older-here", 2), ("newer-here", 4), ("same", 5), ("x" * 300, 1))
    assert compare_digest(store, entries) == (["missing", "older-here"], [newer_here])
    assert answer_digest(store, OWNER, ReplicaDigest(entries)) == [
        Send(OWNER, ReplicaWant(("missing", "older-here"))),
        Send(OWNER, StoreReplicas((newer_here,))),
    ]


def test_a_digest_in_agreement_is_answered_with_nothing() -> None:
    """Replicas already in step exchange no further message."""
    store = RecordStore([Record("k", b"v", 5, 1)])
    assert answer_digest(store, OWNER, ReplicaDigest((("k", 5),))) == []


def test_wants_are_honoured_for_offered_keys_from_the_offered_peer_until_the_offer_lapses() -> None:
    """An offer opens a window of ``lifetime`` seconds for that peer and those keys only."""
    record, other = Record("k", b"v", 5, 1), Record("other", b"o", 1, 1)
    store = RecordStore([record, other])
    offers = ReplicaOffers(lifetime=1.0)
    assert offers.offer(REPLICA, [], 0.0) == []  # nothing to offer sends nothing
    assert offers.offer(REPLICA, [record], 0.0) == [Send(REPLICA, ReplicaDigest((("k", 5),)))]
    assert offers.answer_want(store, OWNER, ReplicaWant(("k",)), 0.5) == []
    assert offers.answer_want(store, REPLICA, ReplicaWant(("k", "other")), 0.5) == [
        Send(REPLICA, StoreReplicas((record,)))
    ]
    assert offers.answer_want(store, REPLICA, ReplicaWant(("k",)), 1.0) == []
    offers.expire(1.0)
    assert offers.answer_want(store, REPLICA, ReplicaWant(("k",)), 0.5) == []
