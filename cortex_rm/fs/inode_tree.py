"""The namespace's storage: inode records by id, and each directory's children by name.

``InodeTree`` knows nothing of users or permissions; ``namespace.py`` decides and
then writes here.  Records are immutable ``InodeRecord``s, replaced whole when an
inode changes, so what the tree holds is exactly what the store persists.

Each directory keeps a dict (name to inode id) for lookups and a ``SortedList`` of
names for listings: LISTSTATUS pages through a directory of 100,000 entries with
one binary search per page, and a new entry costs O(log n).  Python orders ``str``
by code point, which is the bytewise order of UTF-8 (HDFS sorts names as UTF-8
bytes), so names are sorted as they are.

``resolve`` walks a path like HDFS's ``INodesInPath``: one slot per component,
``None`` from the first component that does not exist or lies below a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sortedcontainers import SortedList

from cortex_rm.fs.errors import FsError
from cortex_rm.fs.model import ROOT_INODE_ID, FileKind, FileStatus, InodeRecord
from cortex_rm.fs.paths import FsPath


class CorruptNamespace(FsError):
    """Recovered records do not form a tree (no root, two roots, a missing parent, a file
    as a parent, two entries of one name in a directory, a cycle): the store is damaged."""


@dataclass(frozen=True)
class ResolvedPath:
    """A path and the inode of each prefix: ``inodes[0]`` is the root, ``inodes[i]`` the inode
    of the first ``i`` components, ``None`` where it does not exist (or lies below a file)."""

    path: FsPath
    inodes: tuple[InodeRecord | None, ...]

    @property
    def last(self) -> InodeRecord | None:
        """The inode the path names, if it exists."""
        return self.inodes[-1]

    @property
    def parent(self) -> InodeRecord | None:
        """The inode of the path's parent, if it exists (``None`` for the root too)."""
        return self.inodes[-2] if len(self.inodes) > 1 else None


class InodeTree:
    """Inode records by id, and each directory's children by name, kept in name order."""

    def __init__(self, root: InodeRecord) -> None:
        self._records: dict[int, InodeRecord] = {root.inode_id: root}
        self._children: dict[int, dict[str, int]] = {root.inode_id: {}}
        self._names: dict[int, SortedList] = {root.inode_id: SortedList()}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, inode_id: int) -> InodeRecord:
        """The record of a live inode (``KeyError`` if there is none: a bug)."""
        return self._records[inode_id]

    def records(self) -> Iterator[InodeRecord]:
        """Every record, in no particular order."""
        return iter(self._records.values())

    def child(self, directory_id: int, name: str) -> InodeRecord | None:
        """The entry ``name`` of a directory, if any."""
        child_id = self._children[directory_id].get(name)
        return None if child_id is None else self._records[child_id]

    def child_count(self, directory_id: int) -> int:
        """How many entries a directory has."""
        return len(self._children[directory_id])

    def children(self, directory_id: int) -> Iterator[InodeRecord]:
        """A directory's entries, in no particular order."""
        return (self._records[child_id] for child_id in self._children[directory_id].values())

    def page(self, directory_id: int, start_after: str, limit: int | None) -> tuple[list[InodeRecord], int]:
        """A directory's entries named after ``start_after`` in name order, at most ``limit``
        of them, and how many more follow the page."""
        names = self._names[directory_id]
        start = names.bisect_right(start_after) if start_after else 0
        end = len(names) if limit is None else min(len(names), start + limit)
        by_name = self._children[directory_id]
        page = [self._records[by_name[name]] for name in names.islice(start, end)]
        return page, len(names) - end

    def status(self, record: InodeRecord, path_suffix: str) -> FileStatus:
        """What GETFILESTATUS and LISTSTATUS say of ``record``."""
        is_file = record.kind is FileKind.FILE
        return FileStatus(
            path_suffix=path_suffix,
            kind=record.kind,
            length=record.length,
            owner=record.owner,
            group=record.group,
            permission=record.permission,
            access_time=record.access_time,
            modification_time=record.modification_time,
            block_size=record.block_size if is_file else 0,
            replication=record.replication if is_file else 0,
            file_id=record.inode_id,
            children=0 if is_file else self.child_count(record.inode_id),
        )

    def resolve(self, path: FsPath) -> ResolvedPath:
        """The inodes along ``path``, ``None`` from the first missing one (or below a file)."""
        current: InodeRecord | None = self._records[ROOT_INODE_ID]
        inodes: list[InodeRecord | None] = [current]
        for name in path.components:
            if current is not None and current.kind is FileKind.DIRECTORY:
                current = self.child(current.inode_id, name)
            else:
                current = None
            inodes.append(current)
        return ResolvedPath(path, tuple(inodes))

    def walk(self, path: FsPath, record: InodeRecord) -> Iterator[tuple[FsPath, InodeRecord]]:
        """``record`` (at ``path``) and everything below it, each with its path, parents first."""
        stack = [(path, record)]
        while stack:
            here, current = stack.pop()
            yield here, current
            if current.kind is FileKind.DIRECTORY:
                for child in self.children(current.inode_id):
                    stack.append((FsPath((*here.components, child.name)), child))

    def put(self, record: InodeRecord) -> None:
        """Insert a record, or replace the one with its id (moving it if its parent or name changed)."""
        old = self._records.get(record.inode_id)
        if old is None:
            self._link(record)
            if record.kind is FileKind.DIRECTORY:
                self._children[record.inode_id] = {}
                self._names[record.inode_id] = SortedList()
        elif (old.parent_id, old.name) != (record.parent_id, record.name):
            self._unlink(old)
            self._link(record)
        self._records[record.inode_id] = record

    def remove_subtree(self, inode_id: int) -> list[InodeRecord]:
        """Remove an inode and everything below it; return the removed records."""
        top = self._records[inode_id]
        removed = [record for _, record in self.walk(FsPath(), top)]
        self._unlink(top)
        for record in removed:
            del self._records[record.inode_id]
            self._children.pop(record.inode_id, None)
            self._names.pop(record.inode_id, None)
        return removed

    def _link(self, record: InodeRecord) -> None:
        by_name = self._children[record.parent_id]
        if record.name in by_name:
            raise AssertionError(f"inode {record.inode_id}: {record.name!r} already names inode {by_name[record.name]}")
        by_name[record.name] = record.inode_id
        self._names[record.parent_id].add(record.name)

    def _unlink(self, record: InodeRecord) -> None:
        del self._children[record.parent_id][record.name]
        self._names[record.parent_id].remove(record.name)

    @classmethod
    def from_records(cls, records: Iterable[InodeRecord]) -> InodeTree:
        """Rebuild a tree from persisted records in any order, refusing with ``CorruptNamespace``
        anything that is not one tree rooted at ``ROOT_INODE_ID``."""
        by_id: dict[int, InodeRecord] = {}
        for record in records:
            if record.inode_id in by_id:
                raise CorruptNamespace(f"inode id {record.inode_id} appears twice")
            by_id[record.inode_id] = record
        roots = [record for record in by_id.values() if record.parent_id == 0]
        if len(roots) != 1:
            raise CorruptNamespace(f"expected exactly one root inode (parent 0), found {len(roots)}")
        root = roots[0]
        if root.inode_id != ROOT_INODE_ID or root.kind is not FileKind.DIRECTORY or root.name:
            raise CorruptNamespace(f"the root must be directory {ROOT_INODE_ID} named '', not {root}")
        by_parent: dict[int, list[InodeRecord]] = {}
        for record in by_id.values():
            if record.parent_id == 0:
                continue
            parent = by_id.get(record.parent_id)
            if parent is None:
                raise CorruptNamespace(f"inode {record.inode_id} ({record.name!r}): parent {record.parent_id} missing")
            if parent.kind is not FileKind.DIRECTORY:
                raise CorruptNamespace(
                    f"inode {record.inode_id} ({record.name!r}): parent {record.parent_id} is not a directory"
                )
            if not record.name or "/" in record.name:
                raise CorruptNamespace(f"inode {record.inode_id}: invalid name {record.name!r}")
            by_parent.setdefault(record.parent_id, []).append(record)
        tree = cls(root)
        pending = [root.inode_id]
        while pending:
            for record in by_parent.get(pending.pop(), ()):
                if record.name in tree._children[record.parent_id]:
                    raise CorruptNamespace(f"directory {record.parent_id} has two entries named {record.name!r}")
                tree.put(record)
                pending.append(record.inode_id)
        if len(tree) != len(by_id):
            stray = sorted(set(by_id) - set(tree._records))[:10]
            raise CorruptNamespace(f"inodes not reachable from the root (a cycle): {stray}")
        return tree
