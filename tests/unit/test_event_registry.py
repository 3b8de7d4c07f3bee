"""The function registry's rules (``events/registry.py``): names first come first served, versions,
tombstones, reading rights, kept versions, bounds, and the state a restart rebuilds from the store."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_rm.dht.record_store import MAX_VALUE_BYTES
from cortex_rm.events.functions import FunctionSpec, InvalidFunction
from cortex_rm.events.registration import RegistrationRequest
from cortex_rm.events.registry import (
    MAX_SCHEDULED,
    DAY_MS,
    FunctionAccessDenied,
    FunctionNotFound,
    FunctionRegistry,
    RegistryChange,
    RegistryFull,
    RegistryLimits,
    UnknownRegistration,
)
from cortex_rm.events.registry_store import MemoryRegistryStore
from tests.support.rm_core import result_of

NOW = 1_700_000_000_000


def request(path: str = "/user/alice/hello.py", **fields: object) -> RegistrationRequest:
    return RegistrationRequest(code_path=path, **fields)  # type: ignore[arg-type]


def register(registry: FunctionRegistry, name: str, user: str, now: int = NOW, **fields: object) -> FunctionSpec:
    change = registry.register(name, user, request(**fields), 100, NOW - 5, now)
    assert change.saved is not None and change.name == name
    return change.saved


def test_the_first_registrant_owns_a_name_and_registering_again_makes_the_next_version() -> None:
    registry = FunctionRegistry()
    first = register(registry, "hello", "alice")
    assert (first.owner, first.version, first.registered_ms) == ("alice", 1, NOW)
    assert (first.code_length, first.code_mtime_ms) == (100, NOW - 5)
    second = register(registry, "hello", "alice", now=NOW + 1, handler="main")
    assert (second.version, second.handler) == (2, "main")
    assert registry.current("hello") == second


def test_another_user_cannot_take_a_registered_name() -> None:
    registry = FunctionRegistry()
    register(registry, "hello", "alice")
    with pytest.raises(FunctionAccessDenied, match="registered by another user"):
        register(registry, "hello", "bob")
    assert registry.current("hello").owner == "alice"  # type: ignore[union-attr]


def test_a_deletion_leaves_a_tombstone_and_frees_the_name_with_versions_going_on() -> None:
    """The tombstone is the next version, deleted; bob may then take the name, at the version after it."""
    registry = FunctionRegistry()
    register(registry, "hello", "alice")
    register(registry, "hello", "alice")
    with pytest.raises(FunctionAccessDenied, match="may not delete"):
        registry.delete("hello", "bob", NOW)
    change = registry.delete("hello", "alice", NOW + 10)
    assert change.saved is not None and change.forgotten == (1, 2)
    tombstone = change.saved
    assert (tombstone.version, tombstone.deleted, tombstone.owner, tombstone.registered_ms) == (3, True, "alice", NOW + 10)
    with pytest.raises(FunctionNotFound):
        registry.get("hello", "alice")
    with pytest.raises(FunctionNotFound):
        registry.delete("hello", "alice", NOW)
    assert registry.owned("alice") == []
    taken = registry.register("hello", "bob", request(), 1, 1, NOW + 20)
    assert taken.saved is not None and (taken.saved.owner, taken.saved.version) == ("bob", 4)
    assert taken.forgotten == (3,)  # the tombstone is no longer needed: a newer record wins in the ring


def test_an_unknown_name_cannot_be_deleted_or_read() -> None:
    registry = FunctionRegistry()
    with pytest.raises(FunctionNotFound):
        registry.delete("nope", "alice", NOW)
    with pytest.raises(FunctionNotFound):
        registry.get("nope", "alice")


def test_the_owner_and_the_users_she_granted_may_read_a_registration() -> None:
    registry = FunctionRegistry()
    spec = register(registry, "hello", "alice", grants=frozenset({"bob"}))
    assert registry.get("hello", "alice") == spec == registry.get("hello", "bob")
    with pytest.raises(FunctionAccessDenied, match="not granted to carol"):
        registry.get("hello", "carol")


def test_a_user_lists_her_own_live_functions_by_name() -> None:
    registry = FunctionRegistry()
    for name, user in (("b", "alice"), ("a", "alice"), ("c", "bob"), ("d", "alice")):
        register(registry, name, user)
    registry.delete("d", "alice", NOW)
    assert [s.name for s in registry.owned("alice")] == ["a", "b"]
    assert [s.name for s in registry.owned("bob")] == ["c"]
    assert registry.owned("carol") == []
    assert registry.names() == ["a", "b", "c", "d"]  # the tombstone stays in the ring's set


def test_kept_versions_stay_valid_for_executors_until_a_deletion() -> None:
    """With 3 kept versions, v2..v4 are held after v4; v1 is forgotten; nothing after the deletion."""
    registry = FunctionRegistry(limits=RegistryLimits(kept_versions=3))
    specs = [register(registry, "f", "alice", now=NOW + i) for i in range(4)]
    assert [registry.held(s) for s in specs] == [False, True, True, True]
    with pytest.raises(UnknownRegistration, match="version 1 is not a registration this RM holds .current: version 4"):
        registry.check_presented(specs[0])
    altered = replace(specs[3], code_length=specs[3].code_length + 1)
    assert not registry.held(altered)  # the same version with anything else changed is not it
    registry.delete("f", "alice", NOW + 9)
    assert not any(registry.held(s) for s in specs)
    with pytest.raises(UnknownRegistration, match="was deleted"):
        registry.check_presented(specs[3])
    with pytest.raises(UnknownRegistration, match="not registered"):
        registry.check_presented(replace(specs[0], name="g"))


def test_only_live_scheduled_functions_are_listed_for_the_schedules_key() -> None:
    registry = FunctionRegistry()
    register(registry, "tick", "alice", schedule="every 1m")
    register(registry, "cron", "bob", schedule="*/5 * * * *")
    register(registry, "plain", "alice")
    register(registry, "later", "alice", schedule="every 1h")
    register(registry, "later", "alice")  # no schedule any more
    registry.delete("cron", "bob", NOW)
    assert registry.scheduled() == ["tick"]
    assert json.loads(registry.schedules_document()) == {"functions": ["tick"]}


def test_a_full_schedules_list_fits_in_one_ring_record() -> None:
    names = [("n" * 60) + f"{i:04d}" for i in range(MAX_SCHEDULED)]  # the longest names there are
    registry = FunctionRegistry(limits=RegistryLimits(max_per_user=MAX_SCHEDULED + 1))
    for name in names:
        register(registry, name, "alice", schedule="every 1m")
    assert len(registry.schedules_document()) <= MAX_VALUE_BYTES
    with pytest.raises(RegistryFull, match="scheduled functions"):
        register(registry, "one-more", "alice", schedule="every 1m")
    register(registry, names[0], "alice", schedule="every 2m")  # a scheduled function may be registered again


def test_the_bounds_per_user_and_in_all_are_enforced() -> None:
    registry = FunctionRegistry(limits=RegistryLimits(max_per_user=2, max_total=3))
    register(registry, "a", "alice")
    register(registry, "b", "alice")
    register(registry, "a", "alice")  # a new version is not a new function
    with pytest.raises(RegistryFull, match="user alice has 2 functions"):
        register(registry, "c", "alice")
    register(registry, "c", "bob")
    with pytest.raises(RegistryFull, match="cluster holds 3 functions"):
        register(registry, "d", "bob")
    registry.delete("a", "alice", NOW)  # alice is under her bound again, but 3 names are held
    with pytest.raises(RegistryFull, match="cluster holds 3"):
        register(registry, "d", "alice")
    register(registry, "a", "alice")  # the tombstone's name is free and already counted


def test_tombstones_are_forgotten_after_their_retention() -> None:
    registry = FunctionRegistry(limits=RegistryLimits(tombstone_retention_ms=DAY_MS))
    register(registry, "old", "alice")
    register(registry, "kept", "alice")
    tomb = registry.delete("old", "alice", NOW).saved
    assert tomb is not None
    assert registry.expire_tombstones(NOW + DAY_MS) == []
    assert registry.expire_tombstones(NOW + DAY_MS + 1) == [RegistryChange("old", None, (tomb.version,))]
    assert registry.names() == ["kept"]


def test_a_bad_name_or_field_changes_nothing() -> None:
    registry = FunctionRegistry()
    with pytest.raises(InvalidFunction):
        register(registry, "no/slashes", "alice")
    with pytest.raises(InvalidFunction, match="a zip's handler"):
        registry.register("f", "alice", request(code_kind="zip"), 1, 1, NOW)
    assert registry.names() == [] and registry.owned("alice") == []


# -- a restart: the registry rebuilt from what the store kept is the registry that made the changes

USERS = ("alice", "bob", "carol")
NAMES = ("f", "g", "h", "i")
operations = st.lists(
    st.tuples(st.sampled_from(["register", "delete", "expire"]), st.sampled_from(NAMES), st.sampled_from(USERS),
              st.booleans()),  # fmt: skip
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_any_sequence_of_operations_survives_a_restart_and_versions_only_grow(
    ops: list[tuple[str, str, str, bool]],
) -> None:
    """Each operation's change goes to a store; a registry loaded from it has the same names,
    current registrations, owners' lists, schedules and held versions.  Every record saved under
    a name has a higher version than the one saved before it."""
    limits = RegistryLimits(max_per_user=2, max_total=3, kept_versions=2, tombstone_retention_ms=5)
    registry, store = FunctionRegistry(limits=limits), MemoryRegistryStore()
    saved_versions: dict[str, int] = {}
    every_saved: list[FunctionSpec] = []
    for now, (op, name, user, scheduled) in enumerate(ops):
        try:
            if op == "register":
                asked = request(schedule="every 1m" if scheduled else None)
                changes = [registry.register(name, user, asked, 1, 1, now)]
            elif op == "delete":
                changes = [registry.delete(name, user, now)]
            else:
                changes = registry.expire_tombstones(now)
        except (FunctionAccessDenied, FunctionNotFound, RegistryFull):
            continue
        for change in changes:
            result_of(store.apply(change))
            if change.saved is not None:
                if change.name in saved_versions and registry.current(change.name) is not None:
                    assert change.saved.version > saved_versions[change.name]
                saved_versions[change.name] = change.saved.version
                every_saved.append(change.saved)
            else:
                saved_versions.pop(change.name, None)
        assert all(len(registry.owned(u)) <= limits.max_per_user for u in USERS) and len(registry.names()) <= 3
    reloaded = FunctionRegistry(result_of(store.load()), limits)
    assert reloaded.names() == registry.names()
    assert [reloaded.current(n) for n in NAMES] == [registry.current(n) for n in NAMES]
    assert [reloaded.owned(u) for u in USERS] == [registry.owned(u) for u in USERS]
    assert reloaded.scheduled() == registry.scheduled()
    assert [reloaded.held(s) for s in every_saved] == [registry.held(s) for s in every_saved]
