"""Proving the ring members' addresses on the reactor: ``dht/address_proofs.AddressProofs`` fed by our own dials.

Every ``POLL_S`` seconds ``AddressChecks`` gives the member's table to
``AddressProofs.update`` and dials each address it returns with ``discover``
(``RingTransport.discover``: one mutual-TLS handshake, no frame written, the
ring id of the listener's certificate; it fails within the transport's connect
timeout).  The id it finds proves the address when it is the member's, and
disproves it otherwise, as does a failed dial (refused, unreachable, no TLS).
The transport's own links report each handshake through ``link_checked``.

What it proves is read by ``RingService.view`` (``RingView.verified``), which
the containers' firewall reads (``roles/container_members.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.dht.address_proofs import AddressProofs
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.swim_messages import MemberStatus

log = Logger()

POLL_S = 1.0

Members = Callable[[], Iterable[tuple[Peer, MemberStatus, int]]]


class AddressChecks:
    """Dials the members' addresses ``proofs`` asks for, and tells it what answered."""

    def __init__(
        self,
        clock: IReactorTime,
        proofs: AddressProofs,
        members: Members,
        discover: Callable[[str], defer.Deferred[Peer]],
        poll: float = POLL_S,
    ) -> None:
        self.clock = clock
        self.proofs = proofs
        self._members = members
        self._discover = discover
        self._poll_interval = poll
        self._loop: task.LoopingCall | None = None

    def start(self) -> None:
        """Check now and every ``poll`` seconds."""
        if self._loop is None:
            self._loop = task.LoopingCall(self.poll)
            self._loop.clock = self.clock
            self._loop.start(self._poll_interval, now=True)

    def stop(self) -> None:
        """No more checks; outcomes still in flight are dropped."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def poll(self) -> None:
        """Start the checks that are due."""
        try:
            members = list(self._members())
        except Exception:
            log.failure("ring: cannot read the members to check their addresses")
            return
        for peer in self.proofs.update(members, self.clock.seconds()):
            d = self._discover(peer.address)
            d.addCallbacks(self._answered, self._unreachable, callbackArgs=(peer,), errbackArgs=(peer,))
            d.addErrback(lambda f: log.failure("ring: checking a member's address failed", f))

    def link_checked(self, peer: Peer, presented: int | None) -> None:
        """One of our ring links to ``peer`` completed TLS with a listener showing ``presented``."""
        if self._loop is None:
            return
        if presented == peer.node_id:
            self.proofs.proved(peer, self.clock.seconds())
        else:
            self.proofs.disproved(peer, _another(presented), self.clock.seconds())

    def _answered(self, found: Peer, peer: Peer) -> None:
        self.link_checked(peer, found.node_id)

    def _unreachable(self, failure: Failure, peer: Peer) -> None:
        if self._loop is not None:
            self.proofs.disproved(peer, failure.getErrorMessage(), self.clock.seconds())


def _another(presented: int | None) -> str:
    if presented is None:
        return "the listener showed no certificate"
    return f"the listener there is ring member {format_id(presented)[:10]}"
