"""A node's stores as one snapshot file, and a snapshot file back into its stores (the journal's snapshots).

A node's copies of the RM's stores (``roles/rm_stores.py``) are SQLAlchemy tables in one or two
databases (the ledger's copy may have a URL of its own).  Their content at the node's applied mark
*is* its snapshot of the journal (``ha/journal.py``): ``dump`` writes every row of every table to a
file, which the leader sends a follower in chunks; the follower writes the chunks to a file of its
own and ``install`` replaces its tables' content with it.

**The file** is a sequence of records, each a u32 length (big-endian, at most ``MAX_RECORD_BYTES``)
and that many bytes::

    header  b"CRSNAP\\x00\\x01"                       (first, 8 bytes, no length)
    table   b"T" u16 database  str name  u16 n  str column * n   (the tables in each database's
                                                              metadata order: parents first)
    row     b"R" value * n                           (its table's columns, in that order)
    end     b"E" u64 rows                            (last: the rows in all)
    str     u16 length, UTF-8
    value   b"N" | b"I" i64 | b"D" f64 | b"0" | b"1" | b"S" u32 length, UTF-8 | b"B" u32 length, bytes

Rows are written in primary-key order, so equal stores give equal files.  **Reading** checks
everything before a row touches a table: the tables and their columns must be exactly the
receiver's (same schema), in its order, each value of its column's type (None only where the
column is nullable), the row count must match and nothing may follow.  ``install`` reads the
file twice: once to check it whole, then to load it, each database in one transaction (its
tables emptied, the rows inserted in batches).  Memory holds one batch at a time, on both sides.

**Crashes**: the journal marks its state ``stale`` on disk before ``install`` touches a table
and clears it after; a crash in between (one database replaced, the other not) leaves a node
that needs a new snapshot, never one that applies entries to a mix (``journal_snapshots.py``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from sqlalchemy import MetaData, Table, create_engine, select
from twisted.internet import defer

from cortex_rm.yarn.blocking import Runner

MAGIC = b"CRSNAP\x00\x01"
MAX_RECORD_BYTES = 32 * 1024 * 1024
_BATCH_ROWS = 500
_BATCH_BYTES = 4 * 1024 * 1024
_U16, _U32, _U64, _I64, _F64 = (struct.Struct(f) for f in (">H", ">I", ">Q", ">q", ">d"))

#: The databases a node's stores are in: each a SQLAlchemy URL and the tables of the stores there.
Databases = Sequence[tuple[str, MetaData]]


class BadSnapshot(ValueError):
    """A snapshot file that is not one of these stores (damaged, or another schema)."""


# ---------------------------------------------------------------- encoding


def _str(text: str) -> bytes:
    data = text.encode()
    return _U16.pack(len(data)) + data


def _value(value: Any) -> bytes:
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, int):
        return b"I" + _I64.pack(value)
    if isinstance(value, float):
        return b"D" + _F64.pack(value)
    if isinstance(value, str):
        data = value.encode()
        return b"S" + _U32.pack(len(data)) + data
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"B" + _U32.pack(len(value)) + bytes(value)
    raise TypeError(f"a snapshot holds no {type(value).__name__}")


def _record(out: IO[bytes], body: bytes) -> None:
    if len(body) > MAX_RECORD_BYTES:
        raise ValueError(f"a row of {len(body)} bytes is more than a snapshot record holds ({MAX_RECORD_BYTES})")
    out.write(_U32.pack(len(body)) + body)


def dump(databases: Databases, path: Path) -> int:
    """Write every row of ``databases`` to ``path`` (through a temporary file, then renamed); its size."""
    temporary = path.with_suffix(".tmp")
    rows = 0
    with open(temporary, "wb") as out:
        out.write(MAGIC)
        for number, (url, metadata) in enumerate(databases):
            engine = create_engine(url)
            try:
                metadata.create_all(engine)
                with engine.connect() as conn:  # (one read transaction: the database as of one moment)
                    for table in metadata.sorted_tables:
                        columns = [c.name for c in table.columns]
                        header = b"T" + _U16.pack(number) + _str(table.name) + _U16.pack(len(columns))
                        _record(out, header + b"".join(_str(c) for c in columns))
                        query = select(table).order_by(*table.primary_key.columns)
                        for row in conn.execution_options(yield_per=_BATCH_ROWS).execute(query):
                            _record(out, b"R" + b"".join(_value(v) for v in row))
                            rows += 1
            finally:
                engine.dispose()
        _record(out, b"E" + _U64.pack(rows))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    return path.stat().st_size


# ---------------------------------------------------------------- decoding


class _Reader:
    """One record's bytes, read field by field; BadSnapshot when one runs past its end."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise BadSnapshot("a snapshot record ends inside a field")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def unpack(self, form: struct.Struct) -> Any:
        return form.unpack(self.take(form.size))[0]

    def text(self, form: struct.Struct) -> str:
        try:
            return self.take(self.unpack(form)).decode()
        except UnicodeDecodeError:
            raise BadSnapshot("a snapshot string is not UTF-8") from None

    def value(self) -> Any:
        tag = self.take(1)
        simple = {b"N": None, b"0": False, b"1": True}
        if tag in simple:
            return simple[tag]
        if tag == b"I":
            return self.unpack(_I64)
        if tag == b"D":
            return self.unpack(_F64)
        if tag == b"S":
            return self.text(_U32)
        if tag == b"B":
            return self.take(self.unpack(_U32))
        raise BadSnapshot(f"a snapshot value of an unknown type {tag!r}")

    def done(self) -> None:
        if self.at != len(self.data):
            raise BadSnapshot(f"{len(self.data) - self.at} bytes follow a snapshot record's fields")


def _records(stream: IO[bytes]) -> Iterator[_Reader]:
    if stream.read(len(MAGIC)) != MAGIC:
        raise BadSnapshot("not a snapshot of the RM's stores (its header differs)")
    while True:
        head = stream.read(_U32.size)
        if not head:
            return
        if len(head) < _U32.size:
            raise BadSnapshot("a snapshot ends inside a record's length")
        (length,) = _U32.unpack(head)
        if length > MAX_RECORD_BYTES:
            raise BadSnapshot(f"a snapshot record of {length} bytes (at most {MAX_RECORD_BYTES})")
        body = stream.read(length)
        if len(body) < length:
            raise BadSnapshot("a snapshot ends inside a record")
        yield _Reader(body)


def _python_type(column: Any) -> type:
    try:
        kind: type = column.type.python_type
    except NotImplementedError:  # pragma: no cover - (every column of the stores has one)
        return object
    return kind


#: A batch of rows: the database, the table, the rows, and whether it is the table's last.
Batch = tuple[int, Table, list[dict[str, Any]], bool]


def read(stream: IO[bytes], databases: Databases) -> Iterator[Batch]:
    """The snapshot in ``stream`` as batches of rows, in order, every record checked (module docstring);
    BadSnapshot as soon as one is wrong.  Every table comes, if only as one empty last batch."""
    expected = [(n, t) for n, (_, metadata) in enumerate(databases) for t in metadata.sorted_tables]
    current: tuple[int, Table] | None = None
    batch: list[dict[str, Any]] = []
    size = rows = 0
    for record in _records(stream):
        kind = record.take(1)
        if kind == b"R":
            if current is None:
                raise BadSnapshot("a snapshot row before any table")
            row = {}
            for column in current[1].columns:
                value = record.value()
                if value is None and not column.nullable:
                    raise BadSnapshot(f"{current[1].name}.{column.name} may not be null")
                kind_of = _python_type(column)  # (a bool is an int to Python, not to a column)
                fits = isinstance(value, kind_of) and (kind_of is bool) == isinstance(value, bool)
                if value is not None and not fits:
                    raise BadSnapshot(f"{current[1].name}.{column.name} holds a {type(value).__name__}")
                row[column.name] = value
            record.done()
            batch.append(row)
            rows, size = rows + 1, size + len(record.data)
            if len(batch) >= _BATCH_ROWS or size >= _BATCH_BYTES:
                yield current[0], current[1], batch, False
                batch, size = [], 0
            continue
        if current is not None:
            yield current[0], current[1], batch, True
            batch, size, current = [], 0, None
        if kind == b"T":
            number, name = record.unpack(_U16), record.text(_U16)
            columns = [record.text(_U16) for _ in range(record.unpack(_U16))]
            record.done()
            if not expected or (number, name) != (expected[0][0], expected[0][1].name):
                want = f"{expected[0][1].name} of database {expected[0][0]}" if expected else "no more"
                raise BadSnapshot(f"a snapshot's table {name[:64]!r} of database {number}: {want} was expected")
            current = expected.pop(0)
            if columns != [c.name for c in current[1].columns]:
                raise BadSnapshot(f"the snapshot's {name} has other columns than this node's (another schema)")
        elif kind == b"E":
            total = record.unpack(_U64)
            record.done()
            if expected or total != rows:
                raise BadSnapshot(f"a snapshot ends with {len(expected)} tables missing, {rows} rows of {total}")
            if stream.read(1):
                raise BadSnapshot("bytes follow a snapshot's end")
            return
        else:
            raise BadSnapshot(f"a snapshot record of an unknown kind {kind!r}")
    raise BadSnapshot("a snapshot without its end")


def load(databases: Databases, path: Path) -> int:
    """Check the snapshot at ``path`` whole, then replace the content of ``databases`` with it (each in one
    transaction); the rows loaded."""
    with open(path, "rb") as stream:
        for _ in read(stream, databases):
            pass
    rows = 0
    engines = [create_engine(url) for url, _ in databases]
    try:
        for engine, (_, metadata) in zip(engines, databases):
            metadata.create_all(engine)
        with open(path, "rb") as stream:
            batches = read(stream, databases)
            for number, (engine, (_, metadata)) in enumerate(zip(engines, databases)):
                with engine.begin() as conn:
                    for table in reversed(metadata.sorted_tables):
                        conn.execute(table.delete())
                    for _ in metadata.sorted_tables:  # (the tables come in this order: checked in the first pass)
                        rows += _insert(conn, number, batches)
    finally:
        for engine in engines:
            engine.dispose()
    return rows


def _insert(conn: Any, number: int, batches: Iterator[Batch]) -> int:
    """Insert the next table's batches; its rows."""
    rows = 0
    for database, table, batch, last in batches:
        if database != number:
            raise BadSnapshot("the snapshot changed between its check and its load")
        if batch:
            conn.execute(table.insert(), batch)
            rows += len(batch)
        if last:
            return rows
    raise BadSnapshot("the snapshot changed between its check and its load")


class StoreSnapshots:
    """A node's snapshot files in ``directory``: its own (``dump``, ``read_chunk``) and the one it receives
    (``write_chunk``, ``install``); the work runs on ``run`` (the stores' thread)."""

    def __init__(self, databases: Databases, directory: Path, run: Runner) -> None:
        self.databases, self.run = list(databases), run
        self.own, self.received = directory / "rm-snapshot.bin", directory / "rm-snapshot-received.bin"

    def dump(self) -> defer.Deferred[int]:
        return self.run(lambda: dump(self.databases, self.own))

    def read_chunk(self, offset: int, length: int) -> defer.Deferred[bytes]:
        def read_sync() -> bytes:
            with open(self.own, "rb") as f:
                f.seek(offset)
                return f.read(length)

        return self.run(read_sync)

    def write_chunk(self, offset: int, data: bytes) -> defer.Deferred[None]:
        def write_sync() -> None:
            with open(self.received, "r+b" if offset else "wb") as f:
                f.truncate(offset)
                f.seek(offset)
                f.write(data)

        return self.run(write_sync)

    def install(self) -> defer.Deferred[int]:
        """Load the file received into the stores; it is deleted once they hold it (disk holds one at a time)."""

        def install_sync() -> int:
            rows = load(self.databases, self.received)
            self.received.unlink()
            return rows

        return self.run(install_sync)
