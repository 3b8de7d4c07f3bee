"""Where the RM keeps what must survive a restart: the cluster timestamp, the
application id high-water mark, every application, the token master keys, the
users' live delegation tokens and the RM's epoch (its start count, which new
container ids carry so none repeats across restarts).

Two implementations share one contract (``tests/unit/test_state_store.py`` runs
the same suite on both): ``MemoryStateStore`` for unit tests and
``SqlStateStore`` over SQLAlchemy (SQLite by default, any SQLAlchemy URL works).
SQL work never runs on the reactor thread: the store is given a ``run`` callable
that executes a blocking function elsewhere and returns a Deferred —
``roles/threads.thread_runner`` builds the production one (one dedicated thread,
so writes are applied in the order they were issued).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, Text, select
from twisted.internet import defer

from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.sql_engine import LazyEngine

T = TypeVar("T")


@dataclass
class StoredState:
    """Everything loaded at start."""

    cluster_timestamp: int | None = None
    app_id_high_water: int = 0  # ids up to this one may have been handed out
    applications: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)
    # token master keys by name ("amrm", "container"): (key id, secret)
    master_keys: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    # users' live delegation tokens by sequence number (``UserCredentials``' documents)
    delegation_tokens: dict[int, dict[str, Any]] = field(default_factory=dict)
    delegation_sequence: int = 0  # sequence numbers up to this one have been used
    epoch: int = 0  # the epoch the next RM start takes (YARN's RMStateStore epoch)


class RMStateStore(Protocol):
    def load(self, applications: bool = True) -> defer.Deferred[StoredState]:
        """Fires with a ``StoredState``; ``applications`` False leaves its applications out (what checking
        credentials needs: the keys and tokens, without reading every application)."""

    def save_cluster_timestamp(self, timestamp: int) -> defer.Deferred[None]:
        """Record the cluster timestamp chosen at the very first start."""

    def save_app_id_high_water(self, high_water: int) -> defer.Deferred[None]:
        """Record that ids up to ``high_water`` may be handed out (never lowered)."""

    def save_application(self, document: dict[str, Any], context: bytes) -> defer.Deferred[None]:
        """Insert or replace one application (keyed by ``document['app_id']``)."""

    def save_master_key(self, name: str, key_id: int, secret: bytes) -> defer.Deferred[None]:
        """Keep a token master key, so tokens issued before a restart stay valid after it."""

    def remove_application(self, app_id: str) -> defer.Deferred[None]:
        """Forget an application (an old completed one beyond the RM's limit)."""

    def save_delegation_token(self, sequence: int, document: dict[str, Any]) -> defer.Deferred[None]:
        """Keep a delegation token that was issued (and raise the sequence high-water mark to it)."""

    def remove_delegation_tokens(self, sequences: list[int]) -> defer.Deferred[None]:
        """Forget delegation tokens (revoked, cancelled or expired): they authenticate nobody any more."""

    def save_epoch(self, epoch: int) -> defer.Deferred[None]:
        """Record the epoch the next start takes (never lowered)."""

    def close(self) -> None:
        """Release connections and threads."""


class MemoryStateStore:
    """An in-process store: complete and synchronous, for unit tests and ``:memory:`` runs."""

    def __init__(self) -> None:
        self.state = StoredState()
        self._apps: dict[str, tuple[dict[str, Any], bytes]] = {}

    def load(self, applications: bool = True) -> defer.Deferred[StoredState]:
        # in application-number order, as the SQL store's ORDER BY seq
        ordered = sorted(self._apps.values(), key=lambda dc: _app_number(dc[0]["app_id"])) if applications else []
        apps = [(json.loads(json.dumps(d)), c) for d, c in ordered]
        tokens = {seq: json.loads(json.dumps(d)) for seq, d in self.state.delegation_tokens.items()}
        return defer.succeed(
            StoredState(
                self.state.cluster_timestamp,
                self.state.app_id_high_water,
                apps,
                dict(self.state.master_keys),
                tokens,
                self.state.delegation_sequence,
                self.state.epoch,
            )
        )

    def save_cluster_timestamp(self, timestamp: int) -> defer.Deferred[None]:
        self.state.cluster_timestamp = timestamp
        return defer.succeed(None)

    def save_app_id_high_water(self, high_water: int) -> defer.Deferred[None]:
        self.state.app_id_high_water = max(self.state.app_id_high_water, high_water)
        return defer.succeed(None)

    def save_application(self, document: dict[str, Any], context: bytes) -> defer.Deferred[None]:
        self._apps[document["app_id"]] = (json.loads(json.dumps(document)), context)
        return defer.succeed(None)

    def save_master_key(self, name: str, key_id: int, secret: bytes) -> defer.Deferred[None]:
        self.state.master_keys[name] = (key_id, secret)
        return defer.succeed(None)

    def remove_application(self, app_id: str) -> defer.Deferred[None]:
        self._apps.pop(app_id, None)
        return defer.succeed(None)

    def save_delegation_token(self, sequence: int, document: dict[str, Any]) -> defer.Deferred[None]:
        self.state.delegation_tokens[sequence] = json.loads(json.dumps(document))
        self.state.delegation_sequence = max(self.state.delegation_sequence, sequence)
        return defer.succeed(None)

    def remove_delegation_tokens(self, sequences: list[int]) -> defer.Deferred[None]:
        for sequence in sequences:
            self.state.delegation_tokens.pop(sequence, None)
        return defer.succeed(None)

    def save_epoch(self, epoch: int) -> defer.Deferred[None]:
        self.state.epoch = max(self.state.epoch, epoch)
        return defer.succeed(None)

    def close(self) -> None:
        pass


_MASTER_KEY_PREFIX = "master_key."
_metadata = MetaData()
_meta = Table(
    "rm_meta",
    _metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)
_applications = Table(
    "rm_applications",
    _metadata,
    Column("app_id", String(64), primary_key=True),
    Column("state", String(32), nullable=False),
    Column("document", Text, nullable=False),
    Column("submission_context", LargeBinary, nullable=False),
    Column("seq", Integer, nullable=False),
)
_delegation_tokens = Table(
    "rm_delegation_tokens",
    _metadata,
    Column("sequence", Integer, primary_key=True, autoincrement=False),
    Column("document", Text, nullable=False),
)


class SqlStateStore:
    """The store over SQLAlchemy; every method runs its SQL through ``run``."""

    def __init__(self, url: str, run: Runner) -> None:
        self.url = url
        self._run = run
        self._engine = LazyEngine(url, _metadata)

    def load(self, applications: bool = True) -> defer.Deferred[StoredState]:
        def load_sync() -> StoredState:
            with self._engine.get().connect() as conn:
                meta = dict(conn.execute(select(_meta.c.key, _meta.c.value)).all())
                rows = conn.execute(
                    select(_applications.c.document, _applications.c.submission_context).order_by(_applications.c.seq)
                ).all() if applications else []
                tokens = {seq: json.loads(d) for seq, d in conn.execute(select(_delegation_tokens)).all()}
            timestamp = int(meta["cluster_timestamp"]) if "cluster_timestamp" in meta else None
            high_water = int(meta.get("app_id_high_water", 0))
            keys = {}
            for key, value in meta.items():
                if key.startswith(_MASTER_KEY_PREFIX):
                    key_id, secret = value.split(":", 1)
                    keys[key[len(_MASTER_KEY_PREFIX) :]] = (int(key_id), bytes.fromhex(secret))
            apps = [(json.loads(d), bytes(c)) for d, c in rows]
            sequence = int(meta.get("delegation_sequence", 0))
            epoch = int(meta.get("epoch", 0))
            return StoredState(timestamp, high_water, apps, keys, tokens, sequence, epoch)

        return self._run(load_sync)

    def _put_meta(self, key: str, value: str, only_if_larger: bool = False) -> defer.Deferred[None]:
        def put_sync() -> None:
            with self._engine.get().begin() as conn:
                old = conn.execute(select(_meta.c.value).where(_meta.c.key == key)).scalar_one_or_none()
                if old is None:
                    conn.execute(_meta.insert().values(key=key, value=value))
                elif not only_if_larger or int(value) > int(old):
                    conn.execute(_meta.update().where(_meta.c.key == key).values(value=value))

        return self._run(put_sync)

    def save_cluster_timestamp(self, timestamp: int) -> defer.Deferred[None]:
        return self._put_meta("cluster_timestamp", str(timestamp))

    def save_master_key(self, name: str, key_id: int, secret: bytes) -> defer.Deferred[None]:
        return self._put_meta(_MASTER_KEY_PREFIX + name, f"{key_id}:{secret.hex()}")

    def remove_application(self, app_id: str) -> defer.Deferred[None]:
        def remove_sync() -> None:
            with self._engine.get().begin() as conn:
                conn.execute(_applications.delete().where(_applications.c.app_id == app_id))

        return self._run(remove_sync)

    def save_delegation_token(self, sequence: int, document: dict[str, Any]) -> defer.Deferred[None]:
        text = json.dumps(document, sort_keys=True)

        def save_sync() -> None:
            with self._engine.get().begin() as conn:
                conn.execute(_delegation_tokens.delete().where(_delegation_tokens.c.sequence == sequence))
                conn.execute(_delegation_tokens.insert().values(sequence=sequence, document=text))

        d = self._run(save_sync)
        d.addCallback(lambda _: self._put_meta("delegation_sequence", str(sequence), only_if_larger=True))
        return d

    def remove_delegation_tokens(self, sequences: list[int]) -> defer.Deferred[None]:
        def remove_sync() -> None:
            with self._engine.get().begin() as conn:
                conn.execute(_delegation_tokens.delete().where(_delegation_tokens.c.sequence.in_(sequences)))

        return self._run(remove_sync)

    def save_app_id_high_water(self, high_water: int) -> defer.Deferred[None]:
        return self._put_meta("app_id_high_water", str(high_water), only_if_larger=True)

    def save_epoch(self, epoch: int) -> defer.Deferred[None]:
        return self._put_meta("epoch", str(epoch), only_if_larger=True)

    def save_application(self, document: dict[str, Any], context: bytes) -> defer.Deferred[None]:
        app_id, state, text = document["app_id"], document["state"], json.dumps(document, sort_keys=True)
        seq = _app_number(app_id)

        def save_sync() -> None:
            with self._engine.get().begin() as conn:
                updated = conn.execute(
                    _applications.update()
                    .where(_applications.c.app_id == app_id)
                    .values(state=state, document=text, submission_context=context)
                ).rowcount
                if not updated:
                    conn.execute(
                        _applications.insert().values(
                            app_id=app_id, state=state, document=text, submission_context=context, seq=seq
                        )
                    )

        return self._run(save_sync)

    def close(self) -> None:
        self._engine.dispose()


def _app_number(app_id: str) -> int:
    """The sequence number of ``application_<timestamp>_<number>``: the order applications load in."""
    return int(app_id.rsplit("_", 1)[1])


def synchronous_runner(func: Callable[[], T]) -> defer.Deferred[T]:
    """Run ``func`` right away (tests): a Deferred already fired with its result or failure."""
    return defer.maybeDeferred(func)
