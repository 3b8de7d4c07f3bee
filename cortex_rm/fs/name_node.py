"""The NameNode: the namespace, the block map and the tickets behind one set of operations.

The RM role owns one.  The WebHDFS wire (``yarn_api/webhdfs/``) calls it for what a
client asks; the tracker endpoint calls it for what the nodes report.  Each
mutation changes the in-memory namespace at once (so later requests see it),
then is persisted (``NamespaceStore.apply``, one transaction per operation, in
order) before the operation's Deferred fires and the client is answered; then
the block map learns which blocks a file gained or lost.

Writes never make a half file visible: CREATE and APPEND only check and hand out
a signed write ticket naming the pipeline's nodes; the first node receives the
data, stores the blocks on the pipeline and calls ``commit_write``, which adds
the file (or the appended blocks) to the namespace in one step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from cortex_rm.fs import tickets
from cortex_rm.fs.block_map import BlockMap, DataNode, NodeCommands, ReportedBlock
from cortex_rm.fs.errors import FileNotFound, IllegalArgument, InvalidToken, MissingBlock
from cortex_rm.fs.model import DEFAULT_BLOCK_SIZE, BlockRef, Changes, FileKind, FileStatus, InodeRecord, User
from cortex_rm.fs.namespace import Namespace
from cortex_rm.fs.namespace_store import NamespaceStore
from cortex_rm.fs.paths import ROOT, FsPath, parse_path
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn.tokens import MasterKey

WRITE_TICKET_MS = 60 * 60 * 1000  # a write may take long (a slow client, a big file)
READ_TICKET_MS = 10 * 60 * 1000
#: Whom a PUBLIC resource must be readable by: a name no request can carry (``:`` is refused
#: at the edge) and no group, so only the "other" permission bits let it through.
EVERYONE = User("public:everyone", frozenset())
BLOCK_TOKEN_MS = 10 * 60 * 1000
MIN_BLOCK_SIZE = 1024 * 1024  # dfs.namenode.fs-limits.min-block-size
MAX_REPLICATION = 512  # dfs.replication.max
_COMMITTED_NONCES = 100_000  # remembered to refuse a second commit of the same write ticket


@dataclass(frozen=True)
class WriteRequest:
    """CREATE's or APPEND's parameters, parsed by the wire."""

    path: FsPath
    user: User
    overwrite: bool = False
    permission: int = 0o644
    replication: int | None = None
    block_size: int | None = None


@dataclass(frozen=True)
class Redirect:
    """Where a client must repeat its request: the node and the ticket to show it."""

    node: DataNode
    ticket: str


@dataclass(frozen=True)
class LocatedBlock:
    """A block of a file being read, where it starts in the file, its holders and a token to read it."""

    block: BlockRef
    offset: int
    sources: tuple[DataNode, ...]
    token: str


@dataclass(frozen=True)
class WrittenBlock:
    """A block a write pipeline stored, with the NodeIds of the nodes that hold it."""

    block: BlockRef
    holders: tuple[str, ...]


class NameNode:
    """Namespace operations, write/read redirects, commits and node reports (see the module docstring)."""

    def __init__(
        self,
        namespace: Namespace,
        blocks: BlockMap,
        store: NamespaceStore,
        key: MasterKey,
        clock: IReactorTime,
        *,
        default_replication: int = 3,
        default_block_size: int = DEFAULT_BLOCK_SIZE,
        report_interval_ms: int = 3000,
    ) -> None:
        self.namespace = namespace
        self.blocks = blocks
        self.store = store
        self.key = key
        self.clock = clock
        self.default_replication = default_replication
        self.default_block_size = default_block_size
        self.report_interval_ms = report_interval_ms
        self._committed: OrderedDict[str, int] = OrderedDict()  # write-ticket nonce -> expiry
        for record in namespace.all_files():
            blocks.add_blocks(record.blocks, record.replication)

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- mutations: applied in memory, persisted, then followed by the block map

    def persist(self, changes: Changes) -> defer.Deferred[None]:
        """Persist ``changes``, then tell the block map of freed blocks; fires when durable."""

        def durable(_: None) -> None:
            if changes.freed_blocks:
                self.blocks.remove_blocks(b.block_id for b in changes.freed_blocks)

        return self.store.apply(changes).addCallback(durable)

    def home_directory(self, user: User) -> defer.Deferred[FsPath]:
        """GETHOMEDIRECTORY: ``/user/<name>``, made (owned by the user, 755) at its first use, so
        that a new user's ``spark-submit`` can stage there and FsShell's relative paths work."""
        home = self.namespace.home_directory(user)
        admin = User(self.namespace.superuser, frozenset({self.namespace.supergroup}))
        try:
            self.namespace.get_status(home, admin)
            return defer.succeed(home)
        except FileNotFound:
            pass
        now = self.now_ms()
        changes = merged(
            self.namespace.mkdirs(home, admin, 0o755, now),
            self.namespace.set_owner(home, admin, user.name, user.name),
        )
        return self.persist(changes).addCallback(lambda _: home)

    # -- writes

    def write_redirect(self, op: str, request: WriteRequest, writer: str | None = None) -> Redirect:
        """CREATE/APPEND's first step: check now what the commit will check again, choose the
        pipeline and sign a ticket for it (the client's data goes to the pipeline's first node)."""
        user, path = request.user, request.path
        if op == "CREATE":
            self.namespace.check_create(path, user, request.overwrite)
            replication = self.default_replication if request.replication is None else request.replication
            block_size = self.default_block_size if request.block_size is None else request.block_size
            if not 1 <= replication <= MAX_REPLICATION:
                raise IllegalArgument(f"replication {replication} is not between 1 and {MAX_REPLICATION}")
            if block_size < MIN_BLOCK_SIZE or block_size % 512:
                raise IllegalArgument(
                    f"block size {block_size} must be a multiple of 512 and at least {MIN_BLOCK_SIZE} bytes"
                )
        elif op == "APPEND":
            record = self.namespace.check_append(path, user)
            replication, block_size = record.replication, record.block_size
        else:
            raise IllegalArgument(f"{op} is not a write")
        pipeline = self.blocks.choose_targets(replication, writer=writer, block_size=block_size)
        claims = {
            "path": str(path),
            "user": user.name,
            "groups": sorted(user.groups),
            "overwrite": request.overwrite,
            "permission": request.permission,
            "replication": replication,
            "block_size": block_size,
            "pipeline": [n.node_id for n in pipeline],
            "replicas": [n.http_address for n in pipeline[1:]],
        }
        ticket = tickets.sign(self.key, op, claims, self.now_ms() + WRITE_TICKET_MS)
        return Redirect(pipeline[0], ticket)

    def aggregation_redirect(self, root: FsPath, path: FsPath, owner: str, writer: str) -> defer.Deferred[Redirect]:
        """A node aggregating an application's logs into ``path`` (under the remote log dir
        ``root``), as its ``owner``: ``root`` made 1777 by the superuser if missing (as YARN's
        NodeManager makes it), the file's directories made by the owner (770), and a CREATE
        ticket with ``writer`` first in the pipeline."""
        admin = User(self.namespace.superuser, frozenset({self.namespace.supergroup}))
        user = User(owner, frozenset({owner}))
        now = self.now_ms()
        steps: list[Changes] = []
        if not self._exists(root):
            steps += [self.namespace.mkdirs(root, admin, 0o777, now), self.namespace.set_permission(root, admin, 0o1777)]
        if not self._exists(path.parent):
            steps.append(self.namespace.mkdirs(path.parent, user, 0o770, now))
        request = WriteRequest(path, user, overwrite=True, permission=0o640)
        return self.persist(merged(*steps)).addCallback(lambda _: self.write_redirect("CREATE", request, writer))

    def delete_expired_logs(
        self, root: FsPath, suffix: str, cutoff_ms: int, running: Callable[[ApplicationId], bool], limit: int = 1000
    ) -> defer.Deferred[list[FsPath]]:
        """Aggregated-log retention (YARN's deletion service): under
        ``root/<user>/<suffix>/<bucket>/<application id>``, every application directory whose
        entries and itself were last modified before ``cutoff_ms`` and whose application is not
        ``running`` is deleted, as the superuser, at most ``limit`` per call (the next call
        goes on); nothing else under ``root`` is touched.  Fires with the directories deleted."""
        admin = User(self.namespace.superuser, frozenset({self.namespace.supergroup}))
        expired: list[FsPath] = []
        changes: list[Changes] = []
        for user_dir in self._subdirectories(root, admin):
            for bucket in self._subdirectories(user_dir.child(suffix), admin):
                for app_dir in self._subdirectories(bucket, admin, cutoff_ms):
                    try:
                        app_id = ApplicationId.parse(app_dir.name)
                    except ValueError:
                        continue
                    if len(expired) >= limit or running(app_id):
                        continue
                    if any(entry.modification_time >= cutoff_ms for entry in self._entries(app_dir, admin)):
                        continue
                    changes.append(self.namespace.delete(app_dir, admin, True, self.now_ms())[1])
                    expired.append(app_dir)
        return self.persist(merged(*changes)).addCallback(lambda _: expired)

    def _subdirectories(self, path: FsPath, user: User, before_ms: int | None = None) -> list[FsPath]:
        """``path``'s subdirectories (last modified before ``before_ms``, when given)."""
        return [
            path.child(entry.path_suffix)
            for entry in self._entries(path, user)
            if entry.kind is FileKind.DIRECTORY and (before_ms is None or entry.modification_time < before_ms)
        ]

    def _entries(self, path: FsPath, user: User) -> list[FileStatus]:
        try:
            return self.namespace.list_status(path, user)[0]
        except FileNotFound:
            return []

    def _exists(self, path: FsPath) -> bool:
        try:
            self.namespace.get_status(path, User(self.namespace.superuser))
        except FileNotFound:
            return False
        return True

    def commit_write(self, node_id: str, ticket_text: str, written: Sequence[WrittenBlock]) -> defer.Deferred[int]:
        """The pipeline's first node stored ``written``: add the file (or its new blocks) to the
        namespace; fires with the file's length once the change is durable."""
        now = self.now_ms()
        ticket = tickets.verify({self.key.key_id: self.key}, ticket_text, frozenset({"CREATE", "APPEND"}), now)
        if ticket.texts("pipeline")[:1] != (node_id,):
            raise InvalidToken(f"the write ticket was issued for {ticket.texts('pipeline')[:1]}, not {node_id}")
        self._forget_expired_commits(now)
        if ticket.nonce in self._committed:
            raise InvalidToken("this write ticket was already committed")
        user = User(ticket.text("user"), frozenset(ticket.texts("groups")))
        path = parse_path(ticket.text("path"))
        refs = [w.block for w in written]
        if ticket.op == "CREATE":
            changes = self.namespace.create_file(
                path,
                user,
                permission=ticket.number("permission"),
                replication=ticket.number("replication"),
                block_size=ticket.number("block_size"),
                blocks=refs,
                overwrite=bool(ticket.claims.get("overwrite")),
                now_ms=now,
            )
        else:
            changes = self.namespace.append_blocks(path, user, refs, now)
        self._committed[ticket.nonce] = ticket.expires_ms
        self._committed_trim()
        record = self.namespace.open_file(path, User(self.namespace.superuser))
        self.blocks.add_blocks(refs, record.replication)
        for w in written:
            for holder in w.holders:
                self.blocks.replica_written(holder, w.block)
        return self.persist(changes).addCallback(lambda _: record.length)

    def _forget_expired_commits(self, now_ms: int) -> None:
        while self._committed:
            nonce, expires = next(iter(self._committed.items()))
            if expires > now_ms:
                break
            del self._committed[nonce]

    def _committed_trim(self) -> None:
        while len(self._committed) > _COMMITTED_NONCES:
            self._committed.popitem(last=False)

    # -- reads

    def read_redirect(
        self, path: FsPath, user: User, offset: int, length: int | None, exclude: frozenset[str] = frozenset()
    ) -> Redirect:
        """OPEN's first step: check READ, pick a node holding the first block of the range (not one
        of the web addresses in ``exclude``: WebHDFS's ``excludedatanodes``, nodes the client could
        not reach), sign a read ticket."""
        record = self.namespace.open_file(path, user)
        if offset < 0 or offset > record.length:
            raise IllegalArgument(f"offset={offset} is outside the file ({record.length} bytes)")
        if length is not None and length < 0:
            raise IllegalArgument(f"length={length} is negative")
        node = self._reader_node(record, offset, exclude)
        claims = {"path": str(path), "file_id": record.inode_id, "user": user.name}
        ticket = tickets.sign(self.key, "OPEN", claims, self.now_ms() + READ_TICKET_MS)
        return Redirect(node, ticket)

    def localization_source(self, path: FsPath, user: User | None) -> tuple[int, int, str]:
        """A node localizing ``path`` for ``user`` (None: a PUBLIC resource, which everyone must be
        able to read): the file's length and modification time, and an OPEN ticket for it."""
        reader = user if user is not None else EVERYONE
        record = self.namespace.open_file(path, reader)
        claims = {"path": str(path), "file_id": record.inode_id, "user": reader.name}
        ticket = tickets.sign(self.key, "OPEN", claims, self.now_ms() + READ_TICKET_MS)
        return record.length, record.modification_time, ticket

    def _reader_node(self, record: InodeRecord, offset: int, exclude: frozenset[str]) -> DataNode:
        start = 0
        for block in record.blocks:
            if start <= offset < start + block.length:
                holders = [n for n in self.blocks.locations(block.block_id) if n.http_address not in exclude]
                if holders:
                    return holders[0]
                break
            start += block.length
        # an empty read, a missing block, or every holder excluded: another node reads from the holders
        live = [n for n in self.blocks.live_nodes() if n.http_address not in exclude] or self.blocks.live_nodes()
        if not live:
            raise MissingBlock("no node of the file system is live; try again when nodes have joined")
        return live[0]

    def block_locations(
        self, path: FsPath, user: User, offset: int, length: int | None
    ) -> list[tuple[int, BlockRef, list[DataNode]]]:
        """GETFILEBLOCKLOCATIONS: each block of ``path`` overlapping ``[offset, offset + length)``,
        with its offset in the file and its live holders (what Spark uses for locality)."""
        record = self.namespace.open_file(path, user)
        if offset < 0:
            raise IllegalArgument(f"offset={offset} is negative")
        end = record.length if length is None else min(record.length, offset + length)
        found: list[tuple[int, BlockRef, list[DataNode]]] = []
        start = 0
        for block in record.blocks:
            if start < end and start + block.length > offset:
                found.append((start, block, self.blocks.locations(block.block_id)))
            start += block.length
        return found

    def locate(self, ticket_text: str, offset: int, length: int) -> tuple[int, list[LocatedBlock]]:
        """The blocks of the ticket's file covering ``[offset, offset + length)``, with holders and block tokens."""
        now = self.now_ms()
        ticket = tickets.verify({self.key.key_id: self.key}, ticket_text, "OPEN", now)
        path = parse_path(ticket.text("path"))
        record = self.namespace.open_file(path, User(self.namespace.superuser))
        if record.inode_id != ticket.number("file_id"):
            raise InvalidToken(f"{path} was replaced since the read began; open it again")
        end = record.length if length < 0 else min(record.length, offset + length)
        located: list[LocatedBlock] = []
        start = 0
        for block in record.blocks:
            if start < end and start + block.length > offset:
                sources = tuple(self.blocks.locations(block.block_id))
                token = tickets.sign(self.key, "BLOCK", {"blocks": [block.block_id]}, now + BLOCK_TOKEN_MS)
                located.append(LocatedBlock(block, start, sources, token))
            start += block.length
        return record.length, located

    # -- the nodes' side

    def node_report(
        self, node: DataNode, full: bool, added: Sequence[ReportedBlock], removed: Sequence[str], free_bytes: int | None = None
    ) -> NodeCommands:
        """A node's block report; the answer is what it must delete and fetch (``free_bytes``: its room for
        blocks, under its disk cap: new pipelines skip a node without room for a block)."""
        self.blocks.node_up(node)
        if free_bytes is not None:
            self.blocks.free[node.node_id] = free_bytes
        if full:
            self.blocks.full_report(node.node_id, added)
        else:
            self.blocks.incremental_report(node.node_id, added, removed)
        return self.blocks.commands(node.node_id)

    def block_token(self, block_id: str) -> str:
        """A token that lets a node read ``block_id`` from another (fetch orders)."""
        return tickets.sign(self.key, "BLOCK", {"blocks": [block_id]}, self.now_ms() + BLOCK_TOKEN_MS)


def merged(*steps: Changes) -> Changes:
    """Several operations' changes as one transaction (a later write of an inode wins)."""
    upserted: dict[int, InodeRecord] = {}
    removed: list[int] = []
    freed: list[BlockRef] = []
    for step in steps:
        for record in step.upserted:
            upserted[record.inode_id] = record
        for inode_id in step.removed:
            upserted.pop(inode_id, None)
            removed.append(inode_id)
        freed.extend(step.freed_blocks)
    return Changes(tuple(upserted.values()), tuple(removed), tuple(freed))


def fresh_or_recovered(records: list[InodeRecord], superuser: str, supergroup: str, now_ms: int) -> tuple[Namespace, Changes]:
    """The namespace from the store's records, or a new one at the first start: the root, ``/user``
    (755) for the home directories and ``/tmp`` (1777, HDFS's usual scratch space), to persist."""
    if records:
        return Namespace.recover(records, superuser, supergroup), Changes()
    namespace = Namespace(superuser, supergroup, now_ms)
    admin = User(superuser, frozenset({supergroup}))
    return namespace, merged(
        Changes(upserted=(namespace.root_record(),)),
        namespace.mkdirs(ROOT.child("user"), admin, 0o755, now_ms),
        namespace.mkdirs(ROOT.child("tmp"), admin, 0o777, now_ms),
        namespace.set_permission(ROOT.child("tmp"), admin, 0o1777),
    )

