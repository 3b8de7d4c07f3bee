"""Text a client sent, made safe for the daemon's log: one line, printable, bounded.

Paths, methods, ids and the messages that quote them come from the network; written to
the log as they are, they can carry NULs, terminal escapes and newlines (forged log lines),
and be as long as the request line.  Everything that logs such text passes it through
:func:`sanitise`.
"""

from __future__ import annotations


def sanitise(raw: bytes | str | None, limit: int = 200) -> str:
    """Client-supplied text made safe for one log line: printable ASCII kept, every other byte
    as ``\\xNN``, at most ``limit`` characters kept (then ``...(+N)`` counts the rest)."""
    if raw is None:
        return "-"
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
    out: list[str] = []
    size = 0
    for i, byte in enumerate(data):
        piece = chr(byte) if 0x20 <= byte < 0x7F and byte != 0x5C else f"\\x{byte:02x}"
        if size + len(piece) > limit:
            out.append(f"...(+{len(data) - i})")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


#: Query parameters that carry credentials (a user's delegation token, a signed ticket): never logged.
SECRET_PARAMETERS = (b"delegation", b"ticket", b"token")


def loggable_uri(uri: bytes | None, limit: int = 200) -> str:
    """A request URI for the log: credentials in its query replaced by ``<redacted>``, then sanitised."""
    if uri is None:
        return "-"
    path, sep, query = uri.partition(b"?")
    if sep:
        parts = []
        for part in query.split(b"&"):
            name, eq, _ = part.partition(b"=")
            parts.append(name + b"=<redacted>" if eq and name.lower() in SECRET_PARAMETERS else part)
        uri = path + b"?" + b"&".join(parts)
    return sanitise(uri, limit)
