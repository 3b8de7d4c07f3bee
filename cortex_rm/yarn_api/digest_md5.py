"""The server side of SASL DIGEST-MD5 (RFC 2831), as Hadoop uses it for tokens.

Only what Hadoop's token authentication needs: ``qop=auth`` (authentication, no
integrity or privacy layer), ``algorithm=md5-sess``, one realm, one round::

    server -> challenge   realm="default",nonce="<b64>",qop="auth",charset=utf-8,algorithm=md5-sess
    client -> response    charset=utf-8,username="<b64 id>",realm="default",nonce=...,nc=00000001,
                          cnonce="...",digest-uri="/default",maxbuf=65536,response=<32 hex>,qop=auth
    server -> rspauth     rspauth=<32 hex>

The formulas (RFC 2831 section 2.1.2.1, ``H`` = raw MD5, ``HEX`` = lowercase hex)::

    A1       = H(username ":" realm ":" password) ":" nonce ":" cnonce [":" authzid]
    A2       = "AUTHENTICATE:" digest-uri            (for the client's response)
    A2'      = ":" digest-uri                         (for the server's rspauth)
    response = HEX(H(HEX(H(A1)) ":" nonce ":" nc ":" cnonce ":" qop ":" HEX(H(A2))))

Hadoop's token convention (``SaslRpcServer.encodeIdentifier/encodePassword``): the
username is Base64 of the token *identifier* bytes and the password is Base64 of the
token *password* bytes, used as an ASCII string.  The digest-uri is
``<protocol>/<serverId>``, which for tokens is ``"/default"``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cortex_rm.yarn_api.errors import INVALID_TOKEN, SASL_EXCEPTION

#: RFC 2831 2.1.2: a digest-response is at most 4096 bytes.
MAX_RESPONSE_LENGTH: Final = 4096
NONCE_BYTES: Final = 24

_DIRECTIVE: Final = re.compile(
    r'[ \t]*([A-Za-z0-9_-]+)[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^",\s]*))[ \t]*(?:,|$)',
    re.DOTALL,
)
_UNESCAPE: Final = re.compile(r"\\(.)", re.DOTALL)
_HEX8: Final = re.compile(r"[0-9A-Fa-f]{8}")


class DigestMd5Failure(Exception):
    """Authentication failed; ``java_class`` is what Hadoop's server would report."""

    def __init__(self, java_class: str, message: str) -> None:
        super().__init__(message)
        self.java_class = java_class
        self.message = message


def parse_directives(data: bytes) -> dict[str, str]:
    """Parse ``name=value, name="quoted value", ...`` (RFC 2831's ``#`` rule).

    Names are case-insensitive (returned lower-case); empty list elements are
    allowed; a directive given twice is an error, as the RFC requires.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DigestMd5Failure(SASL_EXCEPTION, "DIGEST-MD5: response is not UTF-8") from exc
    directives: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        # Skip empty elements of the list (", ,").
        while pos < len(text) and text[pos] in " \t,":
            pos += 1
        if pos >= len(text):
            break
        match = _DIRECTIVE.match(text, pos)
        if match is None:
            raise DigestMd5Failure(SASL_EXCEPTION, f"DIGEST-MD5: malformed directive at offset {pos}")
        name = match.group(1).lower()
        quoted, token = match.group(2), match.group(3)
        value = _UNESCAPE.sub(r"\1", quoted) if quoted is not None else token
        if name in directives:
            raise DigestMd5Failure(SASL_EXCEPTION, f"DIGEST-MD5: directive {name!r} given twice")
        directives[name] = value
        pos = match.end()
    return directives


def _digest_octets(value: str, utf8: bool) -> bytes:
    # RFC 2831 2.1.2.1: with charset=utf-8, strings representable in ISO 8859-1 are
    # hashed in ISO 8859-1; others in UTF-8.  Without it, ISO 8859-1 only.
    try:
        return value.encode("iso-8859-1")
    except UnicodeEncodeError:
        if not utf8:
            raise
        return value.encode("utf-8")


def _ha1(username: str, realm: str, password: str, nonce: str, cnonce: str, authzid: str | None, utf8: bool) -> str:
    secret = hashlib.md5(
        _digest_octets(username, utf8) + b":" + _digest_octets(realm, utf8) + b":" + _digest_octets(password, utf8)
    ).digest()
    a1 = secret + b":" + nonce.encode() + b":" + cnonce.encode()
    if authzid is not None:
        a1 += b":" + authzid.encode("utf-8")
    return hashlib.md5(a1).hexdigest()


def _kd_hex(ha1: str, nonce: str, nc: str, cnonce: str, qop: str, a2: str) -> str:
    ha2 = hashlib.md5(a2.encode("utf-8")).hexdigest()
    return hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode("utf-8")).hexdigest()


def response_value(
    *,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    cnonce: str,
    nc: str,
    qop: str,
    digest_uri: str,
    authzid: str | None = None,
    utf8: bool = True,
) -> str:
    """The client's ``response=`` value (32 lowercase hex digits)."""
    ha1 = _ha1(username, realm, password, nonce, cnonce, authzid, utf8)
    return _kd_hex(ha1, nonce, nc, cnonce, qop, "AUTHENTICATE:" + digest_uri)


def rspauth_value(
    *,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    cnonce: str,
    nc: str,
    qop: str,
    digest_uri: str,
    authzid: str | None = None,
    utf8: bool = True,
) -> str:
    """The server's ``rspauth=`` value, proving it knew the password too."""
    ha1 = _ha1(username, realm, password, nonce, cnonce, authzid, utf8)
    return _kd_hex(ha1, nonce, nc, cnonce, qop, ":" + digest_uri)


def encode_token_secret(raw: bytes) -> str:
    """Hadoop's ``SaslRpcServer.encodeIdentifier/encodePassword``: standard Base64."""
    return base64.b64encode(raw).decode("ascii")


class DigestMd5Client:
    """One DIGEST-MD5 authentication, client side, as Hadoop's SaslRpcClient drives the JDK's:
    one response to the server's challenge, then the server's ``rspauth`` checked (a server
    that does not know the token's password cannot forge it)."""

    def __init__(self, identifier: bytes, password: bytes, *, random_bytes: Callable[[int], bytes]) -> None:
        self.username = encode_token_secret(identifier)
        self._password = encode_token_secret(password)
        self.cnonce = base64.b64encode(random_bytes(NONCE_BYTES)).decode("ascii")
        self._rspauth: str | None = None

    def respond(self, challenge: bytes, digest_uri: str) -> bytes:
        """The response to ``challenge`` (qop=auth, nc=1); ``digest_uri``: ``<protocol>/<serverId>``
        of the auth the server offered, as Hadoop's client builds it (``/default`` for tokens)."""
        d = parse_directives(challenge)
        if d.get("algorithm", "md5-sess") != "md5-sess" or d.get("charset", "utf-8").lower() != "utf-8":
            raise DigestMd5Failure(SASL_EXCEPTION, "DIGEST-MD5: only algorithm=md5-sess with charset=utf-8 is spoken")
        if "nonce" not in d:
            raise DigestMd5Failure(SASL_EXCEPTION, "DIGEST-MD5: the challenge has no nonce")
        if "auth" not in [q.strip() for q in d.get("qop", "auth").split(",")]:
            raise DigestMd5Failure(SASL_EXCEPTION, f"DIGEST-MD5: the server does not offer qop=auth ({d['qop']!r})")
        realm, nonce = d.get("realm", ""), d["nonce"]

        def value(formula: Callable[..., str]) -> str:
            return formula(
                username=self.username, realm=realm, password=self._password, nonce=nonce,
                cnonce=self.cnonce, nc="00000001", qop="auth", digest_uri=digest_uri,
            )

        self._rspauth = value(rspauth_value)
        return (
            f'charset=utf-8,username="{self.username}",realm="{realm}",nonce="{nonce}",'
            f'nc=00000001,cnonce="{self.cnonce}",digest-uri="{digest_uri}",maxbuf=65536,'
            f"response={value(response_value)},qop=auth"
        ).encode("utf-8")

    def check(self, final: bytes) -> None:
        """Check the server's ``rspauth=``; DigestMd5Failure if it does not prove the password."""
        rspauth = parse_directives(final).get("rspauth", "")
        if self._rspauth is None or not hmac.compare_digest(rspauth.encode(), self._rspauth.encode()):
            raise DigestMd5Failure(SASL_EXCEPTION, "DIGEST-MD5: the server's rspauth does not prove the token's password")


class DigestState(enum.Enum):
    """INITIAL -> CHALLENGED (challenge sent) -> COMPLETE | FAILED."""

    INITIAL = "INITIAL"
    CHALLENGED = "CHALLENGED"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


@dataclass(frozen=True)
class DigestSuccess:
    """A verified response: the token identifier it named, and the final server token."""

    identifier: bytes
    rspauth: bytes


class DigestMd5Server:
    """One DIGEST-MD5 authentication, server side.

    ``password_for(identifier) -> bytes | None`` returns the token password for
    identifier bytes, or None when the token is unknown/expired.  It may also raise
    :class:`DigestMd5Failure` itself (e.g. naming ``StandbyException``), which is
    reported as is.  ``random_bytes(n)`` supplies the nonce.
    """

    def __init__(
        self,
        *,
        password_for: Callable[[bytes], bytes | None],
        random_bytes: Callable[[int], bytes],
        realm: str = "default",
        digest_uri: str = "/default",
    ) -> None:
        self._password_for = password_for
        self._random_bytes = random_bytes
        self.realm = realm
        self.digest_uri = digest_uri
        self.state = DigestState.INITIAL
        self._nonce = ""

    def challenge(self) -> bytes:
        """The first (and only) challenge; moves INITIAL -> CHALLENGED."""
        if self.state is not DigestState.INITIAL:
            raise RuntimeError(f"DIGEST-MD5 challenge requested in state {self.state.name}")
        self._nonce = base64.b64encode(self._random_bytes(NONCE_BYTES)).decode("ascii")
        self.state = DigestState.CHALLENGED
        return (
            f'realm="{self.realm}",nonce="{self._nonce}",qop="auth",charset=utf-8,algorithm=md5-sess'
        ).encode("ascii")

    def verify(self, response: bytes) -> DigestSuccess:
        """Check the client's response; moves CHALLENGED -> COMPLETE, or raises and FAILED."""
        if self.state is not DigestState.CHALLENGED:
            raise DigestMd5Failure(SASL_EXCEPTION, f"DIGEST-MD5: response received in state {self.state.name}")
        try:
            success = self._verify(response)
        except DigestMd5Failure:
            self.state = DigestState.FAILED
            raise
        self.state = DigestState.COMPLETE
        return success

    def _verify(self, response: bytes) -> DigestSuccess:
        if len(response) > MAX_RESPONSE_LENGTH:
            raise DigestMd5Failure(SASL_EXCEPTION, "DIGEST-MD5: response longer than 4096 bytes")
        d = parse_directives(response)
        for name in ("username", "nonce", "cnonce", "nc", "response"):
            if name not in d:
                raise DigestMd5Failure(SASL_EXCEPTION, f"DIGEST-MD5: response lacks {name}")
        qop = d.get("qop", "auth")
        if qop != "auth":
            raise DigestMd5Failure(SASL_EXCEPTION, f"DIGEST-MD5: qop {qop!r} was not offered")
        if "cipher" in d:
            raise DigestMd5Failure(SASL_EXCEPTION, "DIGEST-MD5: cipher given without qop=auth-conf")
        utf8 = "charset" in d
        if utf8 and d["charset"].lower() != "utf-8":
            raise DigestMd5Failure(SASL_EXCEPTION, f"DIGEST-MD5: charset {d['charset']!r} is not utf-8")
        realm = d.get("realm", "")
        if realm != self.realm:
            raise DigestMd5Failure(SASL_EXCEPTION, f"DIGEST-MD5: realm {realm!r} was not offered")
        if not hmac.compare_digest(d["nonce"].encode(), self._nonce.encode()):
            raise DigestMd5Failure(SASL_EXCEPTION, "DIGEST-MD5: nonce does not match the challenge")
        if not _HEX8.fullmatch(d["nc"]) or int(d["nc"], 16) != 1:
            raise DigestMd5Failure(SASL_EXCEPTION, f"DIGEST-MD5: nonce count {d['nc']!r} is not 00000001")
        if d.get("digest-uri") != self.digest_uri:
            raise DigestMd5Failure(
                SASL_EXCEPTION, f"DIGEST-MD5: digest-uri {d.get('digest-uri')!r} is not {self.digest_uri!r}"
            )
        username = d["username"]
        authzid = d.get("authzid")
        if authzid is not None and authzid != username:
            # Hadoop's SaslDigestCallbackHandler authorizes only authzid == authid.
            raise DigestMd5Failure(SASL_EXCEPTION, "DIGEST-MD5: authzid differs from the token identifier")
        try:
            identifier = base64.b64decode(username.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise DigestMd5Failure(INVALID_TOKEN, "Can't de-serialize tokenIdentifier") from exc
        password_bytes = self._password_for(identifier)
        if password_bytes is None:
            raise DigestMd5Failure(INVALID_TOKEN, f"token {username} is not known to this server (expired or forged)")
        password = encode_token_secret(password_bytes)
        nonce, cnonce, nc = d["nonce"], d["cnonce"], d["nc"]
        ha1 = _ha1(username, realm, password, nonce, cnonce, authzid, utf8)
        expected = _kd_hex(ha1, nonce, nc, cnonce, qop, "AUTHENTICATE:" + self.digest_uri)
        if not hmac.compare_digest(expected.encode(), d["response"].lower().encode()):
            raise DigestMd5Failure(SASL_EXCEPTION, "DIGEST-MD5: digest response format violation. Mismatched response.")
        rspauth = _kd_hex(ha1, nonce, nc, cnonce, qop, ":" + self.digest_uri)
        return DigestSuccess(identifier=identifier, rspauth=f"rspauth={rspauth}".encode("ascii"))
