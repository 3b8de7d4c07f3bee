"""The piggyback channel: rumours waiting to ride on outgoing ring messages, and gossip sections.

SWIM sends no messages of its own to spread news: every message a member sends
anyway (probes, acks, Chord traffic) carries a few rumours in its envelope.  The
``BroadcastQueue`` decides which:

* Items are *keyed*: one key per member for ``MemberUpdate``s, one per
  ``(section, key)`` for ``GossipItem``s.  A newer item replaces the queued one of
  the same key, so the queue never repeats stale news.
* Each item is sent at most ``retransmit_limit`` times (``suspicion.retransmit_limit``,
  set by the owner as the group grows), then dropped.
* ``take`` fills one message: the items sent fewest times first (newest first
  among equals), as many as fit in the byte budget.
* The queue is bounded; when full, the item sent most often makes room.
  Gossip section items have a bound of their own (``max_section_items``, half
  the queue by default) and make room only by dropping other section items: any
  member may gossip them, and a flood of them must never push out a membership
  update that is still spreading.  A ``MemberUpdate`` pushes out a section item
  first, another membership update only when there is none.

``GossipSections`` lets other subsystems (node capacity, uptime attestations...)
use the same channel: they ``register`` a section with a receive callback and
``publish`` items into it.  A received item whose callback says it was new is
queued again, so each member that learns something passes it on (SWIM's
infection-style dissemination); old news dies out.  Items are signed by their
publisher (``ring_trust.py``); one whose signature fails is dropped and counted
(``refused``) before its section sees it, and a section may accept items only
about their publisher (node capacity does).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from twisted.logger import Logger

from cortex_rm.dht.ring_trust import OpenTrust, RingTrust
from cortex_rm.dht.swim_messages import GossipItem, MemberUpdate, Piggyback

log = Logger()

SizeOf = Callable[[Piggyback], int]
OnReceive = Callable[[GossipItem], bool]


def item_key(item: Piggyback) -> tuple[object, ...]:
    """What an item is about: newer items of the same key replace older ones."""
    if isinstance(item, MemberUpdate):
        return ("member", item.peer.node_id)
    return ("section", item.section, item.key)


class _Entry:
    __slots__ = ("transmits", "order", "item")

    def __init__(self, order: int, item: Piggyback) -> None:
        self.transmits = 0
        self.order = order
        self.item = item


class BroadcastQueue:
    """Keyed rumours, each sent at most ``retransmit_limit`` times, fewest-sent first."""

    def __init__(self, max_items: int = 1024, retransmit_limit: int = 4, max_section_items: int | None = None) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        if max_section_items is None:
            max_section_items = max(1, max_items // 2)
        if not 1 <= max_section_items <= max_items:
            raise ValueError(f"max_section_items must lie in [1, {max_items}], not {max_section_items}")
        self.max_items = max_items
        self.max_section_items = max_section_items
        self.retransmit_limit = retransmit_limit
        self._items: dict[tuple[object, ...], _Entry] = {}
        self._section_count = 0  # how many of the queued items are GossipItems
        self._inserted = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Piggyback) -> None:
        """Queue ``item`` with no transmissions yet, replacing any queued item of the same key."""
        key = item_key(item)
        if key not in self._items:
            if isinstance(item, MemberUpdate):
                if len(self._items) >= self.max_items and not self._evict(section_only=True):
                    self._evict(section_only=False)
            elif self._section_count >= self.max_section_items or len(self._items) >= self.max_items:
                if not self._evict(section_only=True):
                    return  # the rest is membership news: this item is dropped, not them
            if isinstance(item, GossipItem):
                self._section_count += 1
        self._inserted += 1
        self._items[key] = _Entry(self._inserted, item)

    def _evict(self, section_only: bool) -> bool:
        """Drop the item sent most often (the oldest among those), a section item if ``section_only``."""
        keys = [k for k in self._items if k[0] == "section"] if section_only else list(self._items)
        if not keys:
            return False
        self._remove(max(keys, key=lambda k: (self._items[k].transmits, -self._items[k].order)))
        return True

    def _remove(self, key: tuple[object, ...]) -> None:
        del self._items[key]
        if key[0] == "section":
            self._section_count -= 1

    def queued(self) -> list[Piggyback]:
        """The queued items, in no particular order (for inspection)."""
        return [entry.item for entry in self._items.values()]

    def transmits(self, item: Piggyback) -> int | None:
        """How often the queued item of ``item``'s key was sent (None when none is queued)."""
        entry = self._items.get(item_key(item))
        return None if entry is None else entry.transmits

    def take(self, byte_budget: int, size_of: SizeOf) -> list[Piggyback]:
        """Items for one outgoing message: fewest-sent first, within ``byte_budget`` bytes.

        Each item taken counts one transmission; an item that reached the
        retransmit limit leaves the queue.  Items too large for what is left of
        the budget are skipped (a smaller one may still fit).
        """
        if not self._items or byte_budget <= 0:
            return []
        entries = sorted(self._items.items(), key=lambda kv: (kv[1].transmits, -kv[1].order))
        taken: list[Piggyback] = []
        limit = self.retransmit_limit
        for key, entry in entries:
            size = size_of(entry.item)
            if size > byte_budget:
                continue
            byte_budget -= size
            taken.append(entry.item)
            entry.transmits += 1
            if entry.transmits >= limit:
                self._remove(key)
            if byte_budget <= 0:
                break
        return taken


MAX_UNKNOWN_LOGGED = 64  # unknown section names logged once each (remote input: bounded)


class GossipSections:
    """The registry of gossip sections sharing a ``BroadcastQueue``."""

    def __init__(self, queue: BroadcastQueue, name: str = "", trust: RingTrust | None = None) -> None:
        self._queue = queue
        self._trust: RingTrust = trust if trust is not None else OpenTrust(0)
        self.refused: Counter[str] = Counter()
        self._sections: dict[str, OnReceive] = {}
        self._unknown_logged: set[str] = set()
        self._name = name

    def register(self, section: str, on_receive: OnReceive) -> None:
        """Deliver received items of ``section`` to ``on_receive``, which says whether each was new."""
        if section in self._sections:
            raise ValueError(f"gossip section {section!r} is already registered")
        self._sections[section] = on_receive

    def publish(self, section: str, key: str, payload: bytes) -> GossipItem:
        """Gossip ``payload`` under ``key`` of a registered ``section`` (replacing older news of that key)."""
        if section not in self._sections:
            raise KeyError(f"gossip section {section!r} is not registered")
        item = self._trust.sign_gossip(GossipItem(section, key, payload))
        self._queue.put(item)
        return item

    def receive(self, item: GossipItem) -> bool:
        """Hand a received item to its section; queue it again when it was new to us.

        Items of a section nobody registered are ignored (a newer member may gossip
        sections we do not know yet); the first one of each section is logged.
        """
        on_receive = self._sections.get(item.section)
        if on_receive is not None:
            error = self._trust.gossip_error(item)
            if error is not None:
                self.refused[error if len(self.refused) < MAX_UNKNOWN_LOGGED else "(other reasons)"] += 1
                return False
        if on_receive is None:
            if item.section not in self._unknown_logged and len(self._unknown_logged) < MAX_UNKNOWN_LOGGED:
                self._unknown_logged.add(item.section)
                log.info("swim {node} ignores gossip of unknown section {section}", node=self._name, section=item.section)
            return False
        try:
            new = on_receive(item)
        except Exception:
            # A section's bug must not cost the envelope's other work (its Ack, its rumours).
            log.failure("swim {node}: section {section} failed on an item", node=self._name, section=item.section)
            return False
        if not new:
            return False
        self._queue.put(item)
        return True
