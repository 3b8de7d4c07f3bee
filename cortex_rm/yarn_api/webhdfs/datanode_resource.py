"""The DataNode's half of WebHDFS, on each node's web port, and the nodes' block transfers.

* ``/webhdfs/v1/<path>?op=CREATE|APPEND&ticket=...``: the client's data, after the
  NameNode's redirect.  The ticket is checked as soon as the request's headers are
  in, before a byte of the body is read (a bad one is answered at once and the
  connection closed); then the body goes to a worker as it arrives (``body_pipe``,
  never spooled), which cuts it into blocks, stores each one, pushes it to the
  other nodes of the ticket's pipeline, and commits the file at the NameNode (over
  the tracker channel) once the body is complete; only then is the file visible,
  so a client that goes away mid-upload leaves nothing behind (the blocks stored
  so far are deleted).
* ``/webhdfs/v1/<path>?op=OPEN&ticket=...&offset=&length=``: asks the NameNode
  where the blocks of the range are and streams them, from this node's disk
  when it holds them (checksums verified), else from a holder.
* ``/cortex/blocks/<id>``: GET (with a block token) and PUT (with the write ticket
  that names this node in its pipeline, checked before the body is read; the body
  streamed to a worker as a client's is) of one block between nodes.

Disk and network work runs on the DataNode's worker threads (``block_work.py``);
what they send to the client goes through ``ThreadedBody``, which blocks the worker while the
client's connection is full, so memory stays bounded whatever the file size.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorFromThreads
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from cortex_rm.fs import tickets
from cortex_rm.fs.block_store import valid_block_id
from cortex_rm.fs.errors import CorruptReplica, FsError, IllegalArgument, InvalidToken, MissingBlock
from cortex_rm.fs.paths import FsPath
from cortex_rm.internal.block_codec import BlockLocation
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.http_streams import BodyControl, StreamingResource
from cortex_rm.yarn_api.log_text import loggable_uri, sanitise
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.webhdfs.block_transfer import PIECE_BYTES, BlockTransferFailed
from cortex_rm.yarn_api.webhdfs.block_work import DataNodeContext, read_range, receive_blocks
from cortex_rm.yarn_api.webhdfs.body_pipe import BodyPipe
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


def _rest_error(error: FsError) -> RestError:
    """``error`` in the form the web site refuses a request with (the same RemoteException JSON)."""
    return RestError(error.http_status, (error.simple_name, error.java_class), str(error))


#: Bodies stored at once by one node: each holds a worker thread (``WORKER_THREADS``, 8) while
#: it arrives; clients' uploads leave threads for reads and for the pipelines' block PUTs, which
#: have slots of their own (an upload waiting on another node's PUT never waits for itself).
CLIENT_UPLOADS, BLOCK_PUTS = 4, 3


class UploadSlots:
    """How many bodies of one kind a node stores at once; more are answered 503, to be retried."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def take(self) -> None:
        if self.taken >= self.limit:
            raise rest_errors.retriable(f"this node is storing {self.taken} uploads, its most at once; try again shortly")
        self.taken += 1

    def give(self, result: object = None) -> object:
        self.taken -= 1
        return result


class Upload:
    """The body of a CREATE, APPEND or block PUT, stored by a worker as it arrives (a ``BodyStream``).

    ``store`` runs on a worker from the start, reading the body from ``pipe``; its ``Reply`` (or
    error) is the request's answer once the body is complete.  If it fails before that, the
    request is refused at once with its error (the rest of the body is not read)."""

    def __init__(
        self, ctx: DataNodeContext, control: BodyControl, store: Callable[[BodyPipe], defer.Deferred[Reply]],
        slots: UploadSlots,
    ) -> None:
        slots.take()
        self.pipe = BodyPipe(control, ctx.reactor.callFromThread)
        self._control = control
        self._reply: defer.Deferred[Reply] = as_deferred(lambda: store(self.pipe))
        self._reply.addBoth(slots.give)
        self._reply.addErrback(self._failed_early)

    @property
    def max_bytes(self) -> int:
        return self.pipe.max_bytes

    def data(self, piece: bytes) -> None:
        self.pipe.data(piece)

    def end(self) -> None:
        self.pipe.end()

    def lost(self, reason: Failure) -> None:
        self.pipe.lost(reason)

    def reply(self) -> defer.Deferred[Reply]:
        """The answer, once the body is complete and stored (called once, when the request is rendered)."""
        return self._reply

    def _failed_early(self, failure: Failure) -> Failure | Reply:
        self.pipe.close()
        if self.pipe.ended:
            return failure  # the request is being rendered: it answers the error
        if failure.check(ConnectionError):
            log.info("an upload was cut off: {error}", error=failure.getErrorMessage())
        elif failure.check(FsError):
            self._control.refuse(_rest_error(failure.value))  # type: ignore[arg-type]
        else:
            log.failure("storing an upload failed", failure)
            self._control.refuse(_rest_error(FsError("storing the upload failed; the node's log says why")))
        return Reply(500)  # (never sent: the connection is refused or gone)


class _Leaf(StreamingResource):
    """Common rendering: run ``_handle``, answer its ``Reply`` or its error as WebHDFS JSON."""

    isLeaf = True
    #: bodies of this resource stored at once on the node
    UPLOADS = CLIENT_UPLOADS

    def __init__(self, ctx: DataNodeContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.slots = UploadSlots(self.UPLOADS)

    def open_body(self, request: Request, control: BodyControl) -> Upload | None:
        try:
            store = self._store(request, Query(request.args or {}))
        except FsError as e:
            log.info("DataNode {method} {uri} refused before its body: {error}", method=sanitise(request.method, 20),
                     uri=loggable_uri(request.uri), error=sanitise(f"{e.simple_name}: {e}", 400))
            raise _rest_error(e) from None
        return None if store is None else Upload(self.ctx, control, store, self.slots)

    def _store(self, request: Request, query: Query) -> Callable[[BodyPipe], defer.Deferred[Reply]] | None:
        """For a request that uploads: the checks its head must pass (raising ``FsError``), then
        what stores its body; None for other requests."""
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
            log.info("DataNode {method} {uri} refused: {error}", method=sanitise(request.method, 20),
                     uri=loggable_uri(request.uri), error=sanitise(f"{failure.value.simple_name}: {failure.value}", 400))
            return error_reply(failure.value)
        if isinstance(failure.value, BlockTransferFailed):
            return error_reply(MissingBlock(str(failure.value)))
        log.failure("DataNode {method} {uri} failed", failure, method=sanitise(request.method, 20), uri=loggable_uri(request.uri))
        return internal_error(str(request.method, "ascii", "replace"))


_UPLOADS = frozenset({(b"PUT", "CREATE"), (b"POST", "APPEND")})


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

    def _store(self, request: Request, query: Query) -> Callable[[BodyPipe], defer.Deferred[Reply]] | None:
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

        return lambda body: defer.Deferred.fromCoroutine(write(body))

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

    UPLOADS = BLOCK_PUTS

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

    def _store(self, request: Request, query: Query) -> Callable[[BodyPipe], defer.Deferred[Reply]] | None:
        if request.method != b"PUT":
            return None
        block_id = self._block_id(request)
        ticket = _verify(self.ctx, query, frozenset({"CREATE", "APPEND"}))
        if str(self.ctx.node_id) not in ticket.texts("pipeline")[1:]:
            raise InvalidToken("the write ticket does not name this node in its pipeline")
        checksum = query.text("checksum")

        def store(body: BodyPipe) -> Reply:
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

        return lambda body: self.ctx.run(lambda: store(body))

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
