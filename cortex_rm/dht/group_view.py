"""What one member believes of the group: rumours applied by SWIM's rules, suspicions, and refutations.

``GroupView`` is the update half of ``Membership`` (which keeps the probing half).
It owns the member table, the running suspicions (``SuspicionTimer``) and our own
incarnation, and applies every ``MemberUpdate`` -- from gossip, from our own
failed probes, from expired suspicions -- in one place:

* **Precedence** (``member_table.supersedes``): higher incarnations win; within
  one, SUSPECT beats ALIVE, and DEAD and LEFT are final.  Old news (the common
  case) returns at once.
* **Confirmations.**  A SUSPECT at the incarnation we already suspect is no
  transition: a new *accuser* in it is one Lifeguard confirmation, which brings the
  suspicion's deadline forward and is gossiped on.
* **New suspicions** start a ``SuspicionTimer`` (bounds from the live count N) and
  call ``on_suspect``, so the prober can check the suspect itself soon.
* **Refutation.**  Gossip that says *we* are SUSPECT or DEAD at our incarnation
  raises our incarnation by one and gossips ALIVE.  Gossip alone can
  miss the members that matter most, so we also tell the accuser and whoever
  passed the accusation on directly: a ``Probe`` whose piggyback leads with the
  refutation.  Whoever still repeats an accusation we already refuted (a buddy
  that suspects us tells us on every message) missed it: it is told again, at
  most once per probe interval.  Accusers are named in gossip, which anyone can
  forge: only members we know ALIVE or SUSPECT are told, at the address we hold
  for them, and at most ``MAX_TOLD`` within one probe interval.

Every update that was news is queued for gossip again (infection style).

**Signed rumours** (``ring_trust.py``).  A rumour from gossip is believed only if
its signer may say it: ALIVE and LEFT signed by the member itself, SUSPECT and
DEAD by an accuser that is a live member we know.  Anything else is dropped and
counted in ``refused`` (no state changes).  What we say ourselves is signed once,
when we say it; each member row keeps the signed rumour that set its state, which
is what we repeat (anti-entropy, buddy system), since we cannot sign for others.
Only a rumour's signer chooses the address it names: a SUSPECT or DEAD never moves
a member to another address.

**Accusers accuse at the incarnation they know**, and only the member raises it.
So a SUSPECT above the incarnation we hold for a live member is refused: believed,
it would set the member's row there, and a lying member could set it to the
wire's highest (``MAX_INCARNATION``), which no ALIVE of the member can ever
supersede.  (Honest news of a refutation we missed is refused too, until the
member's own ALIVE reaches us; a DEAD that follows is checked by our own probe.)
A SUSPECT or DEAD about *us* above our incarnation is a lie (a restart starts
above every earlier incarnation of ours): it is refused, and refuted at our
incarnation + 1, never above ``MAX_INCARNATION``.  A rumour about a member we do
not know makes a row only if it is its own ALIVE (``member_table.supersedes``).

**A DEAD is a claim.**  A DEAD from gossip about a member we hold ALIVE or SUSPECT
changes nothing here: it goes to ``on_death_claim``, and the prober checks the
member itself (``membership.py``); only its own failed probe declares it DEAD.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from twisted.logger import Logger

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.local_health import LocalHealth
from cortex_rm.dht.member_table import ALIVE, DEAD, GONE, LEFT, SUSPECT, MembershipEvent, MemberTable, supersedes
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.piggyback import BroadcastQueue, SizeOf
from cortex_rm.dht.probe_evidence import ProbeEvidence
from cortex_rm.dht.ring_trust import RingTrust
from cortex_rm.dht.suspicion import SuspicionTimer, expected_confirmations, retransmit_limit, suspicion_timeout_bounds
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import MAX_INCARNATION, MemberUpdate, Piggyback, Probe

log = Logger()

SwimAction = Send | MembershipEvent | ProbeEvidence

MAX_REFUSALS_LOGGED = 16
"""Refused rumours logged one by one (remote input); after that they are only counted."""

MAX_TOLD = 64
"""Members told our refutation within the last probe interval (``_told``): a bound on remote input.

Honest accusers of one member in one interval are a handful (its probers and
their k pushes); the entries of the last interval are all that must be kept.
"""


class GroupView:
    """The member table, the suspicions we hold, and our incarnation; ``apply`` is the only way to change them."""

    def __init__(
        self,
        me: Peer,
        config: SwimConfig,
        health: LocalHealth,
        broadcasts: BroadcastQueue,
        incarnation: int,
        next_seq: Callable[[], int],
        on_suspect: Callable[[Peer], None],
        trust: RingTrust,
        on_death_claim: Callable[[Peer], list[SwimAction]],
    ) -> None:
        self.me = me
        self.config = config
        self.health = health
        self.broadcasts = broadcasts
        self.incarnation = incarnation
        self.left = False
        self.table = MemberTable(me, config.max_members)
        self.suspicions: dict[int, SuspicionTimer] = {}
        self._next_seq = next_seq
        self._on_suspect = on_suspect
        self._next_reap_at = 0.0
        self._told: dict[int, float] = {}  # peer -> when we last told it our refutation, at this incarnation
        self.trust = trust
        self._on_death_claim = on_death_claim
        self.refused: Counter[str] = Counter()  # rumours dropped, by reason
        self._own_alive: MemberUpdate | None = None
        self._introduced: set[int] = set()  # peers our own ALIVE rode to at incarnation ``_introduced_at``
        self._introduced_at = incarnation

    def own_alive(self) -> MemberUpdate:
        """Our ALIVE at our incarnation, signed (once per incarnation)."""
        alive = self._own_alive
        if alive is None or alive.incarnation != self.incarnation:
            alive = self._own_alive = self.trust.sign_rumour(MemberUpdate(self.me, ALIVE, self.incarnation))
        return alive

    def spread(self, update: MemberUpdate) -> None:
        """Queue ``update`` for gossip, if it is signed (an unsigned one would be refused by all)."""
        if update.signature or not self.trust.signs:
            self.broadcasts.put(update)

    def believable(self, update: MemberUpdate) -> bool:
        """Whether a rumour from gossip is signed by one who may say it; else it is counted and dropped."""
        error = self.trust.rumour_error(update)
        if error is None and update.status in (SUSPECT, DEAD):
            error = self._accusation_error(update)
        if error is None:
            return True
        self._refuse(update, error)
        return False

    def _accusation_error(self, update: MemberUpdate) -> str | None:
        """Why a signed SUSPECT or DEAD from gossip cannot be believed (None: it may be)."""
        accuser = update.accuser
        if accuser is not None and accuser.node_id != self.me.node_id:
            known = self.table.get(accuser)
            if known is None or known.status in GONE:
                return f"a {update.status.value} rumour from an accuser that is no live member of ours"
        if update.status is SUSPECT and update.peer.node_id != self.me.node_id:
            subject = self.table.get(update.peer)
            if subject is not None and subject.status not in GONE and update.incarnation > subject.incarnation:
                return "a suspect rumour above the incarnation we hold for its subject"
        return None

    def _refuse(self, update: MemberUpdate, error: str) -> None:
        """Count (and log the first few of) a rumour from gossip we do not believe."""
        self.refused[error] += 1
        if sum(self.refused.values()) <= MAX_REFUSALS_LOGGED:
            log.info("swim {node} refused a rumour about {member}: {error}", node=self.me.short(), member=update.peer.short(), error=error)

    def apply(self, update: MemberUpdate, now: float, reason: str, relay: Peer | None = None) -> list[SwimAction]:
        """Apply one update by SWIM's precedence rules; queue it on if it was news.

        ``relay`` is the member whose message carried it (None: our own conclusion).
        """
        if update.peer.node_id == self.me.node_id:
            if relay is not None:
                if not self.believable(update):
                    return []
                if update.status in (SUSPECT, DEAD) and update.incarnation > self.incarnation:
                    # Nobody knows an incarnation of ours above our own: a lie, refused; we
                    # refute it all the same, at ours (those who believed it stay wrong).
                    self._refuse(update, f"a {update.status.value} rumour about us above our incarnation")
                    update = replace(update, incarnation=self.incarnation)
            return self._about_me(update, now, relay)
        member = self.table.get(update.peer)
        if member is not None and member.incarnation == update.incarnation and member.status is update.status is not SUSPECT:
            return []  # old news (the common case): nothing to do
        if relay is not None and not self.believable(update):
            return []
        if update.status is SUSPECT and update.accuser is None:
            update = replace(update, accuser=relay if relay is not None else self.me)
        if member is not None and update.status is SUSPECT and member.status is SUSPECT:
            if update.incarnation == member.incarnation:
                # The same suspicion again: a confirmation if from a new accuser.
                suspicion = self.suspicions.get(member.peer.node_id)
                assert update.accuser is not None
                if suspicion is not None and suspicion.confirm(update.accuser):
                    self.spread(update)
                return []
        current = None if member is None else (member.status, member.incarnation)
        if not supersedes(current, (update.status, update.incarnation)):
            return []
        if member is None and not self.table.has_room(update.peer):
            return []
        if update.status is DEAD and relay is not None and member is not None:
            # Someone else's word that a member we hold live is dead: we check it ourselves first.
            return list(self._on_death_claim(member.peer))
        # Only the member's own (ALIVE) rumour may move it to another address.
        peer = update.peer if member is None or update.status is ALIVE else member.peer
        event = self.table.update(peer, update.status, update.incarnation, now, reason)
        row = self.table.get(peer)
        if row is not None:
            row.rumour = update
        n = self.table.live_count
        self.broadcasts.retransmit_limit = retransmit_limit(self.config.retransmit_mult, n)
        if update.status is SUSPECT:
            assert update.accuser is not None
            c = self.config
            minimum, maximum = suspicion_timeout_bounds(n, c.probe_interval, c.suspicion_mult, c.suspicion_max_timeout_mult)
            k = expected_confirmations(c.suspicion_confirmations, n)
            self.suspicions[update.peer.node_id] = SuspicionTimer(now, minimum, maximum, k, update.accuser)
            if update.accuser.node_id != self.me.node_id:
                self._on_suspect(update.peer)
        else:
            self.suspicions.pop(update.peer.node_id, None)
        self.spread(update)
        return [] if event is None else [event]

    def reap(self, now: float) -> None:
        """Forget the members DEAD or LEFT for ``dead_member_retention`` (``MemberTable.reap``).

        The table is scanned at most once per probe interval: a member is forgotten
        within one interval of its time.
        """
        if now < self._next_reap_at:
            return
        self._next_reap_at = now + self.config.probe_interval
        for member in self.table.reap(now, self.config.dead_member_retention):
            self._told.pop(member.peer.node_id, None)

    def piggyback_for(self, to: Peer, byte_budget: int, size_of: SizeOf) -> tuple[Piggyback, ...]:
        """Rumours for one message to ``to``, within ``byte_budget`` bytes as ``size_of`` counts them.

        Buddy system: when we believe ``to`` SUSPECT or DEAD, that news goes first,
        so it can refute it.  Our own ALIVE rides on our first message to each peer
        at each incarnation of ours (``_introduction``).
        """
        buddy = self._buddy_news(to)
        budget = byte_budget - (0 if buddy is None else size_of(buddy))
        introduction = self._introduction(to, budget, size_of)
        rest = self.broadcasts.take(budget - (0 if introduction is None else size_of(introduction)), size_of)
        items = [item for item in rest if item != buddy]
        return (*([buddy] if buddy else []), *items, *([introduction] if introduction and introduction not in items else []))

    def _buddy_news(self, to: Peer) -> MemberUpdate | None:
        """The rumour that makes us hold ``to`` SUSPECT or DEAD (None: we hold it ALIVE, LEFT, or not at all)."""
        member = self.table.get(to)
        if member is None or member.status is ALIVE or member.status is LEFT:
            return None
        buddy = member.rumour
        if buddy is None or buddy.status is not member.status or buddy.incarnation != member.incarnation:
            return None
        return buddy

    def _introduction(self, to: Peer, budget: int, size_of: SizeOf) -> MemberUpdate | None:
        """Our own ALIVE, the first time a message of ours to ``to`` has room for it at this incarnation.

        So whoever probes us learns our incarnation with our first answer, however
        gossip goes: a restarted member's (or a refuted one's) first ack tells the
        prober it is a new incarnation, and the prober's uptime witness does not
        bridge the restart (``uptime_watch.py``).  One rumour per peer and incarnation;
        at most ``max_members`` peers are remembered.
        """
        if self.left:
            return None
        if self._introduced_at != self.incarnation:
            self._introduced_at, self._introduced = self.incarnation, set()
        if to.node_id in self._introduced or len(self._introduced) >= self.table.max_members:
            return None
        alive = self.own_alive()
        if size_of(alive) > budget:
            return None
        self._introduced.add(to.node_id)
        return alive

    def _about_me(self, update: MemberUpdate, now: float, relay: Peer | None) -> list[SwimAction]:
        """Gossip about ourselves: refute a suspicion, a death or a stale leave."""
        if update.status is ALIVE:
            # An older process of ours may have held a higher incarnation.
            self.incarnation = max(self.incarnation, update.incarnation)
            return []
        if self.left:
            return []
        if update.incarnation < self.incarnation:
            # Stale news of an accusation we refuted: whoever still repeats it (often a
            # buddy that suspects us and tells us on every message) missed our refutation.
            alive = self.own_alive()
            if self.broadcasts.transmits(alive) != 0:
                self.broadcasts.put(alive)
        else:
            if update.incarnation >= MAX_INCARNATION:
                log.warn("swim {node} cannot refute: its incarnation is the wire's highest", node=self.me.short())
            self.incarnation = min(update.incarnation + 1, MAX_INCARNATION)
            self._told.clear()
            self.health.apply(1, f"refuted being {update.status.value}")
            self.broadcasts.put(self.own_alive())
        actions: list[SwimAction] = []
        for peer in self._to_tell(update.accuser, relay):
            told = self._told.get(peer.node_id)
            if told is not None and now - told < self.config.probe_interval:
                continue
            if told is None and len(self._told) >= MAX_TOLD:
                # Entries older than a probe interval no longer hold anyone back: drop them.
                self._told = {k: t for k, t in self._told.items() if now - t < self.config.probe_interval}
                if len(self._told) >= MAX_TOLD:
                    continue
            self._told[peer.node_id] = now
            actions.append(Send(peer, Probe(self._next_seq())))
        return actions

    def _to_tell(self, accuser: Peer | None, relay: Peer | None) -> list[Peer]:
        """Who gets our refutation directly: the accuser and the relay, if we know them ALIVE or SUSPECT.

        The accuser is named in gossip, which anyone may forge: an unknown id, or a
        known id at another address, must not make us connect anywhere.  So each is
        told at the address in our table, and only if it is a live member.
        """
        peers: dict[int, Peer] = {}
        for peer in (accuser, relay):
            member = None if peer is None or peer.node_id == self.me.node_id else self.table.get(peer)
            if member is not None and member.status in (ALIVE, SUSPECT):
                peers[member.peer.node_id] = member.peer
        return list(peers.values())
