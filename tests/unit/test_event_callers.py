"""Executors check who triggers a function on the RM's word (``events/caller_assertions.py``), even when the
entry node is bypassed: a ring member sends ``InvokeFunction`` straight to an executor, on the in-process ring
of ``test_event_routing.py`` (real gateway, executor, codec and signatures; a fake clock)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer

from cortex_rm.dht.ring_math import key_id as point_of
from cortex_rm.dht.ring_trust import key_id
from cortex_rm.events import caller_assertions
from cortex_rm.events.caller_assertions import LIFETIME_MS, SKEW_MS, AssertionIssuer, CallerAssertion, time_error
from cortex_rm.events.errors import NoExecutor
from cortex_rm.events.functions import FunctionLimits, function_key
from cortex_rm.events.outcomes import FunctionOutcome, InvokeFunction, OutcomeStatus
from cortex_rm.events.schedules import tick_payload
from cortex_rm.events.signatures import Verifier, sign, spki_of
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.event_codec import decode_event, encode_event
from tests.unit.test_event_routing import RM_ID, RM_KEY, Member, Ring, make_ring, register, run, spec, trigger

MINUTE_MS = 60_000


def two_members(**kw: Any) -> tuple[Ring, Member, Member]:
    """A ring of two, ``f`` (alice's, granted to bob; ``kw`` changes it) registered: (ring, mallory, executor)."""
    ring = make_ring(2, {"f": lambda e: {"ran": e}, "tick": lambda e: "ticked"})
    register(ring, spec("f", grants=frozenset({"bob"}), **kw))
    executor = ring.members[ring.owner(point_of(function_key("f"))).node_id]
    mallory = next(m for m in ring.members.values() if m is not executor)
    ring.clock.advance(10 * 60)  # a wall clock past the epoch's first ticks
    return ring, mallory, executor


def send_directly(ring: Ring, sender: Member, executor: Member, request: InvokeFunction) -> FunctionOutcome:
    """``sender`` bypasses every entry node: ``request`` straight to ``executor``; the executor's last word."""
    heard: list[FunctionOutcome] = []
    sender.gateway.outcome = lambda peer, outcome: heard.append(outcome)  # type: ignore[method-assign]
    ring.deliver(sender.peer, executor.peer, request)
    for _ in range(2000):
        if heard and heard[-1].outcome_status is not OutcomeStatus.ACCEPTED:
            break
        ring.clock.advance(0.001)
    assert heard and heard[-1].outcome_status is not OutcomeStatus.ACCEPTED
    return heard[-1]


def invoke(ring: Ring, name: str, payload: bytes = b'{"x": 1}', **fields: Any) -> InvokeFunction:
    return InvokeFunction(1, "mallory-1", ring.records[function_key(name)], payload, 60_000, **fields)


def forged(user: str, audience: int, key: ec.EllipticCurvePrivateKey, now_ms: int, **changes: Any) -> CallerAssertion:
    """An assertion signed by ``key`` over its own bytes, ``changes`` applied before signing."""
    unsigned = CallerAssertion(user, audience, now_ms, now_ms + LIFETIME_MS, b"n" * 16, spki_of(key))
    unsigned = replace(unsigned, **changes)
    return replace(unsigned, signature=sign(key, caller_assertions.signed_bytes(unsigned)))


def now_ms(ring: Ring) -> int:
    return int(ring.clock.seconds() * 1000)


def test_the_rms_assertion_for_the_sender_runs_the_function_for_its_owner_and_grantees() -> None:
    """The control: an RM-signed assertion for alice (the owner) or bob (granted), issued to the sender."""
    ring, mallory, executor = two_members()
    for user in ("alice", "bob"):
        caller = ring.issuer.issue(user, mallory.peer.node_id)
        outcome = send_directly(ring, mallory, executor, invoke(ring, "f", caller=caller))
        assert outcome.outcome_status is OutcomeStatus.SUCCESS and json.loads(outcome.result) == {"ran": {"x": 1}}
    assert executor.sandboxes.calls == 2


def refused(ring: Ring, mallory: Member, executor: Member, request: InvokeFunction, why: str) -> None:
    calls = executor.sandboxes.calls
    outcome = send_directly(ring, mallory, executor, request)
    assert outcome.outcome_status is OutcomeStatus.REFUSED
    assert "the caller may not trigger it" in outcome.error and why in outcome.error, outcome.error
    assert executor.sandboxes.calls == calls  # nothing ran


def test_an_invoke_without_an_assertion_is_refused() -> None:
    ring, mallory, executor = two_members()
    refused(ring, mallory, executor, invoke(ring, "f"), "no caller assertion")


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("signed by a member", "not signed by a ResourceManager"),
        ("the RM's key, another signature", "signature does not match"),
        ("user changed after signing", "signature does not match"),
        ("expired", "expired"),
        ("issued in the future", "issued in the future"),
        ("issued to another entry node", "issued to another entry node"),
        ("a user without a grant", "eve is not granted it by its owner alice"),
    ],
)
def test_a_forged_expired_misdirected_or_ungranted_assertion_is_refused_by_the_executor(case: str, why: str) -> None:
    """mallory, a ring member, sends alice's function straight to its executor with every assertion she could
    make, find or replay: each is REFUSED and nothing runs."""
    ring, mallory, executor = two_members()
    me, now = mallory.peer.node_id, now_ms(ring)
    good = ring.issuer.issue("alice", me)
    caller = {
        "signed by a member": lambda: forged("alice", me, mallory.key, now),
        "the RM's key, another signature": lambda: replace(
            forged("alice", me, mallory.key, now), signer_key=spki_of(RM_KEY)
        ),
        "user changed after signing": lambda: replace(good, user="bob"),
        "expired": lambda: forged("alice", me, RM_KEY, now - LIFETIME_MS - SKEW_MS - 1000),
        "issued in the future": lambda: forged("alice", me, RM_KEY, now + SKEW_MS + 1000),
        # mallory once ran a trigger of alice's as an executor, and replays what its entry node sent her
        "issued to another entry node": lambda: ring.issuer.issue("alice", me ^ 1),
        "a user without a grant": lambda: ring.issuer.issue("eve", me),
    }[case]()
    refused(ring, mallory, executor, invoke(ring, "f", caller=caller), why)


def test_a_tick_without_a_caller_runs_only_a_scheduled_function_on_its_own_tick_and_event() -> None:
    """No assertion: only a tick of a function with a schedule, at one of its ticks, not in the future, with the
    tick's own event, runs; anything else is REFUSED."""
    ring, mallory, executor = two_members(schedule="every 1m")
    tick = now_ms(ring) // MINUTE_MS * MINUTE_MS
    good = invoke(ring, "f", tick_payload("every 1m", tick), tick_ms=tick)
    assert send_directly(ring, mallory, executor, good).outcome_status is OutcomeStatus.SUCCESS
    refused(ring, mallory, executor, replace(good, payload=b'{"tick": 0, "evil": 1}'), "the tick's own")
    refused(ring, mallory, executor, replace(good, tick_ms=tick + 1, payload=tick_payload("every 1m", tick + 1)),
            "not one of its schedule's")  # fmt: skip
    later = tick + 5 * MINUTE_MS
    early = replace(good, tick_ms=later, payload=tick_payload("every 1m", later))
    refused(ring, mallory, executor, early, "in the future")
    register(ring, spec("f", grants=frozenset({"bob"})), version=2)  # no schedule any more
    unscheduled = invoke(ring, "f", tick_payload("every 1m", tick), tick_ms=tick)
    refused(ring, mallory, executor, unscheduled, "without a schedule")


def test_the_gateway_sends_its_callers_assertion_and_a_ticks_mark() -> None:
    """Through the entry node: a user's trigger carries the RM's assertion for that node, a schedule's tick its tick."""
    ring, entry, executor = two_members(schedule="every 1m")
    assert trigger(ring, entry, "f", {"y": 2}, caller="bob").status == "success"
    tick = now_ms(ring) // MINUTE_MS * MINUTE_MS
    d = defer.ensureDeferred(entry.gateway.trigger("f", tick_payload("every 1m", tick), None, tick_ms=tick))
    run(ring, d)
    activation = run(ring, entry.gateway.wait(d.result))
    assert activation.status == "success" and activation.tick_ms == tick


def test_an_entry_node_without_an_assertion_for_its_user_is_refused_by_every_executor() -> None:
    """An entry node that has no assertion for the user (it did not ask the RM): no executor runs the trigger."""
    ring, entry, executor = two_members()
    for member in ring.members.values():
        member.gateway.caller_assertion = lambda user: None
    with pytest.raises(NoExecutor, match="no caller assertion"):
        trigger(ring, entry, "f", None)
    assert all(m.sandboxes.calls == 0 for m in ring.members.values())


def test_a_spare_asked_after_the_first_assertion_expired_gets_the_newest() -> None:
    """The owner says nothing for longer than an assertion lives: the spare is sent the entry node's newest
    assertion for the user, not the expired one the trigger started with."""
    ring = make_ring(3, {"f": lambda e: "ok"})
    register(ring, spec("f", limits=FunctionLimits(timeout_s=900)))  # it may run longer than an assertion lives
    owner = ring.owner(point_of(function_key("f")))
    ring.dead.add(owner.node_id)
    entry = next(m for m in ring.members.values() if m.peer.node_id != owner.node_id)
    entry.gateway.accept_timeout_s = (LIFETIME_MS + SKEW_MS) / 1000 + 10
    started = defer.ensureDeferred(entry.gateway.trigger("f", b"null", "alice"))
    run(ring, started, seconds=entry.gateway.accept_timeout_s + 5)
    activation = run(ring, entry.gateway.wait(started.result))
    assert activation.status == "success" and activation.replies[0].node != owner.node_id


# ------------------------------------------------------------ the assertion itself


def test_the_issuer_signs_with_its_ring_key_and_reuses_an_assertion_for_a_minute() -> None:
    clock = [1_000_000]
    issuer = AssertionIssuer(RM_KEY, lambda: clock[0], random_bytes=lambda n: b"\x07" * n)
    first = issuer.issue("alice", 5)
    assert (first.user, first.audience, first.issued_ms) == ("alice", 5, 1_000_000)
    assert first.expires_ms == 1_000_000 + LIFETIME_MS
    assert key_id(first.signer_key) == RM_ID and first.nonce == b"\x07" * 16
    assert Verifier().caller_error(first, 5, frozenset({RM_ID}), clock[0]) is None
    clock[0] += MINUTE_MS - 1
    assert issuer.issue("alice", 5) is first
    assert issuer.issue("alice", 6) is not first and issuer.issue("bob", 5) is not first
    clock[0] += 1
    renewed = issuer.issue("alice", 5)
    assert renewed is not first and renewed.issued_ms == clock[0]


def test_the_signed_bytes_cover_every_field_but_key_and_signature_under_a_domain_tag() -> None:
    a = CallerAssertion("alice", 5, 1, 2, b"n", b"k", b"s")
    signed = caller_assertions.signed_bytes(a)
    assert signed.startswith(b"cortex-caller-assertion\x00")
    assert caller_assertions.signed_bytes(replace(a, signer_key=b"K", signature=b"S")) == signed
    for change in ({"user": "bob"}, {"audience": 6}, {"issued_ms": 0}, {"expires_ms": 3}, {"nonce": b"m"}):
        assert caller_assertions.signed_bytes(replace(a, **change)) != signed  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("issued", "expires", "now", "error"),
    [
        (0, LIFETIME_MS, 0, None),
        (0, LIFETIME_MS, LIFETIME_MS + SKEW_MS - 1, None),  # expired by at most the skew: still taken
        (0, LIFETIME_MS, LIFETIME_MS + SKEW_MS, "expired"),
        (SKEW_MS, SKEW_MS + 1, 0, None),
        (SKEW_MS + 1, SKEW_MS + 2, 0, "future"),
        (10, 10, 10, "lifetime"),
        (0, 15 * MINUTE_MS + 1, 0, "lifetime"),
    ],
)
def test_an_assertions_time_allows_the_skew_and_no_more(issued: int, expires: int, now: int, error: str | None) -> None:
    a = CallerAssertion("alice", 5, issued, expires, b"n")
    found = time_error(a, now)
    assert (found is None) if error is None else (found is not None and error in found)


def test_verifications_are_cached() -> None:
    """A reused assertion costs one signature check per verifier, whatever the number of triggers."""
    verifier = Verifier(max_cached=8)
    a = AssertionIssuer(RM_KEY, lambda: 0).issue("alice", 5)
    assert verifier.caller_error(a, 5, frozenset({RM_ID}), 0) is None
    verifier._keys.clear()  # a second check would need the key again: it does not
    verifier._keys[a.signer_key] = None
    assert verifier.caller_error(a, 5, frozenset({RM_ID}), 0) is None
    assert Verifier().caller_error(a, 5, frozenset(), 0) == "it is not signed by a ResourceManager"
    assert Verifier().caller_error(a, 4, frozenset({RM_ID}), 0) == "it was issued to another entry node"


def test_an_assertion_survives_its_codec_and_a_bad_one_is_malformed() -> None:
    """An InvokeFunction's caller and tick travel; a caller's fields out of their bounds are MalformedEnvelope."""
    ring, mallory, _ = two_members()
    good = invoke(ring, "f", caller=ring.issuer.issue("alice", mallory.peer.node_id), tick_ms=7)
    assert decode_event(encode_event(good)) == good
    for bad, field in (({"user": ""}, "user"), ({"user": "u" * 257}, "user"), ({"nonce": b"n" * 17}, "nonce"),
                       ({"audience": -1}, "ring id"), ({"signature": b"s" * 161}, "signature")):  # fmt: skip
        assert good.caller is not None
        with pytest.raises(MalformedEnvelope, match=field):
            encode_event(replace(good, caller=replace(good.caller, **bad)))  # type: ignore[arg-type]
    with pytest.raises(MalformedEnvelope, match="tick_ms"):
        encode_event(replace(good, tick_ms=-1))
