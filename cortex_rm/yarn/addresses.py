"""Network addresses as values: ``HostPort`` is parsed once, where text enters, and passed on typed.

The configuration, the ring's records and the command line parse ``host:port``
text into a ``HostPort``; everything past them takes the value, so no module
splits strings on ``:`` again.  The text form is YARN's (``host:port``, the host
as given: a name or an IPv4 literal).
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.yarn.errors import YarnError

MAX_PORT = 65535


class MalformedAddress(YarnError, ValueError):
    """Text that is not ``host:port`` with a port in 0..65535."""


@dataclass(frozen=True, order=True)
class HostPort:
    """A host (name or literal) and a TCP port; port 0 asks the kernel for a free one when listening."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host or not 0 <= self.port <= MAX_PORT:
            raise MalformedAddress(f"{self.host!r}:{self.port} is not host:port")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """``host:port`` into a HostPort; MalformedAddress quoting the text otherwise."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdecimal() or not port.isascii() or int(port) > MAX_PORT:
            raise MalformedAddress(f"{text!r} is not host:port")
        return cls(host, int(port))

    @staticmethod
    def host_of(peer: str) -> str:
        """The host of a peer's ``host:port`` as Twisted formats it (``[::1]:p`` gives ``::1``);
        the text itself when it has no port.  For logs and per-host limits, never for dialling."""
        host, sep, _ = peer.rpartition(":")
        return (host if sep else peer).strip("[]")

    def with_port(self, port: int) -> HostPort:
        """The same host on another port (a listener's bound port)."""
        return HostPort(self.host, port)
