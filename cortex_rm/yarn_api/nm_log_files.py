"""The container log files a NodeManager serves (``nm_rest_containers``): finding and opening
them inside a container's log dirs only, the ``size`` rule, YARN's framing of a log, and
streaming a file a chunk at a time under the connection's back-pressure.

Nothing outside a container's log dirs (``<log_dir>/<appId>/<containerId>``) is read: a
log dir whose real path is elsewhere is ignored, files are opened relative to the dir's
descriptor without following a symlink (``O_NOFOLLOW``) and must be regular files (a FIFO
cannot block a read: ``O_NONBLOCK``).  Listings skip symlinks.  The functions that touch
the disk block: callers run them off the reactor thread.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Final

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn_api import rest_errors

log = Logger()

CHUNK_BYTES: Final = 64 * 1024
_SIZE = re.compile(r"^[+-]?\d{1,19}$")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


# ------------------------------------------------------------------ pure parts


def check_log_file_name(name: str) -> None:
    """A 400 unless ``name`` can only name a file directly in a log dir."""
    if not name or name == "." or "/" in name or "\0" in name or ".." in name:
        raise rest_errors.bad_request(f"invalid log file name {name!r}: it may not be empty or hold '/', '..' or NUL")


def yarn_time(ms: int, tz: tzinfo | None = None) -> str:
    """Hadoop's ``Times.format``: ``EEE MMM dd HH:mm:ss Z yyyy`` in ``tz`` (default: local), N/A if not positive."""
    if ms <= 0:
        return "N/A"
    t = datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
    return f"{_DAYS[t.weekday()]} {_MONTHS[t.month - 1]} {t.day:02d} {t:%H:%M:%S} {t:%z} {t.year}"


def parse_size(text: str | None) -> int | None:
    """The ``size`` parameter: None (the whole file) when absent or empty; a 400 if not an integer."""
    if text is None or text == "":
        return None
    if not _SIZE.match(text):
        raise rest_errors.bad_request(f"size must be an integer number of bytes, not {text!r}")
    return int(text)


def log_range(length: int, size: int | None) -> tuple[int, int]:
    """``(offset, count)`` of a ``length``-byte file to send for ``size`` (Hadoop's rule: a
    negative size is the last ``-size`` bytes, a positive one the first ``size``)."""
    if size is None:
        return 0, length
    if size < 0:
        return (length + size, -size) if -size < length else (0, length)
    return 0, min(size, length)


def log_header(container_id: str, node_id: str, log: LogFile) -> bytes:
    container = f"Container: {container_id} on {node_id}"
    return (
        f"{container}\nLogAggregationType: LOCAL\n{'=' * len(container)}\nLogType:{log.name}\n"
        f"LogLastModifiedTime:{yarn_time(log.modified_ms)}\nLogLength:{log.length}\nLogContents:\n"
    ).encode("utf-8", "surrogateescape")


def log_trailer(container_id: str, name: str, running: bool) -> bytes:
    end = f"End of LogType:{name}"
    note = f"This log file belongs to a running container ({container_id}) and so may not be complete.\n"
    return f"{end}.{note if running else chr(10)}{'*' * (len(end) + 50)}\n\n".encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------ the log dirs (blocking: run off the reactor)


@dataclass(frozen=True)
class LogFile:
    """One log file of a container: its name, length and modification time (ms)."""

    name: str
    length: int
    modified_ms: int


class LogUnavailable(Exception):
    """The log file asked for is not one this node can serve."""


def _open_log_dir(log_dir: Path) -> int | None:
    """A descriptor of the container log dir ``<root>/<appId>/<containerId>``, or None if it is
    missing or not really there (a symlink in its last two components leads elsewhere)."""
    expected = Path(os.path.realpath(log_dir.parent.parent)) / log_dir.parent.name / log_dir.name
    if Path(os.path.realpath(log_dir)) != expected:
        return None
    try:
        return os.open(expected, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None


def list_log_files(log_dirs: Sequence[Path]) -> list[LogFile]:
    """The regular files (not symlinks) in each of a container's log dirs, by dir, then by name."""
    found: list[LogFile] = []
    for log_dir in log_dirs:
        dir_fd = _open_log_dir(log_dir)
        if dir_fd is None:
            continue
        try:
            with os.scandir(dir_fd) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found.append(LogFile(entry.name, st.st_size, st.st_mtime_ns // 1_000_000))
        finally:
            os.close(dir_fd)
    return found


def open_log_file(log_dirs: Sequence[Path], name: str) -> tuple[int, LogFile]:
    """An open descriptor of the regular file ``name`` in the first of ``log_dirs`` holding one,
    and what it is; LogUnavailable if none does (a symlink or other non-file is refused)."""
    for log_dir in log_dirs:
        dir_fd = _open_log_dir(log_dir)
        if dir_fd is None:
            continue
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as e:  # ELOOP: a symlink; EACCES...
            raise LogUnavailable(f"{name} is not a readable log file: {e.strerror}") from None
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise LogUnavailable(f"{name} is not a regular file")
        return fd, LogFile(name, st.st_size, st.st_mtime_ns // 1_000_000)
    raise LogUnavailable(f"cannot find {name} in the container's log dirs on this node")


@implementer(IPushProducer)
class LogSender:
    """Streams ``count`` bytes of ``fd`` from ``offset`` into ``request``, then ``trailer``, then
    finishes it; one ``CHUNK_BYTES`` read at a time through ``run``, none while the connection
    is paused.  It owns ``fd`` and closes it (never while a read is in flight)."""

    def __init__(self, request: Request, run: Runner, fd: int, offset: int, count: int, trailer: bytes) -> None:
        self.request, self.run, self.fd = request, run, fd
        self.offset, self.left, self.trailer = offset, count, trailer
        self.paused = self.stopped = self.reading = self.closed = False
        self._pumping = False

    def start(self) -> None:
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self.request.registerProducer(self, True)
        self._pump()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:
        self.stopped = True
        if not self.reading:
            self._close()

    def _pump(self) -> None:
        # A loop, not recursion: with a runner that answers at once, each read's callback
        # comes back here while the loop is still on the stack.
        if self._pumping:
            return
        self._pumping = True
        try:
            while not (self.paused or self.stopped or self.reading or self.closed):
                if self.left <= 0:
                    self._done()
                    return
                self.reading = True
                read = functools.partial(os.pread, self.fd, min(CHUNK_BYTES, self.left), self.offset)
                self.run(read).addCallbacks(self._read, self._failed)
        finally:
            self._pumping = False

    def _read(self, data: bytes) -> None:
        self.reading = False
        if self.stopped:
            self._close()
            return
        if not data:  # the file was cut shorter since it was opened
            self.left = 0
        else:
            self.offset += len(data)
            self.left -= len(data)
            self.request.write(data)
        self._pump()

    def _failed(self, failure: Failure) -> None:
        self.reading = False
        log.failure("reading a container log failed", failure)
        self._close()
        if not self.stopped:
            self.request.unregisterProducer()
            self.request.loseConnection()  # the body is cut short: the client must not take it as whole

    def _done(self) -> None:
        self._close()
        self.request.write(self.trailer)
        self.request.unregisterProducer()
        self.request.finish()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


