"""The DataNode role of a node: its block store, its reports to the NameNode, and its web resources.

Started with the NodeManager (it shares the NodeManager's web port and its
tracker connection to the RM):

* at start, the block store under ``<state_dir>/dfs-data`` is scanned on a worker
  thread (leftovers of interrupted writes are removed);
* every ``report_interval_ms`` (the NameNode says how often) it sends a block
  report over the tracker connection — the full list after every new
  connection, what changed otherwise — and carries out the answer: delete
  replicas, fetch replicas from other nodes (re-replication), and keep the key
  that signs the NameNode's tickets;
* ``/webhdfs/v1`` and ``/cortex/blocks`` on the web port (``yarn_api/webhdfs``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource

from cortex_rm.dht.kv_messages import Record
from cortex_rm.events.caller_assertions import CallerKey
from cortex_rm.events.request_proofs import SignedRequest
from cortex_rm.fs.block_map import ReportedBlock
from cortex_rm.fs.block_store import BlockStore, StoredBlock
from cortex_rm.fs.errors import FsError, IllegalArgument, from_java_class
from cortex_rm.internal.block_codec import (
    MAX_REPORT_BLOCKS,
    AggregationTarget,
    BlockCommandsMessage,
    BlockFetch,
    BlockLocation,
    BlockReportMessage,
    LocalizationSource,
    RuntimeImageSource,
    WrittenBlockMessage,
)
from cortex_rm.internal.tracker_client import FsRefused, TrackerClient
from cortex_rm.roles.threads import thread_runner
from cortex_rm.yarn.app_network import AppNetwork
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.reactors import INodeReactor
from cortex_rm.yarn.tokens import MasterKey, Token
from cortex_rm.yarn_api.webhdfs.block_work import fetch_block
from cortex_rm.yarn_api.webhdfs.datanode_resource import BlockTransfers, DataNodeWebHdfs
from cortex_rm.yarn_api.webhdfs.response_body import ResponseBodies

log = Logger()
T = TypeVar("T")

WORKER_THREADS = 8  # concurrent uploads, reads and re-replications on one node
FIRST_REPORT_DELAY_MS = 200
DEFAULT_REPORT_INTERVAL_MS = 3000


class DataNodeRole:
    """Runs the DataNode (see the module docstring); it is also the web resources' ``DataNodeContext``."""

    def __init__(
        self,
        node_id: NodeId,
        http_address: str,
        data_dir: Path,
        reactor: INodeReactor,
        tracker: Callable[[], TrackerClient | None],
    ) -> None:
        self.node_id = node_id
        self.http_address = http_address
        self.reactor = reactor
        self._tracker = tracker
        self.store = BlockStore(data_dir, self.now_ms)
        self._keys: dict[int, MasterKey] = {}
        self._pool: ThreadPool | None = None
        self.bodies = ResponseBodies()  # the answers its workers are writing
        self._run: Runner | None = None
        self._timer: IDelayedCall | None = None
        self._reported_to: TrackerClient | None = None  # the connection the last full report went over
        self._known: dict[str, StoredBlock] = {}
        self._added: dict[str, StoredBlock] = {}
        self._removed: set[str] = set()
        self._interval_ms = DEFAULT_REPORT_INTERVAL_MS
        self._stopped = False

    # -- DataNodeContext

    def keys(self) -> dict[int, MasterKey]:
        return dict(self._keys)

    def now_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    def run(self, work: Callable[[], T]) -> defer.Deferred[T]:
        if self._run is None:
            return defer.fail(IllegalArgument("the DataNode is not running"))
        return self._run(work)

    def commit(self, ticket: str, written: list[WrittenBlockMessage]) -> defer.Deferred[int]:
        return self._call(lambda client: client.commit_write(self.node_id, ticket, written))

    def locate(self, ticket: str, offset: int, length: int) -> defer.Deferred[tuple[int, tuple[BlockLocation, ...]]]:
        return self._call(lambda client: client.locate_blocks(self.node_id, ticket, offset, length))

    def open_for_localization(self, token: Token, path: str, public_only: bool) -> defer.Deferred[LocalizationSource]:
        return self._call(lambda client: client.open_for_localization(self.node_id, token, path, public_only))

    def open_function_code(self, record: Record) -> defer.Deferred[LocalizationSource]:
        """The code of the function ``record`` registers (the RM checks it signed it): length, time, a read ticket."""
        return self._call(lambda client: client.open_function_code(self.node_id, record))

    def caller_key(self, request: SignedRequest) -> defer.Deferred[CallerKey]:
        """Who signed ``request`` to this node, in the RM's assertion for this node's triggers, and her token's
        entry key for this node and hour; InvalidToken saying why nobody."""
        return self._call(lambda client: client.caller_key(self.node_id, request))

    def open_for_aggregation(self, app_id: str) -> defer.Deferred[AggregationTarget]:
        return self._call(lambda client: client.open_for_aggregation(self.node_id, app_id))

    def open_runtime_image(self) -> defer.Deferred[RuntimeImageSource]:
        return self._call(lambda client: client.open_runtime_image(self.node_id))

    def application_network(self, app_id: str) -> defer.Deferred[AppNetwork]:
        """The RM's word on where ``app_id`` was submitted from and its slot of source ports."""
        return self._call(lambda client: client.application_network(self.node_id, app_id))

    def stored(self, block: StoredBlock) -> None:
        self.reactor.callFromThread(self._stored, block)

    def dropped(self, block_id: str) -> None:
        self.reactor.callFromThread(self._dropped, block_id)

    def _stored(self, block: StoredBlock) -> None:
        self._known[block.block_id] = block
        self._added[block.block_id] = block
        self._removed.discard(block.block_id)

    def _dropped(self, block_id: str) -> None:
        self._known.pop(block_id, None)
        self._added.pop(block_id, None)
        self._removed.add(block_id)

    def _call(self, send: Callable[[TrackerClient], defer.Deferred[T]]) -> defer.Deferred[T]:
        client = self._tracker()
        if client is None:
            return defer.fail(FsError("this node is not connected to the ResourceManager; try again shortly"))

        def refused(failure: Failure) -> Failure:
            if failure.check(FsRefused):
                error = failure.value
                assert isinstance(error, FsRefused)
                raise from_java_class(error.java_class, str(error))
            return failure

        return send(client).addErrback(refused)

    # -- lifecycle

    def resources(self) -> dict[bytes, Resource]:
        """The children to mount on the node's web root."""
        blocks = Resource()
        blocks.putChild(b"blocks", BlockTransfers(self, bodies=self.bodies))
        return {b"webhdfs": DataNodeWebHdfs(self, bodies=self.bodies), b"cortex": blocks}

    def start(self) -> defer.Deferred[None]:
        run, self._pool = thread_runner(self.reactor, name="datanode", threads=WORKER_THREADS)
        self._pool.start()
        self._run = run

        def scanned(blocks: list[StoredBlock]) -> None:
            self._known = {b.block_id: b for b in blocks}
            log.info(
                "DataNode {node_id}: {count} block replicas ({bytes} bytes) in {root}",
                node_id=str(self.node_id),
                count=len(blocks),
                bytes=sum(b.length for b in blocks),
                root=str(self.store.root),
            )
            self._schedule(FIRST_REPORT_DELAY_MS)

        return run(self.store.scan).addCallback(scanned)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self._run = None
            self.bodies.stop_all()  # (a worker writing an answer would hold up the join below)
            pool.stop()

    # -- reports

    def _schedule(self, delay_ms: int) -> None:
        if not self._stopped:
            self._timer = self.reactor.callLater(delay_ms / 1000, self._report)

    def _report(self) -> None:
        self._timer = None
        d = defer.ensureDeferred(self._send_report())
        d.addErrback(self._report_failed)
        d.addBoth(lambda _: self._schedule(self._interval_ms))

    def _report_failed(self, failure: Failure) -> None:
        log.info("block report not sent: {error}", error=failure.getErrorMessage())

    async def _send_report(self) -> None:
        client = self._tracker()
        if client is None:
            return
        now = self.now_ms()
        free = self.store.free_bytes()
        if client is not self._reported_to:
            blocks = [self._reported(b, now) for b in self._known.values()]
            pages = [blocks[i : i + MAX_REPORT_BLOCKS] for i in range(0, len(blocks), MAX_REPORT_BLOCKS)] or [[]]
            self._added.clear()
            self._removed.clear()
            for number, page in enumerate(pages):
                answer = await client.block_report(self.node_id, BlockReportMessage(number == 0, tuple(page), (), free))
                self._obey(answer)
            self._reported_to = client
            return
        added = list(self._added.values())[:MAX_REPORT_BLOCKS]
        removed = sorted(self._removed)[:MAX_REPORT_BLOCKS]
        for block in added:
            del self._added[block.block_id]
        self._removed.difference_update(removed)
        message = BlockReportMessage(False, tuple(self._reported(b, now) for b in added), tuple(removed), free)
        try:
            answer = await client.block_report(self.node_id, message)
        except Exception:
            for block in added:  # report them again next time
                self._added.setdefault(block.block_id, block)
            self._removed.update(removed)
            raise
        self._obey(answer)

    @staticmethod
    def _reported(block: StoredBlock, now_ms: int) -> ReportedBlock:
        return ReportedBlock(block.block_id, block.length, block.checksum, max(0, now_ms - block.finalized_ms))

    def _obey(self, answer: BlockCommandsMessage) -> None:
        self._keys = {answer.token_key.key_id: answer.token_key}
        self._interval_ms = answer.report_interval_ms
        if answer.full_report_wanted:
            self._reported_to = None  # the next report is a full one
        for block_id in answer.delete:
            self._delete(block_id)
        for order in answer.fetch:
            self._fetch(order)

    def _fetch(self, order: BlockFetch) -> None:
        def failed(failure: Failure) -> None:
            log.failure("fetching {block_id} failed", failure, block_id=order.block.block_id)

        self.run(lambda: fetch_block(self, order.block, order.sources, order.token)).addErrback(failed)

    def _delete(self, block_id: str) -> None:
        def deleted(existed: bool) -> None:
            if existed:
                self._dropped(block_id)

        self.run(lambda: self.store.delete(block_id)).addCallbacks(
            deleted, lambda f: log.failure("deleting {block_id} failed", f, block_id=block_id)
        )
