"""Signed requests: how a user proves who she is to a node without handing it her credential.

A user's credential is an RM delegation token: an identifier (who, until when, a
sequence number) and a password, HMAC of the identifier under the RM's key.  Whoever
holds the pair *is* the user everywhere (RPC, REST, the file system).  Nodes are
contributors' machines, so a user never shows them the password.  Instead each request
to a node carries, in ``Authorization``::

    Cortex-HMAC-SHA256 token=<identifier, base64url>, node=<ring id, 40 hex>, time=<ms>,
                       nonce=<32 hex>, signature=<64 hex>

``signature`` is HMAC-SHA256, under the *entry key*, of ``string_to_sign``: the scheme,
the method, the ``Host`` the request was sent to, the request target as sent (path and
query), the time, the nonce and the SHA-256 of the body, one per line.  The entry key is
HMAC-SHA256 of the node's ring id and the hour (``window``) under the token's password
(``entry_key``), so it differs per node and per hour:

* the user computes it from her password; she learns a node's ring id from its 401
  (``WWW-Authenticate``) — a node may lie about it, but the proof also names the
  ``Host`` she sent it to, and every server takes only proofs addressed to its own web
  address, so a proof a node made her sign for another ring id is good nowhere else;
* the node asks the RM for its own (``NodeTracker.callerKey``, on its mutually
  authenticated tracker connection), showing one of her requests to it (``CallerProof``):
  the RM derives the key for the ring id of that connection, checks the proof with it,
  and that the proof is addressed to the web address the node registered.  A node thus
  gets a user's key only for an hour in which she sent it a request, and only its own.

A node learns the identifier and its own entry key for the hour: enough to check the
user's requests to itself (and, being hostile, to act for her at itself, where she sent
them, for that hour), nothing it could use at another node or at the RM.  A proof is
accepted within ``SKEW_MS`` of its time, once (``SeenNonces``, with a quota per token).
The RM, which holds the passwords, checks proofs addressed to it the same way, and still
takes the plain token header (it is the one that issued it).

This module is sans-IO: the client signs with it, the nodes and the RM check with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import re
import secrets
from dataclasses import dataclass

SCHEME = "Cortex-HMAC-SHA256"
#: A proof's time may differ from the checking node's clock by this much (either way).
SKEW_MS = 5 * 60_000
NONCE_HEX = 32
MAX_IDENTIFIER_BYTES = 1024
#: The response header a node names itself in (every events answer; the 401's challenge too).
RING_ID_HEADER = "Cortex-Ring-Id"
KEY_DOMAIN = b"cortex-entry-key/v2\x00"
#: Entry keys change every hour (a proof's hour is its time's).
WINDOW_MS = 3_600_000
#: Nonces one token may hold in a node's table at once (the table holds many tokens').
NONCES_PER_TOKEN = 20_000

_FIELD = re.compile(r"\s*([a-z]+)=([A-Za-z0-9_\-]+)\s*")
_FIELDS = ("token", "node", "time", "nonce", "signature")


class ProofError(Exception):
    """A proof that proves nothing; the message says why (the caller answers 401 with it)."""


@dataclass(frozen=True)
class RequestProof:
    """What a request's ``Authorization`` header says."""

    identifier: bytes
    node: int
    time_ms: int
    nonce: str
    signature: bytes


@dataclass(frozen=True)
class SignedRequest:
    """A request as the server saw it, with the proof it carries (what ``check`` needs): its body only as
    the SHA-256 hex digest (what a node shows the RM in ``callerKey``), and the client's address."""

    method: str
    host: str
    target: str
    body_sha256: str
    proof: RequestProof
    origin: str = ""  # the client's IP, as the server saw it (for per-client bounds)

    @classmethod
    def of(cls, method: str, host: str, target: str, body: bytes, proof: RequestProof, origin: str = "") -> SignedRequest:
        return cls(method, host, target, hashlib.sha256(body).hexdigest(), proof, origin)


def window(time_ms: int) -> int:
    """The hour a proof made at ``time_ms`` belongs to (its entry key's)."""
    return time_ms // WINDOW_MS


def entry_key(password: bytes, node: int, hour: int) -> bytes:
    """The key a token's requests to the node with ring id ``node`` are signed with in hour ``hour``."""
    return hmac.new(password, KEY_DOMAIN + node.to_bytes(20, "big") + hour.to_bytes(8, "big"), hashlib.sha256).digest()


def string_to_sign(method: str, host: str, target: str, time_ms: int, nonce: str, body_sha256: str) -> bytes:
    lines = (SCHEME, method.upper(), host.lower(), target, str(time_ms), nonce, body_sha256)
    return "\n".join(lines).encode("utf-8")


def sign(
    identifier: bytes, password: bytes, node: int, method: str, host: str, target: str, body: bytes, time_ms: int,
    nonce: str | None = None,
) -> str:  # fmt: skip
    """The ``Authorization`` header value for one request to ``node`` at ``host`` (its ``Host``: the web address
    ``host:port`` the request is sent to), a fresh nonce unless given."""
    nonce = nonce if nonce is not None else secrets.token_hex(NONCE_HEX // 2)
    digest = hashlib.sha256(body).hexdigest()
    to_sign = string_to_sign(method, host, target, time_ms, nonce, digest)
    mac = hmac.new(entry_key(password, node, window(time_ms)), to_sign, hashlib.sha256)
    token = base64.urlsafe_b64encode(identifier).rstrip(b"=").decode("ascii")
    return f"{SCHEME} token={token}, node={node:040x}, time={time_ms}, nonce={nonce}, signature={mac.hexdigest()}"


def parse(header: str) -> RequestProof:
    """The proof an ``Authorization`` header carries; ProofError if it is not one, or malformed."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme != SCHEME:
        raise ProofError(f"Authorization: expected the {SCHEME} scheme, not {scheme[:40]!r}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        match = _FIELD.fullmatch(part)
        if match is None or match[1] in fields:
            raise ProofError(f"Authorization: a malformed or repeated field {part.strip()[:40]!r}")
        fields[match[1]] = match[2]
    missing = [name for name in _FIELDS if name not in fields]
    if missing or len(fields) != len(_FIELDS):
        raise ProofError(f"Authorization: {SCHEME} needs exactly the fields {', '.join(_FIELDS)}")
    try:
        token = fields["token"]
        identifier = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        node = int(fields["node"], 16) if len(fields["node"]) == 40 else -1
        time_ms = int(fields["time"])
        signature = bytes.fromhex(fields["signature"])
    except (ValueError, binascii.Error):
        raise ProofError("Authorization: token must be base64url, node 40 hex digits, time ms, signature hex") from None
    nonce = fields["nonce"]
    if not 0 < len(identifier) <= MAX_IDENTIFIER_BYTES or node < 0 or len(signature) != 32:
        raise ProofError("Authorization: token must be base64url, node 40 hex digits, signature 64 hex digits")
    if len(nonce) != NONCE_HEX or not all(c in "0123456789abcdef" for c in nonce):
        raise ProofError(f"Authorization: nonce must be {NONCE_HEX} lowercase hex digits")
    return RequestProof(identifier, node, time_ms, nonce, signature)


def check(request: SignedRequest, key: bytes, now_ms: int, skew_ms: int = SKEW_MS) -> None:
    """That ``request`` was signed with ``key`` (the entry key of its node and hour) and its time is within
    ``skew_ms`` of ``now_ms`` (ProofError saying why not; the nonce is ``SeenNonces``'s to check, the host the
    checker's: its own web address)."""
    proof = request.proof
    to_sign = string_to_sign(request.method, request.host, request.target, proof.time_ms, proof.nonce, request.body_sha256)
    expected = hmac.new(key, to_sign, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, proof.signature):
        raise ProofError(
            "Authorization: the signature does not match this request (signed for another method, host, path,"
            " query or body, or with another token's password)"
        )
    if abs(now_ms - proof.time_ms) > skew_ms:
        raise ProofError(
            f"Authorization: the request was signed at {proof.time_ms} ms, {abs(now_ms - proof.time_ms) // 1000} s"
            f" from this node's clock; sign each request when you send it (and check your clock)"
        )


class NonceCapacityExceeded(Exception):
    """Too many proofs within one skew window to remember; the caller should retry shortly (503)."""


class SeenNonces:
    """The nonces of the proofs accepted in the last ``2 * skew_ms``, so each is accepted once.

    A proof is only valid within ``skew_ms`` of its time, so its nonce is remembered until
    ``time + skew_ms`` (on the checker's clock) and then forgotten.  At most ``capacity``
    are kept, and at most ``per_token`` of one token's (``token``: its identifier), so one
    user cannot fill the table for everyone; beyond either, ``add`` raises
    NonceCapacityExceeded.
    """

    def __init__(self, capacity: int = 200_000, skew_ms: int = SKEW_MS, per_token: int = NONCES_PER_TOKEN) -> None:
        self.capacity, self.skew_ms, self.per_token = capacity, skew_ms, per_token
        self._until: dict[str, tuple[int, bytes]] = {}
        self._heap: list[tuple[int, str]] = []
        self._per_token: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._until)

    def add(self, nonce: str, time_ms: int, now_ms: int, token: bytes = b"") -> bool:
        """Remember ``nonce`` of ``token``'s proof made at ``time_ms``; False if it was seen already."""
        while self._heap and self._heap[0][0] < now_ms:
            _, old = heapq.heappop(self._heap)
            gone = self._until.pop(old, None)
            if gone is not None:
                left = self._per_token[gone[1]] - 1
                if left:
                    self._per_token[gone[1]] = left
                else:
                    del self._per_token[gone[1]]
        if nonce in self._until:
            return False
        if len(self._until) >= self.capacity or self._per_token.get(token, 0) >= self.per_token:
            raise NonceCapacityExceeded(
                f"this node has accepted too many signed requests in the last {2 * self.skew_ms // 60_000} minutes"
                " (from this token, or in all); retry shortly"
            )
        until = max(time_ms, now_ms) + self.skew_ms
        self._until[nonce] = (until, token)
        self._per_token[token] = self._per_token.get(token, 0) + 1
        heapq.heappush(self._heap, (until, nonce))
        return True
