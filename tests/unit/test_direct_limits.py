"""Per-sender limits on received Direct messages (``dht/direct_limits.py``): messages and bytes, a bounded
sender table, rate-limited logging, and the hook that drops a message before any handler sees it --
sans-IO with a fake clock, then through ``LiveMember`` on ``twisted.internet.task.Clock``."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import provider

from cortex_rm.dht.direct_limits import LOGGED_SENDERS, DirectLimit
from cortex_rm.dht.direct_messages import MAX_DIRECT_BYTES, Direct, DirectReceived
from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.live_member import LiveMember
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.refusals import Refusals
from cortex_rm.dht.ring_config import MIB, RingConfig
from cortex_rm.dht.ring_member import RingMember
from cortex_rm.internal.ring_codec import piggyback_size

ME = Peer(1000, "127.0.0.1:7000")
FLOODER = Peer(2000, "127.0.0.2:7000")
HONEST = Peer(3000, "127.0.0.3:7000")
NOW = 1_790_000_000.0


def limit(rate: float = 10, burst: float = 20, *, max_senders: int = 4096, log_interval: float = 60.0) -> DirectLimit:
    """A limit of ``rate``/``burst`` messages and 1 MiB/s (2 MiB at once) per sender."""
    return DirectLimit("me", rate, burst, MIB, 2 * MIB, max_senders=max_senders, log_interval=log_interval)


@pytest.fixture
def warnings() -> Iterator[list[LogEvent]]:
    """The log events ``direct_limits`` emits while the test runs."""
    seen: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == "cortex_rm.dht.direct_limits":
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def test_a_flood_from_one_sender_is_cut_while_another_still_gets_through() -> None:
    """Past its burst a sender's messages are dropped and counted; another sender's bucket is its own;
    the clock refills the flooder at ``rate``, and no faster."""
    lim = limit(rate=8, burst=20)
    taken = sum(lim.allow(FLOODER, 100, NOW) for _ in range(1000))
    assert taken == 20 and lim.dropped == 980 and lim.dropped_bytes == 980 * 100
    assert all(lim.allow(HONEST, 100, NOW) for _ in range(20))
    assert not lim.allow(FLOODER, 100, NOW + 1 / 16)  # half a token
    assert lim.allow(FLOODER, 100, NOW + 1 / 8) and not lim.allow(FLOODER, 100, NOW + 1 / 8)
    assert sum(lim.allow(FLOODER, 100, NOW + 10) for _ in range(1000)) == 20  # refilled to the burst, not beyond


def test_the_bytes_limit_cuts_large_bodies_and_a_refused_message_charges_neither_bucket() -> None:
    """A sender within its message rate but over its bytes is dropped; the refusal costs it no message
    token, so small messages still pass; a body over the whole byte burst never passes."""
    lim = limit(rate=1000, burst=1000)
    assert lim.allow(FLOODER, MIB, NOW) and lim.allow(FLOODER, MIB, NOW)
    assert not lim.allow(FLOODER, 1, NOW) and lim.dropped == 1 and lim.dropped_bytes == 1
    assert lim.messages.available(FLOODER.node_id, NOW) == 998  # the refused one took no message token
    assert lim.allow(FLOODER, 0, NOW)  # an empty body costs only a message
    assert not lim.allow(FLOODER, MIB, NOW + 0.5) and lim.allow(FLOODER, MIB // 2, NOW + 0.5)
    assert lim.allow(HONEST, 2 * MIB, NOW) and not lim.allow(HONEST, 2 * MIB + 1, NOW + 3600)


def test_the_sender_table_stays_bounded_under_a_flood_of_distinct_senders() -> None:
    """Beyond max_senders new ids share one overflow bucket, so memory is bounded and the senders already
    known keep their own budgets; senders idle long enough to have a full bucket are forgotten first."""
    lim = limit(rate=1, burst=3, max_senders=8)
    known = [Peer(i, "k") for i in range(1, 9)]
    for peer in known:
        assert lim.allow(peer, 10, NOW)
    strangers = [Peer(10_000 + i, "x") for i in range(10_000)]
    passed = sum(lim.allow(peer, 10, NOW) for peer in strangers)
    assert passed == 3 and len(lim) <= 9  # the shared overflow bucket's burst, whatever the number of ids
    assert all(lim.allow(peer, 10, NOW) for peer in known)  # each known sender still has its 2 tokens left
    later = NOW + 60  # everyone idle and full again: the table makes room for new senders
    assert all(lim.allow(peer, 10, later) for peer in strangers[:8]) and len(lim) <= 9


def test_drops_are_logged_once_then_at_most_once_per_interval_with_a_summary(warnings: list[LogEvent]) -> None:
    """A flood of 100 drops a second for two minutes makes three lines (at once, after 60 s, after 120 s),
    each counting the drops since the previous one and naming the sender with the most."""
    lim = limit(rate=1, burst=1, log_interval=60.0)
    for tenth in range(0, 1201):
        now = NOW + tenth / 10
        for _ in range(10):
            lim.allow(FLOODER, 5, now)
        lim.allow(HONEST, 5, now)  # its first message each second passes
    assert lim.lines == len(warnings) == 3
    assert warnings[0]["dropped"] == 1 and warnings[0]["sender"] == FLOODER.short()  # the first drop: at once
    assert sum(e["dropped"] for e in warnings) <= lim.dropped  # the tail since the last line waits for the next
    assert warnings[1]["senders"] == 2 and warnings[1]["bytes"] == 5 * warnings[1]["dropped"]
    assert all(e["log_level"].name == "warn" and "over the per-sender rate limit" in e["log_format"] for e in warnings)


def test_the_sender_count_between_two_lines_is_bounded() -> None:
    """Between two log lines at most ``LOGGED_SENDERS`` distinct senders are counted (memory), the total in full."""
    lim = limit(rate=1, burst=1, max_senders=4)
    lim.allow(FLOODER, 1, NOW)
    lim.allow(FLOODER, 1, NOW)  # logged at once
    for i in range(10 * LOGGED_SENDERS):
        lim.allow(Peer(50_000 + i, "x"), 1, NOW)
    assert len(lim._unlogged) == LOGGED_SENDERS and lim._unlogged_count == lim.dropped - 1 > 9 * LOGGED_SENDERS


def _ring_member(config: RingConfig) -> RingMember:
    m = RingMember(ME, config, random.Random(1), piggyback_size=piggyback_size, incarnation=int(NOW * 1000))
    m.start(NOW)
    return m


def test_the_ring_member_drops_a_flooder_s_direct_messages_before_handing_them_over() -> None:
    """Over its limit a sender's Direct envelope yields no DirectReceived (and nothing else); the drops
    count as rate limited in the member's refusals; another sender's messages still come through."""
    config = RingConfig(direct_rate=1, direct_burst=5)
    m = _ring_member(config)
    received = [
        a for _ in range(50) for a in m.receive(Envelope(FLOODER, Direct("events", b"x" * 100)), NOW)
        if isinstance(a, DirectReceived)
    ]  # fmt: skip
    assert len(received) == 5 and m.refused["direct messages over the rate limit"] == 45
    assert m.view().refusals == Refusals(rate_limited=45)
    assert m.receive(Envelope(FLOODER, Direct("events", b"x")), NOW + 0.5) == []
    honest = m.receive(Envelope(HONEST, Direct("events", b"hi")), NOW + 0.5)
    assert DirectReceived(HONEST, Direct("events", b"hi")) in honest


def test_the_defaults_let_the_events_load_through_with_room() -> None:
    """At the defaults, one sender's 1,000 messages a second of 4 KiB for 10 s all pass (the events bench
    sends ~130 a second per node), while 10,000 a second are cut to the rate."""
    config = RingConfig()
    assert (config.direct_rate, config.direct_burst) == (2000, 4000)
    assert (config.direct_bytes_rate, config.direct_bytes_burst) == (64 * MIB, 128 * MIB)
    lim = DirectLimit.of(ME, config)
    assert all(lim.allow(HONEST, 4096, NOW + i / 1000) for i in range(10_000))
    flood = sum(lim.allow(FLOODER, 10, NOW + i / 10_000) for i in range(100_000))  # 10 s at 10,000/s
    assert 4000 + 2000 * 10 - 10 <= flood <= 4000 + 2000 * 10 + 1


def test_a_direct_bytes_burst_below_one_largest_body_is_refused() -> None:
    """A byte burst smaller than the largest direct body would refuse that body for ever: an error."""
    with pytest.raises(ValueError, match="direct_bytes_burst"):
        RingConfig(direct_bytes_burst=MAX_DIRECT_BYTES - 1)
    with pytest.raises(ValueError, match="direct_rate"):
        replace(RingConfig(), direct_rate=0)


def test_a_live_member_never_calls_the_handler_for_messages_over_the_limit() -> None:
    """Through ``LiveMember`` on a fake clock: of a burst of 30 from one sender, the channel's handler
    gets 10 (the burst); a second later one more; the other sender's message is handled throughout."""
    clock = Clock()
    clock.advance(NOW)
    m = RingMember(ME, RingConfig(direct_rate=1, direct_burst=10), random.Random(1), piggyback_size=piggyback_size)
    live = LiveMember(m, clock, lambda to, envelope: None, lambda state, failed: None)
    handled: list[tuple[Peer, bytes]] = []
    live.add_direct_handler("events", lambda sender, body: handled.append((sender, body)))
    live.start()
    for i in range(30):
        live.receive(Envelope(FLOODER, Direct("events", b"%d" % i)))
    live.receive(Envelope(HONEST, Direct("events", b"honest")))
    assert [b for s, b in handled if s == FLOODER] == [b"%d" % i for i in range(10)]
    clock.advance(1.0)
    for i in range(30, 40):
        live.receive(Envelope(FLOODER, Direct("events", b"%d" % i)))
    assert [b for s, b in handled if s == FLOODER][10:] == [b"30"] and (HONEST, b"honest") in handled
    assert m.direct_limit.dropped == 29 and m.view().refusals.rate_limited == 29
    live.halt("test over")
