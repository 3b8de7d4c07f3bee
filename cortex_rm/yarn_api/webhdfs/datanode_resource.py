"""The DataNode's half of WebHDFS, on each node's web port, and the nodes' block transfers.

* ``/webhdfs/v1/<path>?op=CREATE|APPEND&ticket=...``: the client's data, after the
  NameNode's redirect.  The node cuts it into blocks, stores each one, pushes it
  to the other nodes of the ticket's pipeline, and commits the file at the
  NameNode (over the tracker channel); only then is the file visible, so a
  client that goes away mid-upload leaves nothing behind (twisted.web keeps an
  unfinished body in a temporary file and never renders the request).
* ``/webhdfs/v1/<path>?op=OPEN&ticket=...&offset=&length=``: asks the NameNode
  where the blocks of the range are and streams them, from this node's disk
  when it holds them (checksums verified), else from a holder.
* ``/cortex/blocks/<id>``: GET (with a block token) and PUT (with the write ticket
  that names this node in its pipeline) of one block between nodes.

Disk and network work runs on the DataNode's worker threads (``block_work.py``);
what they send to the client goes through ``ThreadedBody``, which blocks the worker while the
client's connection is full, so memory stays bounded whatever the file size.
"""

from __future__ import annotations

from typing import IO, cast
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorFromThreads
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from cortex_rm.fs import tickets
from cortex_rm.fs.block_store import valid_block_id
from cortex_rm.fs.errors import CorruptReplica, FsError, IllegalArgument, InvalidToken, MissingBlock
from cortex_rm.fs.paths import FsPath
from cortex_rm.internal.block_codec import BlockLocation
from cortex_rm.yarn_api.log_text import loggable_uri, sanitise
from cortex_rm.yarn_api.webhdfs.block_transfer import PIECE_BYTES, BlockTransferFailed
from cortex_rm.yarn_api.webhdfs.block_work import DataNodeContext, read_range, receive_blocks
from cortex_rm.yarn_api.webhdfs.namenode_resource import Reply, as_deferred, error_reply, internal_error, send
from cortex_rm.yarn_api.webhdfs.params import Query, request_path

log = Logger()


@implementer(IPushProducer)
class ThreadedBody:
    """Lets a worker thread write a response body with the connection's back-pressure."""

    def __init__(self, request: Request, reactor: IReactorFromThreads) -> None:
        self.request = request
        self.reactor = reactor
        self._paused = False
        self._stopped = False
        self._waiting: defer.Deferred[None] | None = None
        request.registerProducer(self, True)

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's name)
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    def stopProducing(self) -> None:  # noqa: N802
        self._stopped = True
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.errback(ConnectionError("the client closed the connection"))

    def _write(self, piece: bytes) -> defer.Deferred[None]:
        """Write ``piece`` as soon as the connection takes more: the worker thread returns as soon
        as it is written, and reads and checks the next piece while this one is sent (so one piece
        at most waits in the connection's buffer, one in the worker's hands)."""
        if self._stopped:
            raise ConnectionError("the client closed the connection")
        if not self._paused:
            self.request.write(piece)
            return defer.succeed(None)
        self._waiting = defer.Deferred()
        return self._waiting.addCallback(lambda _: self._write(piece))

    def write_from_thread(self, piece: bytes) -> None:
        blockingCallFromThread(self.reactor, self._write, piece)  # type: ignore[arg-type]


def _verify(ctx: DataNodeContext, query: Query, op: str | frozenset[str]) -> tickets.Ticket:
    return tickets.verify(ctx.keys(), query.text("ticket"), op, ctx.now_ms())


class _Leaf(Resource):
    """Common rendering: run ``_handle``, answer its ``Reply`` or its error as WebHDFS JSON."""

    isLeaf = True

    def __init__(self, ctx: DataNodeContext) -> None:
        super().__init__()
        self.ctx = ctx

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
            log.info("DataNode {method} {uri} refused: {error}", method=sanitise(request.method, 20),
                     uri=loggable_uri(request.uri), error=sanitise(f"{failure.value.simple_name}: {failure.value}", 400))
            return error_reply(failure.value)
        if isinstance(failure.value, BlockTransferFailed):
            return error_reply(MissingBlock(str(failure.value)))
        log.failure("DataNode {method} {uri} failed", failure, method=sanitise(request.method, 20), uri=loggable_uri(request.uri))
        return internal_error(str(request.method, "ascii", "replace"))


class DataNodeWebHdfs(_Leaf):
    """``/webhdfs/v1/...`` on a node: CREATE, APPEND and OPEN after the NameNode's redirect."""

    def _handle(self, request: Request, query: Query) -> Reply | None | defer.Deferred[Reply | None]:
        op = query.op()
        path = request_path(request.path or b"")
        method = request.method
        if (method, op) in ((b"PUT", "CREATE"), (b"POST", "APPEND")):
            return self._write(request, query, op, path)
        if method in (b"GET", b"HEAD") and op == "OPEN":
            return self._open(request, query, path)
        raise IllegalArgument(f"a DataNode serves only CREATE, APPEND and OPEN after a NameNode's redirect, not {op}")

    def _write(self, request: Request, query: Query, op: str, path: FsPath) -> defer.Deferred[Reply | None]:
        ticket = _verify(self.ctx, query, op)
        if ticket.text("path") != str(path):
            raise InvalidToken(f"the ticket is for {ticket.text('path')}, not {path}")
        if ticket.texts("pipeline")[:1] != (str(self.ctx.node_id),):
            raise InvalidToken("the ticket names another node first in its pipeline; follow the NameNode's redirect")
        body = cast(IO[bytes], request.content)
        body.seek(0)
        text = query.text("ticket")

        def committed(length: int) -> Reply:
            if op == "APPEND":
                return Reply(200)
            return Reply(201, None, f"webhdfs://{self.ctx.http_address}{quote(str(path), safe='/')}")

        async def write() -> Reply | None:
            written = await self.ctx.run(lambda: receive_blocks(self.ctx, ticket, text, body))
            return committed(await self.ctx.commit(text, written))

        return defer.Deferred.fromCoroutine(write())

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
            body = ThreadedBody(request, self.ctx.reactor)

            def stream() -> None:
                for piece in read_range(self.ctx, blocks, offset, end):
                    body.write_from_thread(piece)

            def done(_: None) -> None:
                request.unregisterProducer()
                request.finish()

            return self.ctx.run(stream).addCallback(done)

        return self.ctx.locate(query.text("ticket"), offset, length).addCallback(located)


class BlockTransfers(_Leaf):
    """``/cortex/blocks/<id>``: a node reads (GET) or stores (PUT) one replica."""

    def _handle(self, request: Request, query: Query) -> Reply | None | defer.Deferred[Reply | None]:
        segments = request.postpath or []
        if len(segments) != 1 or not valid_block_id(segments[0].decode("ascii", "replace")):
            raise IllegalArgument("block transfers are at /cortex/blocks/blk_<32 hex digits>")
        block_id = segments[0].decode("ascii")
        if request.method == b"PUT":
            return self._put(request, query, block_id)
        if request.method == b"GET":
            return self._get(request, query, block_id)
        raise IllegalArgument(f"blocks are read with GET and stored with PUT, not {request.method!r}")

    def _put(self, request: Request, query: Query, block_id: str) -> defer.Deferred[Reply | None]:
        ticket = _verify(self.ctx, query, frozenset({"CREATE", "APPEND"}))
        if str(self.ctx.node_id) not in ticket.texts("pipeline")[1:]:
            raise InvalidToken("the write ticket does not name this node in its pipeline")
        checksum = query.text("checksum")
        body = cast(IO[bytes], request.content)
        body.seek(0)

        def store() -> Reply:
            writer = self.ctx.store.writer(block_id)
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

        return self.ctx.run(store)

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
        body = ThreadedBody(request, self.ctx.reactor)

        def stream() -> None:
            try:
                for piece in self.ctx.store.read(block_id, offset, length):
                    body.write_from_thread(piece)
            except CorruptReplica:
                self.ctx.store.delete(block_id)
                self.ctx.dropped(block_id)
                raise

        def done(_: None) -> None:
            request.unregisterProducer()
            request.finish()

        return self.ctx.run(stream).addCallback(done)
