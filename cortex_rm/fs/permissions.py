"""HDFS permissions: who may read, write or traverse an inode (``FSPermissionChecker``).

An inode's ``permission`` holds rwx bits for its owner, its group and everyone
else, plus the sticky bit (0o1000).  A user is judged by exactly one of the three
classes, the first that applies: the owner's bits if the user owns the inode, else
the group's bits if the inode's group is one of the user's groups, else the
other bits — an owner denied by the owner bits is denied even when the group or
other bits would allow (POSIX, as HDFS).  The superuser (the name the NameNode
runs as) and every member of the supergroup pass every check.

The sticky bit on a directory restricts removing or renaming its entries to the
entry's owner, the directory's owner and the superuser (``/tmp``'s ``drwxrwxrwt``).

Denials raise ``AccessControl`` with HDFS's message, which tools and people grep::

    Permission denied: user=bob, access=WRITE, inode="/a/b":alice:supergroup:drwxr-xr-x

``PathAccess`` is HDFS's ``FSPermissionChecker.checkPermission``, the checks one
operation makes along a path.  The operation names what it needs of which inode,
and ``PathAccess.check`` checks, in HDFS's order (so the first denial is the one HDFS would report):

1. traversal: every existing inode above the path's last component must be a
   directory (else ``ParentNotDirectory`` "/a (is not a directory)", even for the
   superuser) that the user may EXECUTE;
2. ``ancestor``: the deepest existing inode above the last component (what a
   create or mkdirs writes into);
3. ``parent``: the last component's parent, if it exists; WRITE there also applies
   the sticky-bit rule to the entry, if it exists;
4. ``access``: the inode itself, if it exists;
5. ``sub_access``: every directory of the subtree (DELETE skips empty ones,
   HDFS's ``ignoreEmptyDir``).
"""

from __future__ import annotations

import enum
import re

from cortex_rm.fs.errors import AccessControl, IllegalArgument, ParentNotDirectory
from cortex_rm.fs.inode_tree import InodeTree, ResolvedPath
from cortex_rm.fs.model import FileKind, InodeRecord, User
from cortex_rm.fs.paths import FsPath

STICKY_BIT = 0o1000
MAX_PERMISSION = 0o1777
_OCTAL = re.compile(r"[0-7]{1,4}")


class FsAction(enum.IntFlag):
    """HDFS's ``FsAction``: the rwx bits, every combination named as HDFS names it."""

    NONE = 0
    EXECUTE = 1
    WRITE = 2
    WRITE_EXECUTE = 3
    READ = 4
    READ_EXECUTE = 5
    READ_WRITE = 6
    ALL = 7


def mode_string(kind: FileKind, permission: int) -> str:
    """The symbolic mode ``ls -l`` and HDFS's messages show: ``drwxr-xr-x``, ``-rw-r--r--``,
    ``drwxrwxrwt`` (sticky and other-executable) or ``...T`` (sticky, not executable)."""
    letters = ["d" if kind is FileKind.DIRECTORY else "-"]
    for shift in (6, 3, 0):
        bits = (permission >> shift) & 7
        letters.append("r" if bits & 4 else "-")
        letters.append("w" if bits & 2 else "-")
        letters.append("x" if bits & 1 else "-")
    if permission & STICKY_BIT:
        letters[-1] = "t" if permission & 1 else "T"
    return "".join(letters)


def parse_octal_permission(text: str) -> int:
    """WebHDFS's ``permission`` parameter ("755", "1777") as a mode; anything that is not
    one to four octal digits no larger than 1777 is an ``IllegalArgument``."""
    if not _OCTAL.fullmatch(text):
        raise IllegalArgument(f'Invalid permission "{text}": expected an octal number such as 755 or 1777')
    value = int(text, 8)
    if value > MAX_PERMISSION:
        raise IllegalArgument(f'Invalid permission "{text}": larger than 1777 (only rwx bits and the sticky bit)')
    return value


def describe_inode(path: FsPath, record: InodeRecord) -> str:
    """``"/a/b":alice:supergroup:drwxr-xr-x``, how HDFS names an inode in a denial."""
    return f'"{path}":{record.owner}:{record.group}:{mode_string(record.kind, record.permission)}'


class PermissionChecker:
    """Decides, for one namespace's superuser and supergroup, what a user may do to an inode."""

    def __init__(self, superuser: str, supergroup: str) -> None:
        self.superuser = superuser
        self.supergroup = supergroup

    def is_superuser(self, user: User) -> bool:
        """The NameNode's own user, or a member of ``dfs.permissions.superusergroup``."""
        return user.name == self.superuser or self.supergroup in user.groups

    def allows(self, user: User, record: InodeRecord, action: FsAction) -> bool:
        """Whether ``user`` may do ``action`` (all its bits) on ``record``."""
        if self.is_superuser(user):
            return True
        if user.name == record.owner:
            bits = record.permission >> 6
        elif record.group in user.groups:
            bits = record.permission >> 3
        else:
            bits = record.permission
        return (bits & action) == action

    def check(self, user: User, record: InodeRecord, path: FsPath, action: FsAction) -> None:
        """Raise ``AccessControl`` in HDFS's words unless ``user`` may do ``action`` on ``record``."""
        if not self.allows(user, record, action):
            raise AccessControl(
                f"Permission denied: user={user.name}, access={action.name}, inode={describe_inode(path, record)}"
            )

    def check_owner(self, user: User, record: InodeRecord, path: FsPath) -> None:
        """Only the owner (or the superuser) may change an inode's permission or times."""
        if user.name != record.owner and not self.is_superuser(user):
            raise AccessControl(f"Permission denied. user={user.name} is not the owner of inode={path}")

    def check_sticky_bit(
        self, user: User, parent: InodeRecord, parent_path: FsPath, child: InodeRecord, child_path: FsPath
    ) -> None:
        """In a sticky directory only the entry's owner, the directory's owner or the
        superuser may delete or rename the entry."""
        if not parent.permission & STICKY_BIT or self.is_superuser(user):
            return
        if user.name in (parent.owner, child.owner):
            return
        raise AccessControl(
            f"Permission denied by sticky bit: user={user.name}, path={describe_inode(child_path, child)},"
            f" parent={describe_inode(parent_path, parent)}"
        )


class PathAccess:
    """Checks a user's access along resolved paths of one tree."""

    def __init__(self, checker: PermissionChecker, tree: InodeTree) -> None:
        self.checker = checker
        self.tree = tree

    def check(
        self,
        user: User,
        resolved: ResolvedPath,
        *,
        ancestor: FsAction | None = None,
        parent: FsAction | None = None,
        access: FsAction | None = None,
        sub_access: FsAction | None = None,
        ignore_empty_dirs: bool = False,
    ) -> None:
        """Raise ``AccessControl`` (or ``ParentNotDirectory``) unless ``user`` may do what is asked."""
        inodes, path = resolved.inodes, resolved.path
        ancestor_index = len(inodes) - 2
        while ancestor_index >= 0 and inodes[ancestor_index] is None:
            ancestor_index -= 1
        for index in range(ancestor_index + 1):
            directory = inodes[index]
            assert directory is not None  # resolve() leaves no gap before the deepest existing inode
            if directory.kind is not FileKind.DIRECTORY:
                raise ParentNotDirectory(f"{path.prefix(index)} (is not a directory)")
            self.checker.check(user, directory, path.prefix(index), FsAction.EXECUTE)
        if ancestor is not None and len(inodes) > 1:
            deepest = inodes[ancestor_index]
            assert deepest is not None
            self.checker.check(user, deepest, path.prefix(ancestor_index), ancestor)
        last, above = resolved.last, resolved.parent
        if parent is not None and above is not None:
            self.checker.check(user, above, path.parent, parent)
            if parent & FsAction.WRITE and last is not None:
                self.checker.check_sticky_bit(user, above, path.parent, last, path)
        if last is None:
            return
        if access is not None:
            self.checker.check(user, last, path, access)
        if sub_access is not None and not self.checker.is_superuser(user):
            for here, record in self.tree.walk(path, last):
                if record.kind is not FileKind.DIRECTORY:
                    continue
                if ignore_empty_dirs and not self.tree.child_count(record.inode_id):
                    continue
                self.checker.check(user, record, here, sub_access)
