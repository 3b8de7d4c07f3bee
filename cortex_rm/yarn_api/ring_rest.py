"""The ring as one node sees it, over HTTP: ``GET /ws/v1/ring`` (read by ``cortex-rm ring``).

``ring_view_to_json`` turns a ``RingView`` into a JSON document with stable field
names (YARN's camelCase, one top-level key like ``nodeInfo``)::

    {"ring": {
        "observedAtMs": 1700000000000,         # when the view was taken (node's clock)
        "node": {"id": "<40 hex>", "address": "host:port"},
        "state": "member",                    # RingState: alone | joining | member | left
        "incarnation": 3,                     # SWIM incarnation of this node
        "predecessor": {"id": ..., "address": ...} | null,
        "successors": [{"id": ..., "address": ...}, ...],   # nearest first
        "fingerCount": 7,                     # distinct peers in the finger table
        "records": 12,                        # records this node stores
        "members": [                          # every peer heard of (this node excluded), by ring id
            {"id": ..., "address": ..., "status": "alive", "incarnation": 0,
             "addressVerified": true}, ...],  # our own dial met its key at that address
        "memberCounts": {"alive": 2, "suspect": 1, "dead": 0, "left": 0},
        "refusals": {                         # what it refused from others since it started
            "senders": 0,                     # envelopes from a key without valid work / id
            "rumours": 0,                     # forged or unproven rumours (bad signature, signer, accuser)
            "gossip": 0,                      # gossip items not signed by their publisher
            "records": 0,                     # records refused by signature or write policy
            "rateLimited": 0,                 # rumours and puts over a peer's rate limit
            "refutedDeathClaims": 0}}}        # DEAD claims about members our own probe found alive

``RingResource`` serves it as a twisted.web leaf.  Errors take the REST layer's
``RemoteException`` form (``yarn_api.rest_errors``): 503 while the ring is not
started (the view callable returns ``None``), 405 (with ``Allow``) for a method
other than GET or HEAD, 404 below ``/ws/v1/ring``, 500 for our own bugs.
``mount_ring`` puts it at ``/ws/v1/ring`` of an existing site tree (the
NodeManager's web site) without disturbing the resources already there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from cortex_rm.dht.peer import Peer
from cortex_rm.dht.refusals import Refusals
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.json_status import mount_under
from cortex_rm.yarn_api.rest_errors import RestError

log = Logger()

RING_PATH: Final = "/ws/v1/ring"
JSON_CONTENT_TYPE: Final = b"application/json"
ALLOWED_METHODS: Final = ("GET", "HEAD")


def peer_json(peer: Peer) -> dict[str, str]:
    """A peer as ``{"id": <40 hex digits>, "address": "host:port"}``."""
    return {"id": format_id(peer.node_id), "address": peer.address}


def refusals_json(refusals: Refusals) -> dict[str, int]:
    """``Refusals`` under the JSON names of ``"refusals"`` (see the module doc)."""
    return {
        "senders": refusals.senders,
        "rumours": refusals.rumours,
        "gossip": refusals.gossip,
        "records": refusals.records,
        "rateLimited": refusals.rate_limited,
        "refutedDeathClaims": refusals.refuted_deaths,
    }


def ring_view_to_json(view: RingView, *, now_ms: int) -> dict[str, Any]:
    """The JSON document of ``GET /ws/v1/ring`` for ``view``, taken at ``now_ms`` (see the module doc)."""
    members = sorted(view.members, key=lambda m: (m[0].node_id, m[0].address))
    counts = {status.value: 0 for status in MemberStatus}
    for _, status, _ in members:
        counts[status.value] += 1
    return {
        "ring": {
            "observedAtMs": now_ms,
            "node": peer_json(view.me),
            "state": view.state.value,
            "incarnation": view.incarnation,
            "predecessor": None if view.predecessor is None else peer_json(view.predecessor),
            "successors": [peer_json(p) for p in view.successors],
            "fingerCount": view.finger_count,
            "records": view.records,
            "members": [
                dict(peer_json(peer), status=status.value, incarnation=incarnation, addressVerified=peer in view.verified)
                for peer, status, incarnation in members
            ],
            "memberCounts": counts,
            "refusals": refusals_json(view.refusals),
        }
    }


def ring_not_started() -> RestError:
    """503: the node answers HTTP but its ring member has not been started (or was stopped).

    Jersey answers a ``WebApplicationException`` built with a status this way, so a
    client reading ``RemoteException.exception`` sees what it would from YARN.
    """
    return RestError(
        503,
        rest_errors.WEB_APPLICATION,
        "the ring is not started on this node; it starts with the node's ring service "
        "(see the node's log for why it has not)",
    )


class RingResource(Resource):
    """``/ws/v1/ring`` (and ``/ws/v1/ring/``): this node's ``RingView`` as JSON.

    ``view`` is called on every request and returns ``None`` while the ring is not
    started; ``clock`` stamps the answer (``observedAtMs``).
    """

    isLeaf = True

    def __init__(self, view: Callable[[], RingView | None], clock: IReactorTime) -> None:
        super().__init__()
        self._view = view
        self._clock = clock

    def view(self) -> RingView | None:
        """This node's ring view now (None while the ring is not started): the node's status page shows it too."""
        return self._view()

    def render(self, request: Request) -> bytes:
        method = (request.method or b"GET").decode("ascii", errors="replace")
        path = (request.path or RING_PATH.encode()).decode("utf-8", errors="replace")
        try:
            body = self._answer(request, method, path)
            status = 200
        except RestError as error:
            status, body = self._error(request, error, method, path)
        except Exception:
            failure = Failure()
            log.failure("{method} {path} failed", failure, method=method, path=path)
            status, body = self._error(request, rest_errors.internal_error(method, path, failure.value), method, path)
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", JSON_CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-cache")
        return json.dumps(body).encode("utf-8")

    def _answer(self, request: Request, method: str, path: str) -> dict[str, Any]:
        if method not in ALLOWED_METHODS:
            raise rest_errors.method_not_allowed(method, path, list(ALLOWED_METHODS))
        if [p for p in request.postpath or [] if p] != []:
            raise rest_errors.not_found(f"no resource at {path}; the ring view is at {RING_PATH}")
        view = self._view()
        if view is None:
            raise ring_not_started()
        return ring_view_to_json(view, now_ms=int(self._clock.seconds() * 1000))

    def _error(self, request: Request, error: RestError, method: str, path: str) -> tuple[int, dict[str, Any]]:
        for name, value in error.headers:
            request.setHeader(name, value)
        if error.status != 500:
            rest_errors.log_refused(log, method, path, error, request)
        return error.status, error.body()


def mount_ring(root: Resource, ring: Resource) -> None:
    """Put ``ring`` at ``ws/v1/ring`` under ``root``, reusing the ``ws`` and ``v1`` children already there.

    For the NodeManager's site: ``mount_ring(site.resource, RingResource(...))``
    keeps ``/ws/v1/node`` as it is.  Raises ``ValueError`` if ``ws`` or ``v1`` is a
    leaf (such as the RM's ``/ws``, which routes every path itself).
    """
    mount_under(root, (b"ws", b"v1"), b"ring", ring)
