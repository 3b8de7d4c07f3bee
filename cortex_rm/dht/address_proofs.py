"""Which members' ring addresses this node has proven itself: a member's address counts once our own dial met its key there.

A member names its own ring address, in its signed ALIVE and as the sender of
each envelope.  The signature proves that the member *said* it, not that the
member is *there*: a member may name any host, a LAN host or another member's
port.  Sending to a wrong address only loses messages, but what this node
*grants* to a member's host must not rest on the member's word: the containers'
firewall opens a member's host to containers, and believes capacity reports only
on their member's ring host (``roles/container_members.py``).  So an address
counts for those only once it is *proven*: an outgoing mutual-TLS connection of
ours to that address met a listener showing the member's key (the certificate's
ring id is the member's id).

``AddressProofs`` is the bookkeeping, sans-IO (every call takes ``now``; the
Twisted edge, ``roles/address_checks.py``, dials and reports back).  Each live
(ALIVE or SUSPECT) member at its current address is:

* **pending**: not checked yet, or its check is still dialling;
* **proven**: the last check met its key at that address;
* **disproven**: the last check met another key, no TLS at all, or nothing
  (refused, unreachable, timed out).

When a check is due:

* at once for a member first seen, and for one seen at a new address (which
  comes with a new incarnation): a proof is for one address, so the new one is
  pending until checked, whatever the old one was;
* at once for a proven member back at a new incarnation at the same address (a
  restart: the proof stands meanwhile), and every ``recheck`` seconds;
* for a disproven member after a back-off, ``retry_min`` doubling up to
  ``retry_max``: a liar costs us one dial per ``retry_max`` at most;
* at most ``max_checks`` dials at once; a check that is never reported back is
  forgotten after ``check_timeout`` (the edge's dial has its own, shorter one).

A member that dies or leaves is forgotten: back, it is checked again.  The outcome
of any outgoing ring link counts as a check (``internal/ring_links.py`` verifies the
listener's id on every link), so the neighbours we talk to anyway cost no extra dial.

A member that becomes disproven is logged (warn) at most ``MAX_LOGGED`` times per
``LOG_INTERVAL_S``, the rest summed up in the next interval's first line; proofs
are logged at debug.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from twisted.logger import Logger

from cortex_rm.dht.peer import Peer
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.yarn.log_budget import LogBudget

log = Logger()

RECHECK_S: Final = 600.0
RETRY_MIN_S: Final = 5.0
RETRY_MAX_S: Final = 300.0
MAX_CHECKS: Final = 4
CHECK_TIMEOUT_S: Final = 60.0
MAX_LOGGED: Final = 10
LOG_INTERVAL_S: Final = 60.0

PENDING, PROVEN, DISPROVEN = "pending", "proven", "disproven"
LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)


@dataclass
class _Check:
    """One live member's address and what we know of it."""

    peer: Peer  # the member at the address being proven
    incarnation: int
    state: str = PENDING
    due: float = 0.0  # when the next check may start
    dialling_since: float | None = None
    failures: int = 0  # consecutive failed checks (the back-off)
    error: str = ""


class AddressProofs:
    """The live members' addresses and whether our own dials proved them (see the module docstring)."""

    def __init__(
        self,
        me: int,
        *,
        recheck: float = RECHECK_S,
        retry_min: float = RETRY_MIN_S,
        retry_max: float = RETRY_MAX_S,
        max_checks: int = MAX_CHECKS,
        check_timeout: float = CHECK_TIMEOUT_S,
    ) -> None:
        self.me = me
        self.recheck, self.retry_min, self.retry_max = recheck, retry_min, retry_max
        self.max_checks, self.check_timeout = max_checks, check_timeout
        self._checks: dict[int, _Check] = {}  # member id -> its check
        self.failed = 0  # checks that failed, since start
        self._log_budget = LogBudget(MAX_LOGGED, LOG_INTERVAL_S)

    @property
    def unlogged(self) -> int:
        """Members disproven but not logged (over MAX_LOGGED in an interval), since start."""
        return self._log_budget.suppressed
    def update(self, members: Iterable[tuple[Peer, MemberStatus, int]], now: float) -> list[Peer]:
        """Take the members as they are now (peer, status, incarnation); the checks to start now.

        The caller dials each returned peer's address and reports ``proved`` or
        ``disproved``; until then it counts as dialling.
        """
        live: dict[int, tuple[Peer, int]] = {}
        for peer, status, incarnation in members:
            if status in LIVE and peer.node_id != self.me:
                live[peer.node_id] = (peer, incarnation)
        for node_id in self._checks.keys() - live.keys():
            del self._checks[node_id]  # dead or left: checked again if it comes back
        for node_id, (peer, incarnation) in live.items():
            check = self._checks.get(node_id)
            if check is None or check.peer != peer:
                self._checks[node_id] = _Check(peer, incarnation, due=now)
            elif incarnation > check.incarnation:
                check.incarnation, check.due = incarnation, now  # a restart at the same address: check again
        for check in self._checks.values():  # a dial never reported back does not hold a slot forever
            if check.dialling_since is not None and now - check.dialling_since >= self.check_timeout:
                self._failed(check, "no outcome within the check timeout", now)
        dialling = sum(1 for c in self._checks.values() if c.dialling_since is not None)
        due = sorted((c for c in self._checks.values() if c.dialling_since is None and c.due <= now), key=lambda c: c.due)
        start = due[: max(0, self.max_checks - dialling)]
        for check in start:
            check.dialling_since = now
        return [check.peer for check in start]

    def proved(self, peer: Peer, now: float) -> None:
        """A verified handshake: the listener at ``peer.address`` showed ``peer.node_id``'s key."""
        check = self._current(peer)
        if check is None:
            return
        if check.state != PROVEN:
            log.debug("ring: the address {address} of member {member} is proven (our own connection met its key)",
                      address=peer.address, member=peer.short())  # fmt: skip
        check.state, check.failures, check.error = PROVEN, 0, ""
        check.dialling_since, check.due = None, now + self.recheck

    def disproved(self, peer: Peer, error: str, now: float) -> None:
        """A check of ``peer.address`` did not meet ``peer.node_id``'s key (``error`` says what it met)."""
        check = self._current(peer)
        if check is not None:
            self._failed(check, error, now)

    def proven(self) -> frozenset[Peer]:
        """The live members (at their current addresses) whose address is proven."""
        return frozenset(c.peer for c in self._checks.values() if c.state == PROVEN)

    def state_of(self, peer: Peer) -> str | None:
        """``pending``, ``proven`` or ``disproven`` for a live member at that address; None otherwise."""
        check = self._current(peer)
        return None if check is None else check.state

    def dialling(self) -> int:
        """Checks started and not reported back."""
        return sum(1 for c in self._checks.values() if c.dialling_since is not None)

    # ------------------------------------------------------------ internals

    def _current(self, peer: Peer) -> _Check | None:
        """The check of ``peer``'s member if it is for that very address (a stale outcome finds None)."""
        check = self._checks.get(peer.node_id)
        return check if check is not None and check.peer == peer else None

    def _failed(self, check: _Check, error: str, now: float) -> None:
        self.failed += 1
        check.failures += 1
        retry = min(self.retry_max, self.retry_min * 2 ** (check.failures - 1))
        check.dialling_since, check.due, check.error = None, now + retry, error
        if check.state != DISPROVEN:
            check.state = DISPROVEN
            self._log_disproven(check, retry, now)

    def _log_disproven(self, check: _Check, retry: float, now: float) -> None:
        """Log a member newly disproven: at most MAX_LOGGED per LOG_INTERVAL_S, the rest summed up."""
        suppressed = self._log_budget.roll(now)
        if suppressed:
            log.warn("ring: {count} more members' ring addresses were not proven in the last {interval:.0f} s",
                     count=suppressed, interval=LOG_INTERVAL_S)  # fmt: skip
        if not self._log_budget.spend():
            return
        log.warn(
            "ring: not believing member {member}'s ring address {address}: our own connection did not meet its key "
            "there ({error}); its host and capacity report count for nothing until a check does (next in {retry:.0f} s)",
            member=check.peer.short(), address=check.peer.address, error=check.error, retry=retry,
        )  # fmt: skip
