"""Chunk CRCs, block checksums and the file checksum GETFILECHECKSUM answers.

The expected values are computed here independently (zlib over slices, hashlib over
the packed CRCs), and the file checksum is decoded the way Hadoop's
``JsonUtilClient.toMD5MD5CRC32FileChecksum`` decodes it.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.fs import checksums
from cortex_rm.fs.checksums import (
    BYTES_PER_CRC,
    CRC_BYTES,
    BlockChecksummer,
    block_checksum,
    chunk_count,
    file_checksum,
    verify_chunks,
)
from cortex_rm.fs.errors import CorruptReplica
from cortex_rm.fs.model import BlockRef

C = BYTES_PER_CRC
BLOCK_ID = "blk_" + "ab" * 16


def _data(length: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(length)


def _expected_crcs(data: bytes) -> bytes:
    """The packed CRCs computed independently: zlib.crc32 of each C-byte slice, big-endian."""
    return b"".join(struct.pack(">I", zlib.crc32(data[i : i + C])) for i in range(0, len(data), C))


def _block(data: bytes, n: int = 1) -> BlockRef:
    summer = BlockChecksummer()
    summer.update(data)
    return BlockRef(f"blk_{n:032x}", len(data), summer.finish()[1])


def _hadoop_decode(checksum_bytes_hex: str, algorithm: str, length: int) -> tuple[int, int, bytes]:
    """What Hadoop's client does with the JSON: readFields, then the algorithm and length checks."""
    payload = bytes.fromhex(checksum_bytes_hex)
    bytes_per_crc, crc_per_block, md5 = struct.unpack(">iq16s", payload)
    assert algorithm == f"MD5-of-{crc_per_block}MD5-of-{bytes_per_crc}CRC32"
    assert length == 28 == len(payload)
    return bytes_per_crc, crc_per_block, md5


# ------------------------------------------------------------- chunk CRCs


def test_the_chunk_is_64_kib_and_a_crc_is_four_bytes() -> None:
    """The constants the on-disk format and the file checksum are built on."""
    assert (BYTES_PER_CRC, CRC_BYTES) == (65536, 4)


@pytest.mark.parametrize("length", [0, 1, 100, C - 1, C, C + 1, 2 * C, 3 * C + 17])
def test_one_crc32_per_chunk_the_last_one_short(length: int) -> None:
    """finish() gives zlib's CRC32 of each 64 KiB chunk (the last may be short), packed big-endian,
    and the block checksum is the hex MD5 of exactly those bytes; length counts every byte."""
    data = _data(length)
    summer = BlockChecksummer()
    summer.update(data)
    crcs, checksum = summer.finish()
    assert crcs == _expected_crcs(data)
    assert len(crcs) == chunk_count(length) * CRC_BYTES
    assert checksum == hashlib.md5(crcs).hexdigest() == block_checksum(crcs)
    assert summer.length == length


def test_the_checksum_of_an_empty_block_is_the_md5_of_nothing() -> None:
    """No bytes, no chunks: no CRCs, and the checksum is MD5 of the empty string."""
    crcs, checksum = BlockChecksummer().finish()
    assert crcs == b""
    assert checksum == "d41d8cd98f00b204e9800998ecf8427e"


@pytest.mark.parametrize("seed", range(8))
def test_pieces_of_any_size_give_the_same_crcs_as_one_update(seed: int) -> None:
    """Feeding a block in odd-sized pieces (1 byte, pieces straddling chunk edges, empty pieces,
    memoryviews) yields the same CRCs and checksum as a single update."""
    rng = random.Random(seed)
    data = _data(3 * C + rng.randrange(C), seed)
    whole = BlockChecksummer()
    whole.update(data)
    pieces = BlockChecksummer()
    position = 0
    while position < len(data):
        size = rng.choice([0, 1, 7, C - 1, C, C + 1, rng.randrange(1, 2 * C)])
        piece = data[position : position + size]
        pieces.update(memoryview(piece) if rng.random() < 0.5 else piece)
        position += len(piece)
    assert pieces.finish() == whole.finish()
    assert pieces.length == whole.length == len(data)


def test_pieces_ending_exactly_on_chunk_edges_do_not_add_an_empty_chunk() -> None:
    """A block of exactly two chunks, fed one chunk at a time, has two CRCs, not three."""
    data = _data(2 * C)
    summer = BlockChecksummer()
    summer.update(data[:C])
    summer.update(data[C:])
    crcs, _ = summer.finish()
    assert crcs == _expected_crcs(data)
    assert len(crcs) == 2 * CRC_BYTES


def test_equal_data_equal_checksum_one_byte_more_or_changed_another() -> None:
    """The block checksum identifies the content: equal for equal data, different after a flip or an extra byte."""
    data = _data(C + 5)
    assert _block(data).checksum == _block(bytes(data)).checksum
    flipped = bytearray(data)
    flipped[C + 2] ^= 0x01
    assert _block(bytes(flipped)).checksum != _block(data).checksum
    assert _block(data + b"\0").checksum != _block(data).checksum


# ------------------------------------------------------------- chunk_count


@pytest.mark.parametrize(
    ("length", "chunks"),
    [(0, 0), (1, 1), (C - 1, 1), (C, 1), (C + 1, 2), (2 * C, 2), (2 * C + 1, 3), (128 * 1024 * 1024, 2048)],
)
def test_chunk_count_rounds_up(length: int, chunks: int) -> None:
    """chunk_count is the number of (possibly short) chunks: 0 for nothing, ceil(length / 64 KiB) otherwise."""
    assert chunk_count(length) == chunks


# ------------------------------------------------------------- verify_chunks


def test_intact_chunks_verify_from_any_starting_chunk() -> None:
    """Whole chunks pass against the block's CRCs, from the first chunk or from a later one,
    including the short last chunk."""
    data = _data(3 * C + 10)
    crcs = _expected_crcs(data)
    verify_chunks(data, 0, crcs, BLOCK_ID)
    verify_chunks(data[C:], 1, crcs, BLOCK_ID)
    verify_chunks(data[2 * C : 3 * C], 2, crcs, BLOCK_ID)
    verify_chunks(data[3 * C :], 3, crcs, BLOCK_ID)
    verify_chunks(b"", 0, b"", BLOCK_ID)


@pytest.mark.parametrize("flipped_at", [0, C - 1, C, 2 * C + 3, 3 * C + 9])
def test_a_flipped_byte_is_found_and_the_error_names_the_block_and_the_chunk(flipped_at: int) -> None:
    """One flipped bit anywhere raises CorruptReplica naming the block, the chunk and its byte range."""
    data = _data(3 * C + 10)
    crcs = _expected_crcs(data)
    damaged = bytearray(data)
    damaged[flipped_at] ^= 0x40
    chunk = flipped_at // C
    last_byte = min(len(data), (chunk + 1) * C) - 1
    with pytest.raises(CorruptReplica, match=rf"{BLOCK_ID} at chunk {chunk} \(bytes {chunk * C}\.\.\.{last_byte}\)"):
        verify_chunks(bytes(damaged), 0, crcs, BLOCK_ID)


def test_chunks_checked_against_the_wrong_index_or_missing_crcs_fail() -> None:
    """Data checked as if it were another chunk, or beyond the CRCs there are, is corrupt, not accepted."""
    data = _data(2 * C)
    crcs = _expected_crcs(data)
    with pytest.raises(CorruptReplica, match="chunk 0"):
        verify_chunks(data[C:], 0, crcs, BLOCK_ID)
    with pytest.raises(CorruptReplica, match="chunk 1"):
        verify_chunks(data, 0, crcs[:CRC_BYTES], BLOCK_ID)
    with pytest.raises(CorruptReplica, match="the block at chunk 0"):
        verify_chunks(data, 0, b"")


def test_the_error_is_the_checksum_exception_hadoop_clients_know() -> None:
    """CorruptReplica reaches a WebHDFS client as org.apache.hadoop.fs.ChecksumException."""
    with pytest.raises(CorruptReplica) as raised:
        verify_chunks(b"x", 0, struct.pack(">I", 0), BLOCK_ID)
    assert raised.value.java_class == "org.apache.hadoop.fs.ChecksumException"
    assert raised.value.simple_name == "ChecksumException"


# ------------------------------------------------------------- file_checksum


def test_file_checksum_is_md5_of_the_block_md5s_in_hadoops_format() -> None:
    """A file of three blocks: algorithm MD5-of-<chunks per block>MD5-of-65536CRC32, length 28, and
    bytes = int32 65536, int64 crcPerBlock (of the first block), MD5 of the concatenated block MD5s."""
    blocks = [_block(_data(2 * C, 1), 1), _block(_data(2 * C, 2), 2), _block(_data(5, 3), 3)]
    checksum = file_checksum(blocks)
    assert checksum.algorithm == "MD5-of-2MD5-of-65536CRC32"
    assert checksum.length == 28
    per_crc, per_block, md5 = _hadoop_decode(checksum.bytes_hex, checksum.algorithm, checksum.length)
    assert (per_crc, per_block) == (C, 2)
    assert md5 == hashlib.md5(b"".join(bytes.fromhex(b.checksum) for b in blocks)).digest()


def test_file_checksum_of_an_empty_file() -> None:
    """No blocks: crcPerBlock 0, the MD5 of nothing, still 28 bytes that Hadoop's client accepts."""
    checksum = file_checksum([])
    assert checksum.algorithm == "MD5-of-0MD5-of-65536CRC32"
    assert checksum.length == 28
    assert _hadoop_decode(checksum.bytes_hex, checksum.algorithm, checksum.length) == (
        C,
        0,
        hashlib.md5(b"").digest(),
    )


def test_file_checksum_of_a_single_block_file() -> None:
    """One short block: crcPerBlock is that block's chunk count, and the format still decodes."""
    checksum = file_checksum([_block(_data(C + 1))])
    assert checksum.algorithm == "MD5-of-2MD5-of-65536CRC32"
    _hadoop_decode(checksum.bytes_hex, checksum.algorithm, checksum.length)


def test_file_checksum_is_stable_for_equal_content() -> None:
    """Two files of equal content and equal block sizes (different block ids) have equal checksums."""
    first = [_block(_data(C, 1), 1), _block(_data(9, 2), 2)]
    second = [_block(_data(C, 1), 11), _block(_data(9, 2), 12)]
    assert file_checksum(first) == file_checksum(second)
    assert file_checksum(first) == file_checksum(list(first))


@pytest.mark.parametrize("changed", [0, 1, 2])
def test_file_checksum_changes_when_any_block_changes(changed: int) -> None:
    """A single flipped byte in any one block changes the file checksum."""
    contents = [_data(C, 1), _data(C, 2), _data(100, 3)]
    original = file_checksum([_block(d, i) for i, d in enumerate(contents)])
    damaged = bytearray(contents[changed])
    damaged[len(damaged) // 2] ^= 0x01
    contents[changed] = bytes(damaged)
    assert file_checksum([_block(d, i) for i, d in enumerate(contents)]).bytes_hex != original.bytes_hex


def test_file_checksum_depends_on_block_order() -> None:
    """The same blocks in another order are another file."""
    a, b = _block(_data(C, 1), 1), _block(_data(C, 2), 2)
    assert file_checksum([a, b]) != file_checksum([b, a])


def test_the_crcs_are_computed_by_isa_l() -> None:
    """isal is installed with Cortex: its vectorised CRC-32 is the one in use (zlib's is the fallback)."""
    assert checksums.crc32.__module__.startswith("isal")


@given(st.binary(max_size=3 * 4096), st.integers(0, 2**32 - 1), st.integers(0, 3 * 4096))
def test_isa_l_crc32_is_zlib_crc32_for_any_data_start_value_and_split(data: bytes, start: int, split: int) -> None:
    """ISA-L's CRC-32 equals zlib's for any bytes, any running value and any split into two updates,
    from a memoryview too: replicas stored with either read and verify under the other."""
    view = memoryview(data)
    assert checksums.crc32(view, start) == zlib.crc32(data, start)
    assert checksums.crc32(view[split:], checksums.crc32(view[:split], start)) == zlib.crc32(data, start)
