"""Tickets: what the NameNode signs so that a DataNode may act for a request it never saw.

WebHDFS sends data past the NameNode: CREATE, APPEND and OPEN are answered with a
redirect to a node, and the client repeats the request there.  The redirect's
query carries a ticket the NameNode signed (HDFS puts a delegation token and the
NameNode's address there instead); a node checks the signature with the key it
received over the mutual-TLS tracker channel (``BlockCommands.token_key``) and
refuses anything forged, expired, or for another operation or path.  The same
form serves as a block token: it lets a node read named blocks from another
node (re-replication, reads of remote blocks) or store a replica there (the
write pipeline).

A ticket is ``<payload>.<mac>``, both unpadded base64url: the payload is JSON
``{"op", "key", "exp", "nonce", ...claims}`` and the mac HMAC-SHA256 of the
payload's bytes under the key named by ``key``.  A ticket can be replayed until
it expires; the NameNode refuses a second commit of one write ticket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cortex_rm.fs.errors import InvalidToken
from cortex_rm.yarn.tokens import MasterKey

MAX_TICKET_CHARS = 16 * 1024  # a ticket names a few nodes and blocks; anything longer is refused unread
OPS = frozenset({"CREATE", "APPEND", "OPEN", "BLOCK", "VIEWLOGS"})


@dataclass(frozen=True)
class Ticket:
    """A verified ticket: its operation, expiry, nonce and the claims the NameNode signed."""

    op: str
    expires_ms: int
    nonce: str
    claims: Mapping[str, Any]

    def text(self, name: str) -> str:
        value = self.claims.get(name)
        if not isinstance(value, str):
            raise InvalidToken(f"the ticket has no {name!r}")
        return value

    def number(self, name: str) -> int:
        value = self.claims.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidToken(f"the ticket has no number {name!r}")
        return value

    def texts(self, name: str) -> tuple[str, ...]:
        value = self.claims.get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidToken(f"the ticket has no list {name!r}")
        return tuple(value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("the ticket is not base64url") from None


def _mac(key: MasterKey, payload: bytes) -> bytes:
    return hmac.new(key.secret, payload, hashlib.sha256).digest()


def sign(
    key: MasterKey,
    op: str,
    claims: Mapping[str, Any],
    expires_ms: int,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> str:
    """A ticket for ``op`` with ``claims``, valid until ``expires_ms`` (epoch milliseconds)."""
    if op not in OPS:
        raise ValueError(f"unknown ticket operation {op!r}")
    reserved = {"op", "key", "exp", "nonce"} & set(claims)
    if reserved:
        raise ValueError(f"claims may not use the reserved names {sorted(reserved)}")
    body = {"op": op, "key": key.key_id, "exp": expires_ms, "nonce": random_bytes(12).hex(), **claims}
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(key, payload))}"


def verify(keys: Mapping[int, MasterKey], text: str, op: str | frozenset[str], now_ms: int) -> Ticket:
    """The ticket ``text`` if one of ``keys`` signed it for ``op`` and it has not expired; else ``InvalidToken``."""
    if not text:
        raise InvalidToken("the request carries no ticket; ask the NameNode again for a redirect")
    if len(text) > MAX_TICKET_CHARS:
        raise InvalidToken(f"the ticket is longer than {MAX_TICKET_CHARS} characters")
    encoded_payload, dot, encoded_mac = text.partition(".")
    if not dot:
        raise InvalidToken("the ticket is malformed")
    payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: arrays nested past the stack
        raise InvalidToken("the ticket's payload is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidToken("the ticket's payload is not an object")
    key_id = body.get("key")
    key = keys.get(key_id) if isinstance(key_id, int) else None
    if key is None:
        raise InvalidToken("the ticket was signed with a key this node does not know (forged, or from an old RM)")
    if not hmac.compare_digest(_mac(key, payload), mac):
        raise InvalidToken("the ticket's signature does not match (forged or altered)")
    ops = frozenset({op}) if isinstance(op, str) else op
    if body.get("op") not in ops:
        raise InvalidToken(f"the ticket is for {body.get('op')!r}, not {'/'.join(sorted(ops))}")
    expires, nonce = body.get("exp"), body.get("nonce")
    if not isinstance(expires, int) or not isinstance(nonce, str):
        raise InvalidToken("the ticket lacks its expiry or nonce")
    if now_ms >= expires:
        raise InvalidToken(f"the ticket expired {now_ms - expires} ms ago; ask the NameNode again for a redirect")
    claims = {k: v for k, v in body.items() if k not in ("op", "key", "exp", "nonce")}
    return Ticket(body["op"], expires, nonce, claims)
