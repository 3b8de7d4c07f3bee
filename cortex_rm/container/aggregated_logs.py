"""YARN's aggregated log file, written so that Hadoop's own ``yarn logs`` can read it.

When an application ends, each NodeManager that ran its containers uploads one file
holding every container's log files.  Hadoop's default format (``TFile``,
``LogAggregationTFileController``) is a key-value file: Hadoop's ``TFile`` on top of its
``BCFile`` ("block compressed file").  We write compression ``none`` (the default of
``yarn.nodemanager.log-aggregation.compression-type``), so every block holds its bytes
as they are.  This module produces that file byte by byte; it only calls ``write`` on the
sink and ``read`` on the log sources it is given.

The file, front to back (every offset counts from byte 0 of the file)::

    magic                  16 bytes  d1 11 d3 68 91 b5 d7 b6 39 df 41 40 92 ba e1 50
    data blocks            the records, in order; a block is closed after the record
                           that brings it to 256 KiB or more (the LogWriter's minimum)
    meta block TFile.meta  TFile version 1.0, number of records, comparator "" (unsorted)
    meta block TFile.index the first key, then for each data block its last key and
                           its number of records (readers use these counts to step
                           from one block to the next)
    meta block BCFile.index "none", then for each data block its region
    meta index             for each meta block, by name: "data:<name>", "none", region
    meta index offset      8 bytes, big-endian
    BCFile version 1.0     two 2-byte big-endian numbers
    magic                  16 bytes again

A region is (offset, stored size, raw size); with no compression both sizes are equal.
A reader starts from the last 28 bytes, finds the meta index, then the other indexes.

Numbers inside blocks and indexes are TFile's variable-length integers (``Utils.writeVLong``):
``-32 <= n < 128`` is one byte; otherwise a first byte carries the top bits and says how
many bytes follow: ``-20*2^8 <= n < 20*2^8`` takes 2 bytes (first byte ``(n >> 8) - 52``),
``-16*2^16 <= n < 16*2^16`` takes 3 (``(n >> 16) - 88``), ``-8*2^24 <= n < 8*2^24`` takes
4 (``(n >> 24) - 112``), and anything wider is ``k - 129`` followed by the ``k`` (4 to 8)
big-endian two's-complement bytes of ``n``.  Index strings are a length then UTF-8.

A record in a data block is: key length, the key, then the value chunk-encoded: each chunk
is a length and that many bytes; a negative length ``-n`` means "``n`` bytes, more chunks
follow", a length ``n >= 0`` ends the value.  So a value of unknown size streams through
in chunks (Hadoop's are at most 1 MiB, ``tfile.io.chunk.size``; so are ours).

The records of an aggregated log file, in this order (keys, names and owner are Java's
``DataOutput.writeUTF``: a 2-byte length then modified UTF-8, where NUL is ``c0 80`` and
characters beyond U+FFFF are two 3-byte surrogates)::

    "VERSION"            4-byte big-endian 1
    "APPLICATION_ACL"    (access type, ACL) pairs, each writeUTF: "VIEW_APP", "alice admins"
    "APPLICATION_OWNER"  writeUTF(owner)
    <container id>       for each log file: writeUTF(file name), writeUTF(its length in
                         decimal), then exactly that many bytes of the log

Nothing marks the end of a container's files: readers read (name, length, bytes) until
``readUTF`` meets the end of the value.  The "LogType:", "LogLength:" and "Log Contents:"
lines that ``yarn logs`` prints are made by the reader, not stored.  Hadoop writes no
record for a container without log files, and neither do we.

Where the file goes: see :func:`remote_log_path`.  Hadoop's NodeManager writes it as
``<path>.tmp`` and renames it when done; readers skip names ending in ``.tmp``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, ParamSpec, Protocol

from cortex_rm.container.tfile_encoding import encode_java_utf as _java_utf
from cortex_rm.container.tfile_encoding import (
    encode_vlong,
    index_string,
    region,
    version,
)
from cortex_rm.yarn.ids import ApplicationId, NodeId
from cortex_rm.yarn.log_aggregation import remote_node_log_file
from cortex_rm.yarn.transitions import TransitionTable

BCFILE_MAGIC: Final = bytes.fromhex("d111d36891b5d7b639df414092bae150")
BCFILE_VERSION: Final = (1, 0)
TFILE_VERSION: Final = (1, 0)
COMPRESSION_NONE: Final = "none"
#: AggregatedLogFormat.LogWriter's minimum data block size (TFile closes a block at or above it).
MIN_BLOCK_SIZE: Final = 256 * 1024
#: TFile's value chunk size (``tfile.io.chunk.size``): the most one value chunk holds.
VALUE_CHUNK_SIZE: Final = 1024 * 1024
#: TFile's limit on the size of a key.
MAX_KEY_SIZE: Final = 64 * 1024
#: How much of a log source is read at a time.
READ_SIZE: Final = 64 * 1024
#: The suffix of a file still being written; LogAggregationUtils.TMP_FILE_SUFFIX.
TMP_FILE_SUFFIX: Final = ".tmp"

LOG_FORMAT_VERSION: Final = 1
VERSION_KEY: Final = "VERSION"
APPLICATION_ACL_KEY: Final = "APPLICATION_ACL"
APPLICATION_OWNER_KEY: Final = "APPLICATION_OWNER"
RESERVED_KEYS: Final = frozenset({VERSION_KEY, APPLICATION_ACL_KEY, APPLICATION_OWNER_KEY})
#: The names of YARN's ApplicationAccessType; readers parse ACL records with valueOf().
APPLICATION_ACCESS_TYPES: Final = ("VIEW_APP", "MODIFY_APP")

TFILE_META_BLOCK: Final = "TFile.meta"
TFILE_INDEX_BLOCK: Final = "TFile.index"
BCFILE_INDEX_BLOCK: Final = "BCFile.index"
_META_NAME_PREFIX: Final = "data:"

_P = ParamSpec("_P")


class AggregatedLogError(Exception):
    """Base of every error this module raises on purpose."""


class InvalidLogInput(AggregatedLogError, ValueError):
    """A container id, file name, owner, ACL or length that the format cannot carry."""


def encode_java_utf(text: str) -> bytes:
    """``DataOutput.writeUTF`` (``tfile_encoding``); InvalidLogInput when it is too long."""
    try:
        return _java_utf(text)
    except ValueError as e:
        raise InvalidLogInput(str(e)) from None


class LogLengthMismatch(AggregatedLogError):
    """A log source ended before the length announced for it; the file is unusable."""


class BinarySink(Protocol):
    """Where the file goes: a blocking binary stream positioned at its start."""

    def write(self, data: bytes, /) -> object: ...


class BinarySource(Protocol):
    """A log file's content, read front to back."""

    def read(self, size: int, /) -> bytes: ...


# ---------------------------------------------------------------------------------------
# What goes in


@dataclass(frozen=True)
class ContainerLogFile:
    """One log file of a container: its name (``stdout``...), length and content.

    ``source`` is the content itself or a stream to read exactly ``length`` bytes from;
    Hadoop likewise takes a file's length first and copies only that much of it.
    """

    name: str
    length: int
    source: bytes | BinarySource

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidLogInput("a log file needs a name")
        if self.length < 0:
            raise InvalidLogInput(f"log file {self.name!r}: negative length {self.length}")
        if isinstance(self.source, bytes) and len(self.source) != self.length:
            raise InvalidLogInput(f"log file {self.name!r}: {len(self.source)} bytes given, length {self.length}")

    @classmethod
    def from_bytes(cls, name: str, content: bytes) -> ContainerLogFile:
        """A log file whose content is already in memory."""
        return cls(name, len(content), content)

    def header(self) -> bytes:
        """The file's name and decimal length, as the value carries them before its bytes."""
        return encode_java_utf(self.name) + encode_java_utf(str(self.length))

    def pieces(self) -> Iterator[bytes]:
        """The content, ``READ_SIZE`` at a time; LogLengthMismatch if the source runs short."""
        if isinstance(self.source, bytes):
            yield self.source
            return
        remaining = self.length
        while remaining:
            piece = self.source.read(min(READ_SIZE, remaining))
            if not piece:
                raise LogLengthMismatch(f"log file {self.name!r} ended {remaining} bytes short of {self.length}")
            piece = piece[:remaining]
            remaining -= len(piece)
            yield piece


# ---------------------------------------------------------------------------------------
# The writer


class WriterState(enum.Enum):
    """The life of an AggregatedLogWriter."""

    OPEN = "OPEN"  # records may be added
    CLOSED = "CLOSED"  # indexes and trailer written: the file is complete
    FAILED = "FAILED"  # a write broke off mid-record: the bytes so far are not a valid file


class WriterEvent(enum.Enum):
    """What happens to an AggregatedLogWriter."""

    ADD_CONTAINER = "ADD_CONTAINER"
    CLOSE = "CLOSE"
    FAIL = "FAIL"


WRITER_TRANSITIONS: TransitionTable[WriterState, WriterEvent] = TransitionTable(
    "AggregatedLogWriter",
    {
        (WriterState.OPEN, WriterEvent.ADD_CONTAINER): WriterState.OPEN,
        (WriterState.OPEN, WriterEvent.CLOSE): WriterState.CLOSED,
        (WriterState.OPEN, WriterEvent.FAIL): WriterState.FAILED,
    },
    # closing twice is harmless (Hadoop's close() is idempotent); closing a failed file
    # writes nothing, so a half-written record is never dressed up with valid indexes
    ignored=[(WriterState.CLOSED, WriterEvent.CLOSE), (WriterState.FAILED, WriterEvent.CLOSE)],
)


class AggregatedLogWriter:
    """Writes one node's aggregated log file for one application (YARN's ``LogWriter``).

    The VERSION, APPLICATION_ACL and APPLICATION_OWNER records are written at once; add each
    container with :meth:`add_container`, then :meth:`close` writes the indexes and trailer.
    Memory stays bounded by one value chunk (``chunk_size``) whatever the size of the logs.
    """

    def __init__(
        self,
        sink: BinarySink,
        owner: str,
        acls: Mapping[str, str] | None = None,
        *,
        min_block_size: int = MIN_BLOCK_SIZE,
        chunk_size: int = VALUE_CHUNK_SIZE,
    ) -> None:
        if not owner:
            raise InvalidLogInput("an application needs an owner")
        acls = dict(acls or {})
        unknown = sorted(set(acls) - set(APPLICATION_ACCESS_TYPES))
        if unknown:
            raise InvalidLogInput(f"unknown application access types {unknown}; expected {APPLICATION_ACCESS_TYPES}")
        if min_block_size < 1 or chunk_size < 1:
            raise ValueError("min_block_size and chunk_size must be positive")
        acl_value = b"".join(encode_java_utf(kind) + encode_java_utf(acl) for kind, acl in acls.items())
        owner_value = encode_java_utf(owner)

        self._sink = sink
        self._min_block_size = min_block_size
        self._chunk_size = chunk_size
        self._state = WriterState.OPEN
        self._offset = 0  # bytes written: BCFile offsets are absolute, so the sink starts empty
        self._block_start: int | None = None  # offset of the open data block
        self._block_records = 0
        self._blocks: list[tuple[int, int, bytes, int]] = []  # offset, size, last key, records
        self._first_key: bytes | None = None
        self._last_key = b""
        self._records = 0
        self._container_ids: set[str] = set()

        self._guarded(self._emit, BCFILE_MAGIC)
        self._guarded(self._append, encode_java_utf(VERSION_KEY), [struct.pack(">i", LOG_FORMAT_VERSION)])
        self._guarded(self._append, encode_java_utf(APPLICATION_ACL_KEY), [acl_value])
        self._guarded(self._append, encode_java_utf(APPLICATION_OWNER_KEY), [owner_value])

    @property
    def state(self) -> WriterState:
        """Where the writer is in its life: OPEN, CLOSED or FAILED."""
        return self._state

    @property
    def bytes_written(self) -> int:
        """The size of the file so far (all of it once closed)."""
        return self._offset

    def add_container(self, container_id: str, files: Iterable[ContainerLogFile]) -> None:
        """Append one container's log files, in the order given (Hadoop sorts them by name)."""
        WRITER_TRANSITIONS.next_state(self._state, WriterEvent.ADD_CONTAINER)  # raises unless OPEN
        files = list(files)
        if not container_id or container_id in RESERVED_KEYS:
            raise InvalidLogInput(f"{container_id!r} cannot be a container id: it names no container or a reserved key")
        if container_id in self._container_ids:
            raise InvalidLogInput(f"container {container_id} is already in the file")
        key = encode_java_utf(container_id)
        if len(key) > MAX_KEY_SIZE:
            raise InvalidLogInput(f"container id of {len(key)} bytes exceeds TFile's {MAX_KEY_SIZE}-byte keys")
        headers = [f.header() for f in files]  # encodes (and checks) every name before writing
        if not files:
            return
        self._container_ids.add(container_id)
        self._guarded(self._append, key, _container_value(files, headers))

    def close(self) -> int:
        """Write the meta blocks, the meta index and the trailer; return the file's size."""
        target = WRITER_TRANSITIONS.next_state(self._state, WriterEvent.CLOSE)
        if target is None:  # already closed, or failed: nothing (more) to write
            return self._offset
        self._guarded(self._finish)
        self._state = target
        return self._offset

    # -- records and blocks ----------------------------------------------------------------

    def _append(self, key: bytes, value: Iterable[bytes]) -> None:
        if self._block_start is None:
            self._block_start = self._offset
        self._emit(encode_vlong(len(key)) + key)
        self._emit_chunked(value)
        if self._first_key is None:
            self._first_key = key
        self._last_key = key
        self._records += 1
        self._block_records += 1
        if self._offset - self._block_start >= self._min_block_size:
            self._finish_block()

    def _emit_chunked(self, pieces: Iterable[bytes]) -> None:
        """Chunk-encode a value: full chunks as ``-n`` + bytes, the rest as ``n`` + bytes."""
        pending = bytearray()
        for piece in pieces:
            view = memoryview(piece)
            while view:
                if len(pending) == self._chunk_size:  # full, and more follows: not the last chunk
                    self._emit(encode_vlong(-len(pending)))
                    self._emit(bytes(pending))
                    pending.clear()
                room = self._chunk_size - len(pending)
                pending += view[:room]
                view = view[room:]
        self._emit(encode_vlong(len(pending)) + bytes(pending))

    def _finish_block(self) -> None:
        if self._block_start is None:
            return
        size = self._offset - self._block_start
        self._blocks.append((self._block_start, size, self._last_key, self._block_records))
        self._block_start = None
        self._block_records = 0

    def _finish(self) -> None:
        self._finish_block()
        regions: dict[str, tuple[int, int]] = {}
        meta = version(TFILE_VERSION) + encode_vlong(self._records) + index_string("")
        regions[TFILE_META_BLOCK] = self._meta_block(meta)
        regions[TFILE_INDEX_BLOCK] = self._meta_block(self._tfile_index())
        data_index = [index_string(COMPRESSION_NONE), encode_vlong(len(self._blocks))]
        data_index += [region(offset, size) for offset, size, _, _ in self._blocks]
        regions[BCFILE_INDEX_BLOCK] = self._meta_block(b"".join(data_index))

        meta_index_offset = self._offset
        meta_index = [encode_vlong(len(regions))]
        for name in sorted(regions):  # Hadoop keeps the meta index in a TreeMap
            offset, size = regions[name]
            meta_index += [
                index_string(_META_NAME_PREFIX + name),
                index_string(COMPRESSION_NONE),
                region(offset, size),
            ]
        self._emit(b"".join(meta_index))
        self._emit(struct.pack(">q", meta_index_offset) + version(BCFILE_VERSION) + BCFILE_MAGIC)

    def _tfile_index(self) -> bytes:
        """The first key, then each block's last key and record count, each entry sized."""
        if self._first_key is None:
            return encode_vlong(0)
        entries = [encode_vlong(len(self._first_key)) + self._first_key]
        entries += [encode_vlong(len(key)) + key + encode_vlong(records) for _, _, key, records in self._blocks]
        return b"".join(encode_vlong(len(entry)) + entry for entry in entries)

    def _meta_block(self, content: bytes) -> tuple[int, int]:
        offset = self._offset
        self._emit(content)
        return offset, len(content)

    # -- output and state ------------------------------------------------------------------

    def _emit(self, data: bytes) -> None:
        """Write all of ``data``, also to a sink that takes part of it (a raw file)."""
        while data:
            written = self._sink.write(data)
            count = written if isinstance(written, int) else len(data)
            if count <= 0:
                raise OSError("the sink accepted no bytes")
            self._offset += count
            data = data[count:]

    def _guarded(self, step: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Run a write step; if it breaks off, the writer is FAILED for good."""
        try:
            step(*args, **kwargs)
        except BaseException:
            self._state = WRITER_TRANSITIONS.next_state(self._state, WriterEvent.FAIL) or self._state
            raise


def _container_value(files: list[ContainerLogFile], headers: list[bytes]) -> Iterator[bytes]:
    for log_file, header in zip(files, headers, strict=True):
        yield header
        yield from log_file.pieces()


def write_aggregated_logs(
    sink: BinarySink,
    owner: str,
    acls: Mapping[str, str] | None,
    containers: Iterable[tuple[str, Iterable[ContainerLogFile]]],
) -> int:
    """Write a whole aggregated log file to ``sink``; return its size in bytes."""
    writer = AggregatedLogWriter(sink, owner, acls)
    for container_id, files in containers:
        writer.add_container(container_id, files)
    return writer.close()


def remote_log_path(remote_root: str, user: str, app_id: ApplicationId | str, node_id: NodeId | str) -> str:
    """Where Hadoop 3.5's TFile controller looks for ``node_id``'s file of ``app_id``.

    ``<remote root>/<user>/bucket-logs-tfile/<app sequence mod 10000, 4 digits>/<app id>/<host>_<port>``
    (``yarn.nodemanager.remote-app-log-dir``, default ``/tmp/logs``; the suffix is
    ``yarn.nodemanager.remote-app-log-dir-suffix``, default ``logs``, plus ``-tfile``).
    """
    if not user or "/" in user:
        raise InvalidLogInput(f"{user!r} cannot name a user's log directory")
    app = app_id if isinstance(app_id, ApplicationId) else ApplicationId.parse(app_id)
    node = node_id if isinstance(node_id, NodeId) else NodeId.parse(node_id)
    return remote_node_log_file(remote_root, user, app, node)
