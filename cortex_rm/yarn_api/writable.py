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
