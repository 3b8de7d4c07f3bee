"""The DataNode's blocking work, on its worker threads: storing a client's upload as blocks and
pushing each down the write pipeline, reading a range of a file from this node's replicas or
its holders, and copying a block for a re-replication order.

``DataNodeContext`` is what the DataNode role gives this work and its web resources
(``datanode_resource.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from cortex_rm.fs import tickets
from cortex_rm.fs.block_store import PIECE_BYTES as READ_BYTES
from cortex_rm.fs.block_store import BlockStore, StoredBlock, new_block_id
from cortex_rm.fs.disk_cap import DiskOutOfSpace
from cortex_rm.fs.errors import CorruptReplica, MissingBlock
from cortex_rm.fs.model import BlockRef
from cortex_rm.internal.block_codec import BlockLocation, WrittenBlockMessage
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.webhdfs.block_transfer import PIECE_BYTES, BlockTransferFailed, get_block, put_block

log = Logger()
T = TypeVar("T")


class DataNodeContext(Protocol):
    """What the DataNode role gives its web resources."""

    @property
    def node_id(self) -> NodeId: ...

    @property
    def http_address(self) -> str: ...

    @property
    def store(self) -> BlockStore: ...

    @property
    def reactor(self) -> IReactorFromThreads: ...

    def keys(self) -> dict[int, MasterKey]:
        """The NameNode's ticket keys known to this node (empty before its first block report)."""

    def now_ms(self) -> int: ...

    def run(self, work: Callable[[], T]) -> defer.Deferred[T]:
        """Run blocking ``work`` on a worker thread."""

    def commit(self, ticket: str, written: list[WrittenBlockMessage]) -> defer.Deferred[int]:
        """Commit a received file at the NameNode; fires with its length."""

    def locate(self, ticket: str, offset: int, length: int) -> defer.Deferred[tuple[int, tuple[BlockLocation, ...]]]:
        """Ask the NameNode where the blocks of a read are."""

    def stored(self, block: StoredBlock) -> None:
        """A replica was stored here (any thread): report it."""

    def dropped(self, block_id: str) -> None:
        """A replica here was found corrupt and deleted (any thread): report it."""


class BodySource(Protocol):
    """An upload's body as a worker reads it (``body_pipe.BodyPipe``, or a file)."""

    def read(self, size: int, /) -> bytes:
        """The next ``size`` bytes (fewer only at the end, ``b""`` after it)."""


def receive_blocks(ctx: DataNodeContext, ticket: tickets.Ticket, text: str, body: BodySource) -> list[WrittenBlockMessage]:
    """Cut ``body`` into blocks of the ticket's size, store each here and push it down the pipeline.

    Each other node of the pipeline gets its copies from a thread of its own, in order, while
    this node stores the next block: a block goes to every replica at once.  A replica that
    fails a block is dropped from the pipeline, as Hadoop drops a failed DataNode: that block
    and the later ones have one holder fewer (the NameNode re-replicates them).  The write
    fails only if this node cannot store a block or the body is cut off; then the blocks it
    stored here are deleted (the copies sent on are orphans the NameNode has deleted).
    """
    block_size = ticket.number("block_size")
    replicas = [_Replica(address, node) for address, node in zip(ticket.texts("replicas"), ticket.texts("pipeline")[1:])]
    stored_here: list[StoredBlock] = []
    copies: list[list[Future[NodeId]]] = []
    try:
        try:
            while True:
                stored = _store_block(ctx, body, block_size)
                if stored is None:
                    break
                ctx.stored(stored)
                stored_here.append(stored)
                copies.append([r.sender.submit(r.copy, ctx, stored, text) for r in replicas])
                if stored.length < block_size:
                    break
        except BaseException:
            for replica in replicas:  # (the copy under way ends first: it reads the block)
                replica.sender.shutdown(wait=True, cancel_futures=True)
            for stored in stored_here:
                ctx.store.delete(stored.block_id)
                ctx.dropped(stored.block_id)
            raise
        written = []
        for stored, futures in zip(stored_here, copies):
            holders = [ctx.node_id]
            for future in futures:
                try:
                    holders.append(future.result())
                except BlockTransferFailed as e:  # fewer replicas now; the NameNode re-replicates
                    log.warn("write pipeline: {error}", error=str(e))
            written.append(WrittenBlockMessage(BlockRef(stored.block_id, stored.length, stored.checksum), tuple(holders)))
        return written
    finally:
        for replica in replicas:
            replica.sender.shutdown(wait=True, cancel_futures=True)


class _Replica:
    """One other node of a write pipeline: its copies go in order from a thread of its own,
    and after its first failure none is tried (each could wait for the transfer timeout)."""

    def __init__(self, address: str, node: str) -> None:
        self.address = address
        self.node = NodeId.parse(node)
        self.sender = ThreadPoolExecutor(1, thread_name_prefix=f"pipeline-{node}")
        self.failure: str | None = None  # touched by the sender thread only

    def copy(self, ctx: DataNodeContext, stored: StoredBlock, ticket: str) -> NodeId:
        if self.failure is not None:
            raise BlockTransferFailed(f"{stored.block_id} not sent to {self.address}, dropped after: {self.failure}")
        try:
            with ctx.store.open_data(stored.block_id) as data:
                put_block(self.address, stored.block_id, ticket, stored.checksum, stored.length, data)
        except BlockTransferFailed as e:
            # The copy is sent unchecked (sendfile): whose fault it was, this node's replica
            # (CorruptReplica or MissingBlock: the write fails, as when it cannot store a block)
            # or the other node's (dropped from the pipeline), is told by checking ours now.
            for _ in ctx.store.read(stored.block_id):
                pass
            self.failure = str(e)
            raise
        return self.node


def _store_block(ctx: DataNodeContext, body: BodySource, block_size: int) -> StoredBlock | None:
    """The next block of ``body`` stored here; None at the end of the body."""
    writer = ctx.store.writer(new_block_id())
    received = 0
    try:
        while received < block_size:
            piece = body.read(min(PIECE_BYTES, block_size - received))
            if not piece:
                break
            writer.write(piece)
            received += len(piece)
    except BaseException:
        writer.abort()
        raise
    if received == 0:
        writer.abort()
        return None
    return writer.finish()


def read_range(
    ctx: DataNodeContext, blocks: Iterable[BlockLocation], start: int, end: int, buffer: bytearray | None = None
) -> Iterator[bytes | memoryview]:
    """The bytes ``[start, end)`` of a file, block by block: local replicas first, then the holders.
    Local pieces are read into ``buffer`` (``block_store.PIECE_BYTES`` at least; one of the read's
    own if None): each piece is valid until the next one is asked for."""
    if buffer is None:
        buffer = bytearray(READ_BYTES)
    for located in blocks:
        first = max(start, located.offset) - located.offset
        last = min(end, located.offset + located.block.length) - located.offset
        if last <= first:
            continue
        yield from _read_block(ctx, located, first, last - first, buffer)


def _read_block(
    ctx: DataNodeContext, located: BlockLocation, offset: int, length: int, buffer: bytearray
) -> Iterator[bytes | memoryview]:
    block_id = located.block.block_id
    errors: list[str] = []
    stat = ctx.store.stat(block_id)
    if stat is not None and stat.checksum == located.block.checksum:
        sent = 0
        try:
            for piece in ctx.store.read_into(block_id, buffer, offset, length):
                sent += len(piece)
                yield piece
            return
        except CorruptReplica as e:
            ctx.store.delete(block_id)
            ctx.dropped(block_id)
            errors.append(str(e))
            offset, length = offset + sent, length - sent
    elif stat is None and ctx.store.vanished(block_id):
        ctx.dropped(block_id)
        errors.append(f"the local replica of {block_id} is gone")
    for source in located.sources:
        if source == ctx.http_address:
            continue
        sent = 0
        try:
            for received in get_block(source, block_id, located.token, offset, length):
                sent += len(received)
                yield received
            return
        except BlockTransferFailed as e:
            errors.append(str(e))
            offset, length = offset + sent, length - sent
    raise MissingBlock(f"no readable replica of {block_id}: {'; '.join(errors) or 'no live node holds it'}")


def fetch_block(ctx: DataNodeContext, block: BlockRef, sources: Iterable[str], token: str) -> StoredBlock | None:
    """Copy ``block`` from one of ``sources`` (a re-replication order); None if none could serve it."""
    for source in sources:
        if ctx.store.stat(block.block_id) is not None:
            return None
        try:
            writer = ctx.store.writer(block.block_id, block.length)
        except DiskOutOfSpace as e:  # (the NameNode's view of this node's room was out of date)
            log.warn("re-replication of {block_id}: {error}", block_id=block.block_id, error=str(e))
            return None
        try:
            for piece in get_block(source, block.block_id, token, 0, block.length):
                writer.write(piece)
        except BlockTransferFailed as e:
            writer.abort()
            log.warn("re-replication of {block_id}: {error}", block_id=block.block_id, error=str(e))
            continue
        except BaseException:
            writer.abort()
            raise
        stored = writer.finish()
        if stored.checksum != block.checksum:
            ctx.store.delete(block.block_id)
            log.warn("re-replication of {block_id} from {source}: checksum mismatch", block_id=block.block_id, source=source)
            continue
        ctx.stored(stored)
        return stored
    return None
