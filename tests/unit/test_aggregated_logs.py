"""The aggregated log writer, checked by a reader of our own written from the format's description.

``TFileReader`` below parses the file from its trailer inwards, the way Hadoop's
``BCFile.Reader``/``TFile.Reader`` do, and fails on anything out of place: a bad magic or
version, blocks that leave gaps, index counts that do not match the records, a value whose
chunks are malformed.  It shares no code with the writer.  The proof against Hadoop's own
reader is ``tests/integration/test_aggregated_logs_java.py``.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.container.aggregated_logs import (
    BCFILE_MAGIC,
    MIN_BLOCK_SIZE,
    READ_SIZE,
    VALUE_CHUNK_SIZE,
    AggregatedLogWriter,
    ContainerLogFile,
    InvalidLogInput,
    LogLengthMismatch,
    WriterState,
    encode_java_utf,
    remote_log_path,
    write_aggregated_logs,
)
from cortex_rm.container.tfile_encoding import encode_modified_utf8, encode_vlong
from cortex_rm.yarn.errors import IllegalTransition, MalformedId
from cortex_rm.yarn.ids import ApplicationId, NodeId

C1 = "container_1700000000000_0007_01_000001"
C2 = "container_1700000000000_0007_01_000002"
C3 = "container_e17_1700000000000_0007_01_000003"

# ---------------------------------------------------------------------------------------
# An independent reader


def read_vlong(buf: bytes, pos: int) -> tuple[int, int]:
    """TFile's Utils.readVLong, from its Javadoc: the first byte, signed, says the form."""
    first = struct.unpack_from(">b", buf, pos)[0]
    pos += 1
    if first >= -32:
        return first, pos
    if -72 <= first <= -33:
        return ((first + 52) << 8) | buf[pos], pos + 1
    if -104 <= first <= -73:
        return ((first + 88) << 16) | int.from_bytes(buf[pos : pos + 2], "big"), pos + 2
    if -120 <= first <= -105:
        return ((first + 112) << 24) | int.from_bytes(buf[pos : pos + 3], "big"), pos + 3
    size = first + 129
    assert 4 <= size <= 8, f"corrupt VLong at {pos - 1}"
    return int.from_bytes(buf[pos : pos + size], "big", signed=True), pos + size


def read_index_string(buf: bytes, pos: int) -> tuple[str, int]:
    size, pos = read_vlong(buf, pos)
    return buf[pos : pos + size].decode("utf-8"), pos + size


def decode_modified_utf8(body: bytes) -> str:
    units: list[int] = []
    pos = 0
    while pos < len(body):
        b = body[pos]
        if b < 0x80:
            assert b != 0, "NUL must be c0 80"
            units.append(b)
            pos += 1
        elif b >> 5 == 0b110:
            units.append((b & 0x1F) << 6 | body[pos + 1] & 0x3F)
            pos += 2
        else:
            assert b >> 4 == 0b1110, f"bad lead byte {b:#x}"
            units.append((b & 0x0F) << 12 | (body[pos + 1] & 0x3F) << 6 | body[pos + 2] & 0x3F)
            pos += 3
    return struct.pack(f">{len(units)}H", *units).decode("utf-16-be", "surrogatepass")


def read_java_utf(buf: bytes, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from(">H", buf, pos)
    assert pos + 2 + size <= len(buf), "writeUTF string runs past its value"
    return decode_modified_utf8(buf[pos + 2 : pos + 2 + size]), pos + 2 + size


@dataclass
class Record:
    key: bytes
    value: bytes
    chunks: list[int]  # the chunk lengths as stored (negative: more follow)


@dataclass
class TFileReader:
    """Everything a BCFile/TFile holds, parsed and cross-checked."""

    raw: bytes
    meta_index: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)
    data_blocks: list[tuple[int, int, int]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    block_records: list[list[Record]] = field(default_factory=list)
    record_count: int = -1
    comparator: str | None = None
    first_key: bytes | None = None
    index_entries: list[tuple[bytes, int]] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: bytes) -> TFileReader:
        r = cls(raw)
        r._parse()
        return r

    def meta_block(self, name: str) -> bytes:
        compression, offset, stored, size = self.meta_index[name]
        assert compression == "none" and stored == size
        return self.raw[offset : offset + size]

    def _parse(self) -> None:
        raw = self.raw
        assert raw[:16] == BCFILE_MAGIC, "no magic at the start"
        assert raw[-16:] == BCFILE_MAGIC, "no magic at the end"
        meta_index_offset, major, minor = struct.unpack_from(">qhh", raw, len(raw) - 28)
        assert (major, minor) == (1, 0)
        pos = meta_index_offset
        count, pos = read_vlong(raw, pos)
        names = []
        for _ in range(count):
            full_name, pos = read_index_string(raw, pos)
            assert full_name.startswith("data:")
            compression, pos = read_index_string(raw, pos)
            offset, pos = read_vlong(raw, pos)
            stored, pos = read_vlong(raw, pos)
            size, pos = read_vlong(raw, pos)
            self.meta_index[full_name[5:]] = (compression, offset, stored, size)
            names.append(full_name[5:])
        assert names == sorted(names), "meta index not in name order"
        assert pos == len(raw) - 28, "bytes between the meta index and the trailer"

        data_index = self.meta_block("BCFile.index")
        compression, pos = read_index_string(data_index, 0)
        assert compression == "none"
        blocks, pos = read_vlong(data_index, pos)
        for _ in range(blocks):
            offset, pos = read_vlong(data_index, pos)
            stored, pos = read_vlong(data_index, pos)
            size, pos = read_vlong(data_index, pos)
            assert stored == size
            self.data_blocks.append((offset, stored, size))
        assert pos == len(data_index)

        # The regions tile the file: magic, data blocks, then the meta blocks, then the meta index.
        regions = [(o, s) for o, s, _ in self.data_blocks]
        regions += sorted((o, s) for _, o, s, _ in self.meta_index.values())
        expected = 16
        for offset, size in regions:
            assert offset == expected, f"gap or overlap at {expected}: next region starts at {offset}"
            expected += size
        assert expected == meta_index_offset

        meta = self.meta_block("TFile.meta")
        assert struct.unpack_from(">hh", meta, 0) == (1, 0)
        self.record_count, pos = read_vlong(meta, 4)
        self.comparator, pos = read_index_string(meta, pos)
        assert pos == len(meta)

        index = self.meta_block("TFile.index")
        size, pos = read_vlong(index, 0)
        if size:
            key_len, inner = read_vlong(index, pos)
            self.first_key = index[inner : inner + key_len]
            assert inner + key_len == pos + size
            pos += size
            for _ in self.data_blocks:
                size, pos = read_vlong(index, pos)
                key_len, inner = read_vlong(index, pos)
                key = index[inner : inner + key_len]
                entries, inner = read_vlong(index, inner + key_len)
                assert inner == pos + size
                self.index_entries.append((key, entries))
                pos += size
        assert pos == len(index)

        for (offset, size, _), (last_key, entries) in zip(self.data_blocks, self.index_entries, strict=True):
            block = self._read_block(raw[offset : offset + size])
            assert len(block) == entries, "index record count differs from the block's"
            assert block[-1].key == last_key, "index last key differs from the block's"
            self.block_records.append(block)
            self.records += block
        assert len(self.records) == self.record_count
        if self.records:
            assert self.first_key == self.records[0].key

    @staticmethod
    def _read_block(block: bytes) -> list[Record]:
        records = []
        pos = 0
        while pos < len(block):
            key_len, pos = read_vlong(block, pos)
            key = block[pos : pos + key_len]
            pos += key_len
            value = bytearray()
            chunks = []
            while True:
                length, pos = read_vlong(block, pos)
                chunks.append(length)
                assert length != 0 or len(chunks) == 1 or chunks[-2] < 0
                value += block[pos : pos + abs(length)]
                pos += abs(length)
                if length >= 0:
                    break
            assert pos <= len(block), "record runs past its block"
            records.append(Record(key, bytes(value), chunks))
        return records


@dataclass
class AggregatedLog:
    version: int
    acls: list[tuple[str, str]]
    owner: str
    containers: list[tuple[str, list[tuple[str, str, bytes]]]]


def parse_aggregated_log(raw: bytes) -> AggregatedLog:
    tfile = TFileReader.parse(raw)
    assert tfile.comparator == "", "aggregated logs are an unsorted TFile"
    keys = []
    for record in tfile.records:
        key, end = read_java_utf(record.key, 0)
        assert end == len(record.key)
        keys.append(key)
    assert keys[:3] == ["VERSION", "APPLICATION_ACL", "APPLICATION_OWNER"]
    (version,) = struct.unpack(">i", tfile.records[0].value)
    acls = []
    value, pos = tfile.records[1].value, 0
    while pos < len(value):
        kind, pos = read_java_utf(value, pos)
        acl, pos = read_java_utf(value, pos)
        acls.append((kind, acl))
    owner, end = read_java_utf(tfile.records[2].value, 0)
    assert end == len(tfile.records[2].value)
    containers = []
    for key, record in zip(keys[3:], tfile.records[3:], strict=True):
        files = []
        value, pos = record.value, 0
        while pos < len(value):
            name, pos = read_java_utf(value, pos)
            length, pos = read_java_utf(value, pos)
            files.append((name, length, value[pos : pos + int(length)]))
            pos += int(length)
            assert pos <= len(value), "log bytes run past the value"
        containers.append((key, files))
    return AggregatedLog(version, acls, owner, containers)


def write(owner: str, acls: dict[str, str], containers: list[tuple[str, list[ContainerLogFile]]], **kw: int) -> bytes:
    sink = io.BytesIO()
    writer = AggregatedLogWriter(sink, owner, acls, **kw)
    for container_id, files in containers:
        writer.add_container(container_id, files)
    size = writer.close()
    assert size == len(sink.getvalue())
    return sink.getvalue()


def big_log(size: int) -> bytes:
    """Deterministic, non-repeating-looking content: a counter in every 8 bytes."""
    return b"".join(struct.pack(">Q", i * 0x9E3779B97F4A7C15 & (2**64 - 1)) for i in range(size // 8))[:size]


# ---------------------------------------------------------------------------------------
# Encodings


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, "00"),
        (-1, "ff"),
        (127, "7f"),
        (-32, "e0"),
        (128, "cc80"),
        (-33, "cbdf"),
        (5119, "dfff"),  # 20 * 2^8 - 1: the last two-byte value
        (5120, "a81400"),
        (-5120, "b800"),
        (-5121, "a7ebff"),
        (1048576, "90100000"),  # 16 * 2^16: the first four-byte value
        (134217728, "8308000000"),  # 8 * 2^24: the first value with a length byte
        (2147483648, "840080000000"),
        (2**63 - 1, "877fffffffffffffff"),
        (-(2**63), "878000000000000000"),
    ],
)
def test_vlong_encodes_as_tfile_utils_does(n: int, encoded: str) -> None:
    """Each form of TFile's VLong at its boundaries (the integration test checks the same
    numbers against Hadoop's Utils.writeVLong)."""
    assert encode_vlong(n).hex() == encoded
    assert read_vlong(encode_vlong(n), 0) == (n, len(encoded) // 2)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_vlong_round_trips_every_64_bit_integer(n: int) -> None:
    """Decoding by the Javadoc's rules gives back any signed 64-bit number, using every byte."""
    encoded = encode_vlong(n)
    assert read_vlong(encoded, 0) == (n, len(encoded))
    assert len(encoded) <= 9


@pytest.mark.parametrize("n", [2**63, -(2**63) - 1])
def test_vlong_refuses_numbers_beyond_64_bits(n: int) -> None:
    """Java's long stops at 64 bits, so wider numbers are an error, not a silent wrap."""
    with pytest.raises(OverflowError):
        encode_vlong(n)


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", ""),
        ("stdout", "7374646f7574"),
        ("\x00", "c080"),
        ("\u00e9", "c3a9"),
        ("\u20ac", "e282ac"),
        ("\U0001f600", "eda0bdedb880"),  # two surrogates, three bytes each
        ("\ud800", "eda080"),  # a lone surrogate, as Java writes it
    ],
)
def test_modified_utf8_follows_java(text: str, encoded: str) -> None:
    """Java's modified UTF-8: NUL as c0 80, each UTF-16 unit on its own."""
    assert encode_modified_utf8(text).hex() == encoded
    assert encode_java_utf(text) == struct.pack(">H", len(encoded) // 2) + bytes.fromhex(encoded)


@given(st.text())
def test_modified_utf8_round_trips_any_text(text: str) -> None:
    """writeUTF's encoding decodes back to the same text."""
    assert read_java_utf(encode_java_utf(text), 0) == (text, len(encode_java_utf(text)))


def test_java_utf_refuses_more_than_65535_bytes() -> None:
    """writeUTF's length prefix is two bytes; 65,535 bytes fit, one more does not."""
    assert len(encode_java_utf("a" * 65535)) == 65537
    with pytest.raises(InvalidLogInput, match="65535"):
        encode_java_utf("\u00e9" * 32768)


# ---------------------------------------------------------------------------------------
# The file


def test_file_holds_header_records_then_each_container() -> None:
    """VERSION 1, the ACLs in order, the owner, then every container's files with their
    names, decimal lengths and bytes; the TFile is unsorted and counts every record."""
    raw = write(
        "alice",
        {"VIEW_APP": "bob admins", "MODIFY_APP": " "},
        [
            (C1, [ContainerLogFile.from_bytes("stdout", b"hello\n"), ContainerLogFile.from_bytes("stderr", b"oops\n")]),
            (C2, [ContainerLogFile.from_bytes("syslog", b"INFO started\nINFO done\n")]),
        ],
    )
    log = parse_aggregated_log(raw)
    assert log.version == 1
    assert log.acls == [("VIEW_APP", "bob admins"), ("MODIFY_APP", " ")]
    assert log.owner == "alice"
    assert log.containers == [
        (C1, [("stdout", "6", b"hello\n"), ("stderr", "5", b"oops\n")]),
        (C2, [("syslog", "23", b"INFO started\nINFO done\n")]),
    ]
    tfile = TFileReader.parse(raw)
    assert tfile.record_count == 5
    assert sorted(tfile.meta_index) == ["BCFile.index", "TFile.index", "TFile.meta"]
    assert tfile.first_key == encode_java_utf("VERSION")
    # single chunks: the int, two ACL pairs, "alice", (8+3+6)+(8+3+5), 8+4+23
    assert [r.chunks for r in tfile.records] == [[4], [37], [7], [33], [35]]


def test_no_acls_and_empty_log_files() -> None:
    """No ACLs make an empty ACL value; an empty log file is its name and length "0"."""
    log = parse_aggregated_log(write("bob", {}, [(C1, [ContainerLogFile.from_bytes("stderr", b"")])]))
    assert log.acls == []
    assert log.containers == [(C1, [("stderr", "0", b"")])]


def test_container_without_log_files_gets_no_record() -> None:
    """Like Hadoop's LogWriter, a container with nothing to upload is left out."""
    log = parse_aggregated_log(write("bob", {}, [(C1, []), (C2, [ContainerLogFile.from_bytes("stdout", b"x")])]))
    assert [c for c, _ in log.containers] == [C2]


def test_unicode_names_owner_and_container_ids_round_trip() -> None:
    """Names and owners beyond ASCII (NUL and a supplementary character included) survive."""
    name = "prelaunch-\u00e9\u2603-\U0001f600\x00.out"
    log = parse_aggregated_log(
        write("\u00e5sa", {"VIEW_APP": "\u00e5sa"}, [(C3, [ContainerLogFile.from_bytes(name, b"\xff\x00")])])
    )
    assert log.owner == "\u00e5sa"
    assert log.containers == [(C3, [(name, "2", b"\xff\x00")])]


def test_five_megabyte_log_streams_through_chunks_and_blocks() -> None:
    """A 5 MiB log read from a stream comes back whole, as 1 MiB chunks that say "more
    follows" and a last one; the file is cut into blocks of at least 256 KiB, each block's
    count and last key in TFile.index."""
    content = big_log(5 * 1024 * 1024 + 17)
    stdout = b"short\n"
    raw = write(
        "alice",
        {},
        [
            (
                C1,
                [
                    ContainerLogFile("syslog", len(content), io.BytesIO(content)),
                    ContainerLogFile.from_bytes("stdout", stdout),
                ],
            ),
            (C2, [ContainerLogFile.from_bytes("stdout", b"second container\n")]),
        ],
    )
    log = parse_aggregated_log(raw)
    assert log.containers[0] == (C1, [("syslog", str(len(content)), content), ("stdout", "6", stdout)])
    assert log.containers[1][1] == [("stdout", "17", b"second container\n")]
    tfile = TFileReader.parse(raw)
    chunks = tfile.records[3].chunks
    assert chunks[:-1] == [-VALUE_CHUNK_SIZE] * 5
    assert 0 <= chunks[-1] < VALUE_CHUNK_SIZE
    # the header records share the first block with the big container; the next one starts a block
    assert [len(b) for b in tfile.block_records] == [4, 1]
    assert all(size >= MIN_BLOCK_SIZE for _, size, _ in tfile.data_blocks[:-1])


def test_writer_never_holds_more_than_a_chunk() -> None:
    """The sink sees writes of at most one chunk and the source reads of at most READ_SIZE:
    a large log passes through, it is never loaded whole."""

    class RecordingSink(io.BytesIO):
        def __init__(self) -> None:
            super().__init__()
            self.largest = 0

        def write(self, data: bytes, /) -> int:  # type: ignore[override]
            self.largest = max(self.largest, len(data))
            return super().write(data)

    class RecordingSource(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.largest = 0

        def read(self, size: int | None = -1, /) -> bytes:
            assert size is not None and size > 0
            self.largest = max(self.largest, size)
            return super().read(size)

    content = big_log(3 * 1024 * 1024)
    sink, source = RecordingSink(), RecordingSource(content)
    write_aggregated_logs(sink, "alice", None, [(C1, [ContainerLogFile("syslog", len(content), source)])])
    assert sink.largest <= VALUE_CHUNK_SIZE + 9
    assert source.largest <= READ_SIZE
    assert parse_aggregated_log(sink.getvalue()).containers[0][1][0][2] == content


@given(
    st.integers(min_value=1, max_value=64),
    st.lists(st.binary(max_size=200), max_size=6),
)
def test_values_of_any_size_split_into_full_chunks_and_a_last_one(chunk_size: int, contents: list[bytes]) -> None:
    """Whatever the chunk size and log sizes, every chunk but the last is exactly full and
    negative, the last is 0..chunk_size and never an empty one after a full one... unless the
    value is empty; and the bytes come back in order."""
    files = [ContainerLogFile.from_bytes(f"log{i}", c) for i, c in enumerate(contents)]
    raw = write("alice", {}, [(C1, files)] if files else [], chunk_size=chunk_size)
    tfile = TFileReader.parse(raw)
    for record in tfile.records:
        assert all(length == -chunk_size for length in record.chunks[:-1])
        assert 0 <= record.chunks[-1] <= chunk_size
        assert record.chunks[-1] > 0 or len(record.chunks) == 1
    if files:
        assert parse_aggregated_log(raw).containers == [(C1, [(f.name, str(f.length), f.source) for f in files])]


def test_small_blocks_give_one_index_entry_per_record() -> None:
    """With a 1-byte minimum every record closes its block, and TFile.index lists each
    block's last key and a count of 1."""
    raw = write(
        "alice", {}, [(c, [ContainerLogFile.from_bytes("stdout", c.encode())]) for c in (C1, C2, C3)], min_block_size=1
    )
    tfile = TFileReader.parse(raw)
    assert len(tfile.data_blocks) == 6
    assert tfile.index_entries == [(r.key, 1) for r in tfile.records]


def test_same_input_same_bytes_even_through_a_sink_that_takes_little() -> None:
    """The output is a function of the input: twice the same, and the same again through a
    raw sink that accepts at most 7 bytes per write."""

    class TrickleSink(io.BytesIO):
        def write(self, data: bytes, /) -> int:  # type: ignore[override]
            return super().write(bytes(data[:7]))

    containers = [
        (C1, [ContainerLogFile.from_bytes("stdout", b"x" * 3000)]),
        (C2, [ContainerLogFile.from_bytes("e", b"y")]),
    ]
    first = write("alice", {"VIEW_APP": "*"}, containers)
    assert write("alice", {"VIEW_APP": "*"}, containers) == first
    trickle = TrickleSink()
    assert write_aggregated_logs(trickle, "alice", {"VIEW_APP": "*"}, containers) == len(first)
    assert trickle.getvalue() == first


# ---------------------------------------------------------------------------------------
# Lengths, inputs and the writer's life


def test_source_shorter_than_its_length_fails_the_writer_for_good() -> None:
    """A log that ends early cannot be framed: LogLengthMismatch, the writer is FAILED,
    close() adds no trailer (the bytes are not a file), and adding more is a bug."""
    sink = io.BytesIO()
    writer = AggregatedLogWriter(sink, "alice")
    with pytest.raises(LogLengthMismatch, match="'syslog' ended 10 bytes short of 100"):
        writer.add_container(C1, [ContainerLogFile("syslog", 100, io.BytesIO(b"x" * 90))])
    assert writer.state is WriterState.FAILED
    written = len(sink.getvalue())
    assert writer.close() == written
    assert len(sink.getvalue()) == written and not sink.getvalue().endswith(BCFILE_MAGIC)
    with pytest.raises(IllegalTransition):
        writer.add_container(C2, [ContainerLogFile.from_bytes("stdout", b"")])


def test_source_longer_than_its_length_is_cut_at_the_length() -> None:
    """As Hadoop copies only the length it took first, bytes beyond the length are not read."""
    source = io.BytesIO(b"0123456789")
    log = parse_aggregated_log(write("alice", {}, [(C1, [ContainerLogFile("stdout", 4, source)])]))
    assert log.containers == [(C1, [("stdout", "4", b"0123")])]
    assert source.read() == b"456789"


@pytest.mark.parametrize(
    ("container_id", "files", "message"),
    [
        ("VERSION", [ContainerLogFile.from_bytes("stdout", b"")], "reserved"),
        ("APPLICATION_OWNER", [ContainerLogFile.from_bytes("stdout", b"")], "reserved"),
        ("", [ContainerLogFile.from_bytes("stdout", b"")], "cannot be a container id"),
        (C1, [ContainerLogFile.from_bytes("x" * 70000, b"")], "65535"),
    ],
)
def test_bad_container_is_refused_before_anything_is_written(
    container_id: str, files: list[ContainerLogFile], message: str
) -> None:
    """A reserved or empty id, or a name writeUTF cannot carry, is refused up front: the
    writer stays OPEN and the file is still good."""
    sink = io.BytesIO()
    writer = AggregatedLogWriter(sink, "alice")
    before = len(sink.getvalue())
    with pytest.raises(InvalidLogInput, match=message):
        writer.add_container(container_id, files)
    assert len(sink.getvalue()) == before and writer.state is WriterState.OPEN
    writer.close()
    assert parse_aggregated_log(sink.getvalue()).containers == []


def test_container_cannot_be_added_twice() -> None:
    """Two records for one container would make readers print it twice: refused."""
    writer = AggregatedLogWriter(io.BytesIO(), "alice")
    writer.add_container(C1, [ContainerLogFile.from_bytes("stdout", b"a")])
    with pytest.raises(InvalidLogInput, match="already"):
        writer.add_container(C1, [ContainerLogFile.from_bytes("stderr", b"b")])


@pytest.mark.parametrize(
    ("owner", "acls", "message"),
    [
        ("", {}, "owner"),
        ("alice", {"READ": "bob"}, "unknown application access types"),
        ("a" * 70000, {}, "65535"),
    ],
)
def test_bad_owner_or_acls_are_refused(owner: str, acls: dict[str, str], message: str) -> None:
    """An empty or unencodable owner, or an access type YARN has no name for (readers parse
    them with ApplicationAccessType.valueOf), is refused before writing."""
    sink = io.BytesIO()
    with pytest.raises(InvalidLogInput, match=message):
        AggregatedLogWriter(sink, owner, acls)
    assert sink.getvalue() == b""


@pytest.mark.parametrize(
    ("name", "length", "source", "message"),
    [
        ("", 0, b"", "needs a name"),
        ("stdout", -1, io.BytesIO(), "negative length"),
        ("stdout", 3, b"ab", "2 bytes given, length 3"),
    ],
)
def test_bad_log_files_are_refused(name: str, length: int, source: bytes | io.BytesIO, message: str) -> None:
    """A log file needs a name and a length that is not negative and matches bytes given."""
    with pytest.raises(InvalidLogInput, match=message):
        ContainerLogFile(name, length, source)


def test_close_is_idempotent_and_ends_adding() -> None:
    """close() twice writes the trailer once; adding after close is a bug."""
    sink = io.BytesIO()
    writer = AggregatedLogWriter(sink, "alice")
    size = writer.close()
    assert writer.close() == size == len(sink.getvalue())
    assert writer.state is WriterState.CLOSED
    with pytest.raises(IllegalTransition):
        writer.add_container(C1, [ContainerLogFile.from_bytes("stdout", b"")])
    assert parse_aggregated_log(sink.getvalue()).owner == "alice"


# ---------------------------------------------------------------------------------------
# Where the file goes


@pytest.mark.parametrize(
    ("root", "user", "app", "node", "path"),
    [
        (
            "/tmp/logs",
            "alice",
            "application_1700000000000_0007",
            "node-1.example:8041",
            "/tmp/logs/alice/bucket-logs-tfile/0007/application_1700000000000_0007/node-1.example_8041",
        ),
        (
            "/tmp/logs/",
            "bob",
            "application_1700000000000_12345",
            "10.0.0.5:45454",
            "/tmp/logs/bob/bucket-logs-tfile/2345/application_1700000000000_12345/10.0.0.5_45454",
        ),
        (
            "/var/app-logs",
            "carol",
            ApplicationId(1700000000000, 20000),
            NodeId("h", 1),
            "/var/app-logs/carol/bucket-logs-tfile/0000/application_1700000000000_20000/h_1",
        ),
    ],
)
def test_remote_log_path_is_hadoop_35_tfile_layout(
    root: str, user: str, app: str | ApplicationId, node: str | NodeId, path: str
) -> None:
    """<root>/<user>/bucket-logs-tfile/<app sequence mod 10000, 4 digits>/<app>/<host>_<port>
    (the integration test asks Hadoop's LogAggregationUtils for the same paths)."""
    assert remote_log_path(root, user, app, node) == path


def test_remote_log_path_refuses_bad_ids_and_users() -> None:
    """Ids are parsed as YARN's; a user must name one directory."""
    with pytest.raises(MalformedId):
        remote_log_path("/tmp/logs", "alice", "app_1_1", "h:1")
    with pytest.raises(MalformedId):
        remote_log_path("/tmp/logs", "alice", "application_1_0001", "h")
    with pytest.raises(InvalidLogInput):
        remote_log_path("/tmp/logs", "../alice", "application_1_0001", "h:1")
