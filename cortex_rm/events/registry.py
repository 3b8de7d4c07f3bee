"""The function registry's rules, as a sans-IO core: who owns a name, versions, deletions, bounds.

The ResourceManager keeps one (``roles/event_registry.py`` persists each change and
publishes it in the ring).  The rules:

* **Names are first come, first served.**  The first user to register a name owns
  it; registering it again (only she may) makes the next version.  Anyone else is
  refused (``FunctionAccessDenied``, YARN's AccessControlException).
* **Deleting** (the owner only) leaves a *tombstone*: the last registration with
  ``deleted=True`` and the next version, which the RM publishes in the ring so that
  it wins there over every older copy.  A deleted name is free: anyone may register
  it again, and the versions go on from the tombstone's, so every record ever written
  under one name has a higher version than the one before.  Tombstones are kept
  ``tombstone_retention_ms`` (republished all that time), then forgotten.
* **Reading**: the owner and the users she granted may read a registration
  (``get``); ``owned`` lists a user's own live functions.
* **Kept versions**: besides the current registration, the ``kept_versions - 1``
  before it stay valid for a while, so an executor holding a record from just before
  a re-registration can still fetch its code (``held``); a deletion ends them all.
* **Bounds**: at most ``max_per_user`` live functions per user, ``max_total`` names
  (tombstones included), and ``max_scheduled`` functions with a schedule, whose names
  must all fit in one ring record (``SCHEDULES_KEY``).

Every change is returned as a ``RegistryChange`` for the store; the in-memory state
has already changed (later requests see it at once, as the NameNode's namespace).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from cortex_rm.events.schedules import encode_scheduled
from cortex_rm.events.functions import FunctionSpec, InvalidFunction, check_name
from cortex_rm.events.registration import RegistrationRequest

DAY_MS = 24 * 3600 * 1000
#: The schedules list is one ring record (64 KiB): a name takes at most 67 bytes in it.
MAX_SCHEDULED = 900


class RegistryRefusal(Exception):
    """A registry operation refused; the message says why and, where it can, what to do."""


class FunctionNotFound(RegistryRefusal):
    """No live function of that name."""


class FunctionAccessDenied(RegistryRefusal):
    """The caller may not do this to that function (another user's name, not granted)."""


class RegistryFull(RegistryRefusal):
    """A bound would be exceeded (the user's functions, all names, scheduled functions)."""


class UnknownRegistration(RegistryRefusal):
    """A registration someone presented is not one the registry holds now (stale, deleted, forged)."""


@dataclass(frozen=True)
class RegistryLimits:
    """The registry's bounds (module docstring)."""

    max_per_user: int = 1000
    max_total: int = 100_000
    max_scheduled: int = MAX_SCHEDULED
    kept_versions: int = 4
    tombstone_retention_ms: int = 7 * DAY_MS


@dataclass(frozen=True)
class RegistryChange:
    """What one operation changed, for the store: ``name``'s new current registration (``saved``;
    None: the name is forgotten) and the versions of ``name`` no longer kept."""

    name: str
    saved: FunctionSpec | None
    forgotten: tuple[int, ...] = ()


class FunctionRegistry:
    """The registrations by name: the kept versions, oldest first, the last the current one."""

    def __init__(self, stored: Iterable[FunctionSpec] = (), limits: RegistryLimits | None = None) -> None:
        self.limits = limits or RegistryLimits()
        self._versions: dict[str, list[FunctionSpec]] = {}
        self._by_owner: dict[str, set[str]] = {}  # live functions' names by owner
        self._scheduled: set[str] = set()
        for spec in sorted(stored, key=lambda s: (s.name, s.version)):
            self._versions.setdefault(spec.name, []).append(spec)
        for name, versions in list(self._versions.items()):
            if versions[-1].deleted:
                self._versions[name] = versions[-1:]  # (a store written by another rule: keep the tombstone)
            self._index(versions[-1])

    # -- reading

    def current(self, name: str) -> FunctionSpec | None:
        """``name``'s current registration (a tombstone when deleted), None when unknown."""
        versions = self._versions.get(name)
        return versions[-1] if versions else None

    def names(self) -> list[str]:
        """Every name with a current registration (tombstones included), sorted: what the ring must hold."""
        return sorted(self._versions)

    def __len__(self) -> int:
        return len(self._versions)

    def get(self, name: str, user: str) -> FunctionSpec:
        """``name``'s registration, for its owner or a user she granted."""
        spec = self.current(name)
        if spec is None or spec.deleted:
            raise FunctionNotFound(f"function {name[:80]!r} is not registered")
        if not spec.may_trigger(user):
            raise FunctionAccessDenied(
                f"user {user} may not read function {name}: it is {spec.owner}'s and not granted to {user}"
            )
        return spec

    def owned(self, user: str) -> list[FunctionSpec]:
        """``user``'s live functions, by name."""
        return [self._versions[name][-1] for name in sorted(self._by_owner.get(user, ()))]

    def held(self, spec: FunctionSpec) -> bool:
        """Whether ``spec`` is the current registration of its name or one of the kept versions before
        it, and the name is not deleted: a registration an executor may fetch the code of."""
        versions = self._versions.get(spec.name)
        return versions is not None and not versions[-1].deleted and spec in versions

    def scheduled(self) -> list[str]:
        """The names of the live functions with a schedule, sorted."""
        return sorted(self._scheduled)

    def schedules_document(self) -> bytes:
        """The value of ``SCHEDULES_KEY``: ``{"functions": [names]}`` (compact JSON)."""
        return encode_scheduled(self.scheduled())

    # -- changes

    def check_register(self, name: str, owner: str, scheduled: bool = False) -> None:
        """Raise what ``register`` would raise for ``owner`` taking or replacing ``name`` (before the
        code file is looked at)."""
        check_name(name)
        current = self.current(name)
        if current is not None and not current.deleted and current.owner != owner:
            raise FunctionAccessDenied(
                f"function {name} is registered by another user; pick another name (user {owner} may not replace it)"
            )
        fresh = current is None or current.deleted
        if fresh and len(self._by_owner.get(owner, ())) >= self.limits.max_per_user:
            raise RegistryFull(
                f"user {owner} has {self.limits.max_per_user} functions, the most a user may have; delete one first"
            )
        if current is None and len(self._versions) >= self.limits.max_total:
            raise RegistryFull(f"the cluster holds {self.limits.max_total} functions, the most it may; try again later")
        if scheduled and name not in self._scheduled and len(self._scheduled) >= self.limits.max_scheduled:
            raise RegistryFull(f"the cluster has {self.limits.max_scheduled} scheduled functions, the most it may")

    def register(
        self, name: str, owner: str, request: RegistrationRequest, code_length: int, code_mtime_ms: int, now_ms: int
    ) -> RegistryChange:
        """``owner`` registers ``name`` (the next version if it exists); InvalidFunction, or a RegistryRefusal."""
        self.check_register(name, owner, request.schedule is not None)
        current = self.current(name)
        version = 1 if current is None else current.version + 1
        spec = request.spec(name, owner, version, code_length, code_mtime_ms, now_ms)
        before = self._versions.get(name, [])
        older = self.limits.kept_versions - 1  # kept besides the new one
        kept = [v for v in before if not v.deleted][-older:] if older > 0 else []
        kept.append(spec)
        self._unindex(current)
        self._versions[name] = kept
        self._index(spec)
        return RegistryChange(name, spec, tuple(v.version for v in before if v not in kept))

    def delete(self, name: str, user: str, now_ms: int) -> RegistryChange:
        """``user`` deletes ``name``: its owner only; the tombstone becomes the current registration."""
        current = self.current(name)
        if current is None or current.deleted:
            raise FunctionNotFound(f"function {name[:80]!r} is not registered")
        if current.owner != user:
            raise FunctionAccessDenied(f"user {user} may not delete function {name}: it is {current.owner}'s")
        tombstone = replace(current, version=current.version + 1, deleted=True, registered_ms=now_ms)
        before = self._versions[name]
        self._unindex(current)
        self._versions[name] = [tombstone]
        return RegistryChange(name, tombstone, tuple(v.version for v in before))

    def expire_tombstones(self, now_ms: int) -> list[RegistryChange]:
        """Forget the tombstones older than the retention (their names were deleted long enough ago)."""
        cutoff = now_ms - self.limits.tombstone_retention_ms
        changes = []
        for name, versions in list(self._versions.items()):
            last = versions[-1]
            if last.deleted and last.registered_ms < cutoff:
                del self._versions[name]
                changes.append(RegistryChange(name, None, tuple(v.version for v in versions)))
        return changes

    def check_presented(self, spec: FunctionSpec) -> None:
        """UnknownRegistration unless ``held(spec)``, saying what the registry holds instead."""
        if self.held(spec):
            return
        current = self.current(spec.name)
        if current is None:
            raise UnknownRegistration(f"function {spec.name} is not registered")
        if current.deleted:
            raise UnknownRegistration(f"function {spec.name} was deleted (version {current.version})")
        raise UnknownRegistration(
            f"function {spec.name} version {spec.version} is not a registration this RM holds "
            f"(current: version {current.version}); read the registration again"
        )

    def _index(self, spec: FunctionSpec | None) -> None:
        if spec is None or spec.deleted:
            return
        self._by_owner.setdefault(spec.owner, set()).add(spec.name)
        if spec.schedule is not None:
            self._scheduled.add(spec.name)

    def _unindex(self, spec: FunctionSpec | None) -> None:
        if spec is None or spec.deleted:
            return
        names = self._by_owner.get(spec.owner)
        if names is not None:
            names.discard(spec.name)
            if not names:
                del self._by_owner[spec.owner]
        self._scheduled.discard(spec.name)


__all__ = [
    "FunctionAccessDenied",
    "FunctionNotFound",
    "FunctionRegistry",
    "InvalidFunction",
    "RegistryChange",
    "RegistryFull",
    "RegistryLimits",
    "RegistryRefusal",
    "UnknownRegistration",
]
