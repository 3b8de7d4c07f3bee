"""The NameNode's signed tickets: what a node accepts and what it refuses."""

from __future__ import annotations

import pytest

from cortex_rm.fs import tickets
from cortex_rm.fs.errors import InvalidToken
from cortex_rm.yarn.tokens import MasterKey

KEY = MasterKey(7, b"k" * 20)
OTHER = MasterKey(8, b"o" * 20)
KEYS = {KEY.key_id: KEY}


def _ticket(op: str = "OPEN", expires_ms: int = 10_000, **claims: object) -> str:
    return tickets.sign(KEY, op, {"path": "/a", **claims}, expires_ms, random_bytes=lambda n: b"\x01" * n)


def test_a_ticket_verifies_with_its_key_and_gives_back_its_claims() -> None:
    """A valid ticket yields its operation, expiry, nonce and claims."""
    ticket = tickets.verify(KEYS, _ticket(pipeline=["h:1", "h:2"]), "OPEN", now_ms=9_999)
    assert (ticket.op, ticket.expires_ms, ticket.nonce) == ("OPEN", 10_000, "01" * 12)
    assert ticket.text("path") == "/a"
    assert ticket.texts("pipeline") == ("h:1", "h:2")


def test_an_expired_ticket_is_refused() -> None:
    """At or after its expiry a ticket is InvalidToken, with advice to ask the NameNode again."""
    with pytest.raises(InvalidToken, match="expired .* ask the NameNode again"):
        tickets.verify(KEYS, _ticket(), "OPEN", now_ms=10_000)


def test_a_ticket_for_another_operation_is_refused() -> None:
    """A read ticket does not let anyone write."""
    with pytest.raises(InvalidToken, match="is for 'OPEN', not CREATE"):
        tickets.verify(KEYS, _ticket(), "CREATE", now_ms=0)


def test_a_ticket_signed_with_an_unknown_key_is_refused() -> None:
    """A ticket of another RM (another key id) is not accepted."""
    text = tickets.sign(OTHER, "OPEN", {}, 10_000)
    with pytest.raises(InvalidToken, match="key this node does not know"):
        tickets.verify(KEYS, text, "OPEN", now_ms=0)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(".", "x", 1),  # no separator
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # altered mac
        lambda t: tickets._b64(b'{"op":"OPEN","key":7,"exp":99999,"nonce":"n","path":"/etc"}') + "." + t.split(".")[1],
        lambda t: "!!!." + t.split(".")[1],  # not base64url
        lambda t: tickets._b64(b"[1,2]") + "." + t.split(".")[1],  # not an object
        lambda t: "",
        lambda t: "a" * (tickets.MAX_TICKET_CHARS + 1),
    ],
)
def test_forged_or_broken_tickets_are_refused(mangle: object) -> None:
    """Any change to a ticket's payload or signature, or garbage, is InvalidToken (never another error)."""
    assert callable(mangle)
    with pytest.raises(InvalidToken):
        tickets.verify(KEYS, mangle(_ticket()), "OPEN", now_ms=0)


def test_claims_of_the_wrong_type_are_refused_when_read() -> None:
    """A claim read as text, number or list must have that type."""
    ticket = tickets.verify(KEYS, _ticket(n="x", items=[1]), "OPEN", now_ms=0)
    with pytest.raises(InvalidToken):
        ticket.number("n")
    with pytest.raises(InvalidToken):
        ticket.texts("items")
    with pytest.raises(InvalidToken):
        ticket.text("absent")


def test_reserved_claim_names_and_unknown_operations_cannot_be_signed() -> None:
    """Signing refuses claims that would shadow the envelope, and operations tickets do not serve."""
    with pytest.raises(ValueError):
        tickets.sign(KEY, "OPEN", {"exp": 1}, 10)
    with pytest.raises(ValueError):
        tickets.sign(KEY, "DELETE", {}, 10)
