"""RM proofs: how ``client-config`` checks, before it sends her anything, that an RM a node's directory names
holds the key her credential was issued with.

A node's directory (``roles/rm_directory.py``) is that node's word, over plain HTTP; a hostile node could
name itself as an RM and collect the credential the user then sends it (the Spark upload's ``delegation=``,
every Hadoop client's tokens).  So for each RM a directory names the client asks, on that RM's web address::

    GET /ws/v1/cortex/rm-proof?identifier=<her WebHDFS token's identifier, base64url>&nonce=<32 hex>
    -> {"proof": "<64 hex>"}

and the proof must be ``rm_proof(password, nonce, webapp, client, scheduler)``: HMAC-SHA256, under her
WebHDFS token's password, of ``message``::

    b"cortex-rm-proof\\x00" nonce b"\\x00" webapp b"\\x00" client b"\\x00" scheduler

The RM computes the password from the identifier with its delegation key (``MasterKey.password``), as it
does to check the token: it never needs hers, and she never sends it.  Only a holder of the key (the RM
and its standbys, from their copies of its stores) can answer; the fresh nonce makes every proof new.

**Bound to the addresses.**  ``webapp`` is the address the client asked, as she named it in ``Host``; the RM
answers only when ``Host`` is its own web address, and binds its own client and scheduler addresses in too.
So a hostile node that relays her question to a real RM gets a proof for the real RM's addresses (with its
own ``Host``, a refusal), which is no proof for the hostile address she asked; and an entry naming a real
RM's web address beside a hostile client (IPC) address fails too, because the real RM binds its own.

**Domain-separated.**  Token passwords key other HMACs in Cortex: the signed requests' entry keys
(``events/request_proofs.py``: HMAC-SHA256 under the RM token's password of ``KEY_DOMAIN`` ...).  This
message starts with ``DOMAIN``, which neither is nor starts nor is started by any other prefix keyed so,
and it is keyed by the WebHDFS token's password, not the RM token's; anyone may ask an RM for a proof, so
a proof must be good for nothing else (``tests/unit/test_rm_proof.py`` keeps the inventory of HMACs).

This module is sans-IO: the query's parsing (for the RM) and the proof's computation (for both sides).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

PROOF_PATH = "/ws/v1/cortex/rm-proof"
DOMAIN = b"cortex-rm-proof\x00"
NONCE_HEX = 32
#: A WebHDFS token's identifier is ~60 bytes; what a proof is asked for is at most this.
MAX_IDENTIFIER_BYTES = 1024
PROOF_HEX = 64

_NONCE = re.compile(r"[0-9a-f]{32}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_ADDRESS = re.compile(r"[!-~]{1,300}")  # printable ASCII, no space, no NUL: nothing to blur the message's fields


class MalformedProofQuery(ValueError):
    """The query is not a proof's question; the message says what is wrong (the RM answers 400 with it)."""


@dataclass(frozen=True)
class ProofQuery:
    """What a proof is asked for: a WebHDFS token's identifier and the client's nonce."""

    identifier: bytes
    nonce: str

    def target(self) -> str:
        """The request target that asks it (``PROOF_PATH`` and the query)."""
        return f"{PROOF_PATH}?{urlencode({'identifier': encode_identifier(self.identifier), 'nonce': self.nonce})}"


def encode_identifier(identifier: bytes) -> str:
    return base64.urlsafe_b64encode(identifier).rstrip(b"=").decode("ascii")


def parse_query(args: Mapping[bytes, Sequence[bytes]]) -> ProofQuery:
    """The question in a request's query arguments (twisted.web's ``request.args``): exactly ``identifier``
    (base64url, 1..MAX_IDENTIFIER_BYTES decoded) and ``nonce`` (32 lowercase hex digits), once each;
    MalformedProofQuery otherwise."""
    if set(args) != {b"identifier", b"nonce"} or any(len(values) != 1 for values in args.values()):
        raise MalformedProofQuery("the query must hold exactly one identifier and one nonce")
    token, nonce = args[b"identifier"][0], args[b"nonce"][0]
    try:
        text = token.decode("ascii")
        if not _BASE64URL.fullmatch(text) or len(text) > (MAX_IDENTIFIER_BYTES * 4 + 2) // 3:
            raise ValueError(text)
        identifier = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        raise MalformedProofQuery(
            f"identifier must be a delegation token's identifier in URL-safe base64 (at most {MAX_IDENTIFIER_BYTES} bytes)"
        ) from None
    if not 0 < len(identifier) <= MAX_IDENTIFIER_BYTES:
        raise MalformedProofQuery(f"identifier must be 1 to {MAX_IDENTIFIER_BYTES} bytes")
    if not _NONCE.fullmatch(nonce.decode("latin-1")):
        raise MalformedProofQuery(f"nonce must be {NONCE_HEX} lowercase hex digits")
    return ProofQuery(identifier, nonce.decode("ascii"))


def message(nonce: str, webapp: str, client: str, scheduler: str) -> bytes:
    """What a proof is the HMAC of (module docstring); addresses compared in lower case.  ValueError for a
    nonce or address that could blur the fields (the parsers let none through)."""
    if not _NONCE.fullmatch(nonce):
        raise ValueError(f"a nonce is {NONCE_HEX} lowercase hex digits")
    fields = [nonce] + [a.lower() for a in (webapp, client, scheduler)]
    if not all(_ADDRESS.fullmatch(a) for a in fields[1:]):
        raise ValueError("an address is printable ASCII without spaces")
    return DOMAIN + b"\x00".join(f.encode("ascii") for f in fields)


def rm_proof(password: bytes, nonce: str, webapp: str, client: str, scheduler: str) -> bytes:
    """HMAC-SHA256 of ``message`` under a token's password (module docstring)."""
    return hmac.new(password, message(nonce, webapp, client, scheduler), hashlib.sha256).digest()


def proof_matches(answer: str, password: bytes, nonce: str, webapp: str, client: str, scheduler: str) -> bool:
    """Whether ``answer`` (an RM's ``proof``, hex) is the proof for these; compared in constant time."""
    if len(answer) != PROOF_HEX:
        return False
    try:
        given = bytes.fromhex(answer)
    except ValueError:
        return False
    return hmac.compare_digest(given, rm_proof(password, nonce, webapp, client, scheduler))
