"""The entry side of events: a node that takes a trigger, chooses the executors, collects, votes and answers.

Any node is an entry node (an *introducer*: the seed's name).  For a trigger of
``name`` it:

1. reads the registration from the ring (``function_key(name)``; kept for
   ``registry_cache_s`` so warm triggers make no ring round trip) and checks that
   an RM signed it and that the caller may trigger it (the executors check it again,
   on the RM's assertion of the caller that ``caller_assertion`` gives this node);
2. looks up the owner of the key *without the parameters* (a Chord lookup, kept as
   long as the registration), and takes as executors the owner and the next
   ``replicas - 1`` live members after it, with ``spares`` more behind them; a
   member the ring holds DEAD or LEFT is skipped;
3. sends the parameters straight to each executor (``InvokeFunction``, a ring
   ``Direct`` message), and waits for each to accept (``ACCEPTED``, one round trip):
   an executor that is BUSY, refuses, or says nothing within ``accept_timeout_s``
   (a dead owner the lookup still named) is replaced by the next spare.  ``trigger``
   returns once every chosen executor accepted, or raises ``AllBusy`` (429) or
   ``NoExecutor`` (503) when none could;
4. checks each outcome's signature, feeds it to the activation's ``Verdict``
   (``first`` or ``vote``) and, once decided or when the function's timeout (plus
   ``slack_s``) has passed, ends the activation: the winner's result and logs, who
   agreed, dissented or never answered, all signed by this node's key.

Activations are kept in an ``ActivationStore``; ``wait`` fires when one ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import key_id
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.swim_messages import live_peers
from cortex_rm.events.activation_signing import activation_signed_bytes
from cortex_rm.events.activations import Activation, ActivationStore, ExecutorReply, StoreFull, new_activation_id
from cortex_rm.events.caller_assertions import CallerAssertion
from cortex_rm.events.errors import RETRY_AFTER_S, AllBusy, FunctionNotFound, NoExecutor, NotAllowed
from cortex_rm.events.functions import FunctionSpec, InvalidFunction, function_key
from cortex_rm.events.outcomes import FunctionOutcome, InvokeFunction, OutcomeStatus
from cortex_rm.events.signatures import Verifier, sign, spki_of
from cortex_rm.events.verdicts import Decision, Verdict

log = Logger()

DEFAULT_ACCEPT_TIMEOUT_S = 2.0
DEFAULT_SLACK_S = 2.0
DEFAULT_SPARES = 2
DEFAULT_REGISTRY_CACHE_S = 5.0
MISS_RETRIES = 3
MISS_RETRY_S = 0.5


class GatewayRing(Protocol):
    """What the gateway needs of the ring service."""

    me: Peer

    def lookup(self, key: int) -> defer.Deferred[Peer]: ...

    def get(self, key: str) -> defer.Deferred[Record | None]: ...

    def view(self) -> RingView: ...

    def send_direct(self, to: Peer, channel: str, body: bytes) -> None: ...


@dataclass
class _Request:
    """One executor's part of one activation."""

    request_id: int
    executor: Peer
    pending: _Pending
    accepted: bool = False
    timer: IDelayedCall | None = None


@dataclass
class _Pending:
    """A running activation: its verdict, its executors, its spares, its waiters."""

    activation: Activation
    spec: FunctionSpec
    record: Record
    payload: bytes
    verdict: Verdict
    spares: list[Peer]
    requests: dict[int, _Request] = field(default_factory=dict)
    accepting: defer.Deferred[None] = field(default_factory=defer.Deferred)
    busy: int = 0
    deadline: IDelayedCall | None = None
    solo: bool = False  # adaptive replication sent it to the trusted owner alone
    caller: CallerAssertion | None = None  # the RM's word on the caller, for the executors


@dataclass
class _Known:
    record: Record
    spec: FunctionSpec
    owner: Peer
    until: float


class EventGateway:
    """Triggers taken on this node (see the module docstring)."""

    def __init__(
        self,
        ring: GatewayRing,
        key: ec.EllipticCurvePrivateKey,
        resource_managers: Callable[[], frozenset[int]],
        reactor: IReactorTime,
        send: Callable[[Peer, InvokeFunction], None],
        *,
        store: ActivationStore | None = None,
        accept_timeout_s: float = DEFAULT_ACCEPT_TIMEOUT_S,
        slack_s: float = DEFAULT_SLACK_S,
        spares: int = DEFAULT_SPARES,
        registry_cache_s: float = DEFAULT_REGISTRY_CACHE_S,
        verifier: Verifier | None = None,
        plan: Callable[[FunctionSpec, list[int]], list[int]] | None = None,
        agreed: Callable[[FunctionSpec, Decision], None] | None = None,
        caller_assertion: Callable[[str], CallerAssertion | None] | None = None,
    ) -> None:
        self.ring, self.key, self.spki = ring, key, spki_of(key)
        self.resource_managers = resource_managers
        self.reactor = reactor
        self.send = send
        self.store = store or ActivationStore()
        self.accept_timeout_s, self.slack_s, self.spares, self.registry_cache_s = accept_timeout_s, slack_s, spares, registry_cache_s
        self.verifier = verifier or Verifier()
        self.plan = plan
        self.agreed = agreed
        self.caller_assertion = caller_assertion or (lambda user: None)
        self._ids = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._known: dict[str, _Known] = {}
        self._waiters: dict[str, list[defer.Deferred[Activation]]] = {}
        self._running: dict[str, _Pending] = {}  # by activation id

    @property
    def ring_id(self) -> int:
        return self.ring.me.node_id

    def now_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    # ------------------------------------------------------------ the API

    async def trigger(self, name: str, payload: bytes, caller: str | None, *, tick_ms: int | None = None) -> Activation:
        """Start an activation of ``name`` (see the module docstring); it is running, every executor has accepted."""
        known = await self._registration(name)
        spec = known.spec
        if caller is not None and not spec.may_trigger(caller):
            raise NotAllowed(f"{caller} may not trigger {name}: its owner {spec.owner} has not granted it")
        executors = self._executors(known.owner, spec.replicas + self.spares)
        if not executors:
            raise NoExecutor(f"no live member can run {name} now; try again when the ring has members")
        chosen, spares = executors[: spec.replicas], executors[spec.replicas :]
        if self.plan is not None and spec.mode == "vote":
            keep = set(self.plan(spec, [p.node_id for p in chosen]))
            spares = [p for p in chosen if p.node_id not in keep] + spares
            chosen = [p for p in chosen if p.node_id in keep]
        now = self.now_ms()
        activation = Activation(
            new_activation_id(self.ring_id), spec.name, spec.version, caller or "", spec.owner, spec.mode, len(chosen),
            self.ring_id, now, tick_ms=tick_ms,
        )  # fmt: skip
        try:
            self.store.add(activation, now, len(payload))  # its payload is kept until it ends
        except StoreFull as e:
            raise AllBusy(str(e)) from None
        pending = _Pending(activation, spec, known.record, payload, Verdict(spec.mode, tuple(p.node_id for p in chosen)), spares)
        pending.solo = len(chosen) < spec.replicas
        pending.caller = self.caller_assertion(caller) if caller is not None else None
        pending.deadline = self.reactor.callLater(spec.limits.timeout_s + self.slack_s, self._close, pending)
        self._running[activation.activation_id] = pending
        for peer in chosen:
            self._ask(pending, peer)
        await pending.accepting
        return activation

    def stop(self) -> None:
        """End every running activation (this node is stopping): its waiters hear it at once."""
        for pending in list(self._running.values()):
            self._end(pending, pending.verdict.close())

    def wait(self, activation: Activation) -> defer.Deferred[Activation]:
        """Fires with ``activation`` once it has ended (at once if it has)."""
        if activation.ended:
            return defer.succeed(activation)
        d: defer.Deferred[Activation] = defer.Deferred()
        self._waiters.setdefault(activation.activation_id, []).append(d)
        return d

    def unwait(self, activation: Activation, d: defer.Deferred[Activation]) -> None:
        """``d`` (from ``wait``) is no longer wanted (a long poll that timed out)."""
        waiters = self._waiters.get(activation.activation_id, [])
        if d in waiters:
            waiters.remove(d)
        if not waiters:
            self._waiters.pop(activation.activation_id, None)

    def get(self, activation_id: str) -> Activation | None:
        """The activation ``activation_id`` taken here, running or kept (None: unknown or forgotten)."""
        return self.store.get(activation_id, self.now_ms())

    def readable(self, user: str, function: str | None, limit: int) -> list[Activation]:
        """The newest activations taken here that ``user`` may read (``ActivationStore.readable``)."""
        return self.store.readable(user, function, limit, self.now_ms())

    def outcome(self, sender: Peer, outcome: FunctionOutcome) -> None:
        """An executor's answer (the ring authenticated ``sender``)."""
        request = self._requests.get(outcome.request_id)
        if request is None or request.executor.node_id != sender.node_id:
            return
        pending = request.pending
        if outcome.activation_id != pending.activation.activation_id:
            return
        status = outcome.outcome_status
        if status is OutcomeStatus.ACCEPTED:
            if not request.accepted:
                request.accepted = True
                self._cancel(request.timer)
                self._settle_accepting(pending)
            return
        self._forget(request)
        if not status.counts_as_answer:  # busy, refused, its own trouble: the next spare (no signature needed)
            pending.busy += status is OutcomeStatus.BUSY
            self._replace(pending, request, outcome.error or status.value)
            return
        error = self.verifier.outcome_error(outcome, sender.node_id, pending.spec.name, pending.spec.version)
        if error is not None:
            log.warn("events: {sender}'s outcome for {id} is refused: {error}", sender=sender.short(),
                     id=outcome.activation_id, error=error)  # fmt: skip
            self._failed(pending, request, f"its outcome is not valid ({error})")
            return
        request.accepted = True
        self._settle_accepting(pending)
        decision = pending.verdict.add(sender.node_id, outcome)
        if decision is not None:
            self._end(pending, decision)

    # ------------------------------------------------------------ choosing executors

    async def _registration(self, name: str) -> _Known:
        now = self.reactor.seconds()
        known = self._known.get(name)
        if known is not None and known.until > now:
            return known
        key = function_key(name)
        record = await self.ring.get(key)
        for _ in range(MISS_RETRIES):  # a registration a moment old, while the ring moves keys (a member rejoined)
            if record is not None:
                break
            await task.deferLater(self.reactor, MISS_RETRY_S, lambda: None)
            record = await self.ring.get(key)
        if record is None:
            raise FunctionNotFound(f"no function is registered as {name}")
        try:
            spec = self.verifier.registration(record, self.resource_managers())
        except InvalidFunction as e:
            raise FunctionNotFound(f"{name} has no valid registration ({e})") from None
        if spec.deleted:
            raise FunctionNotFound(f"{name} was deleted")
        owner = await self.ring.lookup(key_id(key))
        known = _Known(record, spec, owner, now + self.registry_cache_s)
        if len(self._known) > 4096:
            self._known.clear()
        self._known[name] = known
        return known

    def executors_of(self, key: str, count: int) -> list[Peer]:
        """The live members that run ``key``'s functions in this node's view: the first at or after its point, and on."""
        return self._executors(Peer(key_id(key), ""), count)

    def _executors(self, owner: Peer, count: int) -> list[Peer]:
        """The owner and the live members after it on the ring, ``count`` at most (the owner skipped if not live)."""
        live = live_peers(self.ring.view().members, self.ring.me)
        ring = sorted(live)
        if not ring:
            return []
        start = next((i for i, node in enumerate(ring) if node >= owner.node_id), 0)
        ordered = ring[start:] + ring[:start]
        return [live[node] for node in ordered[:count]]

    # ------------------------------------------------------------ asking

    def _ask(self, pending: _Pending, peer: Peer) -> None:
        request = _Request(next(self._ids), peer, pending)
        self._requests[request.request_id] = request
        pending.requests[request.request_id] = request
        request.timer = self.reactor.callLater(self.accept_timeout_s, self._silent, request)
        timeout_ms = int(pending.spec.limits.timeout_ms + self.slack_s * 500)
        activation, caller = pending.activation, pending.caller
        if caller is not None:  # the newest this node holds: a spare asked minutes later gets one still valid
            caller = self.caller_assertion(caller.user) or caller
        tick_ms = activation.tick_ms if caller is None else None
        message = InvokeFunction(request.request_id, activation.activation_id, pending.record, pending.payload, timeout_ms,
                                 caller, tick_ms)  # fmt: skip
        try:
            self.send(peer, message)
        except Exception as e:  # noqa: BLE001 - a link that cannot be used: the next spare
            self.reactor.callLater(0, self._replace, pending, request, f"cannot send to it ({e})")

    def _silent(self, request: _Request) -> None:
        request.timer = None
        if not request.accepted and request.request_id in self._requests:
            self._forget(request)
            self._replace(request.pending, request, f"no answer within {self.accept_timeout_s:g} s")

    def _replace(self, pending: _Pending, request: _Request, why: str) -> None:
        """``request``'s executor will not run it: the next spare is asked instead."""
        self._forget(request)
        if pending.activation.ended:
            return
        old = request.executor.node_id
        if pending.spares:
            spare = pending.spares.pop(0)
            log.info("events: {id}: {old} will not run it ({why}); asking {new}", id=pending.activation.activation_id,
                     old=request.executor.short(), why=why, new=spare.short())  # fmt: skip
            pending.verdict.replace_executor(old, spare.node_id)
            self._ask(pending, spare)
            while pending.solo and len(pending.verdict.executors) < pending.spec.replicas and pending.spares:
                extra = pending.spares.pop(0)  # the trusted owner could not: every replica runs it after all
                pending.verdict.add_executor(extra.node_id)
                self._ask(pending, extra)
            pending.solo = False
            return
        self._failed(pending, request, why)

    def _failed(self, pending: _Pending, request: _Request, why: str) -> None:
        decision = pending.verdict.fail(request.executor.node_id, why)
        self._settle_accepting(pending)
        if decision is not None:
            self._end(pending, decision)

    def _settle_accepting(self, pending: _Pending) -> None:
        """``trigger`` returns once no chosen executor is still to accept (or raises when none did)."""
        if pending.accepting.called:
            return
        if any(not r.accepted for r in pending.requests.values()):
            return
        accepted = any(r.accepted for r in pending.requests.values()) or bool(pending.verdict.answers)
        if accepted:
            pending.accepting.callback(None)
            return
        self._abandon(pending)
        name = pending.spec.name
        if pending.busy:
            pending.accepting.errback(AllBusy(f"every node that runs {name} is busy; retry after {RETRY_AFTER_S} s"))
        else:
            reasons = "; ".join(pending.verdict.failures.values())
            pending.accepting.errback(NoExecutor(f"no node could run {name} ({reasons})"))

    # ------------------------------------------------------------ ending

    def _close(self, pending: _Pending) -> None:
        pending.deadline = None
        if not pending.activation.ended:
            self._end(pending, pending.verdict.close())

    def _end(self, pending: _Pending, decision: Decision) -> None:
        activation = pending.activation
        if activation.ended:
            return
        for request in list(pending.requests.values()):
            self._forget(request)
        self._cancel(pending.deadline)
        self._running.pop(activation.activation_id, None)
        outcome = decision.outcome
        activation.status = decision.status
        activation.end_ms = self.now_ms()
        activation.error = outcome.error if outcome is not None else decision.error
        if outcome is not None:
            activation.result, activation.logs, activation.cold_start = outcome.result, outcome.logs, outcome.cold_start
        agreed = set(decision.agreed)
        activation.replies = tuple(
            ExecutorReply(node, answer, node in agreed) for node, answer in pending.verdict.answers.items()
        )
        activation.dissenters, activation.missing = decision.dissenters, decision.missing
        activation.signer_key = self.spki
        activation.signature = sign(self.key, activation_signed_bytes(activation.to_json(signed=False)))
        self.store.ended(activation)
        if self.agreed is not None and pending.spec.mode == "vote":
            self.agreed(pending.spec, decision)
        if decision.dissenters:
            log.warn("events: {id} of {name}: {n} replica(s) disagreed with the majority: {who}",
                     id=activation.activation_id, name=pending.spec.name, n=len(decision.dissenters),
                     who=", ".join(f"{d:040x}"[:12] for d in decision.dissenters))  # fmt: skip
        if not pending.accepting.called:
            pending.accepting.callback(None)
        for d in self._waiters.pop(activation.activation_id, []):
            if not d.called:
                d.callback(activation)

    def _abandon(self, pending: _Pending) -> None:
        """Nobody runs it: the activation goes (the trigger is refused, not recorded)."""
        self._cancel(pending.deadline)
        self._running.pop(pending.activation.activation_id, None)
        pending.activation.status, pending.activation.end_ms = OutcomeStatus.INTERNAL_ERROR.value, self.now_ms()
        self.store.ended(pending.activation)

    def _forget(self, request: _Request) -> None:
        self._requests.pop(request.request_id, None)
        request.pending.requests.pop(request.request_id, None)
        self._cancel(request.timer)
        request.timer = None

    @staticmethod
    def _cancel(call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()
