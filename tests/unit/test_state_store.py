"""One contract for every RMStateStore: the memory store and the SQL store (SQLite file).

Every test runs against both; the ``stores`` fixture gives a store and a way to
"restart" onto the same state (for SQL: a new store object on the same file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cortex_rm.allocator.state_store import (
    MemoryStateStore,
    RMStateStore,
    SqlStateStore,
    StoredState,
    synchronous_runner,
)
from tests.support.rm_core import ManualRunner, result_of


@dataclass
class StoreUnderTest:
    store: RMStateStore
    reopen: Callable[[], RMStateStore]  # the store an RM restarted on the same state would use

    def load(self) -> StoredState:
        return result_of(self.store.load())


@pytest.fixture(params=["memory", "sql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    opened: list[RMStateStore] = []
    if request.param == "memory":
        memory = MemoryStateStore()
        opened.append(memory)
        yield StoreUnderTest(memory, lambda: memory)
    else:
        url = f"sqlite:///{tmp_path / 'rm-state.sqlite'}"

        def open_sql() -> RMStateStore:
            store = SqlStateStore(url, synchronous_runner)
            opened.append(store)
            return store

        yield StoreUnderTest(open_sql(), open_sql)
    for store in opened:
        store.close()


def _doc(app_number: int, state: str = "ACCEPTED", **extra: Any) -> dict[str, Any]:
    return {
        "app_id": f"application_1700000000000_{app_number:04d}",
        "state": state,
        "tags": ["a", "b"],
        "am_resource": [1024, 1],
        "attempts": [{"attempt_id": "x", "state": "SCHEDULED"}],
        "progress": 0.5,
        "target_state": None,
        **extra,
    }


def test_fresh_store_holds_nothing(stores: StoreUnderTest) -> None:
    """A new store has no cluster timestamp, a zero high-water mark and no applications."""
    assert stores.load() == StoredState(None, 0, [])


def test_cluster_timestamp_is_kept(stores: StoreUnderTest) -> None:
    """The cluster timestamp saved at first start is what later loads return."""
    result_of(stores.store.save_cluster_timestamp(1700000000123))
    assert stores.load().cluster_timestamp == 1700000000123
    assert result_of(stores.reopen().load()).cluster_timestamp == 1700000000123


def test_high_water_mark_only_rises(stores: StoreUnderTest) -> None:
    """Saving a lower high-water mark than the stored one leaves the higher one in place."""
    result_of(stores.store.save_app_id_high_water(100))
    result_of(stores.store.save_app_id_high_water(300))
    result_of(stores.store.save_app_id_high_water(200))
    assert stores.load().app_id_high_water == 300
    assert result_of(stores.reopen().load()).app_id_high_water == 300


def test_epoch_only_rises_and_survives_a_reopen(stores: StoreUnderTest) -> None:
    """The RM's epoch starts at 0, is kept across a reopen, and a lower one never replaces it."""
    assert stores.load().epoch == 0
    result_of(stores.store.save_epoch(2))
    result_of(stores.store.save_epoch(1))
    assert stores.load().epoch == 2
    assert result_of(stores.reopen().load()).epoch == 2


def test_master_keys_are_kept_and_replaced(stores: StoreUnderTest) -> None:
    """Token master keys survive a reopen; saving a name again replaces its key."""
    result_of(stores.store.save_master_key("amrm", 7, b"\x00" * 20))
    result_of(stores.store.save_master_key("container", 9, b"\xff" * 20))
    result_of(stores.store.save_master_key("amrm", 8, b"\x01" * 20))
    expected = {"amrm": (8, b"\x01" * 20), "container": (9, b"\xff" * 20)}
    assert stores.load().master_keys == expected
    assert result_of(stores.reopen().load()).master_keys == expected


def test_saved_application_loads_with_its_document_and_context(stores: StoreUnderTest) -> None:
    """An application loads back with an equal document and the exact context bytes."""
    context = bytes(range(256))
    result_of(stores.store.save_application(_doc(1), context))
    assert stores.load().applications == [(_doc(1), context)]


def test_saving_again_replaces_the_application(stores: StoreUnderTest) -> None:
    """A second save under the same app id replaces the first; there is still one record."""
    result_of(stores.store.save_application(_doc(1, "NEW_SAVING"), b"ctx-1"))
    result_of(stores.store.save_application(_doc(1, "KILLED", diagnostics="killed"), b"ctx-2"))
    assert stores.load().applications == [(_doc(1, "KILLED", diagnostics="killed"), b"ctx-2")]


def test_applications_load_in_id_order_whatever_the_save_order(stores: StoreUnderTest) -> None:
    """Applications come back ordered by application number, not by when they were saved."""
    for number in (3, 10, 1, 2):
        result_of(stores.store.save_application(_doc(number), b""))
    result_of(stores.store.save_application(_doc(3, "FINISHED"), b""))
    loaded = [doc["app_id"] for doc, _ in stores.load().applications]
    assert loaded == [_doc(n)["app_id"] for n in (1, 2, 3, 10)]


def test_loaded_documents_are_copies(stores: StoreUnderTest) -> None:
    """Changing a document after saving it, or one returned by load, does not change the store."""
    doc = _doc(1)
    result_of(stores.store.save_application(doc, b""))
    doc["state"] = "CHANGED"
    loaded, _ = stores.load().applications[0]
    loaded["attempts"].append("junk")
    assert stores.load().applications == [(_doc(1), b"")]


def test_reopened_store_sees_everything(stores: StoreUnderTest) -> None:
    """A store opened again on the same state (an RM restart) loads all that was saved before."""
    result_of(stores.store.save_cluster_timestamp(1700000000000))
    result_of(stores.store.save_app_id_high_water(200))
    result_of(stores.store.save_application(_doc(2, "FAILED"), b"two"))
    result_of(stores.store.save_application(_doc(1, "KILLED"), b"one"))
    stores.store.close()
    again = result_of(stores.reopen().load())
    assert again == StoredState(1700000000000, 200, [(_doc(1, "KILLED"), b"one"), (_doc(2, "FAILED"), b"two")])


# -- the SQL store's runner ----------------------------------------------------------


def test_sql_store_does_its_sql_only_through_the_runner(tmp_path: Path) -> None:
    """The SQL store never touches the database on the caller's thread: every job waits for the runner."""
    path = tmp_path / "rm-state.sqlite"
    runner = ManualRunner()
    store = SqlStateStore(f"sqlite:///{path}", runner)
    saved = store.save_application(_doc(1), b"ctx")
    assert not path.exists()
    assert not saved.called
    runner.run_next()
    assert result_of(saved) is None
    loaded = store.load()
    assert not loaded.called
    runner.run_next()
    assert result_of(loaded).applications == [(_doc(1), b"ctx")]
    store.close()


def test_removed_application_is_gone_after_a_reopen(stores: StoreUnderTest) -> None:
    """remove_application forgets one application and keeps the others."""
    result_of(stores.store.save_application(_doc(1), b"one"))
    result_of(stores.store.save_application(_doc(2), b"two"))
    result_of(stores.store.remove_application(_doc(1)["app_id"]))
    result_of(stores.store.remove_application("application_1_0404"))  # unknown: nothing happens
    assert [d["app_id"] for d, _ in result_of(stores.reopen().load()).applications] == [_doc(2)["app_id"]]


def test_delegation_tokens_are_kept_and_forgotten_and_their_sequence_only_rises(stores: StoreUnderTest) -> None:
    """Issued delegation tokens load back by sequence number after a reopen; removed ones are gone,
    but the sequence high-water mark stays at the highest number ever saved (never reused)."""
    result_of(stores.store.save_delegation_token(1, {"owner": "alice", "max_ms": 10}))
    result_of(stores.store.save_delegation_token(3, {"owner": "bob", "max_ms": 20}))
    result_of(stores.store.save_delegation_token(2, {"owner": "alice", "max_ms": 30}))
    result_of(stores.store.remove_delegation_tokens([3, 99]))
    again = result_of(stores.reopen().load())
    assert again.delegation_tokens == {1: {"owner": "alice", "max_ms": 10}, 2: {"owner": "alice", "max_ms": 30}}
    assert again.delegation_sequence == 3


def test_a_load_without_applications_has_the_keys_and_tokens_alone(stores: StoreUnderTest) -> None:
    """``load(applications=False)`` (a standby checking credentials) reads the keys, tokens and marks, and no
    application; a full load still has them all."""
    result_of(stores.store.save_application(_doc(1), b"ctx"))
    result_of(stores.store.save_master_key("delegation", 4, b"\x02" * 20))
    result_of(stores.store.save_delegation_token(1, {"owner": "alice", "max_ms": 10}))
    light = result_of(stores.store.load(applications=False))
    assert light.applications == [] and light.master_keys == {"delegation": (4, b"\x02" * 20)}
    assert light.delegation_tokens == {1: {"owner": "alice", "max_ms": 10}} and light.delegation_sequence == 1
    assert stores.load().applications == [(_doc(1), b"ctx")]
