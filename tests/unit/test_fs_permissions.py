"""HDFS permissions: the owner/group/other classes, the superuser, the sticky bit, modes."""

from __future__ import annotations

import pytest

from cortex_rm.fs.errors import AccessControl, IllegalArgument
from cortex_rm.fs.model import FileKind, InodeRecord, User
from cortex_rm.fs.paths import parse_path
from cortex_rm.fs.permissions import FsAction, PermissionChecker, mode_string, parse_octal_permission

CHECKER = PermissionChecker("hdfs", "supergroup")
ALICE = User("alice", frozenset({"staff"}))
BOB = User("bob", frozenset({"staff"}))
CAROL = User("carol", frozenset({"other"}))


def inode(permission: int, owner: str = "alice", group: str = "staff", kind: FileKind = FileKind.FILE) -> InodeRecord:
    return InodeRecord(2, 1, "f", kind, owner, group, permission, 0)


@pytest.mark.parametrize(
    ("permission", "user", "action", "allowed"),
    [
        (0o640, ALICE, FsAction.READ, True),
        (0o640, ALICE, FsAction.WRITE, True),
        (0o640, ALICE, FsAction.EXECUTE, False),
        (0o640, BOB, FsAction.READ, True),
        (0o640, BOB, FsAction.WRITE, False),
        (0o640, CAROL, FsAction.READ, False),
        (0o604, CAROL, FsAction.READ, True),
        (0o755, CAROL, FsAction.READ_EXECUTE, True),
        (0o755, CAROL, FsAction.ALL, False),
        # the owner is judged by the owner bits only, even when group or other would allow
        (0o077, ALICE, FsAction.READ, False),
        # a group member by the group bits only
        (0o707, BOB, FsAction.READ, False),
        (0o000, User("hdfs"), FsAction.ALL, True),
        (0o000, User("root", frozenset({"supergroup"})), FsAction.ALL, True),
    ],
)
def test_allows_by_the_first_class_that_applies(permission: int, user: User, action: FsAction, allowed: bool) -> None:
    """Owner bits for the owner, else group bits for a member, else other bits; superusers pass."""
    assert CHECKER.allows(user, inode(permission), action) is allowed


def test_denial_message_is_hdfs_form() -> None:
    """A denial names user, access and the inode as path:owner:group:mode, as HDFS does."""
    directory = inode(0o755, owner="alice", group="supergroup", kind=FileKind.DIRECTORY)
    with pytest.raises(AccessControl) as caught:
        CHECKER.check(User("bob"), directory, parse_path("/a/b"), FsAction.WRITE)
    assert str(caught.value) == ('Permission denied: user=bob, access=WRITE, inode="/a/b":alice:supergroup:drwxr-xr-x')
    assert caught.value.http_status == 403


@pytest.mark.parametrize(
    ("kind", "permission", "text"),
    [
        (FileKind.DIRECTORY, 0o755, "drwxr-xr-x"),
        (FileKind.FILE, 0o644, "-rw-r--r--"),
        (FileKind.FILE, 0o000, "----------"),
        (FileKind.DIRECTORY, 0o1777, "drwxrwxrwt"),
        (FileKind.DIRECTORY, 0o1776, "drwxrwxrwT"),
        (FileKind.FILE, 0o421, "-r---w---x"),
    ],
)
def test_mode_string(kind: FileKind, permission: int, text: str) -> None:
    """The symbolic mode, with the sticky bit as t (other-executable) or T."""
    assert mode_string(kind, permission) == text


@pytest.mark.parametrize(
    ("text", "value"), [("755", 0o755), ("1777", 0o1777), ("0", 0), ("644", 0o644), ("0700", 0o700)]
)
def test_parse_octal_permission(text: str, value: int) -> None:
    """WebHDFS's octal permission strings become modes."""
    assert parse_octal_permission(text) == value


@pytest.mark.parametrize("text", ["", "8", "79", "rwx", "2000", "7777", "01777 ", "-1", "12345", "0x1ff"])
def test_parse_octal_permission_refuses(text: str) -> None:
    """Anything that is not octal up to 1777 is an IllegalArgument."""
    with pytest.raises(IllegalArgument):
        parse_octal_permission(text)


@pytest.mark.parametrize(
    ("user", "parent_owner", "child_owner", "allowed"),
    [
        (BOB, "alice", "bob", True),  # the entry's owner
        (BOB, "bob", "alice", True),  # the directory's owner
        (BOB, "alice", "carol", False),
        (User("hdfs"), "alice", "carol", True),
    ],
)
def test_sticky_bit(user: User, parent_owner: str, child_owner: str, allowed: bool) -> None:
    """In a sticky directory only the entry's owner, the directory's owner or the superuser may remove it."""
    parent = inode(0o1777, owner=parent_owner, kind=FileKind.DIRECTORY)
    child = inode(0o644, owner=child_owner)
    tmp, entry = parse_path("/tmp"), parse_path("/tmp/f")
    if allowed:
        CHECKER.check_sticky_bit(user, parent, tmp, child, entry)
    else:
        with pytest.raises(AccessControl, match="Permission denied by sticky bit: user=bob"):
            CHECKER.check_sticky_bit(user, parent, tmp, child, entry)


def test_no_sticky_bit_no_restriction() -> None:
    """Without the sticky bit anyone who passed WRITE on the directory may remove entries."""
    CHECKER.check_sticky_bit(
        BOB, inode(0o777, kind=FileKind.DIRECTORY), parse_path("/d"), inode(0o644), parse_path("/d/f")
    )


def test_check_owner() -> None:
    """Only the owner or a superuser passes the owner check."""
    CHECKER.check_owner(ALICE, inode(0o000), parse_path("/f"))
    CHECKER.check_owner(User("hdfs"), inode(0o000), parse_path("/f"))
    with pytest.raises(AccessControl, match="user=bob is not the owner of inode=/f"):
        CHECKER.check_owner(BOB, inode(0o777), parse_path("/f"))
