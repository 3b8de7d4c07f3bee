"""A ``RingMember`` run in real time on a reactor: its steps, its ticks, and what it hands back.

``LiveMember`` is the loop ``tests/support/ring_sim.py`` runs on a simulated
timeline, on the injected reactor instead:

* each input (an envelope, a caller's lookup/put/get, a join, a leave) is one
  *step*: the core is called with ``reactor.seconds()`` and the actions it returns
  are performed at once;
* ``tick(now)`` runs at ``member.next_deadline(now)``: exactly one pending
  ``callLater``, moved earlier when a step brings the deadline forward, never
  later (a tick that comes early finds nothing due and reschedules);
* ``Transmit`` goes to ``send``; ``LookupDone``/``PutDone``/``GetDone`` fire the
  callers' Deferreds (a failed one with a ``RingError`` carrying the core's text);
  membership events go to every listener; after the step, ``after_step`` learns
  the member's chord state and whether a ``JoinFailed`` was among the actions.

An exception from the core, from ``send`` or from a listener is logged with
``log.failure`` and the loop goes on; a tick that raised waits ``tick_interval``
before the next, so a core stuck raising cannot spin the reactor.  Outcome
Deferreds fire last, when the step's bookkeeping is done, so a callback that
starts another operation re-enters a consistent loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cortex_rm.dht.chord_lookups import Joined, JoinFailed, LookupDone
from cortex_rm.dht.direct_messages import Direct, DirectReceived
from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.errors import RingError
from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.kv_operations import GetDone, PutDone
from cortex_rm.dht.member_table import MembershipEvent
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.ring_member import RingAction, RingMember, Transmit

log = Logger()

T = TypeVar("T")
MembershipListener = Callable[[MembershipEvent], None]


class LiveMember:
    """Drives one ``RingMember`` on ``reactor``: steps at the reactor's time, ticks at the member's deadlines."""

    def __init__(
        self,
        member: RingMember,
        reactor: IReactorTime,
        send: Callable[[Peer, Envelope], None],
        after_step: Callable[[RingState, bool], None],
    ) -> None:
        self.member = member
        self.reactor = reactor
        self._send = send
        self._after_step = after_step
        self.ticking = False
        self._tick_call: IDelayedCall | None = None
        self._not_before = 0.0
        self._lookups: dict[int, defer.Deferred[Peer]] = {}
        self._puts: dict[int, defer.Deferred[Record]] = {}
        self._gets: dict[int, defer.Deferred[Record | None]] = {}
        self._listeners: list[MembershipListener] = []
        self._direct: dict[str, Callable[[Peer, bytes], None]] = {}

    @property
    def name(self) -> str:
        return self.member.me.short()

    # ------------------------------------------------------------ control

    def start(self) -> None:
        """Start the member and its ticks."""
        self.ticking = True
        self.step("start", self.member.start)

    def halt(self, why: str) -> None:
        """No more ticks; every operation in flight fails with a RingError saying ``why``."""
        self.ticking = False
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        pending: list[defer.Deferred[Any]] = [*self._lookups.values(), *self._puts.values(), *self._gets.values()]
        self._lookups.clear()
        self._puts.clear()
        self._gets.clear()
        for d in pending:
            d.errback(RingError(f"ring member {self.name}: {why}"))

    def add_listener(self, listener: MembershipListener) -> None:
        """Call ``listener`` with every membership event."""
        self._listeners.append(listener)

    # ------------------------------------------------------------ inputs

    def add_direct_handler(self, channel: str, handler: Callable[[Peer, bytes], None]) -> None:
        """Call ``handler(sender, body)`` with every direct message on ``channel`` (one handler per channel)."""
        if channel in self._direct:
            raise ValueError(f"the direct channel {channel!r} has a handler already")
        self._direct[channel] = handler

    def send_direct(self, to: Peer, channel: str, body: bytes) -> None:
        """Send ``body`` straight to ``to`` on ``channel`` (at most once; loss is the caller's to time out)."""
        action = self.member.send_direct(to, Direct(channel, body))
        self._send(action.to, action.envelope)

    def receive(self, envelope: Envelope) -> None:
        """An envelope the transport authenticated."""
        self.step("receive", lambda now: self.member.receive(envelope, now))

    def lookup(self, key: int) -> defer.Deferred[Peer]:
        """The owner of ring point ``key``."""
        return self._operation("lookup", lambda now: self.member.lookup(key, now), self._lookups)

    def put(self, key: str, value: bytes) -> defer.Deferred[Record]:
        """The record stored for ``value`` under ``key``."""
        return self._operation("put", lambda now: self.member.put(key, value, now), self._puts)

    def get(self, key: str) -> defer.Deferred[Record | None]:
        """The record under ``key``, None when nobody has it."""
        return self._operation("get", lambda now: self.member.get(key, now), self._gets)

    def step(self, what: str, step: Callable[[float], list[RingAction]]) -> bool:
        """Run one core step at the reactor's time and perform its actions; False when the core raised."""
        now = self.reactor.seconds()
        try:
            actions = step(now)
        except Exception:
            log.failure("ring {me}: the ring core failed in {step}", me=self.name, step=what)
            if what == "tick":  # (a tick raising again at once would spin the reactor)
                self._not_before = now + self.member.config.tick_interval
            self._schedule_tick()
            return False
        self._perform(actions)
        return True

    # ------------------------------------------------------------ internals

    def _operation(
        self,
        kind: str,
        begin: Callable[[float], tuple[int, list[RingAction]]],
        pending: dict[int, defer.Deferred[T]],
    ) -> defer.Deferred[T]:
        d: defer.Deferred[T] = defer.Deferred()

        def step(now: float) -> list[RingAction]:
            op_id, actions = begin(now)
            pending[op_id] = d
            return actions

        if not self.step(kind, step) and not d.called:
            d.errback(RingError(f"{kind} failed: the ring core raised an error (logged)"))
        return d

    def _perform(self, actions: list[RingAction]) -> None:
        settled: list[tuple[defer.Deferred[Any], Any]] = []
        join_failed = False
        for action in actions:
            if isinstance(action, Transmit):
                try:
                    self._send(action.to, action.envelope)
                except Exception:
                    log.failure("ring {me}: cannot send to {to}", me=self.name, to=action.to.short())
            elif isinstance(action, LookupDone):
                lookup = self._lookups.pop(action.lookup_id, None)
                if lookup is not None:
                    error = f"the lookup of {format_id(action.key)} did not end (the ring is changing); try again"
                    settled.append((lookup, action.owner or RingError(error)))
            elif isinstance(action, (PutDone, GetDone)):
                table: dict[int, defer.Deferred[Any]] = self._puts if isinstance(action, PutDone) else self._gets
                operation = table.pop(action.op_id, None)
                if operation is not None:
                    settled.append((operation, RingError(action.error) if action.error else action.record))
            elif isinstance(action, JoinFailed):
                join_failed = True
            elif isinstance(action, DirectReceived):
                self._deliver_direct(action)
            elif not isinstance(action, Joined):  # (Joined: the chord state says it)
                self._announce(action)
        try:
            self._after_step(self.member.chord.state, join_failed)
        except Exception:
            log.failure("ring {me}: after_step failed", me=self.name)
        self._schedule_tick()
        for d, outcome in settled:
            if isinstance(outcome, Exception):
                d.errback(outcome)
            else:
                d.callback(outcome)

    def _deliver_direct(self, action: DirectReceived) -> None:
        handler = self._direct.get(action.message.channel)
        if handler is None:
            log.debug("ring {me}: a direct message on {channel!r}, which nothing here listens on", me=self.name,
                      channel=action.message.channel)  # fmt: skip
            return
        try:
            handler(action.sender, action.message.body)
        except Exception:
            log.failure("ring {me}: the handler of direct channel {channel} failed", me=self.name,
                        channel=action.message.channel)  # fmt: skip

    def _announce(self, event: MembershipEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.failure("ring {me}: a membership listener failed on {event}", me=self.name, event=event)

    def _tick(self) -> None:
        self._tick_call = None
        self.step("tick", self.member.tick)

    def _schedule_tick(self) -> None:
        """Make the one pending tick run at the member's next deadline (moved earlier, never later)."""
        if not self.ticking:
            return
        now = self.reactor.seconds()
        try:
            at = self.member.next_deadline(now)
        except Exception:
            log.failure("ring {me}: the ring core failed in next_deadline", me=self.name)
            at = now + self.member.config.tick_interval
        at = max(at, self._not_before)
        call = self._tick_call
        if call is not None and call.active():
            if call.getTime() <= at:
                return
            call.cancel()
        self._tick_call = self.reactor.callLater(max(0.0, at - now), self._tick)
