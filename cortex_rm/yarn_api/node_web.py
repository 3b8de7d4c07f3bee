"""``/node`` on a NodeManager's web port: the node's own status page (``status_page.node_page``).

Everything on it is what the node's REST API already shows anyone (``/ws/v1/node/info``,
``/ws/v1/ring``), plus its containers counted by state (no application, user or container
named: those stay behind view tickets).  The ring view is the one the NodeManager serves at
``/ws/v1/ring``, given by it and read on each request (a node off the ring has none).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.resource import Resource
from twisted.web.server import Request

from cortex_rm.dht.ring_member import RingView
from cortex_rm.status_page.node_page import NodeInfo, count_containers, node_page
from cortex_rm.yarn_api.nm_rest_containers import NodeContainers
from cortex_rm.yarn_api.status_web import HTML, SECURITY_HEADERS


class NodePage(Resource):
    """``/node`` (and ``/node/``): the page; any path below it is 404."""

    isLeaf = True

    def __init__(
        self, info: NodeInfo, now_ms: Callable[[], int], containers: Callable[[], NodeContainers | None] | None,
        ring: Callable[[], RingView | None],
    ) -> None:  # fmt: skip
        super().__init__()
        self.info, self.now_ms, self.containers, self.ring = info, now_ms, containers, ring

    def render_GET(self, request: Request) -> bytes:
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        request.setHeader(b"Content-Type", HTML)
        if any(request.postpath or []):
            request.setResponseCode(404)
            return b"<!DOCTYPE html>\n<title>Not found</title><p>No page here: see <a href=\"/node\">/node</a>.</p>\n"
        manager = None if self.containers is None else self.containers()
        counts = None if manager is None else count_containers(manager.containers.values())
        return node_page(self.info, self.now_ms(), counts, self.ring()).encode("utf-8")
