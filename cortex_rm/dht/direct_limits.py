"""Per-sender limits on received Direct messages: how many, and how many bytes, one member may make us handle.

A ``Direct`` message (``direct_messages.py``) goes to the handler of its channel, which
decodes the body and acts on it (the events' ``InvokeFunction`` starts a function).
Any admitted member may send them as fast as its link allows, so each sender's ring
id gets two token buckets (``rate_limits.PeerRateLimit``): messages (``direct_rate``
a second, ``direct_burst`` saved up) and bytes of body (``direct_bytes_rate``,
``direct_bytes_burst``).  A message is taken only when both buckets hold enough --
then both are charged -- and is otherwise dropped before anything decodes its body
or calls a handler, and counted.  Sans-IO: every call takes ``now`` (the caller's clock).

**The defaults** (``RingConfig``).  Between two members the events send at most one
``InvokeFunction`` per trigger the sender took (it asks each replica once; a vote asks
up to ``replicas`` different members) and one ``FunctionOutcome`` per invoke the other
sent it, so an honest sender's rate to one member is about its own trigger rate.  The
events bench measured ~130 triggers/s per node at saturation (``bench/RESULTS.md``,
2 shared cores): 2,000 messages/s is ~15x that, room for faster hardware and nodes
taking many clients' triggers, and the burst of 4,000 absorbs a backlog written at
once when a link comes back.  Bodies carry a trigger's input or output: 64 MiB/s
(~540 Mbit/s) from one sender is more than most volunteers' links carry, so honest
traffic meets the message limit first; the 128 MiB burst holds 128 largest bodies.
What an admitted but hostile member gets is then at most that many handler calls
and bytes decoded per second at each member it targets, not whatever its link allows.

**Memory.**  Each bucket table holds at most ``max_senders`` ids; a sender silent for
``burst / rate`` (2 s by default) has a full bucket, is indistinguishable from a new
one and is forgotten first; beyond that, new ids share one overflow bucket, so a flood
of distinct ids can neither grow memory nor starve the senders already known.

**Logging.**  The first drop is logged at once; later ones at most once per
``log_interval`` while drops go on, each line summing up the drops since the last
(count, bytes, distinct senders -- up to ``LOGGED_SENDERS`` tracked -- and the sender
with the most).  Every drop is also in ``RingMember.refused`` (``view().refusals``).
"""

from __future__ import annotations

from collections import Counter

from twisted.logger import Logger

from cortex_rm.dht.peer import Peer
from cortex_rm.dht.rate_limits import PeerRateLimit
from cortex_rm.dht.ring_config import RingConfig

log = Logger()

MAX_SENDERS = 4096
"""Senders each bucket table tracks (two tables of ~250 bytes an entry: about 2 MB at most)."""

LOG_INTERVAL = 60.0
"""Seconds between two log lines about dropped direct messages (the first drop is logged at once)."""

LOGGED_SENDERS = 64
"""Distinct senders counted between two log lines (more are still dropped and counted in the total)."""


class DirectLimit:
    """Token buckets per sender, in messages and in bytes, for the Direct messages a member receives."""

    def __init__(
        self,
        me: str,
        rate: float,
        burst: float,
        bytes_rate: float,
        bytes_burst: float,
        *,
        max_senders: int = MAX_SENDERS,
        log_interval: float = LOG_INTERVAL,
    ) -> None:
        self.me = me
        self.messages = PeerRateLimit(rate, burst, max_senders)
        self.bytes = PeerRateLimit(bytes_rate, bytes_burst, max_senders)
        self.log_interval = log_interval
        self.dropped = 0
        """Messages dropped since the start."""
        self.dropped_bytes = 0
        """Bytes of body in them."""
        self.lines = 0
        """Log lines written about drops."""
        self._unlogged: Counter[Peer] = Counter()  # drops since the last line, by sender (LOGGED_SENDERS of them)
        self._unlogged_count = 0
        self._unlogged_bytes = 0
        self._next_line = float("-inf")

    @classmethod
    def of(cls, me: Peer, config: RingConfig) -> DirectLimit:
        """The limit ``config`` sets (its ``direct_rate``, ``direct_burst`` and ``direct_bytes_*``)."""
        c = config
        return cls(me.short(), c.direct_rate, c.direct_burst, c.direct_bytes_rate, c.direct_bytes_burst)

    def allow(self, sender: Peer, size: int, now: float) -> bool:
        """True, both buckets charged, if ``sender`` may have a message of ``size`` bytes handled now;
        False (counted, maybe logged) if either bucket lacks the tokens."""
        sender_id = sender.node_id
        if self.messages.available(sender_id, now) >= 1 and self.bytes.available(sender_id, now) >= size:
            self.messages.allow(sender_id, now)
            self.bytes.allow(sender_id, now, size)
            return True
        self.dropped += 1
        self.dropped_bytes += size
        self._note_drop(sender, size, now)
        return False

    def __len__(self) -> int:
        """Senders tracked (the larger of the two tables)."""
        return max(len(self.messages), len(self.bytes))

    def _note_drop(self, sender: Peer, size: int, now: float) -> None:
        if sender in self._unlogged or len(self._unlogged) < LOGGED_SENDERS:
            self._unlogged[sender] += 1
        self._unlogged_count += 1
        self._unlogged_bytes += size
        if now < self._next_line:
            return
        [(worst, most)] = self._unlogged.most_common(1)
        log.warn(
            "ring {me} dropped {dropped} direct messages ({bytes} bytes) over the per-sender rate limit "
            "({rate:g}/s, {mib:g} MiB/s) from {senders} senders, most ({most}) from {sender}; "
            "the next such line comes in {interval:g} s at the earliest",
            me=self.me,
            dropped=self._unlogged_count,
            bytes=self._unlogged_bytes,
            rate=self.messages.rate,
            mib=self.bytes.rate / (1024 * 1024),
            senders=len(self._unlogged),
            most=most,
            sender=worst.short(),
            interval=self.log_interval,
        )
        self.lines += 1
        self._next_line = now + self.log_interval
        self._unlogged.clear()
        self._unlogged_count = self._unlogged_bytes = 0
