"""What a standby ResourceManager's web port answers: YARN's standby, so that REST and WebHDFS clients find the active.

A standby (``roles/rm_ha.py``) binds its RM web address and serves this; when it becomes the active, the
same port serves the RM's REST API and NameNode instead (``SwitchingFactory``).

* ``/ws/v1/cluster/info`` (and ``/ws/v1/cluster``): 200, ``clusterInfo`` with ``"haState": "STANDBY"``,
  as YARN's standby answers (``yarn-api-client`` asks each RM for it to find the active).
* ``/ws/v1/cortex/rm-proof``: the RM proof (``rm_proof_web.py``) from the standby's copy of the RM's keys, so that
  ``client-config`` can verify a standby a directory names before writing it into a configuration.
* ``/webhdfs/v1/...``: 403 ``StandbyException`` while another node is the active (Hadoop's
  ``WebHdfsFileSystem`` fails over to the next namenode of its nameservice, as from a standby
  NameNode); 503 ``RetriableException`` while no node is (it backs off and asks again: a client that
  met only refused connections would give up at once).
* Any other path: 307 to the same path and query on the active's web address (YARN's standby
  redirects its REST API); 503 ``RetriableException`` while there is no active.  A target that is not
  an absolute path is refused (400), so the redirect never names another host.

Every answer closes its connection, so a client's next request meets whoever serves the port then.

JSON without ``Content-Type`` for WebHDFS (``yarn-wire-facts.md`` §7), with it for the REST API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.web.resource import Resource
from twisted.web.server import Request

from cortex_rm.yarn.rm_proof import PROOF_PATH
from cortex_rm.yarn_api.rest_errors import RETRIABLE, RestError

STANDBY = ("StandbyException", "org.apache.hadoop.ipc.StandbyException")
RM_PROOF_PATH = PROOF_PATH.encode("ascii")
CLUSTER_INFO_PATHS = (b"/ws/v1/cluster", b"/ws/v1/cluster/", b"/ws/v1/cluster/info", b"/ws/v1/cluster/info/")


class StandbyWeb(Resource):
    """See the module docstring.  ``active_webapp()``: the active RM's web address (``host:port``), or None."""

    isLeaf = True

    def __init__(
        self, active_webapp: Callable[[], str | None], cluster_info: Callable[[], dict[str, Any]],
        rm_proof: Resource | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.active_webapp, self.cluster_info, self.rm_proof = active_webapp, cluster_info, rm_proof

    def render(self, request: Request) -> int | bytes:
        # each answer closes its connection: a client that met the standby must meet the active (or this node,
        # become the active) on its next request, not the standby's answers again on a kept-alive connection
        request.setHeader(b"Connection", b"close")
        channel = getattr(request, "channel", None)
        if channel is not None:
            channel.persistent = False  # (read when the request is done: the connection is closed then)
        path = request.path or b"/"
        target = request.uri or path
        if not target.startswith(b"/") or target.startswith(b"//"):  # (never a Location to another host)
            return self._json(request, 400, {"RemoteException": {"exception": "BadRequestException", "message":
                              "a request target must be an absolute path", "javaClassName":
                              "org.apache.hadoop.yarn.webapp.BadRequestException"}}, typed=True)  # fmt: skip
        active = self.active_webapp()
        webhdfs = path.startswith(b"/webhdfs/")
        if path in CLUSTER_INFO_PATHS and request.method in (b"GET", b"HEAD"):
            return self._json(request, 200, {"clusterInfo": self.cluster_info()}, typed=True)
        if path == RM_PROOF_PATH and self.rm_proof is not None:
            answer: int | bytes = self.rm_proof.render(request)
            return answer
        if active is None:
            error = RestError(503, RETRIABLE, "no ResourceManager is active yet (an election is under way); retry shortly")
            request.setHeader(b"Retry-After", b"1")
            return self._json(request, error.status, error.body(), typed=not webhdfs)
        if webhdfs:
            error = RestError(403, STANDBY, f"this ResourceManager is a standby; the active one is at {active}")
            return self._json(request, error.status, error.body(), typed=False)
        request.defaultContentType = None
        request.setResponseCode(307)
        request.setHeader(b"Location", f"http://{active}".encode() + target)
        request.setHeader(b"Content-Length", b"0")
        return b""

    @staticmethod
    def _json(request: Request, status: int, body: dict[str, Any], *, typed: bool) -> bytes:
        data = json.dumps(body).encode("utf-8")
        request.setResponseCode(status)
        if typed:
            request.setHeader(b"Content-Type", b"application/json")
        else:
            request.defaultContentType = None  # else twisted.web adds text/html
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
        return data


def standby_cluster_info(version: str, started_ms: int) -> dict[str, Any]:
    """A standby's ``clusterInfo`` (YARN's fields; what a standby knows)."""
    return {
        "id": started_ms, "startedOn": started_ms, "state": "STARTED", "haState": "STANDBY",
        "resourceManagerVersion": version, "resourceManagerBuildVersion": f"Cortex RM {version}",
        "haZooKeeperConnectionState": "ZooKeeper is not used: the active RM is chosen on the Cortex ring",
    }  # fmt: skip


class SwitchingFactory(Factory):
    """A listening port's factory that hands each new connection to ``current`` (a standby's site, then the active
    RM's, and back): the port stays bound while the node changes role.  Each factory is started while current."""

    def __init__(self, current: IProtocolFactory) -> None:
        self.current = current

    def startFactory(self) -> None:
        self.current.doStart()

    def stopFactory(self) -> None:
        self.current.doStop()

    def switch(self, to: IProtocolFactory) -> None:
        """New connections go to ``to`` from now on (those open stay with the factory that took them)."""
        if to is self.current:
            return
        old, self.current = self.current, to
        if self.numPorts:
            to.doStart()
            old.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        return self.current.buildProtocol(addr)
