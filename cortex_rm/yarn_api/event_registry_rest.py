"""The function registry over REST: ``/ws/v1/cortex/events/functions[/{name}]``.

* ``GET /ws/v1/cortex/events/functions`` -> ``{"functions": [registration, ...]}``: the
  caller's own live functions, by name.
* ``POST /ws/v1/cortex/events/functions/{name}``, body as ``events/registration.py``
  says -> ``{"function": registration}`` (200): registered, or registered again (the next
  version).
* ``GET /ws/v1/cortex/events/functions/{name}`` -> ``{"function": registration}``: for
  its owner and the users she granted.
* ``DELETE /ws/v1/cortex/events/functions/{name}`` -> ``{"deleted": name, "version": n}``,
  ``n`` the deleted registration's version (its owner only).

A registration is ``FunctionSpec.to_json()``.  Every call needs a user's credential in the
``Hadoop-YARN-RM-Delegation-Token`` header, checked as the RM's REST API checks it (none:
401; a bad one: 401; an application's credential: 403), or a request signed for the RM
(``event_credentials.py``; once the RM is on the ring).  Errors take YARN's
``RemoteException`` form: a bad field 400 ``IllegalArgumentException`` naming it, the
code file missing 400 ``FileNotFoundException``, unreadable 403 ``AccessControlException``,
someone else's name 403 ``AccessControlException``, a bound reached 403
``QuotaExceededException``, an unknown function 404 ``NotFoundException``.

Mounting: ``mount_registry(events, registry, auth)`` puts a ``FunctionsResource`` at
``functions`` under any ``events`` resource (``EventsResource`` is a minimal one).  Its
``add_action(b"trigger", make)`` routes ``functions/{name}/trigger`` (and any other
action) to ``make(name)``, the trigger's own resource.  Without a registry (a node),
the registry's calls answer 307 with ``Location`` on the RM's web address
(``rm_web_address``), which clients follow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cortex_rm.events.functions import FunctionSpec, InvalidFunction, check_name
from cortex_rm.events.registration import RegistrationRequest
from cortex_rm.events.registry import FunctionAccessDenied, FunctionNotFound, RegistryFull, RegistryRefusal
from cortex_rm.fs.errors import AccessControl, FileNotFound, FsError
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER, RM_DELEGATION_KIND, InvalidToken
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.event_credentials import Authenticate, body_of, presented, unauthorized, user_of
from cortex_rm.yarn_api.rest import BoundedRequest, NotFoundResource, write_reply
from cortex_rm.yarn_api.rest_call import Reply, RestCall
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.rest_services import json_body
from cortex_rm.yarn_api.user_auth import UserAuthenticator

log = Logger()

FUNCTIONS_PATH: Final = "/ws/v1/cortex/events/functions"
ILLEGAL_ARGUMENT: Final = ("IllegalArgumentException", "java.lang.IllegalArgumentException")
ACCESS_CONTROL: Final = ("AccessControlException", "org.apache.hadoop.security.AccessControlException")
QUOTA_EXCEEDED: Final = ("QuotaExceededException", "org.apache.hadoop.hdfs.protocol.QuotaExceededException")
FILE_NOT_FOUND: Final = ("FileNotFoundException", "java.io.FileNotFoundException")
NEEDS_CREDENTIAL: Final = (
    "{path} needs a user's credential in the Hadoop-YARN-RM-Delegation-Token header. Ask the cluster's admin"
    " for one (`cortex-rm user add NAME --out FILE`)"
)


class RegistryOperations(Protocol):
    """What the REST API asks of the RM's registry (``roles/event_registry.EventRegistry``)."""

    async def register(self, user: str, name: str, request: RegistrationRequest) -> FunctionSpec: ...
    async def delete(self, user: str, name: str) -> FunctionSpec: ...
    def get(self, user: str, name: str) -> FunctionSpec: ...
    def owned(self, user: str) -> list[FunctionSpec]: ...


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", errors="replace")


def rest_error(error: BaseException) -> RestError | None:
    """The REST answer to a refusal of the registry or the file system (None: a bug of ours, 500)."""
    if isinstance(error, RestError):
        return error
    if isinstance(error, InvalidFunction):
        return RestError(400, ILLEGAL_ARGUMENT, str(error))
    if isinstance(error, FunctionNotFound):
        return rest_errors.not_found(str(error))
    if isinstance(error, FunctionAccessDenied):
        return RestError(403, ACCESS_CONTROL, str(error))
    if isinstance(error, RegistryFull):
        return RestError(403, QUOTA_EXCEEDED, str(error))
    if isinstance(error, RegistryRefusal):
        return rest_errors.bad_request(str(error))
    if isinstance(error, FileNotFound):
        return RestError(400, FILE_NOT_FOUND, f"code: {error}")
    if isinstance(error, AccessControl):
        return RestError(403, ACCESS_CONTROL, f"code: {error}")
    if isinstance(error, FsError):
        return RestError(error.http_status, (error.simple_name, error.java_class), f"code: {error}")
    return None


def serve(request: Request, answer: Callable[[], Awaitable[Reply] | Reply]) -> int:
    """Answer ``request`` with ``answer()``'s reply, or its error as a ``RemoteException`` (NOT_DONE_YET)."""
    gone: list[Failure] = []
    request.notifyFinish().addErrback(gone.append)  # the client went away before the answer
    method, path = _text(request.method), _text(request.path)

    async def run() -> Reply:
        if isinstance(request, BoundedRequest) and request.body_too_large:
            raise rest_errors.body_too_large(request.body_limit())
        reply = answer()
        return reply if isinstance(reply, Reply) else await reply

    def failed(failure: Failure) -> tuple[Reply, tuple[tuple[bytes, bytes], ...]]:
        error = None if failure.value is None else rest_error(failure.value)
        if error is None:
            log.failure("{method} {path} failed", failure, method=method, path=path)
            error = rest_errors.internal_error(method, path, failure.value)
        else:
            rest_errors.log_refused(log, method, path, error, request)
        return Reply(error.status, error.body()), error.headers

    def send(result: Reply | tuple[Reply, tuple[tuple[bytes, bytes], ...]]) -> None:
        if not gone:
            reply, headers = result if isinstance(result, tuple) else (result, ())
            write_reply(request, reply, headers)

    d = defer.ensureDeferred(run())
    d.addErrback(failed).addCallback(send)
    d.addErrback(lambda f: log.failure("could not answer {method} {path}", f, method=method, path=path))
    return NOT_DONE_YET


class EventsResource(Resource):
    """``/ws/v1/cortex/events``: holds the events' resources (``putChild``); anything else is a JSON 404."""

    def __init__(self) -> None:
        super().__init__()

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFoundResource()

    def render(self, request: Request) -> bytes:
        return NotFoundResource().render(request)


class FunctionsResource(Resource):
    """``/ws/v1/cortex/events/functions``: the listing, and each function's resource below it."""

    def __init__(
        self,
        registry: RegistryOperations | None,
        auth: UserAuthenticator | None,
        *,
        rm_web_address: Callable[[], defer.Deferred[str]] | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.auth = auth
        self.rm_web_address = rm_web_address  # "host:port" of the RM's web port, where a node redirects
        self.signed: Authenticate | None = None  # checks signed requests, once the RM is on the ring
        self.ring_id_hex: str | None = None  # the RM's, once on the ring (in a 401's challenge)
        self.actions: dict[bytes, Callable[[str], Resource]] = {}

    def add_action(self, segment: bytes, make: Callable[[str], Resource]) -> None:
        """Route ``functions/{name}/<segment>`` to ``make(name)`` (e.g. ``b"trigger"``)."""
        self.actions[segment] = make

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self  # a trailing slash names the listing
        return FunctionResource(self, _text(path))

    def render(self, request: Request) -> int:
        return serve(request, lambda: self.answer(request, None))

    async def caller(self, request: Request) -> str:
        """The user the request's credential authenticates: the plain token header (401 without one, 403 for
        an application's), or a request signed for this RM once it is on the ring (``signed``)."""
        path = _text(request.path)
        shown = presented(request, self.ring_id_hex)
        if shown is None or self.auth is None:
            raise unauthorized(NEEDS_CREDENTIAL.format(path=path), self.ring_id_hex)
        if not isinstance(shown, str):
            if self.signed is None:
                raise unauthorized("this ResourceManager is not on the ring yet: it takes no signed request;"
                                   f" send {REST_TOKEN_HEADER} instead", None)  # fmt: skip
            return await user_of(self.signed, shown, self.ring_id_hex)
        try:
            principal = self.auth.principal_of_url_token(shown, RM_DELEGATION_KIND)
        except InvalidToken as e:
            raise rest_errors.unauthorized(f"{REST_TOKEN_HEADER}: {e}") from None
        if principal.user is None or principal.application is not None:
            raise RestError(403, ACCESS_CONTROL, f"{path}: an application's credential may act on its application only")
        return principal.user

    async def answer(self, request: Request, name: str | None) -> Reply:
        """The reply to a registry call on the listing (``name`` None) or on function ``name``."""
        method = _text(request.method)
        if self.registry is None:
            return await self._redirect(request)
        allowed = ["GET", "HEAD"] if name is None else ["DELETE", "GET", "HEAD", "POST"]
        if method not in allowed:
            raise rest_errors.method_not_allowed(method, _text(request.path), allowed)
        user = await self.caller(request)
        if name is None:
            return Reply(body={"functions": [spec.to_json() for spec in self.registry.owned(user)]})
        check_name(name)
        if method in ("GET", "HEAD"):
            return Reply(body={"function": self.registry.get(user, name).to_json()})
        if method == "DELETE":
            tombstone = await self.registry.delete(user, name)
            return Reply(body={"deleted": name, "version": tombstone.version - 1})
        content_type = _header(request, b"content-type")
        call = RestCall(method, _text(request.path), body=body_of(request), content_type=content_type)
        try:
            body = json_body(call)
        except RestError as e:  # a body that is not JSON: a bad argument, as every other mistake in it
            kind = ILLEGAL_ARGUMENT if e.status == 400 else (e.exception, e.java_class)
            raise RestError(e.status, kind, e.message) from None
        spec = await self.registry.register(user, name, RegistrationRequest.from_json(body))
        return Reply(body={"function": spec.to_json()})

    async def _redirect(self, request: Request) -> Reply:
        """A node: the registry is the RM's; 307 to the same path on its web address."""
        if self.rm_web_address is None:
            raise rest_errors.not_found(f"{_text(request.path)}: this node keeps no function registry")
        try:
            address = await self.rm_web_address()
        except Exception as e:
            raise rest_errors.retriable(f"the ResourceManager is not known yet ({e}); try again shortly") from None
        return Reply(307, None, location=f"http://{address}{_text(request.uri)}")


class FunctionResource(Resource):
    """``/ws/v1/cortex/events/functions/{name}``, and its actions (``FunctionsResource.add_action``)."""

    def __init__(self, functions: FunctionsResource, name: str) -> None:
        super().__init__()
        self.functions = functions
        self.name = name

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        make = self.functions.actions.get(path)
        return NotFoundResource() if make is None else make(self.name)

    def render(self, request: Request) -> int:
        return serve(request, lambda: self.functions.answer(request, self.name))


def mount_registry(
    events: Resource,
    registry: RegistryOperations | None,
    auth: UserAuthenticator | None,
    *,
    rm_web_address: Callable[[], defer.Deferred[str]] | None = None,
) -> FunctionsResource:
    """Put the registry's resource at ``functions`` under ``events`` (``/ws/v1/cortex/events``); it."""
    functions = FunctionsResource(registry, auth, rm_web_address=rm_web_address)
    events.putChild(b"functions", functions)
    return functions




def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else _text(value)

