"""One REST request as the RM's operations see it, and their answer (``rest.py`` makes and writes them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from cortex_rm.yarn.delegation import ANONYMOUS, DelegationIdentifier, Principal

STATIC_WEB_USER: Final = "dr.who"  # hadoop.http.staticuser.user


@dataclass(frozen=True)
class RestCall:
    """One request, as the operations see it."""

    method: str
    path: str  # the request path, for messages
    params: tuple[str, ...] = ()  # the route's variable segments (application id, node id)
    query: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    content_type: str | None = None
    user: str = STATIC_WEB_USER  # who the request acts for, by name (the anonymous one: dr.who)
    principal: Principal = ANONYMOUS
    token: DelegationIdentifier | None = None  # the header's token, once checked
    client_host: str = ""  # the connection's remote host, as the kernel reported it
    base_url: str = "http://localhost"  # scheme://host:port of this RM, for Location headers


@dataclass(frozen=True)
class Reply:
    """Status, JSON body (None: an empty body) and the Location header if any."""

    status: int = 200
    body: Any = None
    location: str | None = None


