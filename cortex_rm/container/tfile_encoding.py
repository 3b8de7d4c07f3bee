"""The encodings Hadoop's TFile/BCFile files and Java's DataOutput use, as pure functions
(``aggregated_logs.py`` writes YARN's aggregated logs with them): TFile's variable-length
integers (``Utils.writeVLong``), Java's modified UTF-8 and ``writeUTF``, and BCFile's index
strings, regions and versions."""

from __future__ import annotations

import struct
from typing import Final

#: The most bytes ``writeUTF`` can encode (its length prefix is 2 bytes).
MAX_JAVA_UTF_SIZE: Final = 0xFFFF


def encode_vlong(n: int) -> bytes:
    """TFile's variable-length encoding of a signed 64-bit integer (``Utils.writeVLong``)."""
    if not -(1 << 63) <= n < (1 << 63):
        raise OverflowError(f"{n} does not fit in 64 bits")
    if -32 <= n < 128:
        return bytes((n & 0xFF,))
    if -20 << 8 <= n < 20 << 8:
        return bytes((((n >> 8) - 52) & 0xFF, n & 0xFF))
    if -16 << 16 <= n < 16 << 16:
        return bytes((((n >> 16) - 88) & 0xFF,)) + (n & 0xFFFF).to_bytes(2, "big")
    if -8 << 24 <= n < 8 << 24:
        return bytes((((n >> 24) - 112) & 0xFF,)) + (n & 0xFFFFFF).to_bytes(3, "big")
    # the fewest bytes that hold n with its sign bit: 4 to 8 here
    size = (~n if n < 0 else n).bit_length() // 8 + 1
    return bytes(((size - 129) & 0xFF,)) + n.to_bytes(size, "big", signed=True)


def encode_modified_utf8(text: str) -> bytes:
    """Java's "modified UTF-8": each UTF-16 unit on its own, NUL as two bytes."""
    if text.isascii() and "\x00" not in text:
        return text.encode("ascii")
    out = bytearray()
    for (unit,) in struct.iter_unpack(">H", text.encode("utf-16-be", "surrogatepass")):
        if 0 < unit < 0x80:
            out.append(unit)
        elif unit < 0x800:  # NUL lands here too: c0 80
            out += bytes((0xC0 | unit >> 6, 0x80 | unit & 0x3F))
        else:
            out += bytes((0xE0 | unit >> 12, 0x80 | (unit >> 6) & 0x3F, 0x80 | unit & 0x3F))
    return bytes(out)


def encode_java_utf(text: str) -> bytes:
    """``DataOutput.writeUTF``: a 2-byte big-endian length, then modified UTF-8 (ValueError
    beyond ``MAX_JAVA_UTF_SIZE`` bytes)."""
    body = encode_modified_utf8(text)
    if len(body) > MAX_JAVA_UTF_SIZE:
        raise ValueError(f"{len(body)} bytes of modified UTF-8 exceed writeUTF's {MAX_JAVA_UTF_SIZE}")
    return struct.pack(">H", len(body)) + body


def index_string(text: str) -> bytes:
    """TFile's ``Utils.writeString``: a VInt length, then UTF-8."""
    body = text.encode("utf-8")
    return encode_vlong(len(body)) + body


def region(offset: int, size: int) -> bytes:
    """A BCFile block region: offset, stored size, raw size (equal without compression)."""
    return encode_vlong(offset) + encode_vlong(size) + encode_vlong(size)


def version(major_minor: tuple[int, int]) -> bytes:
    return struct.pack(">hh", *major_minor)
