"""Events' messages to and from bytes: one ``EventMessage`` (``cortex.thrift``) per ring ``Direct`` body.

An entry node and an executor speak on the ring's ``events`` channel
(``events/outcomes.py``); each body is one ``EventMessage`` union in Thrift's strict
binary protocol and nothing after it.  Every field is checked on the way in (and,
as the ring codec does, on the way out, so a sender learns at once what the
receiver would refuse): ids and strings bounded, the payload, result and logs within
their limits, a status the receiver knows, a caller assertion's fields (not its
signature: the executor checks that).  Anything else raises ``MalformedEnvelope``
naming the field.
"""

from __future__ import annotations

from typing import Any

from cortex_rm.events import caller_assertions, outcomes, request_proofs
from cortex_rm.events.caller_assertions import CallerAssertion, CallerKey
from cortex_rm.events.outcomes import EventMessage, FunctionOutcome, InvokeFunction, OutcomeStatus
from cortex_rm.events.request_proofs import RequestProof, SignedRequest
from cortex_rm.internal import thrift_fields as fields
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.direct_bodies import UnionBody
from cortex_rm.internal.ring_codec import _RECORD, MAX_KEY_BYTES, MAX_SIGNATURE_BYTES


class _Status(fields.Kind):
    """An ``OutcomeStatus`` value, as its string."""

    def from_wire(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or value not in _STATUSES:
            raise MalformedEnvelope(f"{field}: unknown status {str(value)[:40]!r}")
        return value


_STATUSES = frozenset(s.value for s in OutcomeStatus)
_COUNT = fields.Count()
_ACTIVATION = ("activation_id", fields.Text(outcomes.MAX_ACTIVATION_ID_CHARS, allow_empty=False))

#: The RM's caller assertion: in an InvokeFunction, and in callerKey's answer (``tracker_event_calls.py``).
CALLER_ASSERTION = fields.Shape(CallerAssertion, ttypes.CallerAssertion, (
    ("user", fields.Text(caller_assertions.MAX_USER_CHARS, allow_empty=False)),
    ("audience", fields.RingId()),
    ("issued_ms", _COUNT),
    ("expires_ms", _COUNT),
    ("nonce", fields.Bytes(caller_assertions.NONCE_BYTES)),
    ("signer_key", fields.Bytes(MAX_KEY_BYTES)),
    ("signature", fields.Bytes(MAX_SIGNATURE_BYTES)),
))  # fmt: skip

#: callerKey's answer (``tracker_event_calls.py``).
CALLER_KEY = fields.Shape(CallerKey, ttypes.CallerKey, (
    ("assertion", CALLER_ASSERTION),
    ("entry_key", fields.Bytes(32)),
))  # fmt: skip

_SHAPES: dict[type, tuple[str, fields.Shape]] = {
    InvokeFunction: (
        "invoke",
        fields.Shape(InvokeFunction, ttypes.InvokeFunction, (
            ("request_id", _COUNT),
            _ACTIVATION,
            ("function", _RECORD),
            ("payload", fields.Bytes(outcomes.MAX_PAYLOAD_BYTES)),
            ("timeout_ms", _COUNT),
            ("caller", fields.Maybe(CALLER_ASSERTION)),
            ("tick_ms", fields.Maybe(_COUNT)),
        )),
    ),
    FunctionOutcome: (
        "outcome",
        fields.Shape(FunctionOutcome, ttypes.FunctionOutcome, (
            ("request_id", _COUNT),
            _ACTIVATION,
            ("status", _Status()),
            ("result", fields.Bytes(outcomes.MAX_RESULT_BYTES)),
            ("error", fields.Text(outcomes.MAX_ERROR_CHARS)),
            ("logs", fields.Bytes(outcomes.MAX_LOG_BYTES)),
            ("duration_ms", _COUNT),
            ("cold_start", fields.Bool()),
            ("signer_key", fields.Bytes(MAX_KEY_BYTES)),
            ("signature", fields.Bytes(MAX_SIGNATURE_BYTES)),
        )),
    ),
}  # fmt: skip


_BODY: UnionBody[EventMessage] = UnionBody(ttypes.EventMessage, _SHAPES, "events")
_from_thrift = _BODY.from_thrift
#: The body of the ``Direct`` message carrying a message; MalformedEnvelope if the receiver would refuse it.
encode_event = _BODY.encode
#: The message one events body carries, checked; MalformedEnvelope for anything else.
decode_event = _BODY.decode


_HEX = frozenset("0123456789abcdef")


class _SignedRequestKind(fields.Kind):
    """A user's signed request (``events/request_proofs.py``) as callerKey's ``CallerProof``."""

    _identifier, _node, _count = fields.Bytes(request_proofs.MAX_IDENTIFIER_BYTES), fields.RingId(), fields.Count()
    _method, _host, _target = fields.Text(16, allow_empty=False), fields.Text(300), fields.Text(8192, allow_empty=False)
    _digest, _nonce, _signature = fields.Text(64, allow_empty=False), fields.Text(32, allow_empty=False), fields.Bytes(32)

    def to_wire(self, value: Any) -> Any:
        proof = value.proof
        return ttypes.CallerProof(
            proof.identifier, self._node.to_wire(proof.node), value.method, value.host, value.target,
            value.body_sha256, proof.time_ms, proof.nonce, proof.signature,
        )  # fmt: skip

    def from_wire(self, value: Any, field: str) -> SignedRequest:
        if not isinstance(value, ttypes.CallerProof):
            raise MalformedEnvelope(f"{field} must be a CallerProof, not {type(value).__name__}")
        identifier = self._identifier.from_wire(value.token_identifier, f"{field}.token_identifier")
        digest = self._digest.from_wire(value.body_sha256, f"{field}.body_sha256")
        nonce = self._nonce.from_wire(value.nonce, f"{field}.nonce")
        signature = self._signature.from_wire(value.signature, f"{field}.signature")
        if not identifier or len(digest) != 64 or not _HEX.issuperset(digest) or len(signature) != 32:
            raise MalformedEnvelope(f"{field}: a token identifier, a 64-hex body digest and a 32-byte signature")
        if len(nonce) != request_proofs.NONCE_HEX or not _HEX.issuperset(nonce):
            raise MalformedEnvelope(f"{field}.nonce must be {request_proofs.NONCE_HEX} lowercase hex digits")
        proof = RequestProof(identifier, self._node.from_wire(value.node, f"{field}.node"),
                             self._count.from_wire(value.time_ms, f"{field}.time_ms"), nonce, signature)  # fmt: skip
        return SignedRequest(
            self._method.from_wire(value.method, f"{field}.method"), self._host.from_wire(value.host, f"{field}.host"),
            self._target.from_wire(value.target, f"{field}.target"), digest, proof,
        )  # fmt: skip


#: callerKey's question (``tracker_event_calls.py``).
CALLER_PROOF = _SignedRequestKind()
