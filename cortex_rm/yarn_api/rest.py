"""The ResourceManager's web port: YARN's REST API over twisted.web.

``build_rest_site(rm, version=...)`` gives the ``Site`` the composition root
listens with.  The tree is small:

* ``/cluster/...`` -- the status pages for people (``status_web``: HTML, 200 for ``/cluster``);
  ``/`` redirects there (302), as YARN's does.  Clients such as ``yarn-api-client`` probe
  ``<base>/cluster`` for a 200 to find the active RM.
* ``/ws/v1/cluster/...`` -- the web services, routed by ``rest_services.ROUTES`` to
  ``ClusterWebServices``; every answer is JSON, errors in YARN's ``RemoteException``
  form (``rest_errors``).  Unknown paths are 404, known paths with another method
  405 (with ``Allow``).

The site is an ``http_limits.LimitedSite`` (``RestSite``): request lines, headers,
bodies, connections and their timeouts are bounded there, a declared body over
``max_body_bytes`` is answered 413 before it is read, and every refusal is JSON.
``BoundedRequest`` keeps at most ``max_body_bytes`` of a body too.  Operations that wait
on the state store run as Deferreds and the request is finished when they fire
(``NOT_DONE_YET``); a client that has gone away by then is simply not answered.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import IO, Any, Final, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request

from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER, DelegationIdentifier, InvalidToken, Principal
from cortex_rm.yarn.errors import YarnError
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.http_access import anonymous_access_of, caller_of
from cortex_rm.yarn_api.http_limits import API_LIMITS, HttpLimits, LimitedSite
from cortex_rm.yarn_api.http_streams import LimitedRequest
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.rest_call import STATIC_WEB_USER, Reply, RestCall
from cortex_rm.yarn_api.rest_credentials import UserAdmin
from cortex_rm.yarn_api.ledger_rest import LedgerWebServices
from cortex_rm.yarn_api.rest_services import NEEDS_CREDENTIAL, ClusterWebServices, ViewTicketSigner, match_route
from cortex_rm.yarn_api.status_web import ActivationsOf, ClusterPages, FunctionsOf
from cortex_rm.yarn_api.rm_proof_web import LiveSecrets, RmProofResource, RmProofs
from cortex_rm.yarn_api.user_auth import UserAuthenticator

log = Logger()

DEFAULT_MAX_BODY_BYTES: Final = 1 << 20
JSON_CONTENT_TYPE: Final = b"application/json; charset=utf-8"
_EVENTS: Final = [b"v1", b"cortex", b"events"]
_RM_PROOF: Final = [b"v1", b"cortex", b"rm-proof"]
_HOST_HEADER: Final = re.compile(r"^[A-Za-z0-9.\-_]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class BoundedRequest(LimitedRequest):
    """A request that keeps at most ``site.max_body_bytes`` of its body."""

    body_too_large = False

    def body_limit(self) -> int:
        """The site's ``max_body_bytes`` (the default for a request built outside a ``RestSite``)."""
        return getattr(getattr(self.channel, "site", None), "max_body_bytes", DEFAULT_MAX_BODY_BYTES)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.body_limit():
            self.body_too_large = True  # declared too large: keep nothing
            self.content = cast(Any, io.BytesIO())
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        content = cast(IO[bytes], self.content)
        if content.tell() + len(data) > self.body_limit():  # chunked bodies have no declared length
            self.body_too_large = True
            content.close()
            self.content = cast(Any, io.BytesIO())
            return
        super().handleContentChunk(data)


class RestSite(LimitedSite):
    """The RM's web ``Site``: the bounds of ``limits`` (``http_limits``), whose ``max_body_bytes``
    its requests obey too (a chunked body over it is answered 413 in YARN's form)."""

    requestFactory = BoundedRequest
    #: ``/ws/v1/cortex/rm-proof`` (with ``auth``): the RM claims its addresses once bound (``RmProofs.claim``).
    rm_proofs: RmProofs | None = None

    def __init__(self, resource: Resource, *, limits: HttpLimits, clock: IReactorTime) -> None:
        super().__init__(resource, limits=limits, clock=clock, name="RM web", untyped_prefixes=(b"/webhdfs/",))

    @property
    def max_body_bytes(self) -> int:
        return self.limits.max_body_bytes


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _base_url(request: Request) -> str:
    """scheme://host[:port] the client used (its Host header when well formed)."""
    scheme = "https" if request.isSecure() else "http"
    host = _text(request.getHeader(b"host"))
    if host is None or not _HOST_HEADER.match(host):
        address = request.getHost()
        host = f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', 80)}"
    return f"{scheme}://{host}"


def _query(request: Request) -> dict[str, list[str]]:
    args: dict[bytes, list[bytes]] = request.args or {}
    try:
        return {k.decode("utf-8"): [v.decode("utf-8") for v in vs] for k, vs in args.items()}
    except UnicodeDecodeError:
        raise rest_errors.bad_request("the query string is not valid UTF-8") from None


def write_reply(request: Request, reply: Reply, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Send ``reply`` as the response to ``request`` and finish it."""
    data = b"" if reply.body is None else json.dumps(reply.body).encode("utf-8")
    request.setResponseCode(reply.status)
    request.setHeader(b"Content-Type", JSON_CONTENT_TYPE)
    request.setHeader(b"Cache-Control", b"no-cache")
    if reply.location is not None:
        request.setHeader(b"Location", reply.location.encode("utf-8"))
    for name, value in headers:
        request.setHeader(name, value)
    request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
    request.write(data)
    request.finish()


class WebServicesResource(Resource):
    """``/ws/...``: routes ``/ws/v1/cluster/<...>`` to the operations, answers JSON."""

    isLeaf = True

    def __init__(
        self,
        services: ClusterWebServices,
        auth: UserAuthenticator | None,
        cortex: LedgerWebServices | None = None,
        events: Resource | None = None,
        rm_proof: Resource | None = None,
    ) -> None:
        super().__init__()
        self.services = services
        self.auth = auth
        self.cortex = cortex  # /ws/v1/cortex/...: the uptime ledger
        self.events = events  # /ws/v1/cortex/events/...: a resource tree of its own
        self.rm_proof = rm_proof  # /ws/v1/cortex/rm-proof: asked without a credential (``rm_proof_web``)

    def render(self, request: Request) -> int | bytes:
        postpath, prepath = request.postpath or [], request.prepath or []
        if self.rm_proof is not None and postpath == _RM_PROOF:
            proof: int | bytes = self.rm_proof.render(request)
            return proof
        if self.events is not None and postpath[:3] == _EVENTS:
            for _ in _EVENTS:  # on down the events' own tree, as the site would
                prepath.append(postpath.pop(0))
            request.prepath, request.postpath = prepath, postpath
            answer: int | bytes = getChildForRequest(self.events, request).render(request)
            return answer
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)  # the client went away before the answer
        method = _text(request.method) or "GET"
        path = _text(request.path) or "/"
        d = defer.maybeDeferred(self._dispatch, request, method, path)
        d.addErrback(self._error_reply, request, method, path)
        d.addCallback(self._send, request, gone)
        d.addErrback(lambda f: log.failure("could not answer {method} {path}", f, method=method, path=path))
        return NOT_DONE_YET

    def _dispatch(self, request: Request, method: str, path: str) -> defer.Deferred[Reply]:
        if isinstance(request, BoundedRequest) and request.body_too_large:
            raise rest_errors.body_too_large(request.body_limit())
        segments = [s.decode("utf-8", errors="replace") for s in request.postpath or []]
        if segments and segments[-1] == "":
            segments.pop()  # a trailing slash names the same resource
        if segments[:2] == ["v1", "cortex"] and self.cortex is not None:
            call = self._call(request, method, path, ())
            if self.services.anonymous_access != "cluster-info" and not call.principal.authenticated:
                raise rest_errors.unauthorized(NEEDS_CREDENTIAL.format(path=path))
            return defer.Deferred.fromCoroutine(self.cortex.answer(call, tuple(segments[2:])))
        if segments[:2] != ["v1", "cluster"]:
            raise rest_errors.not_found(f"no web service at {path}; the RM's REST API is under /ws/v1/cluster")
        match = match_route(tuple(segments[2:]))
        if match is None:
            raise rest_errors.not_found(f"no resource at {path}")
        methods, params = match
        name = methods.get("GET" if method == "HEAD" else method)
        if name is None:
            raise rest_errors.method_not_allowed(method, path, list(methods))
        answer = self.services.operation(name)(self._call(request, method, path, params))
        if isinstance(answer, Reply):
            return defer.succeed(answer)
        return defer.Deferred.fromCoroutine(answer)  # runs now, up to the first wait on the state store

    def _call(self, request: Request, method: str, path: str, params: tuple[str, ...]) -> RestCall:
        query = _query(request)
        principal, token = self._principal(request)
        return RestCall(
            method=method,
            path=path,
            params=params,
            query=query,
            body=cast(IO[bytes], request.content).read() if request.content is not None else b"",
            content_type=_text(request.getHeader(b"content-type")),
            user=principal.name(STATIC_WEB_USER),
            principal=principal,
            token=token,
            client_host=str(getattr(request.getClientAddress(), "host", "")),
            base_url=_base_url(request),
        )

    def _principal(self, request: Request) -> tuple[Principal, DelegationIdentifier | None]:
        """The owner of the request's RM delegation token, and the token; anonymous without one
        (401 for a bad one)."""
        try:
            return caller_of(self.auth, request)  # the status pages' rule too
        except InvalidToken as e:
            raise rest_errors.unauthorized(f"{REST_TOKEN_HEADER}: {e}") from None

    def _error_reply(
        self, failure: Failure, request: Request, method: str, path: str
    ) -> tuple[Reply, tuple[tuple[bytes, bytes], ...]]:
        error = failure.value
        if isinstance(error, YarnError):
            error = rest_errors.from_allocator(error) or error
        if not isinstance(error, RestError):
            log.failure("{method} {path} failed", failure, method=method, path=path)
            error = rest_errors.internal_error(method, path, failure.value)
        else:
            rest_errors.log_refused(log, method, path, error, request)
        return Reply(error.status, error.body()), error.headers

    def _send(self, result: Reply | tuple[Reply, tuple[tuple[bytes, bytes], ...]], request: Request, gone: list[Failure]) -> None:
        if gone:
            return
        reply, headers = result if isinstance(result, tuple) else (result, ())
        write_reply(request, reply, headers)


class NotFoundResource(Resource):
    """Any path outside ``/``, ``/cluster`` and ``/ws``: a JSON 404."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        path = _text(request.path) or "/"
        error = rest_errors.not_found(f"no resource at {path}")
        data = json.dumps(error.body()).encode("utf-8")
        request.setResponseCode(error.status)
        request.setHeader(b"Content-Type", JSON_CONTENT_TYPE)
        return data


class RootRedirect(Resource):
    """``/``: 302 to ``/cluster``, as YARN's RM web app redirects its root (a short HTML body says so too)."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setResponseCode(302)
        request.setHeader(b"Location", b"/cluster")
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return b'<!DOCTYPE html>\n<title>Cortex ResourceManager</title><p>See <a href="/cluster">/cluster</a>.</p>\n'


class _Root(Resource):
    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFoundResource()


def build_rest_site(
    rm: RMContext,
    *,
    version: str,
    max_body_bytes: int | None = None,
    children: Mapping[bytes, Resource] | None = None,
    auth: UserAuthenticator | None = None,
    access: AppAccess | None = None,
    admin: UserAdmin | None = None,
    limits: HttpLimits = API_LIMITS,
    view_tickets: ViewTicketSigner | None = None,
    ledger: LedgerWebServices | None = None,
    events: Resource | None = None,
    event_functions: FunctionsOf | None = None,
    event_activations: ActivationsOf | None = None,
) -> RestSite:
    """The RM's web site (REST API and overview page), for ``reactor.listenTCP(port, site)``.

    ``version`` is the Cortex version shown by ``/ws/v1/cluster/info``; ``limits`` bound its
    connections and requests (``http_limits``); request bodies larger than ``max_body_bytes``
    (``limits.max_body_bytes`` unless given) are answered with 413 without being kept;
    ``children`` are mounted at the root too (``webhdfs``: the NameNode); the RM's clock
    runs every timeout.  ``auth`` checks the callers' tokens (without it every caller is
    anonymous), ``access`` says who may see and change which application, and ``admin``
    issues users' credentials; ``events`` serves ``/ws/v1/cortex/events/...`` (its children
    are walked as the site walks a tree: ``event_registry_rest.EventsResource``), and the status pages'
    ``/cluster/events`` lists a user's ``event_functions`` and ``event_activations``.  With ``auth``,
    ``/ws/v1/cortex/rm-proof`` answers once the RM claims its addresses (``site.rm_proofs``).
    """
    root = _Root()
    access = access or AppAccess(())
    page = ClusterPages(rm, version, auth, access, ledger, event_functions, event_activations)
    root.putChild(b"", RootRedirect())
    root.putChild(b"cluster", page)
    anonymous_access = anonymous_access_of(auth)
    credentials = auth.credentials if auth is not None else None
    services = ClusterWebServices(
        rm, version, access, anonymous_access, admin, credentials, view_tickets=view_tickets
    )
    proofs = None if auth is None else RmProofs(LiveSecrets(auth.credentials), rm.clock)
    proof_resource = None if proofs is None else RmProofResource(proofs)
    root.putChild(b"ws", WebServicesResource(services, auth, ledger, events, proof_resource))
    for name, child in (children or {}).items():
        root.putChild(name, child)
    if max_body_bytes is not None:
        limits = replace(limits, max_body_bytes=max_body_bytes)
    site = RestSite(root, limits=limits, clock=rm.clock)
    site.rm_proofs = proofs
    return site
