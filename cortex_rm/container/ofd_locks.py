"""Whole-file open-file-description locks that name their holder, and the state directory's lock.

A lock here is a write lock (``F_OFD_SETLK``) on the whole of a file, held by an
open descriptor until it is closed or the process ends, however it ends (the kernel
drops a killed process's locks too).  The holder writes its pid into the file, so
others can ask who holds it (``F_OFD_GETLK``, which never takes the lock: a probe
cannot make a starting holder's lock fail).  ``range_leases.py`` leases a node's
id range this way; ``StateDirLock`` keeps a second daemon out of a state directory.

Two daemons on one state directory would share the node's key, the RM's database,
the NodeManager's container records and the pid file: the second would overwrite
the first's files and, at start, take the first's running containers for leftovers
of a dead run.  So a daemon takes ``<state_dir>/lock`` before it writes anything
there, and a second one is refused with the directory and the holder's pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path
from typing import Final

_FLOCK: Final = "hhqqi4x"  # struct flock: type, whence, start, len, pid (Linux, 64-bit off_t)

#: The state directory's lock file.
STATE_LOCK_FILE: Final = "lock"


class LockHeldError(OSError):
    """Someone else holds the lock; ``holder`` is the pid it wrote (0 when unreadable)."""

    def __init__(self, path: Path, holder: int) -> None:
        super().__init__(errno.EAGAIN, f"{path} is locked by pid {holder or '?'}")
        self.path = path
        self.holder = holder


def whole_file(kind: int) -> bytes:
    """A ``struct flock`` covering the whole file."""
    return struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0)


def _written_pid(fd: int) -> int:
    text = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0


def holder(path: Path) -> int | None:
    """The pid holding ``path``'s lock (as the holder wrote it; 0 if unreadable), or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        found = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, whole_file(fcntl.F_WRLCK))
        if struct.unpack(_FLOCK, found)[0] == fcntl.F_UNLCK:
            return None
        return _written_pid(fd)
    finally:
        os.close(fd)


def take(path: Path) -> int:
    """Lock ``path`` (made 0600 if missing) and write this process's pid into it; the descriptor
    that holds the lock.  LockHeldError naming the holder when a live process holds it; OSError
    when the file cannot be opened or locked."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, whole_file(fcntl.F_WRLCK))
    except OSError as e:
        pid = _written_pid(fd) if e.errno in (errno.EAGAIN, errno.EACCES) else None
        os.close(fd)
        if pid is None:
            raise
        raise LockHeldError(path, pid) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class StateDirInUseError(Exception):
    """Another live process holds the state directory; the message names it and the pid."""


class StateDirLock:
    """This daemon's hold on its state directory (see the module docstring)."""

    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir = state_dir
        self._fd: int | None = fd

    @classmethod
    def take(cls, state_dir: Path) -> StateDirLock:
        """Hold ``state_dir`` (which exists); StateDirInUseError naming the holder's pid when another
        process holds it, or naming the error when the lock file cannot be locked."""
        path = state_dir / STATE_LOCK_FILE
        try:
            return cls(state_dir, take(path))
        except LockHeldError as e:
            raise StateDirInUseError(
                f"the state directory {state_dir} is in use by another Cortex daemon (pid {e.holder or '?'},"
                f" holding {path}): stop that daemon, or give this one a state_dir of its own ([node] state_dir)"
            ) from None
        except OSError as e:
            raise StateDirInUseError(f"cannot lock the state directory {state_dir} ({path}): {e.strerror}") from None

    def release(self) -> None:
        """Let the directory go (at a clean stop; the file stays, unlocked)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
