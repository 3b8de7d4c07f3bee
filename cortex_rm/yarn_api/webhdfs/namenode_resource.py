"""``/webhdfs/v1/<path>?op=...`` on the RM's web port: the NameNode's half of WebHDFS.

Metadata operations are answered here; CREATE, APPEND and OPEN are answered with
a 307 to a node (``Location`` carries the ticket the node checks), or, with
``noredirect=true``, a 200 whose JSON names that location, as HDFS does.  Every
failure is a ``RemoteException`` JSON naming the Java class Hadoop's client
throws; nothing here sets ``Content-Type`` on JSON (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cortex_rm.fs.checksums import file_checksum
from cortex_rm.fs.errors import AccessControl, FsError, IllegalArgument, InvalidToken
from cortex_rm.fs.model import User
from cortex_rm.fs.name_node import MAX_REPLICATION, NameNode, Redirect, WriteRequest
from cortex_rm.fs.paths import FsPath, parse_path
from cortex_rm.yarn.delegation import WEBHDFS_DELEGATION_KIND
from cortex_rm.yarn.delegation import InvalidToken as DelegationInvalid
from cortex_rm.yarn_api.log_text import loggable_uri, sanitise
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from cortex_rm.yarn_api.webhdfs import forms
from cortex_rm.yarn_api.webhdfs.params import Query, request_path

log = Logger()
T = TypeVar("T")

LIST_PAGE = 1000  # dfs.ls.limit: LISTSTATUS_BATCH's page size
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any] | None = None
    location: str | None = None


def send(request: Request, reply: Reply) -> None:
    """Answer with ``reply``: JSON without Content-Type, or an empty body."""
    data = b"" if reply.body is None else forms.encode(reply.body)
    request.setResponseCode(reply.status)
    request.defaultContentType = None  # else twisted.web adds text/html
    request.responseHeaders.removeHeader(b"content-type")
    if reply.location is not None:
        request.setHeader(b"Location", reply.location.encode("utf-8"))
    request.setHeader(b"Cache-Control", b"no-cache")
    request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
    if request.method != b"HEAD":
        request.write(data)
    request.finish()


def error_reply(error: FsError) -> Reply:
    return Reply(error.http_status, forms.remote_exception(error))


def internal_error(what: str) -> Reply:
    error = FsError(f"{what} failed inside the NameNode; the RM's log says why")
    return error_reply(error)


def as_deferred(call: Callable[[], T | defer.Deferred[T]]) -> defer.Deferred[T]:
    """``call()``'s result as a Deferred: its own, a fired one, or a failed one if it raised."""
    try:
        result = call()
    except Exception:
        return defer.fail()
    return result if isinstance(result, defer.Deferred) else defer.succeed(result)


def node_url(redirect: Redirect, path: FsPath, op: str, query: Query, extra: dict[str, str]) -> str:
    params = {"op": op, "user.name": query.user().name, "ticket": redirect.ticket, **extra}
    return f"http://{redirect.node.http_address}/webhdfs/v1{quote(str(path), safe='/')}?{urlencode(params)}"


class NameNodeResource(Resource):
    """The WebHDFS tree on the RM: a leaf that routes by method and ``op``."""

    isLeaf = True

    def __init__(self, name_node: NameNode, auth: UserAuthenticator | None = None) -> None:
        """``auth`` checks each request's ``delegation`` token; without it (namespace tests
        only) ``user.name`` is believed."""
        super().__init__()
        self.nn = name_node
        self.auth = auth
        self._ops: dict[tuple[str, str], Callable[[FsPath, Query], Reply | defer.Deferred[Reply]]] = {
            ("GET", "GETFILESTATUS"): self._get_file_status,
            ("GET", "LISTSTATUS"): self._list_status,
            ("GET", "LISTSTATUS_BATCH"): self._list_status_batch,
            ("GET", "GETHOMEDIRECTORY"): self._home_directory,
            ("GET", "GETCONTENTSUMMARY"): self._content_summary,
            ("GET", "GETFILECHECKSUM"): self._file_checksum,
            ("GET", "GETSERVERDEFAULTS"): self._server_defaults,
            ("GET", "GETFILEBLOCKLOCATIONS"): self._block_locations,
            ("GET", "OPEN"): self._open,
            ("PUT", "MKDIRS"): self._mkdirs,
            ("PUT", "CREATE"): self._create,
            ("POST", "APPEND"): self._append,
            ("PUT", "RENAME"): self._rename,
            ("DELETE", "DELETE"): self._delete,
            ("PUT", "SETPERMISSION"): self._set_permission,
            ("PUT", "SETOWNER"): self._set_owner,
            ("PUT", "SETREPLICATION"): self._set_replication,
            ("PUT", "SETTIMES"): self._set_times,
        }

    def render(self, request: Request) -> int:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        method = (request.method or b"GET").decode("ascii", "replace")
        d = as_deferred(lambda: self._dispatch(request, "GET" if method == "HEAD" else method))
        d.addErrback(self._failed, request)

        def answer(reply: Reply) -> None:
            if not gone:
                send(request, reply)

        d.addCallback(answer).addErrback(lambda f: log.failure("could not answer a WebHDFS request", f))
        return NOT_DONE_YET

    def _dispatch(self, request: Request, method: str) -> Reply | defer.Deferred[Reply]:
        query = Query(request.args or {})
        if self.auth is not None:
            query = Query(request.args or {}, self._authenticated(query))
        op = query.op()
        path = request_path(request.path or b"")
        handler = self._ops.get((method, op))
        if handler is None:
            if any(known == op for _, known in self._ops):
                allowed = next(m for m, known in self._ops if known == op)
                raise IllegalArgument(f"{op} is a {allowed} operation, not {method}")
            raise IllegalArgument(f'Invalid value for webhdfs parameter "op": No enum constant for {method} {op}')
        return handler(path, query)

    def _authenticated(self, query: Query) -> User:
        """The owner of the request's ``delegation`` token; a request without one is refused
        (an anonymous caller may not see the file system)."""
        assert self.auth is not None
        token = query.text("delegation")
        if not token:
            raise AccessControl(
                "WebHDFS needs a user's credential (a WEBHDFS delegation token; user.name proves nothing)."
                " Ask the cluster's admin for one (`cortex-rm user add NAME --out FILE`) and write your"
                " client configuration with it (`cortex-rm client-config --credential FILE`)"
            )
        try:
            principal = self.auth.principal_of_url_token(token, WEBHDFS_DELEGATION_KIND)
        except DelegationInvalid as e:
            raise InvalidToken(str(e)) from None
        assert principal.user is not None
        return User(principal.user, frozenset({principal.user}))

    def _failed(self, failure: Failure, request: Request) -> Reply:
        if isinstance(failure.value, FsError):
            log.info(
                "WebHDFS {method} {uri} refused: {error}",
                method=sanitise(request.method, 20),
                uri=loggable_uri(request.uri),
                error=sanitise(f"{failure.value.simple_name}: {failure.value}", 400),
            )
            return error_reply(failure.value)
        log.failure("WebHDFS {method} {uri} failed", failure, method=sanitise(request.method, 20), uri=loggable_uri(request.uri))
        return internal_error(str(request.method, "ascii", "replace"))

    # -- reads of the namespace

    def _get_file_status(self, path: FsPath, query: Query) -> Reply:
        return Reply(200, forms.one_status(self.nn.namespace.get_status(path, query.user())))

    def _list_status(self, path: FsPath, query: Query) -> Reply:
        statuses, _ = self.nn.namespace.list_status(path, query.user())
        return Reply(200, forms.listing(statuses))

    def _list_status_batch(self, path: FsPath, query: Query) -> Reply:
        statuses, remaining = self.nn.namespace.list_status(
            path, query.user(), start_after=query.text("startAfter"), limit=LIST_PAGE
        )
        return Reply(200, forms.batch_listing(statuses, remaining))

    def _home_directory(self, path: FsPath, query: Query) -> defer.Deferred[Reply]:
        return self.nn.home_directory(query.user()).addCallback(lambda home: Reply(200, {"Path": str(home)}))

    def _content_summary(self, path: FsPath, query: Query) -> Reply:
        return Reply(200, forms.content_summary(self.nn.namespace.content_summary(path, query.user())))

    def _file_checksum(self, path: FsPath, query: Query) -> Reply:
        record = self.nn.namespace.open_file(path, query.user())
        return Reply(200, forms.file_checksum(file_checksum(record.blocks)))

    def _block_locations(self, path: FsPath, query: Query) -> Reply:
        offset = query.integer("offset", 0, 0)
        assert offset is not None
        found = self.nn.block_locations(path, query.user(), offset, query.integer("length", None, 0))
        return Reply(200, forms.block_locations(found))

    def _server_defaults(self, path: FsPath, query: Query) -> Reply:
        return Reply(200, forms.server_defaults(self.nn.default_block_size, self.nn.default_replication))

    # -- mutations

    def _mkdirs(self, path: FsPath, query: Query) -> defer.Deferred[Reply]:
        changes = self.nn.namespace.mkdirs(path, query.user(), query.permission(0o755), self.nn.now_ms())
        return self.nn.persist(changes).addCallback(lambda _: Reply(200, forms.boolean(True)))

    def _rename(self, path: FsPath, query: Query) -> defer.Deferred[Reply]:
        if not query.text("destination"):
            raise IllegalArgument('the webhdfs parameter "destination" is missing')
        destination = parse_path(query.text("destination"))
        done, changes = self.nn.namespace.rename(path, destination, query.user(), self.nn.now_ms())
        return self.nn.persist(changes).addCallback(lambda _: Reply(200, forms.boolean(done)))

    def _delete(self, path: FsPath, query: Query) -> defer.Deferred[Reply]:
        recursive = query.boolean("recursive", False)
        done, changes = self.nn.namespace.delete(path, query.user(), recursive, self.nn.now_ms())
        return self.nn.persist(changes).addCallback(lambda _: Reply(200, forms.boolean(done)))

    def _set_permission(self, path: FsPath, query: Query) -> defer.Deferred[Reply]:
        changes = self.nn.namespace.set_permission(path, query.user(), query.permission(0o755))
        return self.nn.persist(changes).addCallback(lambda _: Reply(200))

    def _set_owner(self, path: FsPath, query: Query) -> defer.Deferred[Reply]:
        owner, group = query.text("owner") or None, query.text("group") or None
        changes = self.nn.namespace.set_owner(path, query.user(), owner, group)
        return self.nn.persist(changes).addCallback(lambda _: Reply(200))

    def _set_replication(self, path: FsPath, query: Query) -> defer.Deferred[Reply]:
        replication = query.integer("replication", self.nn.default_replication, 1, MAX_REPLICATION)
        assert replication is not None
        done, changes = self.nn.namespace.set_replication(path, query.user(), replication)
        if done:
            record = self.nn.namespace.open_file(path, query.user())
            self.nn.blocks.set_replication((b.block_id for b in record.blocks), replication)
        return self.nn.persist(changes).addCallback(lambda _: Reply(200, forms.boolean(done)))

    def _set_times(self, path: FsPath, query: Query) -> defer.Deferred[Reply]:
        mtime = query.integer("modificationtime", -1, -1)
        atime = query.integer("accesstime", -1, -1)
        assert mtime is not None and atime is not None
        changes = self.nn.namespace.set_times(path, query.user(), mtime, atime)
        return self.nn.persist(changes).addCallback(lambda _: Reply(200))

    # -- data: redirects to a node

    def _redirect(self, redirect: Redirect, path: FsPath, op: str, query: Query, extra: dict[str, str]) -> Reply:
        url = node_url(redirect, path, op, query, extra)
        if query.boolean("noredirect", False):
            return Reply(200, {"Location": url})
        return Reply(307, None, url)

    def _create(self, path: FsPath, query: Query) -> Reply:
        request = WriteRequest(
            path,
            query.user(),
            overwrite=query.boolean("overwrite", False),
            permission=query.permission(0o644),
            replication=query.integer("replication", None, 1, MAX_REPLICATION),
            block_size=query.integer("blocksize", None, 1),
        )
        return self._redirect(self.nn.write_redirect("CREATE", request), path, "CREATE", query, {})

    def _append(self, path: FsPath, query: Query) -> Reply:
        request = WriteRequest(path, query.user())
        return self._redirect(self.nn.write_redirect("APPEND", request), path, "APPEND", query, {})

    def _open(self, path: FsPath, query: Query) -> Reply:
        offset = query.integer("offset", 0, 0)
        length = query.integer("length", None, 0)
        assert offset is not None
        redirect = self.nn.read_redirect(path, query.user(), offset, length, query.excluded_nodes())
        extra = {"offset": str(offset)} | ({"length": str(length)} if length is not None else {})
        return self._redirect(redirect, path, "OPEN", query, extra)
