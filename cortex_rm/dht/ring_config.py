"""The ring's timings and sizes, in one frozen object (the ``[ring]`` section of the config)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cortex_rm.accounting.attestations import MAX_SPAN_MS
from cortex_rm.accounting.uptime_witness import WitnessConfig
from cortex_rm.dht.chord import DEFAULT_REQUEST_TIMEOUT
from cortex_rm.dht.direct_messages import MAX_DIRECT_BYTES
from cortex_rm.dht.key_space import DEFAULT_REPLICAS
from cortex_rm.dht.ring_work import DEFAULT_KEY_BITS, DEFAULT_WORK_BITS, MAX_KEY_BITS, MAX_WORK_BITS
from cortex_rm.dht.routing_table import DEFAULT_SUCCESSOR_LIST_LENGTH
from cortex_rm.dht.swim_config import SwimConfig

MIB = 1024 * 1024

FINGERS_BEYOND_SUCCESSORS = 7
"""Distinct fingers a member probes outside its successor list: about log2(n / r), 7 for 1,000
members and r = 8 (10 for 10,000).  Only to size the witness's gap (``RingConfig.witness_config``)."""


@dataclass(frozen=True)
class RingConfig:
    """How often a ring member maintains its state, and how much it keeps.

    The defaults are the LAN profile: a probe a second (``SwimConfig.lan``), Chord
    maintenance every second, anti-entropy every 10 s.
    """

    successor_list_length: int = DEFAULT_SUCCESSOR_LIST_LENGTH
    """r, the successor-list length (see ``chord.DEFAULT_SUCCESSOR_LIST_LENGTH`` for the choice)."""

    replicas: int = DEFAULT_REPLICAS
    """Copies of a record beyond the owner's (on its next successors)."""

    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    """Seconds a Chord or key-space request may go unanswered."""

    stabilize_interval: float = 1.0
    """Seconds between stabilize rounds (a successor-list entry travels one node per round)."""

    fix_fingers_interval: float = 0.5
    """Seconds between two finger refreshes (one finger each, round robin)."""

    replicate_interval: float = 10.0
    """Seconds between anti-entropy rounds of the key space."""

    neighbour_log_interval: float = 5.0
    """Seconds between two writes of the neighbour log."""

    neighbour_log_max_age: float = 600.0
    """A neighbour log older than this is ignored on restart (its peers are likely gone)."""

    join_retry_interval: float = 5.0
    """Seconds before a node that could not join tries its introducers again."""

    piggyback_bytes: int = 1024
    """At most this many bytes of rumours ride on one message."""

    tick_interval: float = 0.25
    """The longest a member goes without checking its deadlines (request expiry)."""

    swim: SwimConfig = field(default_factory=SwimConfig.lan)

    work_bits: int = DEFAULT_WORK_BITS
    """Leading zero bits of a member's proof of work (``ring_work.py``): every member of a ring must agree."""

    key_bits: int = DEFAULT_KEY_BITS
    """Leading zero bits the key puzzle asks of a member's key itself (``ring_work.py``): every member must agree."""

    rumour_rate: float = 200.0
    """Rumours (piggybacked items) a second we handle from one peer; more are dropped.  An honest
    peer sends a few envelopes a second to us, each with at most ``piggyback_bytes`` of rumours
    (~8 of ~130 bytes): far below."""

    rumour_burst: float = 1000.0
    """Rumours one peer may send at once above ``rumour_rate`` (a joiner's first exchanges)."""

    put_rate: float = 20.0
    """Puts a second we serve as owner for one peer; more are refused (the writer retries)."""

    put_burst: float = 100.0
    """Puts one peer may make at once above ``put_rate``."""

    direct_rate: float = 2000.0
    """Direct messages (``direct_messages.py``) a second we take from one peer; more are dropped before any
    handler sees them (``direct_limits.py`` explains the defaults: ~15x the events' measured load)."""

    direct_burst: float = 4000.0
    """Direct messages one peer may send at once above ``direct_rate``."""

    direct_bytes_rate: float = 64.0 * MIB
    """Bytes of direct bodies a second we take from one peer (more than most volunteers' links carry)."""

    direct_bytes_burst: float = 128.0 * MIB
    """Bytes of direct bodies one peer may send at once above ``direct_bytes_rate`` (at least one largest body)."""

    resource_managers: frozenset[int] = frozenset()
    """Ring ids that may write the ResourceManager's record (empty: first writer, see ``write_policy.py``)."""

    attestation_interval: float = 3600.0
    """Seconds between two attestations of a watched neighbour's open run, and how often the node's
    reporter takes them (``RingService.take_attestations``).  Payouts are monthly and classes need
    hours of evidence, so an hour costs nothing; a crash loses at most this long of what this member
    saw, which the neighbour's other witnesses saw too (``accounting/uptime_witness.py``)."""

    def witness_config(self) -> WitnessConfig:
        """How this member's uptime witness counts acks, from SWIM's timings (``dht/uptime_watch.py``).

        * one credit per ``probe_interval``;
        * an ack counts up to the slowest probe period after its probe, ``probe_interval * (1 + S)``
          (S: Lifeguard's ``awareness_max_multiplier``), plus one interval of slack (a late tick);
        * a run survives two probe passes at the slowest rate without an ack -- a pass being one
          probe of each neighbour: r successors, the predecessor and ``FINGERS_BEYOND_SUCCESSORS``
          fingers -- and at least ``WitnessConfig``'s default 5 minutes (288 s at LAN timings, r = 8).
        """
        swim = self.swim
        slowest = swim.probe_interval * (1 + swim.awareness_max_multiplier)
        neighbours = self.successor_list_length + 1 + FINGERS_BEYOND_SUCCESSORS
        return WitnessConfig(
            probe_interval_ms=round(swim.probe_interval * 1000),
            ack_window_ms=math.ceil((slowest + swim.probe_interval) * 1000),
            gap_ms=max(WitnessConfig.gap_ms, math.ceil(2 * neighbours * slowest * 1000)),
            attestation_interval_ms=max(1, round(self.attestation_interval * 1000)),
        )

    def __post_init__(self) -> None:
        for name in (
            "request_timeout",
            "stabilize_interval",
            "fix_fingers_interval",
            "replicate_interval",
            "neighbour_log_interval",
            "neighbour_log_max_age",
            "join_retry_interval",
            "tick_interval",
            "attestation_interval",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ring {name} must be positive, not {getattr(self, name)}")
        if self.successor_list_length < 1 or self.replicas < 0:
            raise ValueError("ring successor_list_length must be at least 1 and replicas at least 0")
        if self.replicas > self.successor_list_length:
            raise ValueError(
                f"ring replicas ({self.replicas}) cannot exceed successor_list_length ({self.successor_list_length})"
            )
        if not 0 <= self.work_bits <= MAX_WORK_BITS:
            raise ValueError(f"ring work_bits must lie in [0, {MAX_WORK_BITS}], not {self.work_bits}")
        if not 0 <= self.key_bits <= MAX_KEY_BITS:
            raise ValueError(f"ring key_bits must lie in [0, {MAX_KEY_BITS}], not {self.key_bits}")
        for name in ("rumour_rate", "rumour_burst", "put_rate", "put_burst", "direct_rate", "direct_burst",
                     "direct_bytes_rate"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"ring {name} must be at least 1, not {getattr(self, name)}")
        if self.direct_bytes_burst < MAX_DIRECT_BYTES:
            raise ValueError(f"ring direct_bytes_burst must be at least {MAX_DIRECT_BYTES} (one largest direct body)")
        if self.attestation_interval * 1000 > MAX_SPAN_MS:
            limit = MAX_SPAN_MS // 1000
            raise ValueError(f"ring attestation_interval must be at most {limit} s, not {self.attestation_interval}")
        if self.piggyback_bytes < 0:
            raise ValueError(f"ring piggyback_bytes must not be negative, not {self.piggyback_bytes}")
