"""Triggers through entry nodes and executors on an in-process ring with a fake clock.

The ring is a dict of members whose direct messages are delivered by the clock (with
knobs: a dead member drops what it is sent); each executor's sandbox is an in-process
table of Python handlers taking simulated time (the LXC sandboxes have their own
tests).  Everything else is the real gateway, executor, verdict and signatures; the RM's
caller assertions are issued with the RM's key on the fake clock, as the RM does when it
authenticates a user for an entry node.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import key_id as point_of
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.ring_trust import key_id, record_message
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.events.activations import Activation, ActivationStore
from cortex_rm.events.activation_signing import ActivationNotVerified, activation_signed_bytes, verify_activation
from cortex_rm.events.caller_assertions import AssertionIssuer
from cortex_rm.events.errors import AllBusy, FunctionNotFound, NotAllowed
from cortex_rm.events.functions import FunctionLimits, FunctionSpec, function_key
from cortex_rm.events.outcomes import EventMessage, InvokeFunction, OutcomeStatus, SandboxResult
from cortex_rm.events.signatures import Verifier, sign, spki_of
from cortex_rm.internal.event_codec import decode_event, encode_event
from cortex_rm.roles.event_executor import EventExecutor
from cortex_rm.roles.event_gateway import EventGateway

RM_KEY = ec.generate_private_key(ec.SECP256R1())
RM_ID = key_id(spki_of(RM_KEY))


def Result(status: OutcomeStatus, result: bytes, error: str = "", logs: bytes = b"") -> SandboxResult:  # noqa: N802
    return SandboxResult(status, result, error, logs, 1, False)


class InlineSandboxes:
    """Handlers by function name, each taking ``seconds`` of the clock; at most ``limit`` at once."""

    def __init__(self, clock: Clock, handlers: dict[str, Callable[[Any], Any]], seconds: float = 0.01, limit: int = 4) -> None:
        self.clock, self.handlers, self.seconds, self.limit = clock, handlers, seconds, limit
        self.running = 0
        self.calls = 0

    def busy(self, spec: FunctionSpec) -> bool:
        return self.running >= self.limit

    def refusal(self, spec: FunctionSpec) -> str | None:
        return None

    def invoke(self, spec: FunctionSpec, code: Path, payload: bytes, activation_id: str) -> defer.Deferred[Any]:
        self.running += 1
        self.calls += 1
        d: defer.Deferred[Any] = defer.Deferred()
        handler = self.handlers[spec.name]

        def done() -> None:
            self.running -= 1
            try:
                value = handler(json.loads(payload))
            except Exception as e:  # noqa: BLE001
                d.callback(Result(OutcomeStatus.APPLICATION_ERROR, b"", f"{type(e).__name__}: {e}"))
                return
            if value is NEVER:
                return
            d.callback(Result(OutcomeStatus.SUCCESS, json.dumps(value).encode(), logs=b"ran\n"))

        self.clock.callLater(self.seconds, done)
        return d


NEVER = object()


@dataclass
class Member:
    peer: Peer
    key: ec.EllipticCurvePrivateKey
    gateway: EventGateway
    executor: EventExecutor
    sandboxes: InlineSandboxes


@dataclass
class Ring:
    clock: Clock
    issuer: AssertionIssuer
    records: dict[str, Record] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)

    def deliver(self, sender: Peer, to: Peer, message: EventMessage) -> None:
        body = encode_event(message)  # through the real codec
        if to.node_id in self.dead:
            return

        def arrive() -> None:
            member = self.members[to.node_id]
            decoded = decode_event(body)
            if isinstance(decoded, InvokeFunction):
                member.executor.invoke(sender, decoded)
            else:
                member.gateway.outcome(sender, decoded)

        self.clock.callLater(0.001, arrive)

    def owner(self, point: int) -> Peer:
        ids = sorted(self.members)
        return self.members[next((i for i in ids if i >= point), ids[0])].peer


class MemberRing:
    """One member's view of the ring (``GatewayRing``)."""

    def __init__(self, ring: Ring, me: Peer) -> None:
        self.ring, self.me = ring, me

    def lookup(self, key: int) -> defer.Deferred[Peer]:
        return defer.succeed(self.ring.owner(key))

    def get(self, key: str) -> defer.Deferred[Record | None]:
        return defer.succeed(self.ring.records.get(key))

    def view(self) -> RingView:
        members = tuple(
            (m.peer, MemberStatus.ALIVE, 1) for m in self.ring.members.values()
        )
        return RingView(self.me, RingState.MEMBER, 1, None, (), 0, members, 0)

    def send_direct(self, to: Peer, channel: str, body: bytes) -> None:
        raise AssertionError("the tests deliver through Ring.deliver")


def make_ring(n: int, handlers: dict[str, Callable[[Any], Any]], faulty: int | None = None, limit: int = 4) -> Ring:
    clock = Clock()
    ring = Ring(clock, AssertionIssuer(RM_KEY, lambda: int(clock.seconds() * 1000)))
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(n)]
    for i, key in enumerate(sorted(keys, key=lambda k: key_id(spki_of(k)))):
        peer = Peer(key_id(spki_of(key)), f"127.0.0.1:{7000 + i}")
        sandboxes = InlineSandboxes(clock, handlers, limit=limit)

        async def code(spec: FunctionSpec, record: Record) -> Path:
            return Path("/nonexistent/code.py")

        def send_outcome(to: Peer, message: Any, me: Peer = peer) -> None:
            ring.deliver(me, to, message)

        def send_invoke(to: Peer, message: Any, me: Peer = peer) -> None:
            ring.deliver(me, to, message)

        rms = lambda: frozenset({RM_ID})  # noqa: E731
        executor = EventExecutor(
            key, peer.node_id, rms, lambda s, r: defer.ensureDeferred(code(s, r)), sandboxes, send_outcome, clock,
            queue_length=2, fault="wrong-results" if i == faulty else "",
        )
        def caller_assertion(user: str, me: Peer = peer) -> Any:
            return ring.issuer.issue(user, me.node_id)  # what the RM told this entry node when it authenticated her

        gateway = EventGateway(MemberRing(ring, peer), key, rms, clock, send_invoke, caller_assertion=caller_assertion)
        ring.members[peer.node_id] = Member(peer, key, gateway, executor, sandboxes)
    return ring


def register(ring: Ring, spec: FunctionSpec, version: int = 1) -> None:
    key = function_key(spec.name)
    value = spec.encode()
    ring.records[key] = Record(key, value, version, RM_ID, spki_of(RM_KEY), sign(RM_KEY, record_message(key, value, version)))


def spec(name: str, **kw: Any) -> FunctionSpec:
    return FunctionSpec(name, "alice", 1, f"/user/alice/{name}.py", 10, 1, **kw)


def run(ring: Ring, d: defer.Deferred[Any], seconds: float = 120) -> Any:
    """Advance the clock until ``d`` fires; its result (or raise its failure)."""
    steps = 0
    while not d.called and steps < seconds * 1000:
        ring.clock.advance(0.001)
        steps += 1
    assert d.called, "never fired"
    return d.result if not isinstance(d.result, Exception) else d.result


def trigger(ring: Ring, entry: Member, name: str, payload: object, caller: str = "alice") -> Activation:
    started = defer.ensureDeferred(entry.gateway.trigger(name, json.dumps(payload).encode(), caller))
    results: list[Any] = []
    started.addBoth(results.append)
    run(ring, started)
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    activation: Activation = results[0]
    waited = entry.gateway.wait(activation)
    return run(ring, waited)  # type: ignore[no-any-return]


def test_a_trigger_runs_on_the_owner_and_returns_its_signed_result() -> None:
    """first, 1 replica: the owner of the name's key runs it; the executor's and entry node's signatures check."""
    ring = make_ring(4, {"double": lambda e: e["x"] * 2})
    register(ring, spec("double"))
    entry = list(ring.members.values())[0]
    activation = trigger(ring, entry, "double", {"x": 21})
    assert activation.status == "success" and json.loads(activation.result) == 42
    owner = ring.owner(point_of(function_key("double")))
    assert [r.node for r in activation.replies] == [owner.node_id]
    assert ring.members[owner.node_id].sandboxes.calls == 1
    verifier = Verifier()
    reply = activation.replies[0]
    assert verifier.outcome_error(reply.outcome, reply.node, "double", 1) is None
    assert verifier.verify(activation.signer_key, activation_signed_bytes(activation.to_json(signed=False)), activation.signature)
    assert key_id(activation.signer_key) == entry.peer.node_id


def test_vote_answers_with_the_majority_and_names_the_lying_node() -> None:
    """vote, 3 replicas, one executor returns wrong (signed) results: the majority wins, the liar is the dissenter."""
    ring = make_ring(5, {"sum": lambda e: sum(e)}, faulty=None)
    owner = ring.owner(point_of(function_key("sum")))
    ids = sorted(ring.members)
    liar = ids[(ids.index(owner.node_id) + 1) % len(ids)]
    ring.members[liar].executor.fault = "wrong-results"
    register(ring, spec("sum", replicas=3, mode="vote"))
    activation = trigger(ring, list(ring.members.values())[2], "sum", [1, 2, 3])
    assert activation.status == "success" and json.loads(activation.result) == 6
    assert activation.dissenters == (liar,)
    assert len([r for r in activation.replies if r.agreed]) == 2
    verify_activation(json.loads(json.dumps(activation.to_json())), ring.members)  # what a client checks
    forged = json.loads(json.dumps(activation.to_json()))
    forged["result"] = 7
    with pytest.raises(ActivationNotVerified):
        verify_activation(forged, ring.members)


def test_a_dead_owner_is_replaced_by_its_successor() -> None:
    """The owner the lookup names does not answer: after the accept timeout the next member runs it."""
    ring = make_ring(3, {"id": lambda e: e})
    register(ring, spec("id"))
    owner = ring.owner(point_of(function_key("id")))
    ring.dead.add(owner.node_id)
    entry = next(m for m in ring.members.values() if m.peer.node_id != owner.node_id)
    activation = trigger(ring, entry, "id", "hello")
    assert activation.status == "success" and json.loads(activation.result) == "hello"
    assert activation.replies[0].node != owner.node_id


def test_all_executors_busy_is_refused_with_retry_after() -> None:
    """Every sandbox busy and every queue full: the trigger raises AllBusy (the REST API's 429)."""
    ring = make_ring(1, {"slow": lambda e: NEVER}, limit=1)
    register(ring, spec("slow", limits=FunctionLimits(timeout_s=30)))
    entry = list(ring.members.values())[0]
    for _ in range(3):  # one running, two queued
        d = defer.ensureDeferred(entry.gateway.trigger("slow", b"1", "alice"))
        run(ring, d)
    refused = defer.ensureDeferred(entry.gateway.trigger("slow", b"1", "alice"))
    failures: list[Any] = []
    refused.addErrback(failures.append)
    run(ring, refused)
    assert failures and failures[0].check(AllBusy)


def test_running_activations_are_bounded_per_user_and_in_bytes_as_all_busy() -> None:
    """The entry node's bounds on running activations: one user past hers, or events past the node's bytes, are refused
    with AllBusy (the REST API's 429 + Retry-After) naming the bound, while the executors have room; the payloads'
    bytes are what is counted, and an ended activation frees its room."""
    ring = make_ring(1, {"slow": lambda e: e if e == "quick" else NEVER})
    register(ring, spec("slow", limits=FunctionLimits(timeout_s=30), grants=frozenset({"bob"})))
    entry = list(ring.members.values())[0]
    entry.gateway.store = ActivationStore(max_running_per_user=1, max_running_bytes=100)

    def refusal(payload: bytes, caller: str) -> str:
        refused = defer.ensureDeferred(entry.gateway.trigger("slow", payload, caller))
        failures: list[Any] = []
        refused.addErrback(failures.append)
        run(ring, refused)
        assert failures and failures[0].check(AllBusy), failures
        return str(failures[0].value)

    run(ring, defer.ensureDeferred(entry.gateway.trigger("slow", b'"' + b"x" * 58 + b'"', "alice")))
    assert "alice has 1 activations running on this node, the most one user may (1)" in refusal(b"1", "alice")
    assert "hold 60 bytes of events; with 41 more" in refusal(b'"' + b"y" * 39 + b'"', "bob")
    assert trigger(ring, entry, "slow", "quick", caller="bob").status == "success"  # 7 bytes fit
    assert entry.gateway.store.running == 1 and entry.gateway.store.running_bytes == 60


def test_a_handler_that_never_returns_ends_as_timeout() -> None:
    ring = make_ring(1, {"hang": lambda e: NEVER})
    register(ring, spec("hang", limits=FunctionLimits(timeout_s=5)))
    activation = trigger(ring, list(ring.members.values())[0], "hang", None)
    assert activation.status == "timeout" and activation.end_ms is not None and activation.end_ms - activation.start_ms >= 5000


def test_only_the_owner_and_granted_users_may_trigger() -> None:
    ring = make_ring(1, {"f": lambda e: 1})
    register(ring, spec("f", grants=frozenset({"bob"})))
    entry = list(ring.members.values())[0]
    assert trigger(ring, entry, "f", None, caller="bob").status == "success"
    with pytest.raises(NotAllowed):
        trigger(ring, entry, "f", None, caller="eve")
    with pytest.raises(FunctionNotFound):
        trigger(ring, entry, "nobody", None)


def test_a_registration_not_written_by_an_rm_is_not_run() -> None:
    """A record signed by a member that is not an RM is refused by the entry node (and would be by executors)."""
    ring = make_ring(1, {"f": lambda e: 1})
    rogue = ec.generate_private_key(ec.SECP256R1())
    key, value = function_key("f"), spec("f").encode()
    ring.records[key] = Record(key, value, 1, key_id(spki_of(rogue)), spki_of(rogue), sign(rogue, record_message(key, value, 1)))
    with pytest.raises(FunctionNotFound, match="not written by a ResourceManager"):
        trigger(ring, list(ring.members.values())[0], "f", None)


def test_an_application_error_is_the_activation_s_error() -> None:
    ring = make_ring(1, {"boom": lambda e: 1 / 0})
    register(ring, spec("boom"))
    activation = trigger(ring, list(ring.members.values())[0], "boom", None)
    assert activation.status == "application_error" and "ZeroDivisionError" in activation.error


def test_a_solo_run_whose_trusted_owner_is_dead_is_replicated_after_all() -> None:
    """Adaptive replication sent a vote to its trusted owner alone; the owner is dead: every replica runs it, so no
    untrusted spare answers alone."""
    ring = make_ring(5, {"sum": lambda e: sum(e)})
    for member in ring.members.values():
        member.gateway.plan = lambda spec, ids: list(ids[:1])
    register(ring, spec("sum", replicas=3, mode="vote"))
    owner = ring.owner(point_of(function_key("sum")))
    ring.dead.add(owner.node_id)
    entry = next(m for m in ring.members.values() if m.peer.node_id != owner.node_id)
    activation = trigger(ring, entry, "sum", [1, 2])
    assert activation.status == "success" and json.loads(activation.result) == 3
    assert len(activation.replies) == 3 and owner.node_id not in [r.node for r in activation.replies]


def test_a_node_that_refuses_is_replaced_at_once() -> None:
    """An executor that refuses (here: the function asks more memory than it gives) is replaced by the next spare
    without waiting for the accept timeout."""
    ring = make_ring(3, {"f": lambda e: "ok"})
    register(ring, spec("f"))
    owner = ring.members[ring.owner(point_of(function_key("f"))).node_id]
    owner.sandboxes.refusal = lambda spec: "no room"  # type: ignore[method-assign]
    activation = trigger(ring, owner, "f", None)
    assert activation.status == "success" and activation.replies[0].node != owner.peer.node_id
    assert activation.end_ms is not None and activation.end_ms - activation.start_ms < 1000
