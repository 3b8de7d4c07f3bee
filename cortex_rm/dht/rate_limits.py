"""Per-peer token buckets: how many rumours and puts one member may make us handle per second.

A member, or anyone holding a key with valid work, can send as fast as its link
allows.  Each peer id gets a bucket of ``burst`` tokens refilled at ``rate`` per
second; an input costs tokens, and one that finds too few is dropped and counted
(``dropped``).  Sans-IO: every call takes ``now`` (seconds, the caller's clock).

The table of buckets is bounded (``max_peers``): when full, buckets that have
refilled completely (idle peers, indistinguishable from new ones) are forgotten
first; if none has, the new peer shares one overflow bucket, so a flood of new ids
cannot grow memory nor starve the peers already known.
"""

from __future__ import annotations

from dataclasses import dataclass

OVERFLOW = -1  # the shared bucket of peers beyond max_peers


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class PeerRateLimit:
    """A token bucket per peer: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, max_peers: int = 4096) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, not {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self.dropped = 0
        self._buckets: dict[int, _Bucket] = {}

    def _bucket(self, peer_id: int, now: float) -> _Bucket:
        bucket = self._buckets.get(peer_id)
        if bucket is not None:
            return bucket
        if len(self._buckets) >= self.max_peers:
            full = [p for p, b in self._buckets.items() if p != OVERFLOW and b.tokens + (now - b.at) * self.rate >= self.burst]
            for p in full:
                del self._buckets[p]
            if len(self._buckets) >= self.max_peers:
                peer_id = OVERFLOW
                bucket = self._buckets.get(OVERFLOW)
                if bucket is not None:
                    return bucket
        bucket = self._buckets[peer_id] = _Bucket(self.burst, now)
        return bucket

    def _refilled(self, peer_id: int, now: float) -> _Bucket:
        bucket = self._bucket(peer_id, now)
        if now > bucket.at:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def available(self, peer_id: int, now: float) -> float:
        """The tokens ``peer_id`` may spend at ``now``, taking none (to check several limits before charging any)."""
        return self._refilled(peer_id, now).tokens

    def allow(self, peer_id: int, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``peer_id``'s bucket if it has them; False (counted in ``dropped``) if not."""
        bucket = self._refilled(peer_id, now)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        self.dropped += 1
        return False

    def __len__(self) -> int:
        return len(self._buckets)
