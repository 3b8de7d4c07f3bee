"""Anti-entropy between replicas: digests of ``(key, version)``, wants, and the records sent.

The protocol step is three one-way messages.  A node *offers* records to a peer with
a ``ReplicaDigest``.  The peer compares the digest with its store
(``compare_digest``): it answers ``ReplicaWant`` for the keys it lacks or holds
older, and sends back at once (``StoreReplicas``) the records it holds *newer* --
so an offer from a stale node corrects the stale node instead of spreading its
copies.  The offering node answers a want with the records, but only a want from a
peer it offered to within the offer's lifetime, and only for keys it offered
(``ReplicaOffers``): a stranger cannot make us send what we never offered it.

Who offers what to whom is ``key_space.py``'s business; this module only runs the
exchange, so it knows nothing of the ring.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from twisted.logger import Logger

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.kv_messages import Record, ReplicaDigest, ReplicaWant, StoreReplicas
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.record_store import (
    MAX_DIGEST_ENTRIES,
    RecordStore,
    digest_batches,
    record_batches,
    record_error,
)

log = Logger()


def compare_digest(store: RecordStore, entries: Iterable[tuple[str, int]]) -> tuple[list[str], list[Record]]:
    """What to want from a digest's sender, and which of our records are newer than its.

    A key we lack or hold at a lower version is wanted; a key we hold at a higher
    version is ours to send back; equal versions are taken as the same record.
    Entries whose key breaks the bounds are skipped.
    """
    wanted: list[str] = []
    ours: list[Record] = []
    for key, version in entries:
        if record_error(key) is not None:
            continue
        held = store.get(key)
        if held is None or held.version < version:
            wanted.append(key)
        elif held.version > version:
            ours.append(held)
    return wanted, ours


def answer_digest(store: RecordStore, sender: Peer, digest: ReplicaDigest) -> list[Send]:
    """The receiver's side of an offer: ``ReplicaWant`` for what it wants, ``StoreReplicas`` of its newer records."""
    wanted, ours = compare_digest(store, digest.entries)
    sends = [
        Send(sender, ReplicaWant(tuple(wanted[i : i + MAX_DIGEST_ENTRIES])))
        for i in range(0, len(wanted), MAX_DIGEST_ENTRIES)
    ]
    return sends + [Send(sender, StoreReplicas(batch)) for batch in record_batches(ours)]


@dataclass
class _Offer:
    deadline: float
    keys: set[str]


class ReplicaOffers:
    """The digests we sent and still honour wants for: per peer, the keys offered and until when."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self._offers: dict[Peer, _Offer] = {}

    def offer(self, to: Peer, records: list[Record], now: float) -> list[Send]:
        """Digest ``records`` to ``to`` (in batches) and remember them until ``now + lifetime``."""
        if not records:
            return []
        offer = self._offers.setdefault(to, _Offer(now, set()))
        offer.deadline = now + self.lifetime
        offer.keys.update(record.key for record in records)
        return [Send(to, ReplicaDigest(entries)) for entries in digest_batches(records)]

    def answer_want(self, store: RecordStore, sender: Peer, want: ReplicaWant, now: float) -> list[Send]:
        """The records ``sender`` wants, if we offered them to it and the offer stands."""
        offer = self._offers.get(sender)
        if offer is None or offer.deadline <= now:
            log.debug("keyspace ignored a ReplicaWant from {peer}: nothing offered", peer=sender.short())
            return []
        records = [r for r in (store.get(k) for k in want.keys if k in offer.keys) if r is not None]
        return [Send(sender, StoreReplicas(batch)) for batch in record_batches(records)]

    def expire(self, now: float) -> None:
        """Forget the offers whose lifetime has passed."""
        for peer, offer in list(self._offers.items()):
            if offer.deadline <= now:
                del self._offers[peer]
