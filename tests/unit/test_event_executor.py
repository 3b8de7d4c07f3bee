"""One executor on a fake clock: how what befell an activation's code becomes its outcome.

The executor is the real one (signatures, caller checks); its code source is a Deferred
the test fires, its sandboxes the in-process handlers of ``test_event_routing``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_trust import key_id, record_message
from cortex_rm.events.caller_assertions import AssertionIssuer
from cortex_rm.events.functions import FunctionSpec, function_key
from cortex_rm.events.outcomes import FunctionOutcome, InvokeFunction, OutcomeStatus
from cortex_rm.events.signatures import sign, spki_of
from cortex_rm.roles.event_executor import EventExecutor
from cortex_rm.roles.function_code import CodeChanged, CodeUnavailable
from tests.unit.test_event_routing import RM_ID, RM_KEY, InlineSandboxes, spec

ENTRY = Peer(7, "127.0.0.1:7000")


class Rig:
    """An executor whose code comes from ``self.code`` (fired by the test) and whose answers are kept."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.issuer = AssertionIssuer(RM_KEY, lambda: int(self.clock.seconds() * 1000))
        self.code: defer.Deferred[Path] = defer.Deferred()
        self.answers: list[FunctionOutcome] = []
        key = ec.generate_private_key(ec.SECP256R1())
        self.executor = EventExecutor(
            key, key_id(spki_of(key)), lambda: frozenset({RM_ID}), lambda s, r: self.code,
            InlineSandboxes(self.clock, {"f": lambda e: e}), lambda to, outcome: self.answers.append(outcome), self.clock,
        )  # fmt: skip

    def invoke(self, function: FunctionSpec) -> None:
        key, value = function_key(function.name), function.encode()
        record = Record(key, value, 1, RM_ID, spki_of(RM_KEY), sign(RM_KEY, record_message(key, value, 1)))
        caller = self.issuer.issue("alice", ENTRY.node_id)
        self.executor.invoke(ENTRY, InvokeFunction(1, "a-1", record, b"1", 12_000, caller))

    def outcome(self) -> FunctionOutcome:
        """The one signed answer after ACCEPTED."""
        assert [a.status for a in self.answers[:1]] == [OutcomeStatus.ACCEPTED.value]
        assert len(self.answers) == 2
        return self.answers[1]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (CodeChanged("the file is not the registered one"), OutcomeStatus.DEVELOPER_ERROR),
        (CodeUnavailable("a block changed after a restart of its DataNode"), OutcomeStatus.INTERNAL_ERROR),
    ],
)
def test_changed_code_is_the_developer_s_error_by_its_type_not_its_words(error: Exception, status: OutcomeStatus) -> None:
    """A CodeChanged is DEVELOPER_ERROR whatever it says; any other CodeUnavailable is INTERNAL_ERROR, even one whose
    message happens to say "changed after"."""
    rig = Rig()
    rig.invoke(spec("f"))
    rig.code.errback(error)
    outcome = rig.outcome()
    assert outcome.status == status.value and outcome.error == str(error)


@pytest.mark.expect_logged_errors("failed on this node")
def test_an_executor_failure_s_duration_is_measured_on_the_reactor_clock() -> None:
    """The executor's own failure, 2.5 s of the (fake) clock after it started: the outcome says 2500 ms."""
    rig = Rig()
    rig.invoke(spec("f"))
    rig.clock.advance(2.5)
    rig.code.errback(RuntimeError("the disk went away"))
    outcome = rig.outcome()
    assert outcome.status == OutcomeStatus.INTERNAL_ERROR.value and "the disk went away" in outcome.error
    assert outcome.duration_ms == 2500
