"""Errors of the internal RPC layer; each says which call and which peer where it can."""


class InternalRpcError(Exception):
    """Base of every error the internal RPC raises on purpose."""


class MalformedMessage(InternalRpcError, ValueError):
    """A decoded message breaks the protocol's rules (missing field, value out of range)."""


class TrackerUnavailable(InternalRpcError):
    """The RM's tracker could not be reached, or the connection broke during a call."""


class MalformedEnvelope(MalformedMessage):
    """A ring envelope that cannot be decoded, or that breaks the ring's bounds (``internal/ring_codec.py``).

    Raised on decode (the receiver closes that connection) and on encode (a ring
    core built a message the wire does not carry: a bug to fix, never sent).
    """


class CallRateExceeded(InternalRpcError):
    """A node made a call more often than the RM allows it; it may try again after ``retry_after_ms``."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
