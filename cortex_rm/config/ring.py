"""``[ring]``: this node's ring member (Chord membership, SWIM failure detection, the key space)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cortex_rm.config.errors import ConfigError
from cortex_rm.dht.ring_config import MIB, RingConfig
from cortex_rm.dht.ring_work import DEFAULT_KEY_BITS, DEFAULT_WORK_BITS
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.yarn.addresses import HostPort


@dataclass(frozen=True)
class RingSection:
    """This node's ring member: Chord membership, SWIM failure detection, the key space."""

    enabled: bool = True
    # Where the ring's RPC listens (Thrift over mutual TLS); other members reach it here
    address: HostPort = HostPort("127.0.0.1", 7946)
    # Ring addresses (host:port) of members to join through.  None: this node starts a new
    # ring, unless its neighbour log (<state_dir>/ring-neighbours.json) is fresh enough to
    # rejoin through the peers it knew
    introducers: tuple[HostPort, ...] = ()
    # SWIM's probe interval; the probe timeouts and the suspicion timeout scale with it
    # (1000 ms: a crashed node is declared dead within about 8 s in a ring of 10)
    probe_interval_ms: int = 1000
    # r, the successor-list length: a node keeps its place unless all r fail at once
    successor_list_length: int = 8
    # Copies of each key-space record beyond its owner's, on the owner's next successors
    replicas: int = 3
    # A neighbour log older than this is not trusted on restart (use the introducers)
    neighbour_log_max_age_s: int = 600
    # How often this node's witness attests the uptime it saw of its successors and predecessor
    # (each open run's new piece), and how often the node reports its signed attestations.  At most a
    # day; a crash loses up to this long of what it saw, which the neighbours' other witnesses saw too.
    # Seconds are for tests: the RM takes [accounting] max_batches_per_hour (120) batches an hour of a node
    attestation_interval_s: int = 3600
    # Where GET /ws/v1/ring (what `cortex-rm ring` reads) is served on a node without a
    # NodeManager; "" (the default): on the NodeManager's webapp_address, or nowhere
    status_address: HostPort | None = None
    # Leading zero bits of the proof of work each member's key needs (SHA-256 of key and nonce,
    # solved once and kept in <state_dir>/identity/ring-work.json): 22 takes ~2 s, each bit
    # doubles it (dht/ring_work.py says what it buys).  Every member of a ring must use the same value
    work_bits: int = DEFAULT_WORK_BITS
    # Leading zero bits of SHA-256 over the node's key itself (the key puzzle): a key is made, in a
    # thread at the first start, until one solves it -- 17 bits takes ~130,000 keys, a few seconds --
    # so each candidate ring id costs that many keys and grinding an id next to a victim costs minutes
    # (dht/ring_work.py).  Every member of a ring must use the same value; a stored key that fails it
    # is replaced at start (a new ring id: the log says so)
    key_bits: int = DEFAULT_KEY_BITS
    # Ring ids (40 hex digits; `cortex-rm ring` shows them) of the nodes that may write the
    # ResourceManager's record.  Empty: whoever writes it first owns it (any member could)
    resource_managers: tuple[str, ...] = ()
    # Direct messages (the events' invokes and outcomes) this node takes from one member a second, and the
    # MiB of their bodies; twice as many may come at once.  More are dropped before any handler reads them.
    # An honest member sends about one per trigger it takes (~130/s per node measured; dht/direct_limits.py)
    direct_messages_per_s: int = 2000
    direct_mib_per_s: int = 64

    def ring_config(self) -> RingConfig:
        """The ring core's settings: the LAN profile with its timings (probes, dead-member probes and
        retention) scaled to probe_interval_ms."""
        scale = self.probe_interval_ms / 1000
        lan = SwimConfig.lan()
        swim = dataclasses.replace(
            lan,
            probe_interval=lan.probe_interval * scale,
            probe_timeout=lan.probe_timeout * scale,
            indirect_probe_timeout=lan.indirect_probe_timeout * scale,
            dead_probe_interval=lan.dead_probe_interval * scale,
            dead_member_retention=lan.dead_member_retention * scale,
        )
        return RingConfig(
            successor_list_length=self.successor_list_length,
            replicas=self.replicas,
            neighbour_log_max_age=float(self.neighbour_log_max_age_s),
            attestation_interval=float(self.attestation_interval_s),
            swim=swim,
            work_bits=self.work_bits,
            key_bits=self.key_bits,
            resource_managers=frozenset(int(ring_id, 16) for ring_id in self.resource_managers),
            direct_rate=float(self.direct_messages_per_s),
            direct_burst=2.0 * self.direct_messages_per_s,
            direct_bytes_rate=float(self.direct_mib_per_s * MIB),
            direct_bytes_burst=2.0 * self.direct_mib_per_s * MIB,
        )

    def check(self, where: str) -> None:
        """ConfigError naming the key of the first value that cannot work (``where``: the file)."""
        where = f"{where}: ring"
        if self.address.host in WILDCARD_HOSTS:
            raise ConfigError(
                f"{where}.address: {str(self.address)!r} is a wildcard; give the address other members reach this "
                "node at (the ring advertises it)"
            )
        for introducer in self.introducers:
            if introducer.port == 0:
                raise ConfigError(f"{where}.introducers: {str(introducer)!r} needs a port")
        if self.probe_interval_ms < 50:
            raise ConfigError(f"{where}.probe_interval_ms must be at least 50")
        if self.neighbour_log_max_age_s < 1:
            raise ConfigError(f"{where}.neighbour_log_max_age_s must be at least 1")
        if not MIN_ATTESTATION_INTERVAL_S <= self.attestation_interval_s <= MAX_ATTESTATION_INTERVAL_S:
            low, high = MIN_ATTESTATION_INTERVAL_S, MAX_ATTESTATION_INTERVAL_S
            raise ConfigError(f"{where}.attestation_interval_s must lie in [{low}, {high}], not {self.attestation_interval_s}")
        for name in ("direct_messages_per_s", "direct_mib_per_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be at least 1, not {getattr(self, name)}")
        for ring_id in self.resource_managers:
            if len(ring_id) != 40 or any(c not in "0123456789abcdefABCDEF" for c in ring_id):
                raise ConfigError(f"{where}.resource_managers: {ring_id!r} is not a ring id (40 hex digits)")
        try:
            self.ring_config()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # listen everywhere: not an address anyone can reach
MIN_ATTESTATION_INTERVAL_S = 1  # (tests; the RM's max_batches_per_hour bounds what a node may send)
MAX_ATTESTATION_INTERVAL_S = 86_400  # a day: classes and the pay period's end must not wait longer
