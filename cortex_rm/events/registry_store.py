"""Where the RM keeps the function registry so that it survives a restart: one row per kept version.

Two implementations share one contract (``tests/integration/test_event_registry_store.py``
runs the same suite on memory, SQLite and PostgreSQL): ``MemoryRegistryStore`` and
``SqlRegistryStore`` over SQLAlchemy, on the RM's state-store URL (the table
``event_functions`` beside the RM's and the NameNode's).  As the RM's state store, SQL
work runs through a ``Runner`` (one thread, so changes commit in the order the registry
made them).  Each ``RegistryChange`` is one transaction: the saved version written (or
replaced), the forgotten ones deleted.  A row holds the registration's JSON
(``FunctionSpec.encode``); ``load`` decodes every row, so a row that no longer decodes
fails the start loudly rather than dropping a function.
"""

from __future__ import annotations

import json
from typing import Protocol

from sqlalchemy import BigInteger, Boolean, Column, MetaData, String, Table, Text, delete, select
from twisted.internet import defer

from cortex_rm.events.functions import FunctionSpec
from cortex_rm.events.registry import RegistryChange
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.sql_engine import LazyEngine


class RegistryStore(Protocol):
    def load(self) -> defer.Deferred[list[FunctionSpec]]:
        """Fires with every kept registration (any order; empty at the very first start)."""

    def apply(self, change: RegistryChange) -> defer.Deferred[None]:
        """Persist one change atomically."""

    def close(self) -> None:
        """Release connections."""


class MemoryRegistryStore:
    """An in-process store with the same contract, for unit tests."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], bytes] = {}
        self.transactions = 0

    def load(self) -> defer.Deferred[list[FunctionSpec]]:
        return defer.succeed([FunctionSpec.decode(data) for data in self.rows.values()])

    def apply(self, change: RegistryChange) -> defer.Deferred[None]:
        for version in change.forgotten:
            self.rows.pop((change.name, version), None)
        if change.saved is not None:
            self.rows[(change.name, change.saved.version)] = change.saved.encode()
        self.transactions += 1
        return defer.succeed(None)

    def close(self) -> None:
        pass


_metadata = MetaData()
_functions = Table(
    "event_functions",
    _metadata,
    Column("name", String(64), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", String(64), nullable=False, index=True),
    Column("deleted", Boolean, nullable=False),
    Column("document", Text, nullable=False),
)


class SqlRegistryStore:
    """The store over SQLAlchemy; every method runs its SQL through ``run``."""

    def __init__(self, url: str, run: Runner) -> None:
        self.url = url
        self._run = run
        self._engine = LazyEngine(url, _metadata)

    def load(self) -> defer.Deferred[list[FunctionSpec]]:
        def load_sync() -> list[FunctionSpec]:
            with self._engine.get().connect() as conn:
                rows = conn.execute(select(_functions.c.document)).scalars().all()
            return [FunctionSpec.from_json(json.loads(text)) for text in rows]

        return self._run(load_sync)

    def apply(self, change: RegistryChange) -> defer.Deferred[None]:
        saved = change.saved
        row = None
        if saved is not None:
            row = {"name": saved.name, "version": saved.version, "owner": saved.owner, "deleted": saved.deleted,
                   "document": saved.encode().decode()}  # fmt: skip
        gone = set(change.forgotten) | ({saved.version} if saved is not None else set())

        def apply_sync() -> None:
            with self._engine.get().begin() as conn:
                if gone:
                    versions = _functions.c.version.in_(sorted(gone))
                    conn.execute(delete(_functions).where(_functions.c.name == change.name, versions))
                if row is not None:
                    conn.execute(_functions.insert().values(**row))

        return self._run(apply_sync)

    def close(self) -> None:
        self._engine.dispose()
