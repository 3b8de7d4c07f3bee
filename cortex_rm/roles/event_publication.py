"""The function registry in the ring: each registration under ``function_key(name)``, and the
list of scheduled functions under ``SCHEDULES_KEY``, written (and so signed) by the RM.

The registry itself lives in the RM's database (``roles/event_registry.py``); the ring
holds what every node reads.  ``RegistryPublisher``:

* ``publish(spec)`` puts one registration (a tombstone too) right after its change was
  persisted.  The ring orders the versions of a key by the writer's clock (``key_space``:
  a put's version is at least the time in ms), so the RM's later put wins.  A put that
  fails never fails the caller: the name is kept as *pending* and retried every
  ``retry_s`` until a put of its current registration succeeds.
* ``publish_schedules()`` puts the scheduled names (``FunctionRegistry.schedules_document``)
  when they differ from what was last put.
* ``republish_all()`` puts every current registration and the schedules again, at most
  ``concurrency`` puts at a time, so that records lost with all their replicas (members
  gone at once) come back.  The RM runs it once the ring is joined and every
  ``interval_s`` after.

The schedules' value is ``{"functions": [names]}`` until ``events/schedules.py`` defines
its encoding.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.dht.kv_messages import Record
from cortex_rm.events.functions import SCHEDULES_KEY, function_key
from cortex_rm.events.registry import FunctionRegistry

log = Logger()

REPUBLISH_INTERVAL_S = 300.0
RETRY_INTERVAL_S = 1.0  # a put refused while the ring moves keys (a member rejoining) succeeds a moment later
CONCURRENT_PUTS = 8


class RegistryRing(Protocol):
    """What publishing needs of the ring service."""

    def put(self, key: str, value: bytes) -> defer.Deferred[Record]: ...


class RegistryPublisher:
    """Keeps the ring's copy of ``registry`` (module docstring)."""

    def __init__(
        self,
        ring: RegistryRing,
        registry: FunctionRegistry,
        clock: IReactorTime,
        *,
        retry_s: float = RETRY_INTERVAL_S,
        concurrency: int = CONCURRENT_PUTS,
    ) -> None:
        self.ring = ring
        self.registry = registry
        self.clock = clock
        self.retry_s = retry_s
        self.pending: set[str] = set()  # names whose current registration is not known to be in the ring
        self._schedules_put: bytes | None = None  # the schedules value last put successfully
        self._schedules_pending = False
        self.concurrency = concurrency
        self._retry: task.LoopingCall | None = None
        self.puts = 0  # successful puts, for tests and logs

    def publish(self, name: str) -> defer.Deferred[bool]:
        """Put ``name``'s current registration (read when the put is made, so a put never writes an
        older version over a newer one); fires True once stored, False when the put failed (then the
        name stays pending and is retried)."""
        spec = self.registry.current(name)
        if spec is None:  # forgotten (an expired tombstone): nothing to put
            self.pending.discard(name)
            return defer.succeed(True)
        self.pending.add(name)
        d = self.ring.put(function_key(name), spec.encode())

        def stored(record: Record) -> bool:
            self.puts += 1
            if self.registry.current(name) == spec:
                self.pending.discard(name)  # (a newer version, changed meanwhile, stays pending until its own put)
            log.debug("published function {name} version {version} in the ring (record version {record})",
                      name=name, version=spec.version, record=record.version)
            return True

        def failed(failure: Failure) -> bool:
            log.warn("could not publish function {name} version {version} in the ring ({error}); retrying",
                     name=name, version=spec.version, error=failure.getErrorMessage())
            return False

        return d.addCallbacks(stored, failed)

    def publish_schedules(self, force: bool = False) -> defer.Deferred[bool]:
        """Put the scheduled names when they differ from the last successful put (or ``force``);
        fires True once stored (or nothing to put), False when the put failed (then retried)."""
        value = self.registry.schedules_document()
        if value == self._schedules_put and not force and not self._schedules_pending:
            return defer.succeed(True)
        self._schedules_pending = True

        def stored(_: Record) -> bool:
            self.puts += 1
            self._schedules_put = value
            self._schedules_pending = value != self.registry.schedules_document()  # (changed meanwhile: put again)
            return True

        def failed(failure: Failure) -> bool:
            log.warn("could not publish the scheduled functions in the ring ({error}); retrying",
                     error=failure.getErrorMessage())
            return False

        return self.ring.put(SCHEDULES_KEY, value).addCallbacks(stored, failed)

    def republish_all(self) -> defer.Deferred[None]:
        """Put every current registration and the schedules again, ``concurrency`` puts at a time
        (never errbacks)."""
        return defer.ensureDeferred(self._republish(self.registry.names(), force_schedules=True, what="republished"))

    def retry_pending(self) -> defer.Deferred[None]:
        """Put again the current registration of every pending name, and the schedules if pending."""
        if not self.pending and not self._schedules_pending:
            return defer.succeed(None)
        return defer.ensureDeferred(self._republish(sorted(self.pending), force_schedules=False, what="retried"))

    async def _republish(self, names: list[str], force_schedules: bool, what: str) -> None:
        failed = 0
        for at in range(0, len(names), self.concurrency):
            results = await defer.gatherResults([self.publish(name) for name in names[at : at + self.concurrency]])
            failed += results.count(False)
        if not await self.publish_schedules(force=force_schedules):
            failed += 1
        if names or failed:
            log.info("{what} {count} function registration(s) in the ring{failed}", what=what, count=len(names),
                     failed=f" ({failed} put(s) failed; retrying)" if failed else "")  # fmt: skip

    def start(self) -> None:
        """Retry pending puts every ``retry_s``."""
        self._retry = task.LoopingCall(self.retry_pending)
        self._retry.clock = self.clock
        self._retry.start(self.retry_s, now=False)

    def stop(self) -> None:
        if self._retry is not None and self._retry.running:
            self._retry.stop()
        self._retry = None
