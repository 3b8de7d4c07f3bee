"""What an entry node asks of an executor, what the executor answers, and what it signs.

An entry node sends ``InvokeFunction`` straight to each executor it chose (a ring
``Direct`` message; ``internal/event_codec.py`` is the wire), carrying the
registration as an RM signed it, so the executor needs no lookup of its own.  The
executor answers with a ``FunctionOutcome``: a status (OpenWhisk's distinction
between the developer's errors and the handler's own, plus ours), the handler's
JSON result, an error message, the activation's logs, and its signature over
``signed_bytes`` with its node key.  The signature binds the result to the
activation, the function's version and the executor, so neither the entry node
nor anyone on the way can swap a result, and a client can check it against the
executor's ring id (the SHA-1 of ``signer_key``).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass

from cortex_rm.dht.kv_messages import Record
from cortex_rm.events.caller_assertions import CallerAssertion

#: The ring's direct channel the events travel on.
EVENTS_CHANNEL = "events"

MAX_PAYLOAD_BYTES = 256 * 1024  # a trigger's JSON
MAX_RESULT_BYTES = 256 * 1024  # a handler's JSON result
MAX_LOG_BYTES = 64 * 1024  # an activation's stdout and stderr, kept from the start (the end is cut)
MAX_ERROR_CHARS = 4096
MAX_ACTIVATION_ID_CHARS = 64
SIGNED_DOMAIN = b"cortex-function-outcome\x00"


class OutcomeStatus(enum.Enum):
    """How an activation ended on one executor."""

    SUCCESS = "success"
    #: The handler raised, returned something that is not JSON, or its result is too large.
    APPLICATION_ERROR = "application_error"
    #: The code could not be fetched or loaded, or has no such handler: the developer's to fix.
    DEVELOPER_ERROR = "developer_error"
    TIMEOUT = "timeout"
    #: The sandbox used more than the function's memory and was killed.
    MEMORY_EXCEEDED = "memory_exceeded"
    #: The executor's queue is full: the entry node tries the next replica.
    BUSY = "busy"
    #: The executor would not run it (a registration not signed by an RM, a malformed request).
    REFUSED = "refused"
    #: The executor failed (its sandbox could not start...).
    INTERNAL_ERROR = "internal_error"
    #: Not an end: the executor has taken the activation (queued or running); sent at once, unsigned,
    #: so the entry node learns within a round trip that a chosen executor is alive.
    ACCEPTED = "accepted"

    @property
    def counts_as_answer(self) -> bool:
        """Whether this status is the function's own outcome (what a vote compares), not the node's trouble."""
        return self in (OutcomeStatus.SUCCESS, OutcomeStatus.APPLICATION_ERROR, OutcomeStatus.DEVELOPER_ERROR,
                        OutcomeStatus.TIMEOUT, OutcomeStatus.MEMORY_EXCEEDED)  # fmt: skip


@dataclass(frozen=True)
class InvokeFunction:
    """Entry node -> executor: run ``activation_id`` of the function ``function`` registers, on ``payload``.

    ``caller`` is the RM's assertion of who triggered it (``caller_assertions.py``); a scheduled
    tick has none and says which tick it fires in ``tick_ms``."""

    request_id: int
    activation_id: str
    function: Record
    payload: bytes
    timeout_ms: int
    caller: CallerAssertion | None = None
    tick_ms: int | None = None


@dataclass(frozen=True)
class FunctionOutcome:
    """Executor -> entry node: how the activation ended there (see the module docstring)."""

    request_id: int
    activation_id: str
    status: str
    result: bytes
    error: str
    logs: bytes
    duration_ms: int
    cold_start: bool
    signer_key: bytes = b""
    signature: bytes = b""

    @property
    def outcome_status(self) -> OutcomeStatus:
        """The status as ``OutcomeStatus`` (the codec admits only known values)."""
        return OutcomeStatus(self.status)


EventMessage = InvokeFunction | FunctionOutcome


@dataclass(frozen=True)
class SandboxResult:
    """How an activation ended in its sandbox on the executor (before the executor signs it)."""

    status: OutcomeStatus
    result: bytes
    error: str
    logs: bytes
    duration_ms: int
    cold_start: bool


def result_digest(result: bytes) -> str:
    return hashlib.sha256(result).hexdigest()


def signed_bytes(outcome: FunctionOutcome, function: str, version: int, executor: int) -> bytes:
    """What an executor signs for ``outcome``: the activation, the function's name and version, the
    executor's ring id, the status, the result's SHA-256 and the error (the logs are not covered)."""
    return executor_signed_bytes(
        outcome.activation_id, function, version, executor, outcome.status, result_digest(outcome.result), outcome.error
    )


def executor_signed_bytes(
    activation_id: str, function: str, version: int, executor: int, status: str, result_sha256: str, error: str
) -> bytes:
    """``signed_bytes`` from the fields an activation shows (a client has the result's digest, not its bytes)."""
    body = {
        "activation": activation_id,
        "function": function,
        "version": version,
        "executor": f"{executor:040x}",
        "status": status,
        "result": result_sha256,
        "error": error,
    }
    return SIGNED_DOMAIN + json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
