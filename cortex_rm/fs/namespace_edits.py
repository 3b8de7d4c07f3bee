"""Writing one namespace operation: ``ChangeBatch`` and the parameter checks mutations share.

A mutation first checks everything (``namespace.py``), then writes through a
``ChangeBatch``, which applies each write to the ``InodeTree`` and remembers it, so
the ``Changes`` it returns are exactly what changed: the last version of each
inode written, the ids removed, and the blocks of removed files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from cortex_rm.fs.errors import IllegalArgument
from cortex_rm.fs.inode_tree import InodeTree, ResolvedPath
from cortex_rm.fs.model import BlockRef, Changes, FileKind, InodeRecord, User
from cortex_rm.fs.paths import FsPath
from cortex_rm.fs.permissions import MAX_PERMISSION

MIN_REPLICATION = 1  # dfs.namenode.replication.min
MAX_REPLICATION = 512  # dfs.replication.max
IMPLICIT_DIR_BITS = 0o300  # u+wx on directories made on the way (FSDirMkdirOp.addImplicitUwx)


def validate_permission(permission: int, path: FsPath) -> None:
    """A mode is rwx bits for user, group and other plus the sticky bit: 0..0o1777."""
    if not 0 <= permission <= MAX_PERMISSION:
        raise IllegalArgument(f"Invalid permission {permission:o} for {path}: expected 0 to 1777 (octal)")


def validate_file_parameters(replication: int, block_size: int, path: FsPath) -> None:
    """Replication within 1..512 and a positive block size, as HDFS's NameNode requires."""
    if not MIN_REPLICATION <= replication <= MAX_REPLICATION:
        raise IllegalArgument(
            f"Requested replication factor of {replication} for {path} is outside {MIN_REPLICATION}..{MAX_REPLICATION}"
        )
    if block_size <= 0:
        raise IllegalArgument(f"Invalid block size {block_size} for {path}: must be positive")


class ChangeBatch:
    """Applies one operation's writes to the tree and collects them as ``Changes``."""

    def __init__(self, tree: InodeTree) -> None:
        self._tree = tree
        self._upserted: dict[int, InodeRecord] = {}
        self._removed: list[int] = []
        self._freed: list[BlockRef] = []

    def put(self, record: InodeRecord) -> None:
        """Insert or replace an inode."""
        self._tree.put(record)
        self._upserted[record.inode_id] = record

    def touch(self, inode_id: int, now_ms: int) -> None:
        """Set a directory's modification time to now (an entry was added or removed)."""
        record = self._tree.get(inode_id)
        if record.modification_time != now_ms:
            self.put(replace(record, modification_time=now_ms))

    def remove_subtree(self, inode_id: int) -> None:
        """Remove an inode and everything below it, freeing the files' blocks."""
        for record in self._tree.remove_subtree(inode_id):
            self._upserted.pop(record.inode_id, None)
            self._removed.append(record.inode_id)
            self._freed.extend(record.blocks)

    def make_directories(
        self,
        resolved: ResolvedPath,
        depth: int,
        user: User,
        permission: int,
        now_ms: int,
        new_inode_id: Callable[[], int],
    ) -> InodeRecord:
        """Create the missing directories among the first ``depth`` components of ``resolved``
        (the last component gets ``permission``, the ones on the way ``permission`` | u+wx), each
        owned by ``user`` in its parent's group; return the directory at ``depth``."""
        current = resolved.inodes[0]
        assert current is not None
        full_depth = len(resolved.path.components)
        for index in range(1, depth + 1):
            existing = resolved.inodes[index]
            if existing is not None:
                current = existing
                continue
            mode = permission if index == full_depth else permission | IMPLICIT_DIR_BITS
            created = InodeRecord(
                inode_id=new_inode_id(),
                parent_id=current.inode_id,
                name=resolved.path.components[index - 1],
                kind=FileKind.DIRECTORY,
                owner=user.name,
                group=current.group,
                permission=mode,
                modification_time=now_ms,
            )
            self.put(created)
            self.touch(current.inode_id, now_ms)
            current = created
        return current

    def changes(self) -> Changes:
        """Everything written so far."""
        return Changes(
            upserted=tuple(self._upserted.values()), removed=tuple(self._removed), freed_blocks=tuple(self._freed)
        )
