"""Users' delegation tokens on the wire (values in ``cortex_rm/yarn/delegation.py``).

* the RM's identifier: ``YARNDelegationTokenIdentifierProto`` bytes (what
  ``RMDelegationTokenIdentifier`` writes);
* the file system's: ``AbstractDelegationTokenIdentifier.write`` — a version byte
  0, owner, renewer and real user as ``Text``, issue and max dates as vlongs, the
  sequence number and master key id as vints;
* a token as a URL string (``Token.encodeToUrlString``): the Writable token in
  URL-safe Base64 without padding — WebHDFS's ``delegation=`` and YARN's REST header.
"""

from __future__ import annotations

import base64
import binascii

from cortex_rm.yarn.delegation import DelegationIdentifier, InvalidToken
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.writable import read_vlong, token_writable, write_text, write_vlong

MAX_TEXT = 1024  # an owner or renewer longer than this is not one of ours
MAX_URL_STRING = 4096


def rm_identifier_bytes(ident: DelegationIdentifier) -> bytes:
    return yst.YARNDelegationTokenIdentifierProto(
        owner=ident.owner,
        renewer=ident.renewer,
        realUser=ident.real_user,
        issueDate=ident.issue_ms,
        maxDate=ident.max_ms,
        sequenceNumber=ident.sequence,
        masterKeyId=ident.key_id,
    ).SerializeToString()


def read_rm_identifier(data: bytes) -> DelegationIdentifier:
    """An RM delegation token's identifier; ``InvalidToken`` if the bytes are not one."""
    parsed = yst.YARNDelegationTokenIdentifierProto()
    try:
        parsed.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise InvalidToken(f"not an RM delegation token identifier: {e}") from None
    if not parsed.owner or not parsed.HasField("sequenceNumber"):
        raise InvalidToken("RM delegation token identifier without an owner or a sequence number")
    return DelegationIdentifier(
        parsed.owner, parsed.renewer, parsed.realUser, parsed.issueDate, parsed.maxDate,
        parsed.sequenceNumber, parsed.masterKeyId,
    )


def fs_identifier_bytes(ident: DelegationIdentifier) -> bytes:
    return b"".join(
        (
            b"\x00",
            write_text(ident.owner),
            write_text(ident.renewer),
            write_text(ident.real_user),
            write_vlong(ident.issue_ms),
            write_vlong(ident.max_ms),
            write_vlong(ident.sequence),
            write_vlong(ident.key_id),
        )
    )


def read_fs_identifier(data: bytes) -> DelegationIdentifier:
    """A file system delegation token's identifier; ``InvalidToken`` if the bytes are not one."""
    if not data or data[0] != 0:
        raise InvalidToken("not a delegation token identifier (unknown version)")
    try:
        pos = 1
        texts = []
        for _ in range(3):
            length, pos = read_vlong(data, pos)
            if not 0 <= length <= MAX_TEXT or pos + length > len(data):
                raise InvalidToken("delegation token identifier with a malformed name")
            texts.append(data[pos : pos + length].decode("utf-8"))
            pos += length
        numbers = []
        for _ in range(4):
            value, pos = read_vlong(data, pos)
            numbers.append(value)
    except (IndexError, UnicodeDecodeError):
        raise InvalidToken("truncated or malformed delegation token identifier") from None
    if pos != len(data) or not texts[0]:
        raise InvalidToken("delegation token identifier with trailing bytes or no owner")
    return DelegationIdentifier(texts[0], texts[1], texts[2], *numbers)


def to_url_string(token: TokenProto) -> str:
    """``Token.encodeToUrlString``."""
    return base64.urlsafe_b64encode(token_writable(token)).rstrip(b"=").decode("ascii")


def from_url_string(text: str) -> TokenProto:
    """``Token.decodeFromUrlString``; ``InvalidToken`` for anything else."""
    if len(text) > MAX_URL_STRING:
        raise InvalidToken("delegation token too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("the delegation token is not URL-safe Base64") from None
    return read_token_writable(raw)


def read_token_writable(raw: bytes) -> TokenProto:
    """``Token.readFields``: identifier, password, kind, service; ``InvalidToken`` if malformed."""
    fields: list[bytes] = []
    pos = 0
    try:
        for _ in range(4):
            length, pos = read_vlong(raw, pos)
            if not 0 <= length <= MAX_URL_STRING or pos + length > len(raw):
                raise InvalidToken("malformed delegation token")
            fields.append(raw[pos : pos + length])
            pos += length
        kind, service = fields[2].decode("utf-8"), fields[3].decode("utf-8")
    except (IndexError, UnicodeDecodeError):
        raise InvalidToken("malformed delegation token") from None
    if pos != len(raw):
        raise InvalidToken("malformed delegation token (trailing bytes)")
    return TokenProto(identifier=fields[0], password=fields[1], kind=kind, service=service)
