"""The NodeManager's REST API (``/ws/v1/node``) on the node's web port.

It serves the node's identity and health (``/ws/v1/node`` and
``/ws/v1/node/info``, in YARN's JSON shape), the node's status page for people (``/node``:
``node_web``) and, given the node's containers, its
applications, containers and container logs (``nm_rest_containers``:
``/ws/v1/node/{apps,containers,containerlogs}/...``).  ``cortex-rm local-cluster``
waits on it to know a daemon is up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from cortex_rm.dht.ring_member import RingView
from cortex_rm.status_page.node_page import NodeInfo
from cortex_rm.yarn_api.http_limits import DATANODE_LIMITS, HttpLimits, LimitedSite
from cortex_rm.yarn_api.nm_rest_containers import NodeContainers, NodeContainersResource
from cortex_rm.yarn_api.nm_viewers import ViewTickets
from cortex_rm.yarn_api.node_web import NodePage


def node_info_json(info: NodeInfo, now_ms: int) -> dict[str, Any]:
    return {
        "nodeInfo": {
            "id": info.node_id,
            "nodeHostName": info.host,
            "totalPmemAllocatedContainersMB": info.memory_mb,
            "totalVmemAllocatedContainersMB": int(info.memory_mb * 2.1),
            "totalVCoresAllocatedContainers": info.vcores,
            "vmemCheckEnabled": False,
            "pmemCheckEnabled": True,
            "lastNodeUpdateTime": now_ms,
            "nodeHealthy": True,
            "healthReport": "",
            "nodeManagerVersion": info.version,
            "nodeManagerBuildVersion": info.version,
            "nodeManagerVersionBuiltOn": "",
            "hadoopVersion": "3.5.0",
            "hadoopBuildVersion": "3.5.0 (Cortex RM compatible API)",
            "hadoopVersionBuiltOn": "",
            "nmStartupTime": info.started_ms,
        }
    }


class _NodeInfoResource(Resource):
    """``/ws/v1/node`` and ``/ws/v1/node/info`` (and with a trailing slash); every other path
    below it goes to ``services`` (the containers' web services) when there are some."""

    def __init__(self, info: NodeInfo, now_ms: Callable[[], int], services: Resource | None = None) -> None:
        super().__init__()
        self._info = info
        self._now_ms = now_ms
        self._services = services

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path in (b"", b"info") and not any(request.postpath or []):
            return self
        if self._services is not None:
            return self._services
        child: Resource = super().getChild(path, request)  # twisted.web's NoResource
        return child

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(node_info_json(self._info, self._now_ms())).encode()


def build_nm_site(
    info: NodeInfo,
    now_ms: Callable[[], int],
    children: Mapping[bytes, Resource] | None = None,
    containers: Callable[[], NodeContainers | None] | None = None,
    *,
    viewers: ViewTickets | None = None,
    ring: Callable[[], RingView | None] = lambda: None,
    clock: IReactorTime,
    limits: HttpLimits = DATANODE_LIMITS,
) -> LimitedSite:
    """The node's web site: ``/ws/v1/node`` and ``/ws/v1/node/info``, ``children`` at the root
    (the DataNode's ``webhdfs`` and ``cortex``) and, with ``containers`` (called on every request:
    the ContainerManager, None before it exists) and ``viewers`` (the view tickets it takes),
    the containers' web services under ``/ws/v1/node``.  ``ring`` (called on every request) gives the
    ring view the ``/node`` page shows: the one ``/ws/v1/ring`` serves, None off the ring.

    ``limits`` bound its connections and requests on ``clock`` (``http_limits``; the default lets
    the DataNode take whole files); the DataNode's replies (``/webhdfs``, ``/cortex``) name no
    Content-Type, as WebHDFS's must not."""
    if (containers is None) != (viewers is None):
        raise ValueError("the containers' web services need both the containers and who may see them")
    services = None if containers is None or viewers is None else NodeContainersResource(containers, viewers)
    v1 = Resource()
    v1.putChild(b"node", _NodeInfoResource(info, now_ms, services))
    ws = Resource()
    ws.putChild(b"v1", v1)
    root = Resource()
    root.putChild(b"ws", ws)
    root.putChild(b"node", NodePage(info, now_ms, containers, ring))
    for name, child in (children or {}).items():
        root.putChild(name, child)
    return LimitedSite(root, limits=limits, clock=clock, name="NodeManager web", untyped_prefixes=(b"/webhdfs/", b"/cortex/"))
