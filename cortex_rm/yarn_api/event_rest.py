"""The events' REST API, ``/ws/v1/cortex/events/...``, on every node's web port and on the RM's.

Routes (JSON; every refusal is YARN's ``RemoteException`` JSON, ``rest_errors.py``):

* ``GET introducers``: the web addresses of the ring's nodes, the file system's and the RM's,
  and this node's ring id (``ringId``, what a request to it is signed for); no credential
  needed: a client learns where else it may knock;
* ``functions[/{name}]`` is the registry's (``event_registry_rest.py``, the RM's; a node
  answers 307 to the RM's web address, which clients follow);
* ``POST functions/{name}/trigger[?blocking=false]``: the body (JSON, or empty for null) is
  the event.  Blocking (the default) waits for the verdict, up to the function's timeout:
  200 with the activation when it succeeded, 502 when the function failed (its error, its
  memory, a disagreement...), 504 when it timed out; never an accepted-and-poll reply.
  Non-blocking: 202 with the activation id once the executors have taken it.  Every
  executor busy: 429 with ``Retry-After``; none reachable: 503;
* ``GET activations/{id}[?wait=S]``: the activation (``wait`` holds the reply until it ends,
  at most ``MAX_WAIT_S``); an id another node made is redirected (307) to that node;
* ``GET activations/{id}/logs``: its logs (stdout and stderr, as one text);
* ``GET activations[?function=NAME&limit=N]``: the newest activations this node took that the caller
  may read (a scheduled function's activations are on the node that owned it at each tick).

Only the caller who triggered an activation, or the function's owner, may read it.  Every
call but ``introducers`` needs a user's credential (``event_credentials.py``): a request
signed for this node, or on the RM the plain token header; a 401 names this node's ring id.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from cortex_rm.events.activations import Activation, entry_prefix
from cortex_rm.events.errors import AllBusy, EventError, FunctionNotFound, NoExecutor, NotAllowed
from cortex_rm.events.functions import check_name, InvalidFunction
from cortex_rm.events.outcomes import MAX_PAYLOAD_BYTES
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.event_credentials import unauthorized
from cortex_rm.yarn_api.rest_call import Reply, RestCall
from cortex_rm.yarn_api.rest_errors import RestError

MAX_WAIT_S = 60.0
MAX_LISTED = 1000
TOO_MANY_REQUESTS = ("TooManyRequestsException", "org.apache.hadoop.ipc.RetriableException")
FAILED_STATUSES = {"timeout": 504}


class Gateway(Protocol):
    """The entry node's side (``roles/event_gateway.py``)."""

    async def trigger(self, name: str, payload: bytes, caller: str | None) -> Activation: ...

    def wait(self, activation: Activation) -> defer.Deferred[Activation]: ...

    def get(self, activation_id: str) -> Activation | None: ...

    def unwait(self, activation: Activation, d: defer.Deferred[Activation]) -> None: ...

    def readable(self, user: str, function: str | None, limit: int) -> list[Activation]: ...


class EventWebServices:
    """Answers ``/ws/v1/cortex/events/<segments>`` (see the module docstring)."""

    def __init__(
        self,
        gateway: Gateway | None,
        clock: IReactorTime,
        *,
        ring_id_hex: str,
        introducers: Callable[[], list[str]],
        rm_web: Callable[[], Awaitable[str | None]] | None = None,
        node_web: Callable[[str], str | None] | None = None,
    ) -> None:
        self.gateway = gateway
        self.clock = clock
        self.ring_id_hex = ring_id_hex
        self.prefix = ring_id_hex[:12]
        self.introducers = introducers
        self.rm_web = rm_web
        self.node_web = node_web

    async def answer(self, call: RestCall, segments: tuple[str, ...]) -> Reply:
        try:
            return await self._route(call, segments)
        except AllBusy as e:
            raise RestError(429, TOO_MANY_REQUESTS, str(e), headers=((b"Retry-After", str(e.retry_after_s).encode()),)) from None
        except FunctionNotFound as e:
            raise rest_errors.not_found(str(e)) from None
        except NotAllowed as e:
            raise rest_errors.forbidden(str(e)) from None
        except NoExecutor as e:
            raise rest_errors.retriable(str(e)) from None
        except (EventError, InvalidFunction) as e:
            raise rest_errors.bad_request(str(e)) from None

    async def _route(self, call: RestCall, segments: tuple[str, ...]) -> Reply:
        if segments == ("introducers",):
            _only(call, "GET")
            rm_web = await self.rm_web() if self.rm_web is not None else None
            return Reply(body={"introducers": self.introducers(), "fileSystem": rm_web, "resourceManager": rm_web,
                               "ringId": self.ring_id_hex})  # fmt: skip
        if len(segments) == 3 and segments[0] == "functions" and segments[2] == "trigger":
            _only(call, "POST")
            return await self._trigger(call, check_name(segments[1]))
        if segments == ("activations",):
            _only(call, "GET")
            user = self._user(call, "listing activations")
            function = call.query.get("function", [None])[-1]
            limit = int(min(_number(call, "limit", 100), MAX_LISTED))
            listed = self._gateway().readable(user, function, limit)
            return Reply(body={"activations": [a.to_json(signed=False) for a in listed]})
        if segments[:1] == ("activations",) and len(segments) in (2, 3):
            _only(call, "GET")
            if len(segments) == 3 and segments[2] != "logs":
                raise rest_errors.not_found(f"no resource at {call.path}")
            return await self._activation(call, segments[1], logs=len(segments) == 3)
        raise rest_errors.not_found(f"no resource at {call.path}; the events' API is under /ws/v1/cortex/events")

    # ------------------------------------------------------------ triggers and activations

    async def _trigger(self, call: RestCall, name: str) -> Reply:
        user = self._user(call, f"triggering {name}")
        gateway = self._gateway()
        payload = call.body.strip() or b"null"
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise rest_errors.body_too_large(MAX_PAYLOAD_BYTES)
        try:
            json.loads(payload)
        except (ValueError, RecursionError) as e:
            raise rest_errors.bad_request(f"the event must be JSON (the request's body): {e}") from None
        blocking = _flag(call, "blocking", True)
        activation = await gateway.trigger(name, payload, user)
        if not blocking:
            return Reply(202, {"activationId": activation.activation_id})
        ended = await gateway.wait(activation)
        return Reply(_status_of(ended), {"activation": ended.to_json()})

    async def _activation(self, call: RestCall, activation_id: str, logs: bool) -> Reply:
        user = self._user(call, "reading an activation")
        prefix = entry_prefix(activation_id)
        if prefix is None:
            raise rest_errors.bad_request(f"{activation_id[:80]!r} is not an activation id")
        if prefix != self.prefix:
            address = self.node_web(prefix) if self.node_web is not None else None
            if address is None:
                raise rest_errors.not_found(f"activation {activation_id}: the node that took it is not known here")
            return _redirect(address, call)
        activation = self._gateway().get(activation_id)
        if activation is None or not activation.may_read(user):
            raise rest_errors.not_found(f"activation {activation_id} is not known here (or was forgotten)")
        if logs:
            return Reply(body={"activationId": activation_id, "logs": activation.logs.decode("utf-8", errors="replace")})
        wait_s = min(_number(call, "wait", 0.0), MAX_WAIT_S)
        if wait_s > 0 and not activation.ended:
            running = activation
            waited = self._gateway().wait(running)

            def enough() -> None:
                self._gateway().unwait(running, waited)
                if not waited.called:
                    waited.callback(running)

            timer = self.clock.callLater(wait_s, enough)
            activation = await waited
            if timer.active():
                timer.cancel()
        return Reply(body={"activation": activation.to_json()})

    # ------------------------------------------------------------ internals

    def _user(self, call: RestCall, what: str) -> str:
        if call.principal.user is None:
            raise unauthorized(
                f"{what} needs a user's credential: a request signed for this node (the Python client and"
                " `cortex-rm event` sign theirs), or the Hadoop-YARN-RM-Delegation-Token header at the"
                " ResourceManager (ask the cluster's admin for one: `cortex-rm user add NAME --out FILE`)",
                self.ring_id_hex,
            )
        return call.principal.user

    def _gateway(self) -> Gateway:
        if self.gateway is None:
            raise rest_errors.retriable("this node does not take triggers (it is not on the ring); try another node")
        return self.gateway


def _status_of(activation: Activation) -> int:
    if activation.status == "success":
        return 200
    return FAILED_STATUSES.get(activation.status, 502)


def _redirect(address: str, call: RestCall) -> Reply:
    query = urlencode([(k, v) for k, vs in call.query.items() for v in vs])
    return Reply(307, None, location=f"http://{address}{call.path}" + (f"?{query}" if query else ""))


def _only(call: RestCall, method: str) -> None:
    if call.method != method and not (method == "GET" and call.method == "HEAD"):
        raise rest_errors.method_not_allowed(call.method, call.path, [method])



def _flag(call: RestCall, name: str, default: bool) -> bool:
    values = call.query.get(name)
    if not values:
        return default
    value = values[-1].lower()
    if value not in ("true", "false"):
        raise rest_errors.bad_request(f"{name} must be true or false, not {values[-1][:20]!r}")
    return value == "true"


def _number(call: RestCall, name: str, default: float) -> float:
    values = call.query.get(name)
    if not values:
        return default
    try:
        value = float(values[-1])
    except ValueError:
        raise rest_errors.bad_request(f"{name} must be a number of seconds, not {values[-1][:20]!r}") from None
    if not 0 <= value < 1e6:
        raise rest_errors.bad_request(f"{name} must be a number of seconds from 0")
    return value
