"""The namespace: HDFS's NameNode directory tree, as a sans-IO object.

``Namespace`` answers the WebHDFS operations on names (GETFILESTATUS, LISTSTATUS,
MKDIRS, CREATE's and APPEND's namespace half, RENAME, DELETE, SETPERMISSION,
SETOWNER, SETREPLICATION, SETTIMES...) with HDFS's semantics and HDFS's errors.
It does no I/O and reads no clock: every mutation takes ``now_ms`` and returns
the ``Changes`` it made (each inode written, each inode removed, each block no
file refers to any more) for the store to persist and the block map to follow.

Every operation checks everything before it changes anything, so one that raises
leaves the namespace as it was.  Permission checks follow
``FSPermissionChecker.checkPermission`` (see ``_authorize``): EXECUTE on every
directory traversed, then the access asked of the deepest existing ancestor, of
the parent (plus the sticky-bit rule), of the inode itself and of every directory
below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from cortex_rm.fs.errors import (
    AccessControl,
    FileAlreadyExists,
    FileNotFound,
    IllegalArgument,
    PathIsNotEmptyDirectory,
)
from cortex_rm.fs.inode_tree import CorruptNamespace, InodeTree, ResolvedPath
from cortex_rm.fs.model import (
    DEFAULT_SUPERGROUP,
    ROOT_INODE_ID,
    BlockRef,
    Changes,
    ContentSummary,
    FileKind,
    FileStatus,
    InodeRecord,
    User,
)
from cortex_rm.fs.namespace_edits import ChangeBatch, validate_file_parameters, validate_permission
from cortex_rm.fs.paths import ROOT, FsPath
from cortex_rm.fs.permissions import FsAction, PathAccess, PermissionChecker

__all__ = ["CorruptNamespace", "Namespace"]

CREATE_PARENT_PERMISSION = 0o755  # parents CREATE makes


class Namespace:
    """The directory tree of files and directories, with HDFS's permission checks."""

    def __init__(self, superuser: str, supergroup: str = DEFAULT_SUPERGROUP, now_ms: int = 0) -> None:
        root = InodeRecord(
            inode_id=ROOT_INODE_ID,
            parent_id=0,
            name="",
            kind=FileKind.DIRECTORY,
            owner=superuser,
            group=supergroup,
            permission=0o755,
            modification_time=now_ms,
        )
        self._tree = InodeTree(root)
        self._checker = PermissionChecker(superuser, supergroup)
        self._access = PathAccess(self._checker, self._tree)
        self._last_inode_id = ROOT_INODE_ID

    @classmethod
    def recover(
        cls,
        records: Iterable[InodeRecord],
        superuser: str,
        supergroup: str = DEFAULT_SUPERGROUP,
        *,
        last_inode_id: int = 0,
    ) -> Namespace:
        """A namespace from persisted records in any order (``CorruptNamespace`` if they are not
        one tree).  New inodes get ids above the largest recovered one and above ``last_inode_id``
        (pass the highest id ever given out to avoid reusing a deleted file's id)."""
        namespace = cls(superuser, supergroup)
        namespace._tree = InodeTree.from_records(records)
        namespace._access = PathAccess(namespace._checker, namespace._tree)
        largest = max(record.inode_id for record in namespace._tree.records())
        namespace._last_inode_id = max(largest, last_inode_id)
        return namespace

    # -- whole-namespace views ------------------------------------------------------------

    @property
    def inode_count(self) -> int:
        """How many inodes there are, the root included."""
        return len(self._tree)

    @property
    def last_inode_id(self) -> int:
        """The highest inode id given out so far (persist it to pass back to ``recover``)."""
        return self._last_inode_id

    @property
    def superuser(self) -> str:
        """The name that passes every permission check."""
        return self._checker.superuser

    @property
    def supergroup(self) -> str:
        """The group whose members pass every permission check."""
        return self._checker.supergroup

    def root_record(self) -> InodeRecord:
        """The record of ``/``."""
        return self._tree.get(ROOT_INODE_ID)

    def all_records(self) -> Iterator[InodeRecord]:
        """Every inode's record, in no particular order."""
        return self._tree.records()

    def all_files(self) -> Iterator[InodeRecord]:
        """Every file's record (the block map learns from them which blocks should exist)."""
        return (record for record in self._tree.records() if record.kind is FileKind.FILE)

    def home_directory(self, user: User) -> FsPath:
        """GETHOMEDIRECTORY: ``/user/<name>``."""
        return ROOT.child("user").child(user.name)

    # -- queries ----------------------------------------------------------------------------

    def get_status(self, path: FsPath, user: User) -> FileStatus:
        """GETFILESTATUS (``FileNotFound`` if absent; EXECUTE needed on every ancestor)."""
        resolved = self._resolve(path, user)
        return self._tree.status(self._existing(resolved), "")

    def list_status(
        self, path: FsPath, user: User, start_after: str = "", limit: int | None = None
    ) -> tuple[list[FileStatus], int]:
        """LISTSTATUS: a directory's entries named after ``start_after`` in UTF-8 byte order,
        at most ``limit`` of them, and how many remain after the page.  READ and EXECUTE
        are needed on the directory.  A file lists as itself (``path_suffix`` "")."""
        if limit is not None and limit < 0:
            raise IllegalArgument(f"Invalid listing limit {limit} for {path}")
        resolved = self._tree.resolve(path)
        last = resolved.last
        if last is not None and last.kind is FileKind.DIRECTORY:
            self._access.check(user, resolved, access=FsAction.READ_EXECUTE)
        else:
            self._access.check(user, resolved)
        if last is None:
            raise FileNotFound(f"File {path} does not exist.")
        if last.kind is FileKind.FILE:
            return [self._tree.status(last, "")], 0
        page, remaining = self._tree.page(last.inode_id, start_after, limit)
        return [self._tree.status(child, child.name) for child in page], remaining

    def content_summary(self, path: FsPath, user: User) -> ContentSummary:
        """GETCONTENTSUMMARY: totals over the subtree (``directory_count`` counts the directory
        itself, as HDFS does); READ and EXECUTE are needed on every directory in it."""
        resolved = self._resolve(path, user, sub_access=FsAction.READ_EXECUTE)
        top = self._existing(resolved)
        length = files = directories = consumed = 0
        for _, record in self._tree.walk(path, top):
            if record.kind is FileKind.DIRECTORY:
                directories += 1
            else:
                files += 1
                length += record.length
                consumed += record.length * record.replication
        return ContentSummary(length=length, file_count=files, directory_count=directories, space_consumed=consumed)

    def open_file(self, path: FsPath, user: User) -> InodeRecord:
        """OPEN's namespace half: the file's record (its blocks), READ needed on it.  A
        directory is ``FileNotFound`` "Path is not a file" as in HDFS."""
        resolved = self._resolve(path, user, access=FsAction.READ)
        record = self._existing(resolved)
        if record.kind is not FileKind.FILE:
            raise FileNotFound(f"Path is not a file: {path}")
        return record

    def check_create(self, path: FsPath, user: User, overwrite: bool) -> None:
        """Raise what ``create_file`` would raise now (``FileAlreadyExists``, ``ParentNotDirectory``,
        ``AccessControl``); return if it would succeed (``startFile``'s checks, in its order)."""
        resolved = self._resolve(path, user)
        last = resolved.last
        if last is not None and last.kind is FileKind.DIRECTORY:
            raise FileAlreadyExists(f"{path} already exists as a directory")
        if overwrite and last is not None:
            self._access.check(user, resolved, access=FsAction.WRITE)
        self._access.check(user, resolved, ancestor=FsAction.WRITE)
        if last is not None and not overwrite:
            raise FileAlreadyExists(f"failed to create file {path} because it already exists")

    def check_append(self, path: FsPath, user: User) -> InodeRecord:
        """APPEND's checks: the file's record if ``user`` may write it; ``FileNotFound`` if absent."""
        resolved = self._resolve(path, user)
        if resolved.last is not None and resolved.last.kind is FileKind.DIRECTORY:
            raise FileAlreadyExists(f"Cannot append to directory {path}; already exists as a directory.")
        self._access.check(user, resolved, access=FsAction.WRITE)
        if resolved.last is None:
            raise FileNotFound(f"Failed to append to non-existent file {path}")
        return resolved.last

    # -- mutations ------------------------------------------------------------------------

    def mkdirs(self, path: FsPath, user: User, permission: int, now_ms: int) -> Changes:
        """MKDIRS: create the directory and its missing ancestors (these get ``permission`` plus
        u+wx).  An existing directory is no error and no change; a file in the way is."""
        validate_permission(permission, path)
        resolved = self._resolve(path, user)
        last = resolved.last
        if last is not None:
            if last.kind is FileKind.FILE:
                raise FileAlreadyExists(f"Path is not a directory: {path}")
            return Changes()
        self._access.check(user, resolved, ancestor=FsAction.WRITE)
        batch = ChangeBatch(self._tree)
        batch.make_directories(resolved, len(path.components), user, permission, now_ms, self._next_inode_id)
        return batch.changes()

    def create_file(
        self,
        path: FsPath,
        user: User,
        *,
        permission: int,
        replication: int,
        block_size: int,
        blocks: Sequence[BlockRef],
        overwrite: bool,
        now_ms: int,
    ) -> Changes:
        """CREATE, all at once: make missing parents (0o755), replace an existing file when
        ``overwrite`` (its blocks are freed), and add the file with ``blocks``, owned by ``user``
        and in its parent's group."""
        validate_permission(permission, path)
        validate_file_parameters(replication, block_size, path)
        self.check_create(path, user, overwrite)
        resolved = self._tree.resolve(path)
        batch = ChangeBatch(self._tree)
        if resolved.last is not None:
            batch.remove_subtree(resolved.last.inode_id)
        depth = len(path.components) - 1
        parent = batch.make_directories(resolved, depth, user, CREATE_PARENT_PERMISSION, now_ms, self._next_inode_id)
        batch.put(
            InodeRecord(
                inode_id=self._next_inode_id(),
                parent_id=parent.inode_id,
                name=path.name,
                kind=FileKind.FILE,
                owner=user.name,
                group=parent.group,
                permission=permission,
                modification_time=now_ms,
                access_time=now_ms,
                replication=replication,
                block_size=block_size,
                blocks=tuple(blocks),
            )
        )
        batch.touch(parent.inode_id, now_ms)
        return batch.changes()

    def append_blocks(self, path: FsPath, user: User, blocks: Sequence[BlockRef], now_ms: int) -> Changes:
        """APPEND's namespace half: add ``blocks`` at the end of the file, whose mtime becomes now."""
        record = self.check_append(path, user)
        batch = ChangeBatch(self._tree)
        batch.put(replace(record, blocks=record.blocks + tuple(blocks), modification_time=now_ms))
        return batch.changes()

    def rename(self, src: FsPath, dst: FsPath, user: User, now_ms: int) -> tuple[bool, Changes]:
        """RENAME as HDFS's ``FileSystem.rename``: into ``dst`` if it is a directory, else to ``dst``.
        False, not an error, when ``src`` is missing or the root, ``dst`` (or ``dst/<src's name>``
        when ``dst`` is a directory) exists, ``dst``'s parent is missing, or ``dst`` lies inside ``src``;
        True, changing nothing, when a file is renamed onto itself.
        WRITE is needed on ``src``'s parent (sticky rule included) and ``dst``'s deepest ancestor."""
        src_resolved = self._resolve(src, user)
        dst_resolved = self._resolve(dst, user)
        if dst_resolved.last is not None and dst_resolved.last.kind is FileKind.DIRECTORY and not src.is_root:
            dst = dst.child(src.name)
            dst_resolved = self._tree.resolve(dst)
        self._access.check(user, src_resolved, parent=FsAction.WRITE)
        self._access.check(user, dst_resolved, ancestor=FsAction.WRITE)
        moved = src_resolved.last
        if moved is None or src.is_root:
            return False, Changes()
        if dst == src:
            return True, Changes()
        dst_parent = dst_resolved.parent
        if src.is_ancestor_of(dst) or dst_resolved.last is not None or dst_parent is None:
            return False, Changes()
        batch = ChangeBatch(self._tree)
        batch.put(replace(moved, parent_id=dst_parent.inode_id, name=dst.name))
        batch.touch(moved.parent_id, now_ms)
        batch.touch(dst_parent.inode_id, now_ms)
        return True, batch.changes()

    def delete(self, path: FsPath, user: User, recursive: bool, now_ms: int) -> tuple[bool, Changes]:
        """DELETE: remove a file or a directory (a non-empty one only when ``recursive``); False
        if absent or the root.  WRITE on the parent (sticky rule included) and, below, READ,
        WRITE and EXECUTE on every non-empty directory.  Frees every removed file's blocks."""
        resolved = self._resolve(path, user)
        last = resolved.last
        if (
            last is not None
            and last.kind is FileKind.DIRECTORY
            and not recursive
            and self._tree.child_count(last.inode_id)
        ):
            raise PathIsNotEmptyDirectory(f"{path} is non empty")
        self._access.check(user, resolved, parent=FsAction.WRITE, sub_access=FsAction.ALL, ignore_empty_dirs=True)
        if last is None or path.is_root:
            return False, Changes()
        batch = ChangeBatch(self._tree)
        batch.remove_subtree(last.inode_id)
        batch.touch(last.parent_id, now_ms)
        return True, batch.changes()

    def set_permission(self, path: FsPath, user: User, permission: int) -> Changes:
        """SETPERMISSION: the owner or the superuser sets the mode bits (sticky bit included)."""
        validate_permission(permission, path)
        record = self._existing(self._resolve(path, user))
        self._checker.check_owner(user, record, path)
        batch = ChangeBatch(self._tree)
        batch.put(replace(record, permission=permission))
        return batch.changes()

    def set_owner(self, path: FsPath, user: User, owner: str | None, group: str | None) -> Changes:
        """SETOWNER: only the superuser gives an inode away; its owner may change its group to
        one of the owner's own groups."""
        if owner is None and group is None:
            raise IllegalArgument(f"Both owner and group are empty (setting the owner of {path})")
        if owner == "" or group == "":
            raise IllegalArgument(f"An empty owner or group name (setting the owner of {path})")
        record = self._existing(self._resolve(path, user))
        self._checker.check_owner(user, record, path)
        if not self._checker.is_superuser(user):
            if owner is not None and owner != user.name:
                raise AccessControl(f"User {user.name} is not a super user (non-super user cannot change owner).")
            if group is not None and group not in user.groups:
                raise AccessControl(f"User {user.name} does not belong to {group}")
        batch = ChangeBatch(self._tree)
        batch.put(replace(record, owner=owner or record.owner, group=group or record.group))
        return batch.changes()

    def set_replication(self, path: FsPath, user: User, replication: int) -> tuple[bool, Changes]:
        """SETREPLICATION: WRITE needed on the file; False for a directory or a missing path."""
        validate_file_parameters(replication, 1, path)
        resolved = self._resolve(path, user, access=FsAction.WRITE)
        record = resolved.last
        if record is None or record.kind is not FileKind.FILE:
            return False, Changes()
        batch = ChangeBatch(self._tree)
        batch.put(replace(record, replication=replication))
        return True, batch.changes()

    def set_times(self, path: FsPath, user: User, modification_time: int, access_time: int) -> Changes:
        """SETTIMES: -1 leaves a time as it is.  The owner, the superuser, or a user who may
        WRITE the inode may set them."""
        for value in (modification_time, access_time):
            if value < -1:
                raise IllegalArgument(f"Invalid time {value} for {path}: -1 (unchanged) or milliseconds")
        resolved = self._resolve(path, user)
        record = resolved.last
        if record is None:
            raise FileNotFound(f"File/Directory {path} does not exist.")
        if record.owner != user.name:
            self._access.check(user, resolved, access=FsAction.WRITE)
        batch = ChangeBatch(self._tree)
        batch.put(
            replace(
                record,
                modification_time=record.modification_time if modification_time == -1 else modification_time,
                access_time=record.access_time if access_time == -1 else access_time,
            )
        )
        return batch.changes()

    # -- helpers --------------------------------------------------------------------------

    def _resolve(
        self, path: FsPath, user: User, *, access: FsAction | None = None, sub_access: FsAction | None = None
    ) -> ResolvedPath:
        """Resolve ``path``, checking traversal and what is asked of the inode (and its subtree)."""
        resolved = self._tree.resolve(path)
        self._access.check(user, resolved, access=access, sub_access=sub_access)
        return resolved

    @staticmethod
    def _existing(resolved: ResolvedPath) -> InodeRecord:
        """The inode the path names, or ``FileNotFound`` in HDFS's words."""
        if resolved.last is None:
            raise FileNotFound(f"File does not exist: {resolved.path}")
        return resolved.last

    def _next_inode_id(self) -> int:
        self._last_inode_id += 1
        return self._last_inode_id
