"""Root's file work in directories a container can write: through descriptors, never a symlink.

A running container may create, rename and replace entries in its application's local
dirs (``appcache/<appId>``, owned by the application's root uid and bound writable into
every container of the application), and in its own log dirs.  The AM learns a
container's id before it asks for the start, so a container can plant, at the path the
NodeManager is about to use, a symlink to any host file; and it can swap a directory
the NodeManager made for a symlink between two steps.  The NodeManager runs as root,
so what it makes, writes, reads or chowns there goes through descriptors:

* a directory is opened with ``O_DIRECTORY|O_NOFOLLOW`` (``open_dir``: every
  component of its path, so no symlink anywhere on it, as ``check_spec_paths``
  asks of a container's binds) and the work inside happens relative to that
  descriptor: renaming or swapping the directory afterwards redirects nothing;
* a directory the NodeManager makes inside one is made by a ``mkdir`` that fails if
  anything is at the name (``make_dir``), and reopened later only if it is still one
  the NodeManager made (``open_own_dir``: a real directory, owned by the
  NodeManager's uid, writable by nobody else, so nothing inside it can have been
  planted);
* a file is created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (``write_new_file``) and read
  with ``O_NOFOLLOW|O_NONBLOCK``, only if it is a regular file (``read_tail``);
* path-based library code (unpacking an archive) is given ``fd_path(fd)``, the
  ``/proc/self/fd`` name of a pinned directory, which always reaches that directory.

What was planted is refused with ``PlantedPathError`` (an ``OSError``) naming the path.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class PlantedPathError(OSError):
    """Something the NodeManager did not make is where it was to make, write or chown."""

    def __str__(self) -> str:
        return str(self.strerror)


def open_dir(path: Path) -> int:
    """A descriptor (``O_RDONLY``) of the directory ``path``, reached from ``/`` without
    following a symlink in any component; PlantedPathError if one is a symlink."""
    if not path.is_absolute():
        raise ValueError(f"{path} is not absolute")
    fd = os.open("/", _WALK_FLAGS)
    try:
        parts = path.parts[1:]
        for i, part in enumerate(parts):
            flags = DIR_FLAGS if i == len(parts) - 1 else _WALK_FLAGS
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PlantedPathError(
                        e.errno, f"{Path(*path.parts[: i + 2])} is a symlink or not a directory: refused"
                    ) from None
                raise
            os.close(fd)
            fd = child
        if not parts:
            child = os.open("/", DIR_FLAGS)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def make_dir(dir_fd: int, name: str, mode: int, where: Path) -> int:
    """Make the directory ``name`` in ``dir_fd`` (which is ``where``) and open it; PlantedPathError
    if anything, a symlink included, is at that name already."""
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        raise PlantedPathError(
            errno.EEXIST, f"{where / name} exists already (the NodeManager makes it, nobody else may): refused"
        ) from None
    return open_own_dir(dir_fd, name, where)


def open_own_dir(
    dir_fd: int, name: str, where: Path, make: bool = False, mode: int = 0o755, given_to: int | None = None
) -> int:
    """Open the directory ``name`` in ``dir_fd`` (which is ``where``), made first if ``make`` and
    missing, if it is one the NodeManager made: a directory (not a symlink), owned by this
    process's uid (or ``given_to``, whom it gave it to before) and writable by nobody else;
    PlantedPathError if not."""
    if make:
        try:
            os.mkdir(name, mode, dir_fd=dir_fd)
        except FileExistsError:
            pass
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PlantedPathError(e.errno, f"{where / name} is a symlink or not a directory: refused") from None
        raise
    st = os.fstat(fd)
    if st.st_uid not in (os.geteuid(), given_to) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise PlantedPathError(
            errno.EPERM,
            f"{where / name} is not the NodeManager's own directory (owner {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):04o}): refused",
        )
    return fd


def write_new_file(dir_fd: int, name: str, data: bytes, mode: int, where: Path) -> None:
    """Create the file ``name`` in ``dir_fd`` (which is ``where``) with ``data``; PlantedPathError
    if anything, a symlink included, is at that name already."""
    try:
        fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        raise PlantedPathError(
            errno.EEXIST, f"{where / name} exists already (the NodeManager writes it, nobody else may): refused"
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def read_tail(path: Path, limit: int) -> bytes | None:
    """The last ``limit`` bytes of the regular file ``path`` (not through a symlink at its last
    component, and without blocking on a FIFO); None if it is missing or not such a file."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - limit))
        return f.read(limit)


def fd_path(fd: int) -> Path:
    """A path that reaches the directory open on ``fd`` whatever is later done to its name."""
    return Path(f"/proc/self/fd/{fd}")
