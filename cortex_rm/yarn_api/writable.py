"""Hadoop's Writable encodings that YARN still uses on the side: variable-length
longs, ``Text``, ``Token`` and the token storage file (``Credentials``).

``token_storage`` writes what ``Credentials.writeTokenStorageToStream`` writes
(``HDTS``, version 0 = Writable): the container's ``HADOOP_TOKEN_FILE_LOCATION``
and the ``tokens`` of a ContainerLaunchContext.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto

TOKEN_STORAGE_MAGIC: Final = b"HDTS"
TOKEN_STORAGE_WRITABLE: Final = 0


def write_vlong(value: int) -> bytes:
    """``WritableUtils.writeVLong``: one byte for -112..127, else a length byte and big-endian bytes."""
    if -112 <= value <= 127:
        return bytes([value & 0xFF])
    length = -112
    if value < 0:
        value ^= -1
        length = -120
    tmp = value
    while tmp != 0:
        tmp >>= 8
        length -= 1
    size = -(length + 120) if length < -120 else -(length + 112)
    return bytes([length & 0xFF]) + value.to_bytes(size, "big")


def read_vlong(data: bytes, pos: int) -> tuple[int, int]:
    """``WritableUtils.readVLong``: (value, next position); IndexError if short."""
    first = data[pos] - 256 if data[pos] > 127 else data[pos]
    if first >= -112:
        return first, pos + 1
    size = (-119 - first) if first < -120 else (-111 - first)
    if pos + size > len(data):
        raise IndexError("truncated vlong")
    value = int.from_bytes(data[pos + 1 : pos + size], "big")
    negative = first < -120
    return (value ^ -1) if negative else value, pos + size


def write_text(value: str) -> bytes:
    """Hadoop ``Text``: vint length, then UTF-8 bytes."""
    raw = value.encode("utf-8")
    return write_vlong(len(raw)) + raw


def token_writable(token: TokenProto) -> bytes:
    """``Token.write``: identifier and password (length-prefixed), kind and service (Text)."""
    return b"".join(
        (
            write_vlong(len(token.identifier)),
            token.identifier,
            write_vlong(len(token.password)),
            token.password,
            write_text(token.kind),
            write_text(token.service),
        )
    )


def token_storage(tokens: Mapping[str, bytes], secrets: Mapping[str, bytes]) -> bytes:
    """``Credentials.writeTokenStorageToStream`` (Writable): ``tokens`` maps alias to ``token_writable`` bytes."""
    out = [TOKEN_STORAGE_MAGIC, bytes([TOKEN_STORAGE_WRITABLE]), write_vlong(len(tokens))]
    for alias, token in tokens.items():
        out += [write_text(alias), token]
    out.append(write_vlong(len(secrets)))
    for alias, secret in secrets.items():
        out += [write_text(alias), write_vlong(len(secret)), secret]
    return b"".join(out)


class MalformedCredentials(ValueError):
    """Bytes that are not a Hadoop token storage."""


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = read_vlong(data, pos)
    if length < 0 or pos + length > len(data):
        raise IndexError("field runs past the end")
    return data[pos : pos + length], pos + length


def read_token_storage(data: bytes) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Parse a token storage: (alias -> ``token_writable`` bytes, alias -> secret).

    Both formats Hadoop writes are read: version 0 (Writable) and version 1
    (``delim(CredentialsProto)``); an empty blob is no credentials at all.
    """
    if not data:
        return {}, {}
    if not data.startswith(TOKEN_STORAGE_MAGIC) or len(data) < 5:
        raise MalformedCredentials("not a Hadoop token storage (no HDTS header)")
    version = data[4]
    tokens: dict[str, bytes] = {}
    secrets: dict[str, bytes] = {}
    try:
        if version == TOKEN_STORAGE_WRITABLE:
            pos = 5
            count, pos = read_vlong(data, pos)
            for _ in range(count):
                alias, pos = _read_bytes(data, pos)
                start = pos
                for _field in range(4):  # identifier, password, kind, service
                    _, pos = _read_bytes(data, pos)
                tokens[alias.decode()] = data[start:pos]
            count, pos = read_vlong(data, pos)
            for _ in range(count):
                alias, pos = _read_bytes(data, pos)
                secret, pos = _read_bytes(data, pos)
                secrets[alias.decode()] = secret
        elif version == 1:
            from cortex_rm.yarn_api.proto.Security_pb2 import CredentialsProto

            body, _ = _read_bytes(data, 5)
            creds = CredentialsProto.FromString(body)
            # proto2 does not check UTF-8: an alias that is not comes back as bytes, not str.
            if not all(isinstance(kv.alias, str) for kv in (*creds.tokens, *creds.secrets)):
                raise MalformedCredentials("a token storage alias is not UTF-8 text")
            for kv in creds.tokens:
                tokens[kv.alias] = token_writable(kv.token)
            for kv in creds.secrets:
                secrets[kv.alias] = kv.secret
        else:
            raise MalformedCredentials(f"unknown token storage version {version}")
    except (IndexError, UnicodeDecodeError) as e:
        raise MalformedCredentials(f"truncated or garbled token storage: {e}") from None
    except Exception as e:  # protobuf DecodeError for version 1
        if isinstance(e, MalformedCredentials):
            raise
        raise MalformedCredentials(f"undecodable token storage: {e}") from None
    return tokens, secrets
