"""A read-only JSON document over HTTP, and mounting a resource below a site's existing ``/ws/v1`` tree.

``JsonStatusResource`` serves what ``status()`` returns (GET and HEAD; 405 with ``Allow`` for other methods,
404 below its path, 503 ``RetriableException`` while ``status()`` is None, 500 for our own bugs), each error in
the REST layer's ``RemoteException`` form (``rest_errors``).  ``mount_under`` adds a child below ``ws/v1/...``
of a site's root, reusing the children already there, so a node's site gains ``/ws/v1/ring`` or
``/ws/v1/cortex/events`` beside ``/ws/v1/node``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.rest_errors import RestError

log = Logger()


class JsonStatusResource(Resource):
    """``path``: ``status()`` as JSON (``None``: not ready yet, and ``not_ready`` says why)."""

    isLeaf = True

    def __init__(self, status: Callable[[], dict[str, Any] | None], path: str, not_ready: str) -> None:
        super().__init__()
        self._status, self.path, self.not_ready = status, path, not_ready

    def render(self, request: Request) -> bytes:
        method = (request.method or b"GET").decode("ascii", errors="replace")
        path = (request.path or self.path.encode()).decode("utf-8", errors="replace")
        try:
            body, status = self._answer(request, method, path), 200
        except RestError as refused:
            status, body = refused.status, refused.body()
            for name, value in refused.headers:
                request.setHeader(name, value)
            rest_errors.log_refused(log, method, path, refused, request)
        except Exception:
            failure = Failure()
            log.failure("{method} {path} failed", failure, method=method, path=path)
            internal = rest_errors.internal_error(method, path, failure.value)
            status, body = internal.status, internal.body()
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-cache")
        return json.dumps(body).encode("utf-8")

    def _answer(self, request: Request, method: str, path: str) -> dict[str, Any]:
        if method not in ("GET", "HEAD"):
            raise rest_errors.method_not_allowed(method, path, ["GET"])
        if [p for p in request.postpath or [] if p]:
            raise rest_errors.not_found(f"no resource at {path}; this one is at {self.path}")
        status = self._status()
        if status is None:
            raise rest_errors.retriable(self.not_ready)
        return status


def mount_under(root: Resource, parents: Sequence[bytes], name: bytes, resource: Resource) -> None:
    """Put ``resource`` at ``parents/name`` under ``root``, making the parents that are missing.  Raises
    ``ValueError`` if a parent is a leaf (such as the RM's ``/ws``, which routes every path itself)."""
    parent = root
    for step in parents:
        child = parent.getStaticEntity(step)
        if child is None:
            child = Resource()
            parent.putChild(step, child)
        if getattr(child, "isLeaf", False):
            kind = type(child).__name__
            raise ValueError(f"cannot mount {name.decode()} under /{step.decode()}: it is a leaf resource ({kind})")
        parent = child
    parent.putChild(name, resource)
