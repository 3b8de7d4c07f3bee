"""RingMember's own rules, beyond the scenarios: refusals before any lookup, implausible stamps."""

from __future__ import annotations

import random

from cortex_rm.dht.chord_messages import Ping
from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.kv_messages import Record, StoreReplicas
from cortex_rm.dht.kv_operations import PutDone
from cortex_rm.dht.member_table import MemberJoined
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.record_store import MAX_VALUE_BYTES
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_member import MAX_CLOCK_SKEW_MS, RingMember, Transmit
from cortex_rm.dht.swim_messages import MemberStatus, MemberUpdate
from cortex_rm.internal.ring_codec import piggyback_size

ME = Peer(1000, "127.0.0.1:7000")
OTHER = Peer(2000, "127.0.0.2:7000")
NOW = 1_790_000_000.0  # seconds since the epoch, as the daemon's clock gives


def member() -> RingMember:
    m = RingMember(ME, RingConfig(), random.Random(1), piggyback_size=piggyback_size, incarnation=int(NOW * 1000))
    m.start(NOW)
    return m


def test_an_oversized_put_fails_at_once_without_a_lookup() -> None:
    """A value over the record bound is refused before any message is sent, with the reason."""
    m = member()
    op_id, actions = m.put("big", b"x" * (MAX_VALUE_BYTES + 1), NOW)
    assert not any(isinstance(a, Transmit) for a in actions)
    (done,) = [a for a in actions if isinstance(a, PutDone)]
    assert done.op_id == op_id and done.record is None and "bytes" in done.error


def test_an_envelope_with_a_stamp_more_than_a_day_ahead_is_dropped() -> None:
    """A suspicion at incarnation 2**63 - 1, or a record versioned far in the future, would
    pin a member or a key for good (and counting up from it cannot be encoded): the whole
    envelope is ignored; a rumour at a plausible incarnation is taken."""
    m = member()
    too_far = int(NOW * 1000) + MAX_CLOCK_SKEW_MS + 1
    lie = MemberUpdate(OTHER, MemberStatus.SUSPECT, 2**63 - 1, OTHER)
    assert m.receive(Envelope(OTHER, Ping(1), (lie,)), NOW) == []
    record = Record("k", b"v", too_far, OTHER.node_id)
    assert m.receive(Envelope(OTHER, StoreReplicas((record,))), NOW) == []
    assert "k" not in m.keys.store
    third = Peer(3000, "127.0.0.3:7000")
    plausible = MemberUpdate(third, MemberStatus.ALIVE, int(NOW * 1000))
    actions = m.receive(Envelope(OTHER, Ping(2), (plausible,)), NOW)
    assert any(isinstance(a, MemberJoined) and a.peer == third for a in actions)
