"""A node's block replicas on its disk (blocking file I/O: the DataNode runs it on worker threads).

Layout under ``root``::

    current/<first two hex digits of the id>/blk_<32 hex>        the data
    current/<first two hex digits of the id>/blk_<32 hex>.meta   header + chunk CRCs
    tmp/                                                         blocks being written

A block is written into ``tmp/`` while its chunk CRCs are computed, then its data
and, last, its meta file are renamed into ``current/``: a crash leaves either no
block, a data file without meta (removed by the next ``scan``), or a complete
block.  Reads check every chunk they touch against its CRC (``CorruptReplica``
names the chunk), in pieces of at most ``PIECE_BYTES``: memory stays bounded
whatever the block size.  Block ids are checked before they become file names,
so no id can name a path outside the store.

What a read guarantees: every piece is checked in the memory it is yielded from
(``read`` yields new bytes, ``read_into`` views of the caller's buffer), so the
DataNode sends exactly bytes it has just checked — on every read, not once per
block and period: HDFS's DataNode leaves that check to its clients and finds rot
in blocks nobody reads with a background scanner, but WebHDFS clients check
nothing.  With ISA-L's CRC (``checksums``) the check costs ~0.03 CPU seconds per
GiB.  A read tells the kernel it is sequential (``posix_fadvise``): cold reads get
twice the readahead.

Disk cap: the store is one of the node's ``DiskUser``s (``disk_cap.py``).  A writer reserves
the most its block may take before it creates a file (``DiskOutOfSpace`` when that does not fit
under the cap after evicting caches: the write is refused), more if the block grows past it, and
gives the reservation back when it finishes or aborts.  Replicas themselves are never evicted.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, overload

from cortex_rm.fs.checksums import (
    BYTES_PER_CRC,
    CRC_BYTES,
    BlockChecksummer,
    block_checksum,
    chunk_count,
    verify_chunks,
)
from cortex_rm.fs.disk_cap import Deletion, DiskCap, Evictable
from cortex_rm.fs.errors import CorruptReplica, FileAlreadyExists, IllegalArgument, MissingBlock

PIECE_BYTES = 16 * BYTES_PER_CRC  # 1 MiB: what one read yields at most
GROW_BYTES = 8 * PIECE_BYTES  # what a writer reserves at a time past what it announced
_BLOCK_ID = re.compile(r"^blk_[0-9a-f]{32}$")
_MAGIC = b"CXBK"
_HEADER = struct.Struct(">4sBQIQ")  # magic, version, length, bytes per CRC, finalized (epoch ms)
_VERSION = 1


def _read_fully(file: io.RawIOBase, into: memoryview) -> int:
    """Read into all of ``into`` unless the file ends first; the bytes read."""
    filled = 0
    while filled < len(into):
        count = file.readinto(into[filled:])
        if not count:
            break
        filled += count
    return filled


def new_block_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A fresh block id: ``blk_`` and 128 random bits in hex."""
    return "blk_" + random_bytes(16).hex()


def valid_block_id(text: str) -> bool:
    return bool(_BLOCK_ID.fullmatch(text))  # not match: "$" also matches before a trailing newline


def _checked(block_id: str) -> str:
    if not valid_block_id(block_id):
        raise IllegalArgument(f"{block_id[:48]!r} is not a block id (blk_ and 32 hex digits)")
    return block_id


@dataclass(frozen=True)
class StoredBlock:
    """A complete replica on this node."""

    block_id: str
    length: int
    checksum: str
    finalized_ms: int


class BlockWriter:
    """Writes one new replica; ``finish`` makes it visible, ``abort`` removes every trace."""

    def __init__(self, store: BlockStore, block_id: str, expected_bytes: int = 0) -> None:
        self.store = store
        self.block_id = block_id
        self._data_path = store.root / "tmp" / block_id
        self._reservations = [store.disk.reserve(f"block {block_id}", expected_bytes)]  # DiskOutOfSpace
        self._reserved = expected_bytes
        try:
            self._file: BinaryIO | None = self._data_path.open("xb")
        except BaseException:
            self._settle()
            raise
        self._sums = BlockChecksummer()

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError(f"the writer of {self.block_id} is closed")
        grown = self._sums.length + len(data) - self._reserved
        if grown > 0:  # longer than announced: room for more, or DiskOutOfSpace (the caller aborts)
            grown = max(grown, GROW_BYTES)
            self._reservations.append(self.store.disk.reserve(f"block {self.block_id}", grown))
            self._reserved += grown
        self._file.write(data)
        self._sums.update(data)

    def _settle(self) -> None:
        for reservation in self._reservations:
            reservation.settle()
        self._reservations.clear()

    def finish(self) -> StoredBlock:
        if self._file is None:
            raise ValueError(f"the writer of {self.block_id} is closed")
        file, self._file = self._file, None
        if self.store.sync_on_finish:
            file.flush()
            os.fsync(file.fileno())
        file.close()
        crcs, checksum = self._sums.finish()
        block = StoredBlock(self.block_id, self._sums.length, checksum, self.store.now_ms())
        meta_tmp = self._data_path.with_suffix(".meta")
        meta_tmp.write_bytes(_HEADER.pack(_MAGIC, _VERSION, block.length, BYTES_PER_CRC, block.finalized_ms) + crcs)
        data_path, meta_path = self.store.paths(self.block_id)
        data_path.parent.mkdir(exist_ok=True)
        if meta_path.exists():
            self.abort()
            raise FileAlreadyExists(f"block {self.block_id} already exists on this node")
        os.replace(self._data_path, data_path)
        os.replace(meta_tmp, meta_path)  # last: the block exists from here on
        self.store._added(block)
        self._settle()  # (after: its bytes are counted as the store's from here on)
        return block

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in (self._data_path, self._data_path.with_suffix(".meta")):
            path.unlink(missing_ok=True)
        self._settle()


class BlockStore:
    """The replicas under ``root`` (see the module docstring)."""

    disk_name = "block replicas"

    def __init__(
        self, root: Path, now_ms: Callable[[], int], *, sync_on_finish: bool = False, disk: DiskCap | None = None
    ) -> None:
        self.root = root
        self.now_ms = now_ms
        self.sync_on_finish = sync_on_finish
        self._lengths: dict[str, int] = {}
        self._total = 0  # sum of _lengths, kept as one int: read from any thread
        self._count_lock = threading.Lock()  # writers finish and delete on several threads
        #: The node's disk cap, which this store is a user of (none by default).
        self.disk = disk if disk is not None else DiskCap()
        self.disk.add_user(self)
        (root / "current").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)

    def paths(self, block_id: str) -> tuple[Path, Path]:
        """The data and meta paths of ``block_id``."""
        directory = self.root / "current" / _checked(block_id)[4:6]
        return directory / block_id, directory / f"{block_id}.meta"

    def _added(self, block: StoredBlock) -> None:
        with self._count_lock:
            self._total += block.length - self._lengths.get(block.block_id, 0)
            self._lengths[block.block_id] = block.length

    def scan(self) -> list[StoredBlock]:
        """The complete replicas, after removing what interrupted writes left (reads headers, not data)."""
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir()
        found: list[StoredBlock] = []
        self._lengths.clear()
        self._total = 0
        for directory in sorted((self.root / "current").iterdir()):
            if not directory.is_dir():
                continue
            for path in sorted(directory.iterdir()):
                name = path.name.removesuffix(".meta")
                if not valid_block_id(name) or path.parent.name != name[4:6]:
                    continue  # not ours: leave it
                if path.suffix == ".meta":
                    block = self._read_header(name)
                    if block is None:
                        self.delete(name)
                    else:
                        found.append(block)
                        self._added(block)
                elif not path.with_suffix(".meta").exists():
                    path.unlink(missing_ok=True)  # data whose meta was never written
        return found

    def _read_header(self, block_id: str) -> StoredBlock | None:
        data_path, meta_path = self.paths(block_id)
        try:
            with meta_path.open("rb") as meta:
                magic, version, length, per_crc, finalized = _HEADER.unpack(meta.read(_HEADER.size))
                crcs = meta.read()
            size = data_path.stat().st_size
        except (OSError, struct.error):
            return None
        if magic != _MAGIC or version != _VERSION or per_crc != BYTES_PER_CRC:
            return None
        if size != length or len(crcs) != chunk_count(length) * CRC_BYTES:
            return None
        return StoredBlock(block_id, length, block_checksum(crcs), finalized)

    def writer(self, block_id: str, expected_bytes: int = 0) -> BlockWriter:
        """A writer of a new replica that will take about ``expected_bytes`` (reserved under the disk
        cap now: ``DiskOutOfSpace`` if it cannot be had)."""
        if self.stat(block_id) is not None:
            raise FileAlreadyExists(f"block {block_id} already exists on this node")
        try:
            return BlockWriter(self, block_id, expected_bytes)
        except FileExistsError:
            raise FileAlreadyExists(f"block {block_id} is already being written on this node") from None

    def stat(self, block_id: str) -> StoredBlock | None:
        """The replica's length, checksum and time, or None if this node has no complete replica."""
        if not self.paths(block_id)[1].exists():
            return None
        return self._read_header(block_id)

    def vanished(self, block_id: str) -> bool:
        """True (once) if this store wrote or found ``block_id`` but its files are gone or broken
        now (removed or damaged behind the DataNode's back): what remains is removed and forgotten."""
        if block_id not in self._lengths or self.stat(block_id) is not None:
            return False
        self.delete(block_id)
        return True

    def crcs(self, block_id: str) -> bytes:
        _, meta_path = self.paths(block_id)
        try:
            return meta_path.read_bytes()[_HEADER.size :]
        except FileNotFoundError:
            raise MissingBlock(f"this node holds no replica of {block_id}") from None

    def read(self, block_id: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Bytes ``[offset, offset + length)`` of the replica, each chunk checked before it is yielded."""
        block, length = self._range(block_id, offset, length)
        return self._chunks(block, self.crcs(block_id), offset, length, None)

    def open_data(self, block_id: str) -> BinaryIO:
        """The replica's data file, open for reading and unchecked: for handing the whole block to the
        kernel (``sendfile``) where the receiver checks the block's checksum itself."""
        try:
            return self.paths(block_id)[0].open("rb")
        except FileNotFoundError:
            raise MissingBlock(f"this node holds no replica of {block_id}") from None

    def read_into(self, block_id: str, buffer: bytearray, offset: int = 0, length: int | None = None) -> Iterator[memoryview]:
        """As ``read``, but each piece is read into ``buffer`` (``PIECE_BYTES`` at least) and yielded as a
        view of it, valid until the next piece is asked for: no bytes object per piece."""
        if len(buffer) < PIECE_BYTES:
            raise ValueError(f"a read buffer holds at least {PIECE_BYTES} bytes, not {len(buffer)}")
        block, length = self._range(block_id, offset, length)
        return self._chunks(block, self.crcs(block_id), offset, length, memoryview(buffer))

    def _range(self, block_id: str, offset: int, length: int | None) -> tuple[StoredBlock, int]:
        block = self.stat(block_id)
        if block is None:
            raise MissingBlock(f"this node holds no replica of {block_id}")
        if length is None:
            length = block.length - offset
        if offset < 0 or length < 0 or offset + length > block.length:
            raise IllegalArgument(f"[{offset}, {offset + length}) is outside {block_id} ({block.length} bytes)")
        return block, length

    @overload
    def _chunks(self, block: StoredBlock, crcs: bytes, offset: int, length: int, into: None) -> Iterator[bytes]: ...
    @overload
    def _chunks(self, block: StoredBlock, crcs: bytes, offset: int, length: int, into: memoryview) -> Iterator[memoryview]: ...

    def _chunks(
        self, block: StoredBlock, crcs: bytes, offset: int, length: int, into: memoryview | None
    ) -> Iterator[bytes] | Iterator[memoryview]:
        data_path, _ = self.paths(block.block_id)
        end = offset + length
        position = (offset // BYTES_PER_CRC) * BYTES_PER_CRC  # whole chunks: each one is checked
        stop = min(block.length, chunk_count(end) * BYTES_PER_CRC)  # the end of the last chunk the range touches
        with data_path.open("rb", buffering=0) as data:
            # A read goes on to the end of the range: the kernel may read ahead twice as far
            # (what it reads while this piece is checked and sent is not waited for after).
            os.posix_fadvise(data.fileno(), position, stop - position, os.POSIX_FADV_SEQUENTIAL)
            data.seek(position)
            while position < end:
                wanted = min(PIECE_BYTES, stop - position)
                if into is None:
                    piece: bytes | memoryview = data.read(wanted)
                else:
                    piece = into[: _read_fully(data, into[:wanted])]
                if len(piece) != wanted:
                    raise CorruptReplica(f"{block.block_id} is shorter on disk than its {block.length} bytes")
                verify_chunks(piece, position // BYTES_PER_CRC, crcs, block.block_id)
                low = max(offset, position) - position
                high = min(end, position + len(piece)) - position
                yield piece[low:high]
                position += len(piece)

    def delete(self, block_id: str) -> bool:
        """Remove the replica (meta first, so a crash never leaves a block without its data checked)."""
        data_path, meta_path = self.paths(block_id)
        existed = meta_path.exists()
        meta_path.unlink(missing_ok=True)
        data_path.unlink(missing_ok=True)
        with self._count_lock:
            self._total -= self._lengths.pop(block_id, 0)
        return existed

    def used_bytes(self) -> int:
        return self._total

    def evictable(self) -> list[Evictable]:
        return []  # replicas are the NameNode's to move: a write that does not fit is refused

    def claim(self, key: str) -> Deletion | None:
        return None

    def free_bytes(self) -> int:
        """Room for blocks: the file system's free space, or less under the disk cap."""
        free = shutil.disk_usage(self.root).free
        room = self.disk.room()
        return free if room is None else min(free, room)
