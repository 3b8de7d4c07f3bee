"""The DataNode's half of WebHDFS, on each node's web port, and the nodes' block transfers.

* ``/webhdfs/v1/<path>?op=CREATE|APPEND&ticket=...``: the client's data, after the
  NameNode's redirect.  The ticket is checked as soon as the request's headers are
  in, before a byte of the body is read (a bad one is answered at once and the
  connection closed); then the body goes to a worker as it arrives (``body_pipe``,
  never spooled), which cuts it into blocks, stores each one, pushes it to the
  other nodes of the ticket's pipeline, and commits the file at the NameNode (over
  the tracker channel) once the body is complete; only then is the file visible,
  so a client that goes away mid-upload leaves nothing behind (the blocks stored
  so far are deleted).  A node stores a few uploads at once, and fewer of one
  user's (``uploads``); more are 503 ``RetriableException`` from the head.
* ``/webhdfs/v1/<path>?op=OPEN&ticket=...&offset=&length=``: asks the NameNode
  where the blocks of the range are and streams them, from this node's disk
  when it holds them (checksums verified), else from a holder.
* ``/cortex/blocks/<id>``: GET (with a block token) and PUT (with the write ticket
  that names this node in its pipeline, checked before the body is read; the body
  streamed to a worker as a client's is) of one block between nodes.

Disk and network work runs on the DataNode's worker threads (``block_work.py``);
what they send to the client goes through ``ThreadedBody`` (``response_body.py``), which blocks
the worker while the client's connection is full, so memory stays bounded whatever the file
size, and lets the worker write on a plain TCP connection itself once the head is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from cortex_rm.fs import tickets
from cortex_rm.fs.block_store import PIECE_BYTES as READ_BYTES
from cortex_rm.fs.block_store import valid_block_id
from cortex_rm.fs.errors import CorruptReplica, FsError, IllegalArgument, InvalidToken, MissingBlock, NodeNotReady
from cortex_rm.fs.paths import FsPath
from cortex_rm.internal.block_codec import BlockLocation
from cortex_rm.yarn_api.http_streams import BodyControl, StreamingResource
from cortex_rm.yarn_api.http_access import details_allowed
from cortex_rm.yarn_api.log_text import loggable_uri, sanitise
from cortex_rm.yarn_api.webhdfs.block_transfer import PIECE_BYTES, BlockTransferFailed
from cortex_rm.yarn_api.webhdfs.block_work import DataNodeContext, read_range, receive_blocks
from cortex_rm.yarn_api.webhdfs.body_pipe import BodyPipe
from cortex_rm.yarn_api.webhdfs.namenode_resource import Reply, as_deferred, error_reply, internal_error, send
from cortex_rm.yarn_api.webhdfs.params import Query, request_path
from cortex_rm.yarn_api.webhdfs.response_body import ResponseBodies, ThreadedBody, direct_socket
from cortex_rm.yarn_api.webhdfs.uploads import (
    BLOCK_PUTS,
    CLIENT_UPLOADS,
    CLIENT_UPLOADS_PER_USER,
    Upload,
    UploadSlots,
    rest_error,
)

log = Logger()


def _verify(ctx: DataNodeContext, query: Query, op: str | frozenset[str]) -> tickets.Ticket:
    keys = ctx.keys()
    if not keys:  # restarted a moment ago: the NameNode's keys come with the answer to its first block report
        raise NodeNotReady("this DataNode has just started and has not received the NameNode's keys yet; retry shortly")
    return tickets.verify(keys, query.text("ticket"), op, ctx.now_ms())


Store = Callable[[BodyPipe], defer.Deferred[Reply]]
"""What stores an upload's body (started on a worker as the body begins to arrive)."""


class _Leaf(StreamingResource):
    """Common rendering: run ``_handle``, answer its ``Reply`` or its error as WebHDFS JSON.

    ``slots`` bound the bodies of this resource stored at once on the node (``uploads``); by
    default ``UPLOADS`` in all, ``UPLOADS_PER_USER`` for one user.  ``bodies`` holds the response
    bodies its workers are writing (the DataNode ends them when it stops: ``response_body``)."""

    isLeaf = True
    UPLOADS = CLIENT_UPLOADS
    UPLOADS_PER_USER = CLIENT_UPLOADS_PER_USER

    def __init__(self, ctx: DataNodeContext, slots: UploadSlots | None = None, bodies: ResponseBodies | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.slots = UploadSlots(self.UPLOADS, self.UPLOADS_PER_USER) if slots is None else slots
        self.bodies = ResponseBodies() if bodies is None else bodies

    def _body(self, request: Request) -> ThreadedBody:
        """The body a worker writes ``request``'s answer with (on the socket itself where it may)."""
        return ThreadedBody(request, self.ctx.reactor, direct_socket(request), self.bodies)

    def open_body(self, request: Request, control: BodyControl) -> Upload | None:
        try:
            storing = self._store(request, Query(request.args or {}))
        except FsError as e:
            if details_allowed(request):
                log.info("DataNode {method} {uri} refused before its body: {error}", method=sanitise(request.method, 20),
                         uri=loggable_uri(request.uri), error=sanitise(f"{e.simple_name}: {e}", 400))
            raise rest_error(e) from None
        if storing is None:
            return None
        user, store = storing
        return Upload(self.ctx, control, store, self.slots, user)

    def _store(self, request: Request, query: Query) -> tuple[str, Store] | None:
        """For a request that uploads: the checks its head must pass (raising ``FsError``), then
        the user its verified ticket names and what stores its body; None for other requests."""
        return None

    def render(self, request: Request) -> int:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        d = as_deferred(lambda: self._handle(request, Query(request.args or {})))
        d.addErrback(self._failed, request, gone)

        def answer(reply: Reply | None) -> None:
            if not gone and reply is not None:
                send(request, reply)

        d.addCallback(answer).addErrback(lambda f: log.failure("could not answer a DataNode request", f))
        return NOT_DONE_YET

    def _handle(self, request: Request, query: Query) -> Reply | None | defer.Deferred[Reply | None]:
        raise NotImplementedError

    def _failed(self, failure: Failure, request: Request, gone: list[Failure]) -> Reply | None:
        if request.startedWriting:  # a streamed body broke off: the client sees a short read
            log.warn("DataNode {uri}: stopped streaming: {error}", uri=loggable_uri(request.uri), error=failure.getErrorMessage())
            transport = getattr(request.channel, "transport", None)
            if not gone and transport is not None:
                transport.abortConnection()
            return None
        if isinstance(failure.value, FsError):
            if details_allowed(request):
                log.info("DataNode {method} {uri} refused: {error}", method=sanitise(request.method, 20),
                         uri=loggable_uri(request.uri), error=sanitise(f"{failure.value.simple_name}: {failure.value}", 400))
            return error_reply(failure.value)
        if isinstance(failure.value, BlockTransferFailed):
            return error_reply(MissingBlock(str(failure.value)))
        log.failure("DataNode {method} {uri} failed", failure, method=sanitise(request.method, 20), uri=loggable_uri(request.uri))
        return internal_error(str(request.method, "ascii", "replace"))


_UPLOADS = frozenset({(b"PUT", "CREATE"), (b"POST", "APPEND")})


def _finish(_: None, request: Request, body: ThreadedBody) -> None:
    """A streamed body is sent: finish the request (its length counting what the worker sent itself)."""
    request.unregisterProducer()
    request.sentLength += body.sent_directly
    request.finish()


def _uploaded(request: Request) -> defer.Deferred[Reply | None]:
    """The answer to an upload whose body has arrived: its ``Upload``'s, once stored."""
    upload = getattr(request, "body_stream", None)
    if not isinstance(upload, Upload):  # (the node's site streams every upload: see http_streams)
        raise FsError("this web site does not stream uploads to the DataNode")
    return upload.reply().addCallback(lambda reply: reply)


class DataNodeWebHdfs(_Leaf):
    """``/webhdfs/v1/...`` on a node: CREATE, APPEND and OPEN after the NameNode's redirect."""

    def _handle(self, request: Request, query: Query) -> Reply | None | defer.Deferred[Reply | None]:
        op = query.op()
        if (request.method, op) in _UPLOADS:
            return _uploaded(request)
        if request.method in (b"GET", b"HEAD") and op == "OPEN":
            return self._open(request, query, request_path(request.path or b""))
        raise IllegalArgument(f"a DataNode serves only CREATE, APPEND and OPEN after a NameNode's redirect, not {op}")

    def _store(self, request: Request, query: Query) -> tuple[str, Store] | None:
        op = query.op()
        if (request.method, op) not in _UPLOADS:
            return None
        path = request_path(request.path or b"")
        ticket = _verify(self.ctx, query, op)
        if ticket.text("path") != str(path):
            raise InvalidToken(f"the ticket is for {ticket.text('path')}, not {path}")
        if ticket.texts("pipeline")[:1] != (str(self.ctx.node_id),):
            raise InvalidToken("the ticket names another node first in its pipeline; follow the NameNode's redirect")
        text = query.text("ticket")

        def committed(length: int) -> Reply:
            if op == "APPEND":
                return Reply(200)
            return Reply(201, None, f"webhdfs://{self.ctx.http_address}{quote(str(path), safe='/')}")

        async def write(body: BodyPipe) -> Reply:
            written = await self.ctx.run(lambda: receive_blocks(self.ctx, ticket, text, body))
            return committed(await self.ctx.commit(text, written))

        return ticket.text("user"), lambda body: defer.Deferred.fromCoroutine(write(body))

    def _open(self, request: Request, query: Query, path: FsPath) -> defer.Deferred[Reply | None]:
        ticket = _verify(self.ctx, query, "OPEN")
        if ticket.text("path") != str(path):
            raise InvalidToken(f"the ticket is for {ticket.text('path')}, not {path}")
        offset = query.integer("offset", 0, 0)
        length = query.integer("length", -1, 0)
        assert offset is not None and length is not None

        def located(answer: tuple[int, tuple[BlockLocation, ...]]) -> defer.Deferred[Reply | None]:
            file_length, blocks = answer
            if offset > file_length:
                raise IllegalArgument(f"offset={offset} is beyond the end of the file ({file_length} bytes)")
            end = file_length if length < 0 else min(file_length, offset + length)
            request.setResponseCode(200)
            request.setHeader(b"Content-Type", b"application/octet-stream")
            request.setHeader(b"Content-Length", str(end - offset).encode("ascii"))
            if request.method == b"HEAD" or end == offset:
                request.finish()
                return defer.succeed(None)
            body = self._body(request)

            def stream() -> None:
                try:
                    for piece in read_range(self.ctx, blocks, offset, end, bytearray(READ_BYTES)):
                        body.write_from_thread(piece)
                finally:
                    body.close_from_thread()

            return self.ctx.run(stream).addCallback(_finish, request, body)

        return self.ctx.locate(query.text("ticket"), offset, length).addCallback(located)


class BlockTransfers(_Leaf):
    """``/cortex/blocks/<id>``: a node reads (GET) or stores (PUT) one replica."""

    UPLOADS = UPLOADS_PER_USER = BLOCK_PUTS  # (any user's: each is a client's upload, capped at its first node)

    def _handle(self, request: Request, query: Query) -> Reply | None | defer.Deferred[Reply | None]:
        block_id = self._block_id(request)
        if request.method == b"PUT":
            return _uploaded(request)
        if request.method == b"GET":
            return self._get(request, query, block_id)
        raise IllegalArgument(f"blocks are read with GET and stored with PUT, not {request.method!r}")

    @staticmethod
    def _block_id(request: Request) -> str:
        segments = request.postpath or []
        if len(segments) != 1 or not valid_block_id(segments[0].decode("ascii", "replace")):
            raise IllegalArgument("block transfers are at /cortex/blocks/blk_<32 hex digits>")
        return segments[0].decode("ascii")

    def _store(self, request: Request, query: Query) -> tuple[str, Store] | None:
        if request.method != b"PUT":
            return None
        block_id = self._block_id(request)
        ticket = _verify(self.ctx, query, frozenset({"CREATE", "APPEND"}))
        if str(self.ctx.node_id) not in ticket.texts("pipeline")[1:]:
            raise InvalidToken("the write ticket does not name this node in its pipeline")
        checksum = query.text("checksum")
        announced = request.getHeader(b"content-length")
        expected = int(announced) if announced is not None and announced.isdigit() else 0
        if expected > (block_size := ticket.number("block_size")):  # (reserved under the disk cap)
            raise IllegalArgument(f"block {block_id} is {expected} bytes, more than the file's block size {block_size}")

        def store(body: BodyPipe) -> Reply:
            writer = self.ctx.store.writer(block_id, expected)
            try:
                for piece in iter(lambda: body.read(PIECE_BYTES), b""):
                    writer.write(piece)
            except BaseException:
                writer.abort()
                raise
            stored = writer.finish()
            if stored.checksum != checksum:
                self.ctx.store.delete(block_id)
                raise CorruptReplica(f"block {block_id} arrived with checksum {stored.checksum}, not {checksum}")
            self.ctx.stored(stored)
            return Reply(201)

        return ticket.text("user"), lambda body: self.ctx.run(lambda: store(body))

    def _get(self, request: Request, query: Query, block_id: str) -> defer.Deferred[Reply | None]:
        ticket = _verify(self.ctx, query, "BLOCK")
        if block_id not in ticket.texts("blocks"):
            raise InvalidToken(f"the block token does not name {block_id}")
        offset = query.integer("offset", 0, 0)
        stat = self.ctx.store.stat(block_id)
        if stat is None:
            if self.ctx.store.vanished(block_id):
                self.ctx.dropped(block_id)
            raise MissingBlock(f"this node holds no replica of {block_id}")
        length = query.integer("length", stat.length, 0)
        assert offset is not None and length is not None
        if offset + length > stat.length:
            raise IllegalArgument(f"[{offset}, {offset + length}) is outside block {block_id} ({stat.length} bytes)")
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Content-Length", str(length).encode("ascii"))
        body = self._body(request)

        def stream() -> None:
            try:
                for piece in self.ctx.store.read_into(block_id, bytearray(READ_BYTES), offset, length):
                    body.write_from_thread(piece)
            except CorruptReplica:
                self.ctx.store.delete(block_id)
                self.ctx.dropped(block_id)
                raise
            finally:
                body.close_from_thread()

        return self.ctx.run(stream).addCallback(_finish, request, body)
