"""One SQLAlchemy engine for a store, made on first use (on the thread the store's runner uses, so SQLite files
are created there) with the store's tables, and disposed when the store closes."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, MetaData, create_engine, event


class LazyEngine:
    """``get()`` makes the engine for ``url`` once, creating ``metadata``'s tables; ``on_sqlite_connect(dbapi
    connection, record)`` runs on each new connection of an SQLite engine (pragmas).  ``dispose`` closes its
    connections; a later ``get`` makes a new engine."""

    def __init__(
        self, url: str, metadata: MetaData, on_sqlite_connect: Callable[[object, object], None] | None = None
    ) -> None:
        self.url, self.metadata, self.on_sqlite_connect = url, metadata, on_sqlite_connect
        self._engine: Engine | None = None

    def get(self) -> Engine:
        if self._engine is None:
            engine = create_engine(self.url, future=True)
            if self.on_sqlite_connect is not None and engine.dialect.name == "sqlite":
                event.listen(engine, "connect", self.on_sqlite_connect)
            self.metadata.create_all(engine)
            self._engine = engine
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
