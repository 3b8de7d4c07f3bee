"""One HTTP exchange of ``cortex_rm.client`` with one endpoint, with the standard library's client.

``exchange`` tells apart the two ways a call can fail to get an answer, because the
client treats them differently: ``Unreachable`` (the connection was never made, so
nothing was sent and the next endpoint may take the call) and ``Broken`` (the call
was sent, so the server may have acted on it).  Answers are read up to
``MAX_ANSWER_BYTES`` (or a caller's smaller bound), and, given a ``deadline``, the whole exchange ends by
then (a server that trickles its answer a byte per timeout is cut off).  ``field`` reads one typed field of a
JSON answer.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cortex_rm.client_errors import ServerError
from cortex_rm.events.request_proofs import RING_ID_HEADER
from cortex_rm.yarn.addresses import HostPort

MAX_ANSWER_BYTES = 32 * 1024 * 1024
REDIRECTS = (301, 302, 303, 307, 308)

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class Unreachable(Exception):
    """The connection could not be made: nothing was sent, another endpoint may take the call."""


class Broken(Exception):
    """The connection failed after the call was sent: the server may have acted on it."""


class AnswerTooLong(Broken):
    """The answer was longer than the caller's bound (the connection is dropped unread)."""


def exchange(
    address: str, method: str, target: str, body: bytes | None, headers: Mapping[str, str], timeout_s: float,
    wait_s: float = 0, max_bytes: int = MAX_ANSWER_BYTES, deadline: float | None = None,
) -> Answer:  # fmt: skip
    """``method target`` at ``address`` (``host:port``): connect within ``timeout_s``, then allow
    ``timeout_s + wait_s`` for each read (a call the server holds while a function runs); an answer
    over ``max_bytes`` is ``Broken``.  ``deadline`` (``time.monotonic()``): the exchange, connection
    included, ends by then (``Unreachable`` or ``Broken`` after it)."""
    where = HostPort.parse(address)
    bounded: _ByDeadline | None = None
    connect_s = timeout_s if deadline is None else max(0.001, min(timeout_s, deadline - time.monotonic()))
    connection = http.client.HTTPConnection(where.host.strip("[]"), where.port, timeout=connect_s)
    try:
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("the overall deadline passed before connecting")
            connection.connect()
        except OSError as e:
            raise Unreachable(e.strerror or str(e) or type(e).__name__) from None
        per_read_s = timeout_s + wait_s
        if connection.sock is not None and deadline is not None:
            bounded = connection.sock = _ByDeadline(connection.sock, deadline, per_read_s)
        elif connection.sock is not None:
            connection.sock.settimeout(per_read_s)
        sent = dict(headers)
        if body is None and method in ("POST", "PUT"):
            body = b""  # Content-Length: 0
        try:
            connection.request(method, target, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read(max_bytes + 1)
        except (OSError, http.client.HTTPException) as e:
            raise Broken(str(e) or type(e).__name__) from None
        if len(data) > max_bytes:
            raise AnswerTooLong(f"an answer over {max_bytes} bytes")
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()
        if bounded is not None:
            bounded.sock.close()  # (its one owner: the answer is read, whatever the response object still holds)


class _ByDeadline:
    """A connected socket as ``http.client`` uses it (``sendall``, ``makefile``, ``close``) whose every send and
    read waits at most ``per_read_s`` and ends by ``deadline`` (``TimeoutError``, an ``OSError``).  ``exchange``
    owns the socket and closes it when it ends: ``close`` here (the connection's) and its readers' leave it open
    (``http.client`` closes the connection of an answer that ends with it before reading the answer's body)."""

    def __init__(self, sock: socket.socket, deadline: float, per_read_s: float) -> None:
        self.sock, self.deadline, self.per_read_s = sock, deadline, per_read_s

    def arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the overall deadline passed")
        self.sock.settimeout(min(self.per_read_s, left))

    def sendall(self, data: bytes) -> None:
        self.arm()
        self.sock.sendall(data)

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        """(``exchange`` closes the socket.)"""


class _DeadlineReader(io.RawIOBase):
    def __init__(self, owner: _ByDeadline) -> None:
        self.owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self.owner.arm()
        return self.owner.sock.recv_into(buffer)


def redirect(answer: Answer, address: str) -> tuple[str, str] | None:
    """Where a redirect sends the call (``host:port``, target), or None if ``answer`` is not one."""
    if answer.status not in REDIRECTS or "location" not in answer.headers:
        return None
    location = urlsplit(answer.headers["location"])
    if location.hostname:
        host = f"[{location.hostname}]" if ":" in location.hostname else location.hostname
        address = f"{host}:{location.port or 80}"
    return address, (location.path or "/") + (f"?{location.query}" if location.query else "")


def json_object(answer: Answer, what: str) -> dict[str, Any]:
    """The answer's JSON object; ``ServerError`` if it is not one."""
    try:
        document = json.loads(answer.body)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        text = answer.body[:200].decode("utf-8", "replace")
        raise ServerError(f"{what}: the answer (HTTP {answer.status}) is not a JSON object: {text!r}", answer.status)
    return document


def field(answer: Answer, name: str, kind: type[T], what: str) -> T:
    """The answer's field ``name``, of type ``kind``; ``ServerError`` if it has none."""
    value = json_object(answer, what).get(name)
    if not isinstance(value, kind):
        raise ServerError(f"{what}: the answer (HTTP {answer.status}) has no {kind.__name__} {name!r}", answer.status)
    return value


def ring_id_named(answer: Answer) -> int | None:
    """The ring id a node's 401 names (``Cortex-Ring-Id``), if it is one."""
    text = answer.headers.get(RING_ID_HEADER.lower(), "")
    try:
        return int(text, 16) if len(text) == 40 else None
    except ValueError:
        return None
