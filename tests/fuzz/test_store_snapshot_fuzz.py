"""Journal snapshot files (``ha/store_snapshot.py``) under hostile input: a follower loads what the leader sent,
so ``read`` over mutated valid snapshots and over any bytes after the header either raises BadSnapshot or
yields rows that fit the receiver's tables (their columns, types and nullability), never anything else."""

from __future__ import annotations

import io
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import MetaData, create_engine

from cortex_rm.ha import store_snapshot
from cortex_rm.ha.store_snapshot import BadSnapshot
from cortex_rm.roles.rm_stores import snapshot_databases
from tests.fuzz.fuzzing import fuzz_settings, mutated

_dir = tempfile.TemporaryDirectory(prefix="cortex-snapshot-fuzz-")


@cache
def _databases() -> list[tuple[str, MetaData]]:
    return snapshot_databases(f"sqlite:///{Path(_dir.name) / 'stores.sqlite'}")


@cache
def _valid() -> bytes:
    """A snapshot of the stores with two rows in every table (of every column type, nulls where allowed)."""
    dbs = _databases()
    for url, metadata in dbs:
        engine = create_engine(url)
        metadata.create_all(engine)
        with engine.begin() as conn:
            for table in metadata.sorted_tables:
                values = [{int: i + 1, str: f"s{i}", bytes: b"b%d" % i, bool: True} for i in range(2)]
                rows = [{c.name: None if c.nullable and i else values[i][c.type.python_type] for c in table.columns}
                        for i in range(2)]  # fmt: skip
                conn.execute(table.insert(), rows)
        engine.dispose()
    path = Path(_dir.name) / "valid.snap"
    store_snapshot.dump(dbs, path)
    return path.read_bytes()


def _check(data: bytes) -> None:
    try:
        for _, table, rows, _ in store_snapshot.read(io.BytesIO(data), _databases()):
            for row in rows:
                assert list(row) == [c.name for c in table.columns]
                for column in table.columns:
                    v = row[column.name]
                    assert (v is None and column.nullable) or type(v) is column.type.python_type
    except BadSnapshot:
        pass


@fuzz_settings(300)
@given(data=mutated(st.builds(_valid), max_mutations=4))
def test_mutated_snapshots_are_refused_or_fit_the_tables(data: bytes) -> None:
    _check(data)


@fuzz_settings(200)
@given(data=st.binary(max_size=200))
def test_any_bytes_after_the_header_are_refused_or_fit_the_tables(data: bytes) -> None:
    _check(store_snapshot.MAGIC + data)
