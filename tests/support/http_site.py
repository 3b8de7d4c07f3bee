"""HTTP/1.1 to a twisted.web Site over an in-memory transport, for unit tests of the REST
resources (the RM's and the NodeManager's): one request per connection, the response parsed
once complete (Content-Length or chunked; none for HEAD)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpConnection:
    """One HTTP/1.1 connection to the site over an in-memory transport."""

    def __init__(self, site: Any, host: str = "rm.test:8088") -> None:
        # headers every request on this site sends (a test may give the site a credential)
        self.default_headers: dict[str, str] = dict(getattr(site, "test_headers", {}))
        self.transport = StringTransport()
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel.makeConnection(self.transport)
        self.host = host
        self.method = "GET"

    def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        chunks: list[bytes] | None = None,
    ) -> None:
        self.method = method
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in {**self.default_headers, **(headers or {})}.items()]
        if chunks is None:
            lines.append(f"Content-Length: {len(body)}")
            payload = body
        else:
            lines.append("Transfer-Encoding: chunked")
            payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        self.channel.dataReceived("\r\n".join(lines).encode() + b"\r\n\r\n" + payload)

    def close(self) -> None:
        """The client hangs up (the site forgets the connection: it counts against its caps)."""
        self.channel.connectionLost(Failure(ConnectionDone("the test client hung up")))

    def response(self) -> HttpResponse | None:
        """The response written so far, or None while it is incomplete."""
        data = self.transport.value()
        if b"\r\n\r\n" not in data:
            return None
        head, rest = data.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
        status = int(status_line.split()[1])
        if self.method == "HEAD":
            return HttpResponse(status, headers, b"")
        if headers.get("transfer-encoding") == "chunked":
            body, complete = _dechunk(rest)
            return HttpResponse(status, headers, body) if complete else None
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            return None
        return HttpResponse(status, headers, rest[:length])


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    body = b""
    while b"\r\n" in data:
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return body, True
        body, data = body + data[:size], data[size + 2 :]
    return body, False
