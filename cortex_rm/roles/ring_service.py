"""The daemon's ring member: the sans-IO ``RingMember`` driven in real time over a ``RingTransport``.

``RingService`` is the real-time counterpart of ``tests/support/ring_sim.py``: it
owns one ``RingMember`` and a transport, and does exactly what the simulation's
timeline does, with the injected reactor as the clock:

* every envelope the transport authenticated goes to ``member.receive(envelope,
  now)``; every ``Transmit`` the member returns goes to ``transport.send``;
* ``tick(now)`` runs at ``member.next_deadline(now)``: one pending ``callLater`` at a
  time, moved earlier whenever a step brings the deadline forward;
* the neighbour log is written every ``neighbour_log_interval``, off the reactor when
  the caller gives ``run_blocking`` a thread (only while it names a peer: a node left
  alone keeps its last record with peers, which ages out after ``neighbour_log_max_age``);
* outcomes fire the callers' Deferreds (``lookup``, ``put``, ``get``), membership
  events go to the listeners (the RM marks a node LOST on ``MemberDied``), direct
  messages to their channel's handler (``send_direct``; the events' triggers), and
  ``Joined``/``JoinFailed`` drive the join attempts (``ring_join.py``: the neighbour log,
  then the introducers, retried every ``join_retry_interval``).  An exception raised by
  the core, a listener or an outcome callback is logged (``log.failure``); the service goes on.

**Before the member exists** (``ring_start.py``): the key must solve the ring's key puzzle (else
ValueError); this start's incarnation is persisted above the last one; the key's proof of work is
read, or solved once in a thread.  The member exists, and ``start`` fires, once both are there.

**Uptime witnessing.**  ``take_attestations`` hands over what the member's witness has to sign now
(``RingMember.attestations_due``), every ``attestation_interval`` at a random phase.  ``stop`` flushes
the witness first and keeps what it held for one later ``take_attestations``.  **Addresses.**  A
member's ring address counts for ``view().verified`` (what the containers' firewall believes) only
once our own connection met its key there (``address_checks.py``).

**Stopping.**  ``stop(graceful=True)`` writes the neighbour log, then lets the member
leave (records handed off, neighbours told, LEFT gossiped), keeps the connections open
for ``leave_flush`` seconds so the goodbyes are written, and stops the transport.
``stop(graceful=False)`` writes the log and drops everything at once: a crash to the others.  The log is written on
both: after a graceful leave its peers hold us as LEFT at our old incarnation, and a
restart comes back higher, so rejoining through them is right and quicker than the introducers.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.accounting.attestations import Attestation
from cortex_rm.dht.address_proofs import AddressProofs
from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.errors import RingError
from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.live_member import LiveMember, MembershipListener
from cortex_rm.dht.neighbour_log import NeighbourLog
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.piggyback import OnReceive
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_join import JoinAttempts
from cortex_rm.dht.ring_member import RingMember, RingView
from cortex_rm.dht.swim_messages import GossipItem, MemberStatus
from cortex_rm.dht.ring_trust import KeyTrust
from cortex_rm.roles.address_checks import AddressChecks
from cortex_rm.roles.ring_records import RESOURCE_MANAGER_KEY
from cortex_rm.roles.ring_start import next_incarnation, proof_of_work
from cortex_rm.dht.write_policy import WritePolicy
from cortex_rm.events.functions import FUNCTION_KEY_PREFIX, TICK_KEY_PREFIX
from cortex_rm.dht.ring_work import key_ok
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.internal.ring_codec import piggyback_size
from cortex_rm.internal.ring_transport import DEFAULT_CONNECT_TIMEOUT_S, RingTransport
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.reactors import IReactorTimeTCP
from cortex_rm.yarn.transitions import TransitionTable

log = Logger()

T = TypeVar("T")

LEAVE_FLUSH_S = 1.0
"""Seconds a graceful stop keeps its connections open after the goodbyes were sent."""


class ServiceState(enum.Enum):
    """The lifecycle of one ``RingService`` (it is not restarted: a restart is a new service)."""

    NEW = "new"
    STARTING = "starting"  # binding the listening port
    RUNNING = "running"  # listening, ticking, joining or joined
    STOPPING = "stopping"  # leaving, closing connections
    STOPPED = "stopped"


class ServiceEvent(enum.Enum):
    """What moves a ``RingService`` between ``ServiceState``s."""

    START = "start"
    LISTENING = "listening"
    LISTEN_FAILED = "listen-failed"
    STOP = "stop"
    CLOSED = "closed"


SERVICE_LIFECYCLE: TransitionTable[ServiceState, ServiceEvent] = TransitionTable(
    "ring service",
    {
        (ServiceState.NEW, ServiceEvent.START): ServiceState.STARTING,
        (ServiceState.NEW, ServiceEvent.STOP): ServiceState.STOPPED,
        (ServiceState.STARTING, ServiceEvent.LISTENING): ServiceState.RUNNING,
        (ServiceState.STARTING, ServiceEvent.LISTEN_FAILED): ServiceState.STOPPED,
        (ServiceState.RUNNING, ServiceEvent.STOP): ServiceState.STOPPING,
        (ServiceState.STOPPING, ServiceEvent.CLOSED): ServiceState.STOPPED,
    },
    ignored=[(ServiceState.STOPPING, ServiceEvent.STOP), (ServiceState.STOPPED, ServiceEvent.STOP)],
)


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unless_timed_out(failure: Failure) -> Failure | None:
    """An errback that ends a timeout and passes any other failure on."""
    return None if isinstance(failure.value, defer.TimeoutError) else failure


class RingService:
    """This node's place on the ring: joins it, keeps it, answers for it, and leaves it."""

    def __init__(
        self,
        identity: NodeIdentity,
        config: RingConfig,
        reactor: IReactorTimeTCP,
        state_dir: Path,
        *,
        listen_host: str,
        advertise_host: str,
        port: int,
        introducers: Sequence[str],
        wall_clock: Callable[[], float] = time.time,
        run_blocking: Runner | None = None,
        rng: random.Random | None = None,
        leave_flush: float = LEAVE_FLUSH_S,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if not key_ok(identity.spki, config.key_bits):
            raise ValueError(f"the node key does not solve the ring's key puzzle at {config.key_bits} bits")
        self.identity = identity
        self.config = config
        self.reactor = reactor
        self.state_dir = Path(state_dir)
        self.listen_host, self.advertise_host, self.port = listen_host, advertise_host, port
        self.introducers = tuple(introducers)
        self.wall_clock = wall_clock
        # Where file writes run: the daemon passes a thread (no disk I/O on the reactor);
        # tests and short-lived clients run them inline.
        self._run_blocking = run_blocking or (lambda work: defer.maybeDeferred(work))
        self.leave_flush = leave_flush
        self.me = Peer(identity.ring_id, host_port(advertise_host, port))
        self.state = ServiceState.NEW
        self.live: LiveMember | None = None
        self.addresses = AddressChecks(
            reactor, AddressProofs(identity.ring_id), self._members, lambda address: self.transport.discover(address)
        )
        self.transport = RingTransport(
            identity, MutualTLS(identity), reactor, self._on_envelope, connect_timeout=connect_timeout,
            on_link_checked=self.addresses.link_checked,
        )  # fmt: skip
        self.neighbour_log = NeighbourLog(self.state_dir)
        self._rng = rng or random.Random()
        self._attempts: JoinAttempts | None = None
        self._early_joined: list[defer.Deferred[None]] = []  # joined() before start
        self._after_listen: list[Callable[[], object]] = []
        self._stop_waiters: list[defer.Deferred[None]] = []
        self._log_loop: task.LoopingCall | None = None
        self._listeners: list[MembershipListener] = []
        self._sections: dict[str, OnReceive] = {}
        self._direct: dict[str, Callable[[Peer, bytes], None]] = {}
        self._flushed: list[Attestation] = []  # the witness's held attestations at stop, for one take_attestations

    # ------------------------------------------------------------ lifecycle

    def start(self) -> defer.Deferred[None]:
        """Listen, start the member, begin joining; fires once listening (``joined()`` fires when on the ring)."""
        self._move(ServiceEvent.START)
        d: defer.Deferred[Any] = self.transport.listen(self.listen_host, self.port)  # fires with our start's outcome
        d.addCallback(self._listening).addErrback(lambda f: defer.ensureDeferred(self._start_failed(f)))
        return d

    def joined(self) -> defer.Deferred[None]:
        """Fires when this node is on a ring with others, or is the first node of a new one."""
        if self._attempts is not None:
            return self._attempts.settled()
        if self.state is ServiceState.STOPPED:
            return defer.fail(RingError("the ring service is stopped"))
        waiter: defer.Deferred[None] = defer.Deferred()
        self._early_joined.append(waiter)
        return waiter

    def stop(self, graceful: bool = True) -> defer.Deferred[None]:
        """Leave (``graceful``) or just drop off the ring, then close everything; fires when done."""
        if self.state is ServiceState.STARTING:
            waiting: defer.Deferred[None] = defer.Deferred()
            self._after_listen.append(lambda: self.stop(graceful).chainDeferred(waiting))
            return waiting
        if self.state is ServiceState.STOPPED:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        self._stop_waiters.append(done)
        if self.state is ServiceState.NEW:
            self._move(ServiceEvent.STOP)
            self._closed()
        elif self._move(ServiceEvent.STOP):
            defer.ensureDeferred(self._stop(graceful)).addErrback(
                lambda f: log.failure("ring {me}: stopping failed", f, me=self.me.short())
            )
        return done

    def _closed(self) -> None:
        """Stopped: whoever waits on ``stop`` or ``joined`` hears of it."""
        self._fail_early_waiters()
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _listening(self, listening_port: IListeningPort) -> defer.Deferred[None]:
        host = listening_port.getHost()
        assert isinstance(host, (IPv4Address, IPv6Address))  # a TCP port
        bound = host.port
        self.me = Peer(self.identity.ring_id, host_port(self.advertise_host, bound))
        incarnation = next_incarnation(self.state_dir, self.wall_clock)  # (an OSError fails the start)
        spki, bits = self.identity.spki, self.config.work_bits
        work = proof_of_work(self._run_blocking, self.state_dir, spki, bits, self.me.short())
        return work.addCallback(lambda nonce: self._member_ready(incarnation, nonce))

    def _member_ready(self, incarnation: int, work: int) -> None:
        trust = KeyTrust(self.identity.key, work, self.config.work_bits, self.config.key_bits)
        rms = self.config.resource_managers
        policy = WritePolicy({RESOURCE_MANAGER_KEY: rms}, {FUNCTION_KEY_PREFIX: rms}, (TICK_KEY_PREFIX,))
        if not self.config.resource_managers:
            log.warn("ring: [ring] resource_managers is not set: the first member to write {key} owns it "
                     "(list the ring ids of the nodes that may run the RM)", key=RESOURCE_MANAGER_KEY)
        member = RingMember(
            self.me, self.config, self._rng, piggyback_size=piggyback_size, incarnation=incarnation, trust=trust, policy=policy
        )
        for name, on_receive in self._sections.items():
            member.membership.sections.register(name, on_receive)
        live = self.live = LiveMember(member, self.reactor, self.transport.send, self._after_step)
        for listener in self._listeners:
            live.add_listener(listener)
        for channel, handler in self._direct.items():
            live.add_direct_handler(channel, handler)
        self._move(ServiceEvent.LISTENING)
        log.info("ring {me} started, incarnation {incarnation}", me=self.me.short(), incarnation=incarnation)
        live.start()
        self.addresses.start()
        self._log_loop = task.LoopingCall(self._write_neighbour_log)
        self._log_loop.clock = self.reactor
        self._log_loop.start(self.config.neighbour_log_interval, now=False)
        self._attempts = JoinAttempts(
            self.reactor,
            self.me,
            self.introducers,
            self.config.join_retry_interval,
            log_candidates=self._log_candidates,
            discover=self.transport.discover,
            join=lambda peers: live.step("join", lambda now: member.join(peers, now)),
        )
        for waiter in self._early_joined:
            self._attempts.settled().chainDeferred(waiter)
        self._early_joined.clear()
        self._attempts.begin()
        self._run_after_listen()

    async def _start_failed(self, failure: Failure) -> None:
        log.error("ring {me} cannot start: {error}", me=self.me.short(), error=failure.getErrorMessage())
        await self.transport.stop()
        self._move(ServiceEvent.LISTEN_FAILED)
        self._closed()
        self._run_after_listen()
        failure.raiseException()

    def _run_after_listen(self) -> None:
        hooks, self._after_listen = self._after_listen, []
        for hook in hooks:
            hook()

    async def _stop(self, graceful: bool) -> None:
        if self._log_loop is not None and self._log_loop.running:
            self._log_loop.stop()
        if self._attempts is not None:
            self._attempts.stop()
        self.addresses.stop()
        live = self.live
        if live is not None:
            self._flush_witness(live)
            live.halt("the ring service stopped")
            await self._write_neighbour_log()
            if graceful:
                log.info("ring {me} leaving the ring", me=self.me.short())
                live.step("leave", live.member.leave)
                # The goodbyes may need new connections: wait until none is queued
                # (bounded by a connect timeout), then give the sockets time to write.
                drained = self.transport.drained()
                drained.addTimeout(self.transport.connect_timeout, self.reactor)
                await drained.addErrback(_unless_timed_out)
                await task.deferLater(self.reactor, self.leave_flush, lambda: None)
        await self.transport.stop()
        self._move(ServiceEvent.CLOSED)
        log.info("ring {me} stopped ({how})", me=self.me.short(), how="left" if graceful else "dropped off")
        self._closed()

    def _flush_witness(self, live: LiveMember) -> None:
        """Keep everything the witness holds for the next ``take_attestations`` (a stop: nothing more comes)."""
        try:
            self._flushed += live.member.flush_attestations(self.reactor.seconds())
        except Exception:
            log.failure("ring {me}: the uptime witness could not be flushed", me=self.me.short())

    def _fail_early_waiters(self) -> None:
        waiters, self._early_joined = self._early_joined, []
        for waiter in waiters:
            waiter.errback(RingError("the ring service stopped before it joined a ring"))

    def _move(self, event: ServiceEvent) -> bool:
        new = SERVICE_LIFECYCLE.next_state(self.state, event)
        if new is None:
            return False
        log.debug("ring {me} service: {old} -> {new}", me=self.me.short(), old=self.state.value, new=new.value)
        self.state = new
        return True

    # ------------------------------------------------------------ the ring's API

    def lookup(self, key: int) -> defer.Deferred[Peer]:
        """The member owning ring point ``key``; RingError when the lookup did not end (or not running)."""
        return self._when_running("lookup", lambda live: live.lookup(key))

    def put(self, key: str, value: bytes) -> defer.Deferred[Record]:
        """Store ``value`` under ``key`` on its owner (and replicas); the stored record, or RingError."""
        return self._when_running("put", lambda live: live.put(key, value))

    def get(self, key: str) -> defer.Deferred[Record | None]:
        """The record under ``key`` (None when nobody has it), or RingError."""
        return self._when_running("get", lambda live: live.get(key))

    def take_attestations(self, flush: bool = False) -> list[Attestation]:
        """What our uptime witness has to sign now (everything it holds with ``flush``), unsigned, at the
        reactor's time; handed over once.  [] unless running, but for what ``stop`` flushed (once)."""
        kept, self._flushed = self._flushed, []
        if self.live is None or self.state is not ServiceState.RUNNING:
            return kept
        member, now = self.live.member, self.reactor.seconds()
        return kept + (member.flush_attestations(now) if flush else member.attestations_due(now))

    def add_membership_listener(self, listener: MembershipListener) -> None:
        """Call ``listener`` with every membership event (MemberJoined, MemberDied, MemberLeft...)."""
        self._listeners.append(listener)
        if self.live is not None:
            self.live.add_listener(listener)

    def register_section(self, name: str, on_receive: OnReceive) -> None:
        """Gossip section ``name`` (``GossipSections.register``); may be called before ``start``."""
        if name in self._sections:
            raise ValueError(f"gossip section {name!r} is already registered")
        self._sections[name] = on_receive
        if self.live is not None:
            self.live.member.membership.sections.register(name, on_receive)

    def publish(self, section: str, key: str, payload: bytes) -> GossipItem:
        """Gossip ``payload`` under ``(section, key)`` (``GossipSections.publish``); RingError unless running."""
        return self._running("publish").member.membership.sections.publish(section, key, payload)

    def register_direct(self, channel: str, handler: Callable[[Peer, bytes], None]) -> None:
        """Direct messages on ``channel`` (``dht/direct_messages.py``) to ``handler(sender, body)``."""
        self._direct[channel] = handler
        if self.live is not None:
            self.live.add_direct_handler(channel, handler)

    def send_direct(self, to: Peer, channel: str, body: bytes) -> None:
        """``body`` straight to ``to`` on ``channel`` (loss is the caller's to time out); RingError unless running."""
        self._running("send").send_direct(to, channel, body)

    def view(self) -> RingView:
        """The ring as this member sees it; RingError unless running."""
        view = self._running("view").member.view()
        return dataclasses.replace(view, verified=self.addresses.proofs.proven())

    # ------------------------------------------------------------ internals

    def _running(self, what: str) -> LiveMember:
        if self.live is None or self.state is not ServiceState.RUNNING:
            raise RingError(f"the ring service {self.me.short()} is {self.state.value}: cannot {what}")
        return self.live

    def _when_running(self, what: str, operation: Callable[[LiveMember], defer.Deferred[T]]) -> defer.Deferred[T]:
        try:
            live = self._running(what)
        except RingError as e:
            return defer.fail(e)
        return operation(live)

    def _members(self) -> list[tuple[Peer, MemberStatus, int]]:
        rows = self.live.member.membership.members() if self.live is not None else []
        return [(row.peer, row.status, row.incarnation) for row in rows]

    def _on_envelope(self, envelope: Envelope) -> None:
        if self.live is not None and self.state is ServiceState.RUNNING:
            self.live.receive(envelope)

    def _after_step(self, ring_state: RingState, join_failed: bool) -> None:
        if self._attempts is not None:
            self._attempts.observe(ring_state)
            if join_failed:
                self._attempts.join_failed()

    def _write_neighbour_log(self) -> defer.Deferred[None]:
        """Write the neighbour log (off the reactor, through ``run_blocking``); failures are logged."""
        if self.live is None:
            return defer.succeed(None)
        record = self.live.member.neighbour_record(self.wall_clock())
        if not record.names_peers:  # alone: keep the last record with peers
            return defer.succeed(None)
        d = self._run_blocking(lambda: self.neighbour_log.write(record))
        path = str(self.neighbour_log.path)
        return d.addErrback(lambda f: log.failure("ring {me}: cannot write the neighbour log {path}", f, me=self.me.short(), path=path))

    def _log_candidates(self) -> list[Peer]:
        record = self.neighbour_log.read(self.me.node_id)
        if record is None:
            return []
        candidates = record.rejoin_candidates(self.wall_clock(), self.config.neighbour_log_max_age)
        if not candidates:
            log.info(
                "ring {me}: the neighbour log {path} is older than {max_age:g} s; not rejoining through it",
                me=self.me.short(),
                path=str(self.neighbour_log.path),
                max_age=self.config.neighbour_log_max_age,
            )
        return candidates
