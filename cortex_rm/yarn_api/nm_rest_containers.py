"""The NodeManager's containers, applications and container logs over REST, as YARN's NMWebServices.

Served under ``/ws/v1/node`` by ``NodeContainersResource`` (``nm_rest.build_nm_site``
mounts it), from what the ContainerManager knows, looked up on every request (the web
site starts before the ContainerManager exists; until then the node has no containers)::

    GET /ws/v1/node/containers                 {"containers": {"container": [<containerInfo>...]}}
    GET /ws/v1/node/containers/{cid}           {"container": <containerInfo>}
    GET /ws/v1/node/containers/{cid}/logs      {"containerLogsInfo": [{"containerLogInfo":
                                                   [{"fileName", "fileSize", "lastModifiedTime"}...],
                                                   "logAggregationType": "LOCAL", "containerId", "nodeId"}]}
    GET /ws/v1/node/containers/{cid}/logs/{file}   text/plain: the log file, framed as YARN frames it
    GET /ws/v1/node/containerlogs/{cid}/{file}     (the same)
    GET /ws/v1/node/apps[?state=&user=]        {"apps": {"app": [{"id", "state", "user", "containerids"}...]}}
    GET /ws/v1/node/apps/{appid}               {"app": {...}}

``containerInfo`` is ``{id, state, exitCode, diagnostics, user, totalMemoryNeededMB,
totalVCoresNeeded, containerLogsLink, nodeId, containerLogFiles}``.  The list of logs is
Hadoop 3.5's (``ContainerLogsInfoes`` written without its root), which every LogsCLI
reads; ``fileSize`` is a string and ``lastModifiedTime`` Hadoop's ``Times.format``, as
there.  Collections are always written, empty ones as ``[]`` (see ``rest_app_json``).

A log file is answered as ``LogToolUtils.outputContainerLogThroughZeroCopy`` and
``getLogs`` write it: a header (``Container: <cid> on <node>``, ``LogAggregationType:
LOCAL``, ``LogType``, ``LogLastModifiedTime``, ``LogLength``, ``LogContents:``), the
bytes, then ``End of LogType:<file>.`` (saying so when the container still runs) and a
row of stars.  ``size=N`` sends the first N bytes, ``size=-N`` the last N; when that is
nothing, the header is left out too, as in Hadoop.  ``format=octet-stream`` changes the
Content-Type.

Only the holder of a view ticket for an application (``?ticket=``, from the RM, which
checks VIEW_APP: see ``nm_viewers``) sees its containers, logs and entry here; listings
show that application's only, and a request without a ticket is 401.

Errors take YARN's ``RemoteException`` form (``rest_errors``): a malformed container or
application id, ``size`` or ``format``, or a file name that is empty or holds ``/``,
``..`` or NUL is a 400 BadRequestException; a container or application this node does not
know, or a file its log dirs do not hold, a 404 NotFoundException; another method a 405.

Nothing outside a container's log dirs is read (``nm_log_files``).  Every file
operation runs through the ContainerManager's runner, off the reactor thread; a file is
streamed a chunk (64 KiB) per read under the connection's back-pressure, so a log of
any size is never held in memory, and ``size`` reads only the bytes it sends.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cortex_rm.container.launch import NodeFacts
from cortex_rm.container.nm_container import NMContainer, NMContainerState
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import ApplicationId, ContainerId
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.nm_log_files import (
    LogFile,
    LogSender,
    LogUnavailable,
    check_log_file_name,
    list_log_files,
    log_header,
    log_range,
    log_trailer,
    open_log_file,
    parse_size,
    yarn_time,
)
from cortex_rm.yarn_api.nm_viewers import ViewTickets
from cortex_rm.yarn_api.rest_errors import RestError

log = Logger()

JSON_CONTENT_TYPE: Final = b"application/json; charset=utf-8"
LOG_CONTENT_TYPES: Final = {
    "text": b"text/plain; charset=utf-8",
    "octet-stream": b"application/octet-stream; charset=utf-8",
}
ALLOWED_METHODS: Final = ("GET", "HEAD")
#: YARN's NM ApplicationState names (``apps?state=`` takes one of them).
APPLICATION_STATES: Final = (
    "NEW", "INITING", "RUNNING", "FINISHING_CONTAINERS_WAIT", "APPLICATION_RESOURCES_CLEANINGUP", "FINISHED",
)  # fmt: skip
_HOST_HEADER = re.compile(r"^[A-Za-z0-9.\-_]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class NodeContainers(Protocol):
    """What the REST API reads of the node's containers (the ContainerManager provides it)."""

    @property
    def containers(self) -> Mapping[ContainerId, NMContainer]: ...

    @property
    def run(self) -> Runner: ...

    @property
    def node(self) -> NodeFacts: ...

    def application_cleaned_up(self, app_id: ApplicationId) -> bool: ...


# ------------------------------------------------------------------ the JSON documents


def container_info_json(c: NMContainer, node_id: str, files: Sequence[LogFile], base_url: str) -> dict[str, Any]:
    """YARN's NM ``ContainerInfo``."""
    cid = str(c.container_id)
    return {
        "id": cid,
        "state": c.state.value,
        "exitCode": c.exit_status,
        "diagnostics": c.report().diagnostics,
        "user": c.user,
        "totalMemoryNeededMB": c.resource.memory_mb,
        "totalVCoresNeeded": c.resource.vcores,
        # where its logs are listed (YARN links its web UI page, which Cortex does not serve)
        "containerLogsLink": f"{base_url}/ws/v1/node/containers/{cid}/logs",
        "nodeId": node_id,
        "containerLogFiles": [f.name for f in files],
    }


def container_logs_json(container_id: str, node_id: str, files: Sequence[LogFile]) -> dict[str, Any]:
    """``GET .../containers/{cid}/logs``: one ``ContainerLogsInfo``, the local logs."""
    listed = [
        {"fileName": f.name, "fileSize": str(f.length), "lastModifiedTime": yarn_time(f.modified_ms)} for f in files
    ]
    return {
        "containerLogsInfo": [
            {"containerLogInfo": listed, "logAggregationType": "LOCAL", "containerId": container_id, "nodeId": node_id}
        ]
    }


def application_state(containers: Sequence[NMContainer], cleaned_up: bool) -> str:
    """The NM ApplicationState of an application with ``containers`` here: RUNNING until the RM has
    it cleaned up, then FINISHING_CONTAINERS_WAIT while some are still ending, and FINISHED."""
    if not cleaned_up:
        return "RUNNING"
    return "FINISHED" if all(c.state is NMContainerState.DONE for c in containers) else "FINISHING_CONTAINERS_WAIT"


def node_applications(manager: NodeContainers) -> list[dict[str, Any]]:
    """YARN's NM ``AppInfo`` of every application with a container here, by id."""
    by_app: dict[ApplicationId, list[NMContainer]] = {}
    for c in manager.containers.values():
        by_app.setdefault(c.container_id.attempt_id.app_id, []).append(c)
    return [
        {
            "id": str(app_id),
            "state": application_state(cs, manager.application_cleaned_up(app_id)),
            "user": min(c.user for c in cs),
            "containerids": [str(c.container_id) for c in sorted(cs, key=lambda c: c.container_id)],
        }
        for app_id, cs in sorted(by_app.items())
    ]


# ------------------------------------------------------------------ the resource


def _base_url(request: Request) -> str:
    """scheme://host[:port] the client used (its Host header when well formed)."""
    scheme = "https" if request.isSecure() else "http"
    raw = request.getHeader(b"host")
    host = None if raw is None else raw.decode("latin-1")
    if host is None or not _HOST_HEADER.match(host):
        address = request.getHost()
        host = f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', 80)}"
    return f"{scheme}://{host}"


def _query(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    return None if not values else values[0].decode("utf-8", "replace")


class NodeContainersResource(Resource):
    """``/ws/v1/node/{containers,containerlogs,apps}/...`` (see the module docstring).

    ``manager`` is called on every request: the ContainerManager, or None before it exists.
    """

    isLeaf = True

    def __init__(self, manager: Callable[[], NodeContainers | None], viewers: ViewTickets) -> None:
        Resource.__init__(self)
        self._manager = manager
        self._viewers = viewers

    def render(self, request: Request) -> int:
        method = (request.method or b"GET").decode("ascii", "replace")
        path = (request.path or b"").decode("utf-8", "replace")
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        d = defer.maybeDeferred(self._dispatch, request, method, path, gone)
        d.addCallbacks(
            lambda body: self._reply(request, gone, 200, body), lambda f: self._failed(request, gone, f, method, path)
        )
        d.addErrback(lambda f: log.failure("could not answer {method} {path}", f, method=method, path=path))
        return NOT_DONE_YET

    def _dispatch(
        self, request: Request, method: str, path: str, gone: list[Failure]
    ) -> defer.Deferred[dict[str, Any] | None]:
        if method not in ALLOWED_METHODS:
            raise rest_errors.method_not_allowed(method, path, list(ALLOWED_METHODS))
        raw = [request.prepath[-1], *(request.postpath or [])] if request.prepath else []
        if raw and raw[-1] == b"":
            raw.pop()  # a trailing slash names the same resource
        segments = [os.fsdecode(s) for s in raw]
        sent = request.getHeader(REST_TOKEN_HEADER.encode("ascii")) is not None

        def viewable() -> ApplicationId:
            return self._viewers.application(_query(request, "ticket"), sent)

        match segments:
            case ["containers"]:
                return self._containers(request, viewable())
            case ["containers", cid]:
                return self._containers(request, self._viewed(viewable(), cid), cid)
            case ["containers", cid, "logs"]:
                self._viewed(viewable(), cid)
                return self._logs(cid)
            case ["containers", cid, "logs", name] | ["containerlogs", cid, name]:
                check_log_file_name(name)
                self._viewed(viewable(), cid)
                return self._log_file(request, cid, name, method == "HEAD", gone)
            case ["apps"]:
                return defer.succeed(self._apps(viewable(), _query(request, "state"), _query(request, "user")))
            case ["apps", app]:
                return defer.succeed(self._app(viewable(), app))
        raise rest_errors.not_found(f"no resource at {path}")

    def _viewed(self, app: ApplicationId, cid: str) -> ApplicationId:
        """``app`` if container ``cid`` is one of its (else 400/403/404)."""
        _, c = self._container(cid)
        if c.container_id.attempt_id.app_id != app:
            raise rest_errors.forbidden(f"the ticket lets you see {app}, not {c.container_id}")
        return app

    def _container(self, text: str) -> tuple[NodeContainers, NMContainer]:
        try:
            cid = ContainerId.parse(text)
        except MalformedId:
            raise rest_errors.bad_request(f"invalid container id, {text}") from None
        manager = self._manager()
        c = None if manager is None else manager.containers.get(cid)
        if manager is None or c is None:
            raise rest_errors.not_found(f"container with id, {text}, not found")
        return manager, c

    def _containers(
        self, request: Request, app: ApplicationId, cid: str | None = None
    ) -> defer.Deferred[dict[str, Any] | None]:
        if cid is not None:
            manager, one = self._container(cid)
            return self._container_infos(request, manager, [one], single=True)
        found = self._manager()
        every = [] if found is None else sorted(found.containers.values(), key=lambda c: c.container_id)
        chosen = [c for c in every if c.container_id.attempt_id.app_id == app]
        return self._container_infos(request, found, chosen, single=False)

    def _container_infos(
        self, request: Request, manager: NodeContainers | None, chosen: list[NMContainer], single: bool
    ) -> defer.Deferred[dict[str, Any] | None]:
        if manager is None or not chosen:
            return defer.succeed({"containers": {"container": []}})
        dirs = [c.paths.log_dirs for c in chosen]
        node_id, base = _node_id(manager), _base_url(request)

        def answer(files: list[list[LogFile]]) -> dict[str, Any]:
            infos = [container_info_json(c, node_id, f, base) for c, f in zip(chosen, files)]
            return {"container": infos[0]} if single else {"containers": {"container": infos}}

        return manager.run(lambda: [list_log_files(d) for d in dirs]).addCallback(answer)

    def _logs(self, cid: str) -> defer.Deferred[dict[str, Any] | None]:
        manager, c = self._container(cid)
        dirs, node_id = c.paths.log_dirs, _node_id(manager)
        d = manager.run(lambda: list_log_files(dirs))
        return d.addCallback(lambda files: container_logs_json(str(c.container_id), node_id, files))

    def _log_file(
        self, request: Request, cid: str, name: str, head: bool, gone: list[Failure]
    ) -> defer.Deferred[dict[str, Any] | None]:
        """(``name`` was checked when the request was routed, before its ticket.)"""
        manager, c = self._container(cid)
        size = parse_size(_query(request, "size"))
        fmt = (_query(request, "format") or "text").lower()
        if fmt not in LOG_CONTENT_TYPES:
            raise rest_errors.bad_request(
                f"The valid values for the parameter : format are {sorted(LOG_CONTENT_TYPES)}"
            )
        dirs = c.paths.log_dirs

        def opened(found: tuple[int, LogFile]) -> None:
            fd, file = found
            offset, count = log_range(file.length, size)
            header = log_header(str(c.container_id), _node_id(manager), file) if count > 0 else b""
            trailer = log_trailer(str(c.container_id), name, c.state is NMContainerState.RUNNING)
            request.setResponseCode(200)
            request.setHeader(b"Content-Type", LOG_CONTENT_TYPES[fmt])
            request.setHeader(b"X-Content-Type-Options", b"nosniff")
            request.setHeader(b"Cache-Control", b"no-cache")
            if head or gone:
                os.close(fd)
                if not gone:
                    request.finish()
                return
            request.write(header)
            LogSender(request, manager.run, fd, offset, count, trailer).start()

        def unavailable(failure: Failure) -> None:
            failure.trap(LogUnavailable)
            raise rest_errors.not_found(f"{failure.getErrorMessage()} (container {c.container_id})")

        return manager.run(lambda: open_log_file(dirs, name)).addCallbacks(opened, unavailable)

    def _apps(self, viewable: ApplicationId, state: str | None, user: str | None) -> dict[str, Any]:
        if state and state.upper() not in APPLICATION_STATES:
            raise rest_errors.bad_request(
                f"invalid application state {state!r}; one of {', '.join(APPLICATION_STATES)}"
            )
        if user is not None and not user:
            raise rest_errors.bad_request("Error: You must specify a non-empty string for the user")
        manager = self._manager()
        apps = [] if manager is None else node_applications(manager)
        chosen = [
            a for a in apps
            if a["id"] == str(viewable) and (not state or a["state"] == state.upper()) and (user is None or a["user"] == user)
        ]  # fmt: skip
        return {"apps": {"app": chosen}}

    def _app(self, viewable: ApplicationId, text: str) -> dict[str, Any]:
        try:
            app_id = ApplicationId.parse(text)
        except MalformedId as e:
            raise rest_errors.bad_request(str(e)) from None
        if app_id != viewable:
            raise rest_errors.forbidden(f"the ticket lets you see {viewable}, not {app_id}")
        manager = self._manager()
        for app in [] if manager is None else node_applications(manager):
            if app["id"] == str(app_id):
                return {"app": app}
        raise rest_errors.not_found(f"app with id {text} not found")

    def _reply(self, request: Request, gone: list[Failure], status: int, body: dict[str, Any] | None) -> None:
        if body is None or gone:  # a log file streams itself; a client gone is not answered
            return
        data = json.dumps(body).encode("utf-8")
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", JSON_CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
        request.write(data)
        request.finish()

    def _failed(self, request: Request, gone: list[Failure], failure: Failure, method: str, path: str) -> None:
        error = failure.value
        if isinstance(error, RestError):
            rest_errors.log_refused(log, method, path, error, request)
        else:
            log.failure("{method} {path} failed", failure, method=method, path=path)
            error = rest_errors.internal_error(method, path, error)
        for name, value in error.headers:
            request.setHeader(name, value)
        self._reply(request, gone, error.status, error.body())


def _node_id(manager: NodeContainers) -> str:
    return f"{manager.node.nm_host}:{manager.node.nm_port}"
