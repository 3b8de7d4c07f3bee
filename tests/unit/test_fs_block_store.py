"""A node's replicas on disk: written, read back checked chunk by chunk, damaged, recovered after a crash.

Every test works in its own ``tmp_path`` with a fake ``now_ms``; damage and crashes are
simulated by editing the files the store left behind.
"""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest

from cortex_rm.fs.block_store import PIECE_BYTES, BlockStore, StoredBlock, new_block_id, valid_block_id
from cortex_rm.fs.checksums import BYTES_PER_CRC, BlockChecksummer
from cortex_rm.fs.errors import CorruptReplica, FileAlreadyExists, IllegalArgument, MissingBlock

C = BYTES_PER_CRC
MIB = 1024 * 1024
NOW_MS = 1_700_000_000_000


class FakeNow:
    """A millisecond clock that only moves when told."""

    def __init__(self, ms: int = NOW_MS) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def _id(n: int) -> str:
    return f"blk_{n:032x}"


def _data(length: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(length)


def _checksum(data: bytes) -> str:
    summer = BlockChecksummer()
    summer.update(data)
    return summer.finish()[1]


def _store(root: Path, now: FakeNow | None = None) -> BlockStore:
    return BlockStore(root, now or FakeNow())


def _put(store: BlockStore, block_id: str, data: bytes, piece: int = 100_000) -> StoredBlock:
    writer = store.writer(block_id)
    for start in range(0, len(data), piece):
        writer.write(data[start : start + piece])
    return writer.finish()


def _read(store: BlockStore, block_id: str, offset: int = 0, length: int | None = None) -> bytes:
    """The range as ``read`` yields it, checked to be what ``read_into`` yields (or raises) too."""
    outcomes: list[bytes | tuple[type[Exception], str]] = []
    for pieces in (
        lambda: store.read(block_id, offset, length),
        lambda: store.read_into(block_id, bytearray(PIECE_BYTES), offset, length),
    ):
        try:
            outcomes.append(b"".join([bytes(piece) for piece in pieces()]))  # (each view copied as it comes)
        except Exception as e:  # noqa: BLE001 (compared, then raised again)
            outcomes.append((type(e), str(e)))
    assert outcomes[0] == outcomes[1], "read and read_into disagree"
    if isinstance(outcomes[0], tuple):
        error, message = outcomes[0]
        raise error(message)
    return outcomes[0]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------- block ids


def test_new_block_ids_are_blk_and_128_random_bits_and_only_those_are_valid() -> None:
    """new_block_id is blk_ + 32 hex digits of the random source; anything else is not a block id."""
    assert new_block_id(lambda n: b"\xab" * n) == "blk_" + "ab" * 16
    assert valid_block_id(new_block_id())
    for bad in ["", "blk_", "blk_" + "A" * 32, "blk_" + "0" * 31, "blk_" + "0" * 33, "../" + _id(1), _id(1) + "\n",
                "xyz_" + "0" * 32, _id(1) + ".meta", "blk_../../../../etc/passwd000000000"]:
        assert not valid_block_id(bad), bad


@pytest.mark.parametrize("bad", ["blk_../../etc", "../" + _id(1), "blk_" + "G" * 32, ""])
def test_an_invalid_block_id_never_becomes_a_path(tmp_path: Path, bad: str) -> None:
    """Every entry point refuses an id that is not blk_ + 32 hex digits with IllegalArgument."""
    store = _store(tmp_path)
    for call in (store.writer, store.stat, store.read, store.delete, store.paths):
        with pytest.raises(IllegalArgument, match="is not a block id"):
            call(bad)
    assert _files(tmp_path) == set()


# ------------------------------------------------------------- write and read


@pytest.mark.parametrize("length", [0, 1, C, C + 1, 3 * MIB + 123])
def test_a_written_block_reads_back_whole_with_its_length_checksum_and_time(tmp_path: Path, length: int) -> None:
    """write/finish/read round trip: the bytes come back equal, the StoredBlock has the length, the
    checksum of its chunk CRCs and the fake clock's time, and stat() agrees with finish()."""
    store = _store(tmp_path, FakeNow(NOW_MS + 5))
    data = _data(length)
    block = _put(store, _id(1), data)
    assert block == StoredBlock(_id(1), length, _checksum(data), NOW_MS + 5)
    assert store.stat(_id(1)) == block
    assert _read(store, _id(1)) == data
    assert store.used_bytes() == length


def test_the_files_land_under_current_in_the_id_prefix_directory(tmp_path: Path) -> None:
    """The data and .meta are renamed to current/<id[4:6]>/; nothing is left in tmp/; the meta
    header records the length, the chunk size and the time, followed by one CRC per chunk."""
    store = _store(tmp_path)
    block_id = "blk_7f" + "0" * 30
    _put(store, block_id, _data(C + 1))
    assert _files(tmp_path) == {f"current/7f/{block_id}", f"current/7f/{block_id}.meta"}
    data_path, meta_path = store.paths(block_id)
    assert data_path == tmp_path / "current" / "7f" / block_id
    meta = meta_path.read_bytes()
    magic, version, length, per_crc, finalized = struct.unpack(">4sBQIQ", meta[:25])
    assert (magic, version, length, per_crc, finalized) == (b"CXBK", 1, C + 1, C, NOW_MS)
    assert len(meta) == 25 + 2 * 4
    assert store.crcs(block_id) == meta[25:]


def test_reads_come_in_pieces_of_at_most_one_mib(tmp_path: Path) -> None:
    """A 3 MiB block is read in bounded pieces (memory stays bounded whatever the block size)."""
    store = _store(tmp_path)
    data = _data(3 * MIB + 7)
    _put(store, _id(1), data)
    pieces = list(store.read(_id(1)))
    assert PIECE_BYTES == MIB
    assert all(len(p) <= PIECE_BYTES for p in pieces)
    assert b"".join(pieces) == data


READS = [
    (0, 0),
    (0, 1),
    (C - 1, 2),  # the last byte of chunk 0 and the first of chunk 1
    (C, C),  # exactly chunk 1
    (C - 10, C + 20),  # three chunks touched
    (5, 3 * C),
    (MIB - 1, 2),  # across a piece boundary
    (MIB - 5, MIB + 10),
    (2 * MIB + 3, 1000),
    (3 * MIB, 7),  # the short last chunk
    (3 * MIB + 6, 1),  # the very last byte
    (3 * MIB + 7, 0),  # nothing, at the very end
]


@pytest.mark.parametrize(("offset", "length"), READS)
def test_a_partial_read_returns_exactly_the_asked_range(tmp_path: Path, offset: int, length: int) -> None:
    """Reads at offsets crossing chunk and piece boundaries return bytes [offset, offset + length)."""
    store = _store(tmp_path)
    data = _data(3 * MIB + 7)
    _put(store, _id(1), data)
    assert _read(store, _id(1), offset, length) == data[offset : offset + length]


def test_a_read_without_a_length_goes_to_the_end(tmp_path: Path) -> None:
    """length=None reads from offset to the end of the block."""
    store = _store(tmp_path)
    data = _data(2 * C + 3)
    _put(store, _id(1), data)
    assert _read(store, _id(1), C + 1) == data[C + 1 :]


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, -1), (0, 101), (100, 1), (101, None), (50, 51)])
def test_a_read_outside_the_block_is_an_illegal_argument(tmp_path: Path, offset: int, length: int | None) -> None:
    """Negative offsets or lengths, or a range past the end, are refused before anything is read."""
    store = _store(tmp_path)
    _put(store, _id(1), _data(100))
    with pytest.raises(IllegalArgument, match="is outside"):
        store.read(_id(1), offset, length)


def test_reading_a_block_this_node_does_not_have_is_missing(tmp_path: Path) -> None:
    """No replica: MissingBlock (for read and crcs); stat is None."""
    store = _store(tmp_path)
    assert store.stat(_id(9)) is None
    with pytest.raises(MissingBlock):
        store.read(_id(9))
    with pytest.raises(MissingBlock):
        store.crcs(_id(9))


# ------------------------------------------------------------- damage


def _flip(path: Path, at: int) -> None:
    with path.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x10]))


def test_a_flipped_byte_fails_the_reads_that_touch_its_chunk_and_only_those(tmp_path: Path) -> None:
    """A byte flipped on disk in chunk 20 of a 3 MiB block: reading that chunk (alone, as part of a
    range, or the whole block) raises CorruptReplica naming the block and chunk 20; reads of other
    chunks of the same block, even within the same 1 MiB piece, still succeed."""
    store = _store(tmp_path)
    data = _data(3 * MIB)
    _put(store, _id(1), data)
    damaged_at = 20 * C + 1234
    _flip(store.paths(_id(1))[0], damaged_at)
    assert store.stat(_id(1)) is not None  # the damage is in the data: only a read can see it
    for offset, length in [(damaged_at, 1), (20 * C, C), (19 * C + 5, 2 * C), (0, None)]:
        with pytest.raises(CorruptReplica, match=rf"{_id(1)} at chunk 20 "):
            _read(store, _id(1), offset, length)
    for offset, length in [(0, 10), (16 * C, 4 * C), (21 * C, 10), (19 * C, C), (21 * C, 2 * MIB - 21 * C + MIB)]:
        assert _read(store, _id(1), offset, length) == data[offset : offset + length]


def test_a_whole_block_read_yields_the_good_pieces_before_the_damaged_one(tmp_path: Path) -> None:
    """A streaming read fails at the first damaged piece, after the pieces before it were sent intact."""
    store = _store(tmp_path)
    data = _data(3 * MIB)
    _put(store, _id(1), data)
    _flip(store.paths(_id(1))[0], 2 * MIB + 5)
    reader = store.read(_id(1))
    assert next(reader) == data[:MIB]
    assert next(reader) == data[MIB : 2 * MIB]
    with pytest.raises(CorruptReplica, match="chunk 32"):
        next(reader)


def test_read_into_yields_views_of_the_one_buffer_and_fails_at_the_damaged_piece(tmp_path: Path) -> None:
    """read_into reads every piece into the caller's buffer (each view is that buffer's memory, valid
    until the next piece) and, like read, fails at the first damaged piece after the good ones."""
    store = _store(tmp_path)
    data = _data(3 * MIB)
    _put(store, _id(1), data)
    buffer = bytearray(PIECE_BYTES)
    reader = store.read_into(_id(1), buffer, 5, 3 * MIB - 5)
    first = next(reader)
    assert first.obj is buffer and first == data[5:MIB]
    assert next(reader) == data[MIB : 2 * MIB] and bytes(buffer) == data[MIB : 2 * MIB]
    _flip(store.paths(_id(1))[0], 2 * MIB + 5)
    with pytest.raises(CorruptReplica, match="chunk 32"):
        next(reader)
    with pytest.raises(ValueError, match="at least"):
        store.read_into(_id(1), bytearray(PIECE_BYTES - 1))


def test_a_damaged_crc_in_the_meta_file_fails_reads_of_its_chunk_and_changes_the_checksum(tmp_path: Path) -> None:
    """A flipped CRC: the replica's reported checksum no longer matches the block's (the NameNode will
    see it corrupt), and reading that chunk fails while other chunks read fine."""
    store = _store(tmp_path)
    data = _data(3 * C)
    block = _put(store, _id(1), data)
    _flip(store.paths(_id(1))[1], 25 + 4 * 1)  # the CRC of chunk 1
    stat = store.stat(_id(1))
    assert stat is not None and stat.checksum != block.checksum
    with pytest.raises(CorruptReplica, match="chunk 1"):
        _read(store, _id(1), C, 1)
    assert _read(store, _id(1), 0, C) == data[:C]


def test_a_data_file_truncated_during_a_read_is_corrupt(tmp_path: Path) -> None:
    """A data file that becomes shorter than its recorded length while it is being read raises
    CorruptReplica ("shorter on disk"), not a short answer."""
    store = _store(tmp_path)
    data = _data(2 * MIB)
    _put(store, _id(1), data)
    reader = store.read(_id(1))
    assert next(reader) == data[:MIB]
    with store.paths(_id(1))[0].open("r+b") as f:
        f.truncate(MIB + 10)
    with pytest.raises(CorruptReplica, match="shorter on disk"):
        next(reader)


def test_a_data_file_truncated_before_a_read_is_no_replica_and_vanishes(tmp_path: Path) -> None:
    """A data file shorter than its meta records is not a replica: stat is None, read raises
    MissingBlock, and vanished() reports it once and removes what is left."""
    store = _store(tmp_path)
    _put(store, _id(1), _data(C + 1))
    with store.paths(_id(1))[0].open("r+b") as f:
        f.truncate(C)
    assert store.stat(_id(1)) is None
    with pytest.raises(MissingBlock):
        store.read(_id(1))
    assert store.vanished(_id(1)) is True
    assert _files(tmp_path) == set()
    assert store.vanished(_id(1)) is False
    assert store.used_bytes() == 0


# ------------------------------------------------------------- writers


def test_an_aborted_write_leaves_nothing(tmp_path: Path) -> None:
    """abort() removes the temporary file: no block, no file, no bytes used; the writer is closed,
    and the same id can be written afresh."""
    store = _store(tmp_path)
    writer = store.writer(_id(1))
    writer.write(_data(C + 5))
    writer.abort()
    assert _files(tmp_path) == set()
    assert store.stat(_id(1)) is None
    assert store.used_bytes() == 0
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"x")
    with pytest.raises(ValueError, match="closed"):
        writer.finish()
    writer.abort()  # twice is harmless
    assert _put(store, _id(1), b"again").length == 5


def test_a_finished_writer_is_closed(tmp_path: Path) -> None:
    """After finish() a writer accepts neither data nor a second finish."""
    store = _store(tmp_path)
    writer = store.writer(_id(1))
    writer.finish()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"x")
    with pytest.raises(ValueError, match="closed"):
        writer.finish()


def test_a_block_that_exists_or_is_being_written_cannot_be_written_again(tmp_path: Path) -> None:
    """writer() for a complete block, or for one another writer has open, raises FileAlreadyExists
    and leaves the existing replica or write alone."""
    store = _store(tmp_path)
    data = _data(10)
    _put(store, _id(1), data)
    with pytest.raises(FileAlreadyExists, match="already exists"):
        store.writer(_id(1))
    assert _read(store, _id(1)) == data
    first = store.writer(_id(2))
    with pytest.raises(FileAlreadyExists, match="already being written"):
        store.writer(_id(2))
    first.write(b"first")
    assert first.finish().length == 5


def test_finishing_a_block_someone_completed_meanwhile_refuses_and_cleans_up(tmp_path: Path) -> None:
    """If the block appeared in current/ while this writer was busy, finish() raises FileAlreadyExists,
    keeps the existing replica and removes its own temporary files."""
    store = _store(tmp_path)
    writer = store.writer(_id(1))
    writer.write(b"late")
    elsewhere = _store(tmp_path / "elsewhere")  # the same block completed by another path, copied in
    _put(elsewhere, _id(1), b"early")
    for source, target in zip(elsewhere.paths(_id(1)), store.paths(_id(1))):
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(source, target)
    with pytest.raises(FileAlreadyExists):
        writer.finish()
    assert _read(store, _id(1)) == b"early"
    assert list((tmp_path / "tmp").iterdir()) == []


# ------------------------------------------------------------- delete, vanished, used_bytes


def test_delete_removes_both_files_and_says_whether_there_was_a_replica(tmp_path: Path) -> None:
    """delete() is True for a replica it removed (both files gone), False for one it does not have."""
    store = _store(tmp_path)
    _put(store, _id(1), _data(100))
    _put(store, _id(2), _data(50))
    assert store.delete(_id(1)) is True
    assert store.stat(_id(1)) is None
    assert _files(tmp_path) == {f"current/00/{_id(2)}", f"current/00/{_id(2)}.meta"}
    assert store.delete(_id(1)) is False
    assert store.delete(_id(3)) is False
    assert store.used_bytes() == 50


def test_vanished_is_true_once_for_a_replica_removed_behind_the_stores_back(tmp_path: Path) -> None:
    """Files deleted by someone else: vanished() is True the first time, then False (forgotten); it is
    False for a block still present and for blocks this store never had."""
    store = _store(tmp_path)
    _put(store, _id(1), _data(100))
    _put(store, _id(2), _data(30))
    assert store.vanished(_id(1)) is False
    assert store.vanished(_id(7)) is False
    for path in store.paths(_id(1)):
        path.unlink()
    assert store.used_bytes() == 130  # not noticed yet
    assert store.vanished(_id(1)) is True
    assert store.vanished(_id(1)) is False
    assert store.used_bytes() == 30


def test_vanished_notices_a_missing_meta_file_and_removes_the_orphaned_data(tmp_path: Path) -> None:
    """Only the meta file removed: the replica is gone; vanished() removes the data file too."""
    store = _store(tmp_path)
    _put(store, _id(1), _data(100))
    store.paths(_id(1))[1].unlink()
    assert store.vanished(_id(1)) is True
    assert _files(tmp_path) == set()


def test_used_bytes_counts_the_complete_replicas(tmp_path: Path) -> None:
    """used_bytes is the sum of the lengths of the complete replicas: open writes do not count,
    deletes subtract, a rescan recounts from disk."""
    store = _store(tmp_path)
    assert store.used_bytes() == 0
    _put(store, _id(1), _data(C + 1))
    _put(store, _id(2), _data(10))
    writer = store.writer(_id(3))
    writer.write(_data(500))
    assert store.used_bytes() == C + 11
    store.delete(_id(2))
    assert store.used_bytes() == C + 1
    assert _store(tmp_path).used_bytes() == 0  # a new store knows nothing until it scans
    rescanned = _store(tmp_path)
    rescanned.scan()
    assert rescanned.used_bytes() == C + 1
    assert store.free_bytes() > 0


# ------------------------------------------------------------- scan after a crash


def test_scan_after_a_crash_finds_exactly_the_complete_replicas_and_cleans_the_rest(tmp_path: Path) -> None:
    """A crash leaves: writes in tmp/, a data file whose meta was never written, a meta file with a
    broken header, a meta without its data, a meta recording another length, a meta with too few
    CRCs. A new store's scan() returns exactly the complete replicas (with the times they were
    finished, not the scan's), removes the leftovers, and leaves files that are not blocks alone."""
    now = FakeNow(NOW_MS)
    before = _store(tmp_path, now)
    good = {_id(1): _put(before, _id(1), _data(C + 1)), "blk_ff" + "1" * 30: _put(before, "blk_ff" + "1" * 30, b"")}
    now.ms += 1000
    good[_id(2)] = _put(before, _id(2), _data(7))

    open_write = before.writer(_id(3))
    open_write.write(b"never finished")  # tmp/blk_...3
    (tmp_path / "tmp" / f"{_id(4)}.meta").write_bytes(b"half a rename")
    for n, damage in [(5, "no meta"), (6, "bad header"), (7, "no data"), (8, "wrong length"), (9, "few crcs")]:
        _put(before, _id(n), _data(C + 1, n))
        data_path, meta_path = before.paths(_id(n))
        if damage == "no meta":
            meta_path.unlink()
        elif damage == "bad header":
            meta_path.write_bytes(b"XXXX" + meta_path.read_bytes()[4:])
        elif damage == "no data":
            data_path.unlink()
        elif damage == "wrong length":
            data_path.write_bytes(data_path.read_bytes() + b"!")
        else:
            meta_path.write_bytes(meta_path.read_bytes()[:-4])
    short_meta = tmp_path / "current" / "00" / f"{_id(10)}.meta"
    short_meta.write_bytes(b"CX")  # shorter than a header
    (tmp_path / "current" / "00" / _id(10)).write_bytes(b"data")

    foreign = {
        "current/README": b"not a block",
        "current/00/notes.txt": b"mine",
        f"current/zz/{_id(11)}": b"a block name in a directory not its own",
        f"current/aa/{_id(12)}": b"wrong prefix directory",
        f"current/00/{_id(13)}.bak": b"not a block name",
    }
    for name, content in foreign.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)

    after = _store(tmp_path, FakeNow(NOW_MS + 99_999))
    found = after.scan()
    assert {b.block_id: b for b in found} == good
    assert len(found) == len(good)
    expected_files = set(foreign)
    for block_id in good:
        data_path, meta_path = after.paths(block_id)
        expected_files |= {str(data_path.relative_to(tmp_path)), str(meta_path.relative_to(tmp_path))}
    assert _files(tmp_path) == expected_files
    assert list((tmp_path / "tmp").iterdir()) == []
    assert after.used_bytes() == C + 1 + 7
    assert _read(after, _id(2)) == _data(7)
    for name, content in foreign.items():
        assert (tmp_path / name).read_bytes() == content


def test_scan_of_an_empty_or_fresh_store_finds_nothing(tmp_path: Path) -> None:
    """A new root gets current/ and tmp/; scanning it (twice) finds nothing and breaks nothing."""
    store = _store(tmp_path / "node")
    assert store.scan() == []
    assert store.scan() == []
    assert sorted(p.name for p in (tmp_path / "node").iterdir()) == ["current", "tmp"]


def test_a_rescan_forgets_replicas_deleted_while_the_node_was_down(tmp_path: Path) -> None:
    """scan() replaces what the store knew: a replica removed on disk is no longer counted nor vanished."""
    store = _store(tmp_path)
    _put(store, _id(1), _data(10))
    _put(store, _id(2), _data(20))
    for path in store.paths(_id(1)):
        path.unlink()
    assert [b.block_id for b in store.scan()] == [_id(2)]
    assert store.used_bytes() == 20
    assert store.vanished(_id(1)) is False
