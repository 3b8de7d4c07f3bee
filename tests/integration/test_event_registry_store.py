"""One contract for every RegistryStore: memory, SQLite (a file), a real PostgreSQL server, and SQLite
through the RM's journal (``ha/replicated_registry.py``, a journal of one eligible node).

Each test applies ``RegistryChange``s and reads back what an RM restarted on the same
database would load (for SQL: a new store object on the same URL; through the journal:
that too, written by the same journal, which goes on taking the first store's changes; the
journal's restart from its own file is ``tests/unit/test_rm_journal.py``'s).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.events.functions import FunctionLimits, FunctionSpec
from cortex_rm.events.registry import RegistryChange
from cortex_rm.events.registry_store import MemoryRegistryStore, RegistryStore, SqlRegistryStore
from cortex_rm.ha import replicated_registry
from cortex_rm.ha.journal_applier import journal_applier
from cortex_rm.roles.rm_journal import RmJournal
from tests.support.postgres import PostgresServer, postgres_server  # noqa: F401 (the session fixture)
from tests.support.rm_core import result_of
from tests.support.single_journal import leading_journal

pytestmark = pytest.mark.integration


def spec(name: str = "hello", version: int = 1, **fields: object) -> FunctionSpec:
    base = FunctionSpec(name, "alice", version, f"/user/alice/{name}.py", 120, 1_700_000_000_000,
                        registered_ms=1_700_000_000_500 + version)  # fmt: skip
    return replace(base, **fields)  # type: ignore[arg-type]


@dataclass
class StoreUnderTest:
    store: RegistryStore
    reopen: Callable[[], RegistryStore]

    def reloaded(self) -> dict[tuple[str, int], FunctionSpec]:
        return {(s.name, s.version): s for s in result_of(self.reopen().load())}


@pytest.fixture(params=["memory", "sqlite", "postgresql", "replicated"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    opened: list[RegistryStore] = []
    journals: list[RmJournal] = []
    if request.param == "memory":
        memory = MemoryRegistryStore()
        yield StoreUnderTest(memory, lambda: memory)
        return
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database()
    else:
        url = f"sqlite:///{tmp_path / 'rm-state.sqlite'}"

    def open_sql() -> RegistryStore:
        store = SqlRegistryStore(url, synchronous_runner)
        opened.append(store)
        return store

    def open_replicated() -> RegistryStore:
        local = open_sql()
        if not journals:  # (a reopened store reads the same copy, written by the same journal, as an SQL one does)
            apply = journal_applier({replicated_registry.STORE: replicated_registry.registry_applier(local)})
            journals.append(leading_journal(tmp_path / "journal.sqlite", apply))
        return replicated_registry.ReplicatedRegistryStore(local, journals[0])

    if request.param == "replicated":
        yield StoreUnderTest(open_replicated(), open_replicated)
    else:
        yield StoreUnderTest(open_sql(), open_sql)
    for journal in journals:
        journal.stop()
        journal.store.close()
    for store in opened:
        store.close()


def test_a_fresh_store_loads_nothing(stores: StoreUnderTest) -> None:
    assert stores.reloaded() == {}


def test_every_field_of_a_registration_survives_a_restart(stores: StoreUnderTest) -> None:
    full = spec(
        code_kind="zip", handler="main.handle", limits=FunctionLimits(512, 2.5, 8), replicas=3, mode="vote",
        schedule="*/5 * * * *", grants=frozenset({"bob", "carol"}),
    )  # fmt: skip
    result_of(stores.store.apply(RegistryChange("hello", full)))
    assert stores.reloaded() == {("hello", 1): full}


def test_versions_are_kept_and_forgotten_as_the_changes_say(stores: StoreUnderTest) -> None:
    for version in (1, 2, 3):
        result_of(stores.store.apply(RegistryChange("hello", spec(version=version))))
    result_of(stores.store.apply(RegistryChange("other", spec("other"))))
    result_of(stores.store.apply(RegistryChange("hello", spec(version=4), forgotten=(1, 2))))
    assert sorted(stores.reloaded()) == [("hello", 3), ("hello", 4), ("other", 1)]


def test_a_tombstone_replaces_every_version_and_a_forgotten_name_is_gone(stores: StoreUnderTest) -> None:
    result_of(stores.store.apply(RegistryChange("hello", spec(version=1))))
    result_of(stores.store.apply(RegistryChange("hello", spec(version=2))))
    tombstone = spec(version=3, deleted=True)
    result_of(stores.store.apply(RegistryChange("hello", tombstone, forgotten=(1, 2))))
    assert stores.reloaded() == {("hello", 3): tombstone}
    result_of(stores.store.apply(RegistryChange("hello", None, forgotten=(3,))))
    assert stores.reloaded() == {}


def test_saving_a_version_again_replaces_it(stores: StoreUnderTest) -> None:
    result_of(stores.store.apply(RegistryChange("hello", spec(version=1))))
    changed = spec(version=1, handler="other")
    result_of(stores.store.apply(RegistryChange("hello", changed)))
    assert stores.reloaded() == {("hello", 1): changed}
