"""The file system's plain data: users, blocks, inode records, statuses and namespace changes.

Everything here is immutable and free of I/O; the namespace (``namespace.py``)
produces these, the namespace store persists ``InodeRecord``s, the wire encodes
``FileStatus`` and ``ContentSummary`` as WebHDFS JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

ROOT_INODE_ID = 1  # "/" (HDFS's root inode id is 16385; ours is 1 — clients only compare ids)
DEFAULT_BLOCK_SIZE = 128 * 1024 * 1024  # dfs.blocksize
DEFAULT_REPLICATION = 3  # dfs.replication
DEFAULT_SUPERGROUP = "supergroup"  # dfs.permissions.superusergroup


@dataclass(frozen=True)
class User:
    """Who a request acts for: the name WebHDFS's ``user.name`` gives (until users authenticate) and its groups."""

    name: str
    groups: frozenset[str] = frozenset()


class FileKind(enum.Enum):
    """WebHDFS's ``FileStatus.type`` values we serve (no symlinks)."""

    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


@dataclass(frozen=True)
class BlockRef:
    """One block of a file: its id (``blk_`` + 32 hex digits), length in bytes, and the
    hex MD5 of its chunk CRCs (``checksums.block_checksum``), which every replica must match."""

    block_id: str
    length: int
    checksum: str


@dataclass(frozen=True)
class InodeRecord:
    """One inode as it is persisted (one row) and recovered: directories have no blocks.

    ``permission`` is the mode's low 10 bits (rwx for user, group, other, and the
    sticky bit 0o1000).  Times are milliseconds since the epoch.
    """

    inode_id: int
    parent_id: int  # 0 for the root
    name: str  # "" for the root
    kind: FileKind
    owner: str
    group: str
    permission: int
    modification_time: int
    access_time: int = 0
    replication: int = 0  # files only
    block_size: int = 0  # files only
    blocks: tuple[BlockRef, ...] = ()

    @property
    def length(self) -> int:
        return sum(block.length for block in self.blocks)


@dataclass(frozen=True)
class FileStatus:
    """What GETFILESTATUS and LISTSTATUS report of one inode (WebHDFS's ``FileStatus`` object)."""

    path_suffix: str  # "" for GETFILESTATUS, the child's name in a listing
    kind: FileKind
    length: int
    owner: str
    group: str
    permission: int
    access_time: int
    modification_time: int
    block_size: int
    replication: int
    file_id: int
    children: int  # childrenNum: entries of a directory, 0 for a file


@dataclass(frozen=True)
class ContentSummary:
    """GETCONTENTSUMMARY: totals over a subtree (quotas are not enforced: -1)."""

    length: int
    file_count: int
    directory_count: int
    space_consumed: int  # length x replication, summed over files


@dataclass(frozen=True)
class Changes:
    """What one namespace operation changed, for the store to persist in one transaction
    and for the block map to follow: inodes written (inserted or replaced), inode ids
    removed, and blocks no file refers to any more (their replicas are to be deleted)."""

    upserted: tuple[InodeRecord, ...] = ()
    removed: tuple[int, ...] = ()
    freed_blocks: tuple[BlockRef, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.upserted or self.removed or self.freed_blocks)
