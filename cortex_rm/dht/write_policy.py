"""Who may write each key of the key space.

Every record is signed by its writer (``ring_trust.py``), so a replica knows *who*
wrote it; ``WritePolicy`` says whether that member *may*.  Every replica asks, on
every way a record comes in (a put at the owner, the owner's push, anti-entropy,
read repair, a leaver's hand-off), so a refused record is kept nowhere:

* **Configured keys** (``writers``): a key listed with a set of ring ids may be
  written only by them.  The ResourceManager's record ``cortex:resourcemanager``
  is one (``[ring] resource_managers``: the ring ids of the nodes that may run the
  RM).  Configuration, not first-come: an outsider who joins first cannot grab the
  key, and a standby RM (another key) can still take over.  Left unconfigured, the
  key falls to the next rule, and the node warns at start.
* **A member's own keys**: ``cortex:node:<40 hex digits>`` and anything under it
  (``cortex:node:<id>/...``) may be written only by the member with that ring id.
  Self-certifying: the id is the SHA-1 of the signer's key.
* **Configured prefixes** (``prefix_writers``): every key under a listed prefix may be
  written only by the listed ring ids (the event registry, ``cortex:event:``, by the RMs).
* **Open prefixes** (``open_prefixes``): any member may write keys under them, newest
  version wins (the schedules' last fired ticks, which whichever member owns the
  function's key writes; the reader bounds what it believes).
* **Any other key is pinned to its first writer** (trust on first use, per
  replica): a record by another writer than the one a replica holds is refused.
  Weaker than the rules above (whoever writes first owns the key), so keys that
  matter get a rule of their own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.ring_trust import RingTrust

MAX_REASONS = 256  # distinct refusal reasons counted (they name keys: remote input)

NODE_KEY_PREFIX = "cortex:node:"
"""Keys ``cortex:node:<ring id hex>[/...]`` belong to that member."""


def node_key(ring_id: int, name: str = "") -> str:
    """The key named ``name`` (or the bare key) that only member ``ring_id`` may write."""
    base = NODE_KEY_PREFIX + format_id(ring_id)
    return f"{base}/{name}" if name else base


def node_key_owner(key: str) -> int | None:
    """The ring id a member key belongs to (None: not a member key)."""
    if not key.startswith(NODE_KEY_PREFIX):
        return None
    rest = key[len(NODE_KEY_PREFIX) :]
    hex_id, sep, _ = rest.partition("/")
    if len(hex_id) != 40 or any(c not in "0123456789abcdef" for c in hex_id) or (not sep and rest != hex_id):
        return None
    return int(hex_id, 16)


class WritePolicy:
    """The rules above; ``refusal`` says why a record may not be kept (None: it may)."""

    def __init__(
        self,
        writers: Mapping[str, frozenset[int]] | None = None,
        prefix_writers: Mapping[str, frozenset[int]] | None = None,
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.writers = {key: frozenset(ids) for key, ids in (writers or {}).items() if ids}
        self.prefix_writers = {prefix: frozenset(ids) for prefix, ids in (prefix_writers or {}).items() if ids}
        self.open_prefixes = open_prefixes

    def refusal(self, record: Record, held: Record | None) -> str | None:
        """Why ``record``'s writer may not write its key, given the record ``held`` for it (None: allowed)."""
        key, writer = record.key, record.writer
        allowed = self.writers.get(key)
        if allowed is not None:
            return None if writer in allowed else f"{format_id(writer)[:10]} may not write {key[:40]!r} (not configured)"
        for prefix, ids in self.prefix_writers.items():
            if key.startswith(prefix):
                return None if writer in ids else f"{format_id(writer)[:10]} may not write {key[:40]!r} (not configured)"
        if key.startswith(self.open_prefixes):
            return None
        if key.startswith(NODE_KEY_PREFIX):
            owner = node_key_owner(key)
            if owner is None:
                return f"{key[:60]!r} is not a valid member key"
            return None if owner == writer else f"{format_id(writer)[:10]} may not write another member's key {key[:60]!r}"
        if held is not None and held.writer != writer:
            return f"{key[:40]!r} is pinned to its first writer {format_id(held.writer)[:10]}"
        return None


class RecordGate:
    """What every replica asks of an incoming record: signed by its writer, and the writer may write the key.

    ``policy`` None allows every writer (simulations at chosen ids, with ``OpenTrust``).
    Refusals are counted by reason in ``refused``.
    """

    def __init__(self, trust: RingTrust, policy: WritePolicy | None) -> None:
        self.trust = trust
        self.policy = policy
        self.refused: Counter[str] = Counter()

    def refusal(self, record: Record, held: Record | None) -> str | None:
        """Why ``record`` may not be kept over ``held`` (None: it may); a refusal is counted."""
        error = self.trust.record_error(record)
        if error is None and self.policy is not None:
            error = self.policy.refusal(record, held)
        if error is not None:
            full = len(self.refused) >= MAX_REASONS and error not in self.refused
            self.refused["(other reasons)" if full else error] += 1
        return error

    def admits(self, record: Record, held: Record | None) -> bool:
        """Whether ``record`` may be kept (``refusal`` is None)."""
        return self.refusal(record, held) is None
