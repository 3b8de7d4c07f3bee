"""The events' REST answers (``event_rest.py``) as twisted.web resources, under ``/ws/v1/cortex/events``.

The events' tree is ``event_registry_rest.EventsResource``: ``functions`` is the
registry's (the RM's; a node's answers 307 to it), and ``mount_event_calls`` adds
``introducers``, ``activations`` and each function's ``trigger`` as ``EventCallResource``s,
which turn a request into a ``RestCall`` and answer it with ``EventWebServices``.

Who calls: ``authenticate`` turns what the request shows (``event_credentials.py``: a
signed request, or on the RM the plain token header) into a user.  The RM checks its
users' tokens itself; a node's site does not hold the key that checks them, so it asks
the RM over its tracker connection for the token's entry key for this node
(``roles/event_callers.py``).  A request without a credential is anonymous: it may read
``introducers``, nothing else.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Request

from cortex_rm.yarn.delegation import ANONYMOUS, Principal
from cortex_rm.yarn_api.event_credentials import Authenticate, body_of, presented, user_of
from cortex_rm.yarn_api.event_rest import EventWebServices
from cortex_rm.yarn_api.json_status import mount_under
from cortex_rm.yarn_api.event_registry_rest import FunctionsResource, serve
from cortex_rm.yarn_api.rest import _base_url, _query
from cortex_rm.yarn_api.rest_call import Reply, RestCall


class EventCallResource(Resource):
    """One route of the events' API: ``segments`` and what follows them in the request's path."""

    isLeaf = True

    def __init__(self, services: EventWebServices, authenticate: Authenticate, segments: tuple[str, ...]) -> None:
        super().__init__()
        self.services = services
        self.authenticate = authenticate
        self.segments = segments

    def render(self, request: Request) -> int:
        method = (request.method or b"GET").decode("ascii", errors="replace")
        path = (request.path or b"/").decode("utf-8", errors="replace")
        return serve(request, lambda: self._answer(request, method, path))

    async def _answer(self, request: Request, method: str, path: str) -> Reply:
        rest = [s.decode("utf-8", errors="replace") for s in request.postpath or []]
        if rest and rest[-1] == "":
            rest.pop()
        ring_id_hex = self.services.ring_id_hex
        shown = presented(request, ring_id_hex)
        principal = ANONYMOUS if shown is None else Principal(await user_of(self.authenticate, shown, ring_id_hex))
        call = RestCall(
            method=method,
            path=path,
            query=_query(request),
            body=body_of(request),
            content_type=(request.getHeader(b"content-type") or b"").decode("latin-1") or None,
            user=principal.name("dr.who"),
            principal=principal,
            client_host=str(getattr(request.getClientAddress(), "host", "")),
            base_url=_base_url(request),
        )
        return await self.services.answer(call, (*self.segments, *rest))


def mount_event_calls(
    events: Resource, functions: FunctionsResource, services: EventWebServices, authenticate: Authenticate
) -> None:
    """Add ``introducers``, ``activations`` and ``functions/{name}/trigger`` to an events tree."""
    for name in ("introducers", "activations"):
        events.putChild(name.encode(), EventCallResource(services, authenticate, (name,)))
    functions.add_action(b"trigger", lambda function: EventCallResource(services, authenticate, ("functions", function, "trigger")))


def mount_events(root: Resource, events: Resource) -> None:
    """Put ``events`` at ``ws/v1/cortex/events`` under a node site's ``root`` (its ``ws`` and ``v1`` kept)."""
    mount_under(root, (b"ws", b"v1", b"cortex"), b"events", events)
