"""The ResourceManager's function registry, wired: rules, database, code checks, the ring, the nodes' calls.

``EventRegistry`` is what the REST API (``yarn_api/event_registry_rest.py``) and the
tracker's event calls (``internal/tracker_event_calls.py``) call:

* ``register``: the registry's rules are checked first (``FunctionRegistry.check_register``:
  the name is free or the caller's, within the bounds), then the code file through the
  NameNode as the caller — it exists, is a file, she may READ it, and is at most
  ``MAX_CODE_BYTES`` — whose length and modification time go into the registration, as
  YARN records a LocalResource's.  The change is persisted (``registry_store``), then
  published in the ring (``RegistryPublisher``), then answered.
* ``delete``, ``get``, ``owned``: the registry's rules; a deletion is persisted and
  published as a tombstone.
* ``open_function_code``: a node shows the registration record it was given; it must be
  signed (``ring_trust``'s record check) by a ResourceManager's ring key (``[ring]
  resource_managers``, and this RM's own) and be a registration this registry holds
  (``FunctionRegistry.check_presented``); the node gets the code file's length,
  modification time and an OPEN ticket for it as the function's owner.
* ``caller_key``: a node shows one of a user's signed requests to it (never her token:
  users sign their requests to nodes, ``events/request_proofs.py``); the RM checks it and
  answers with the token's entry key for that node and hour, to check her other requests
  with, and a
  ``CallerAssertion`` signed with the RM's ring key for that node
  (``events/caller_assertions.py``), which the node puts in the user's ``InvokeFunction``s
  so that executors check her grants themselves.  Off the ring the RM asserts nothing (no
  executor could run the user's triggers anyway).

Both node calls are rate-limited per node (token buckets: a node caches their answers, so
a node over the limit is misbehaving or under a flood it should absorb itself).

``start(joined)``: once the ring is joined, every registration is republished, and again
every ``republish_interval_s`` (with expired tombstones forgotten first); failed puts are
retried every ``RETRY_INTERVAL_S``.  Without a ring the registry still works (tombstones
expire on the same timer); nothing is published and ``open_function_code`` refuses.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.rate_limits import PeerRateLimit
from cortex_rm.dht.ring_trust import KeyTrust
from cortex_rm.events.caller_assertions import AssertionIssuer, CallerKey
from cortex_rm.events.request_proofs import SignedRequest
from cortex_rm.events.functions import MAX_CODE_BYTES, FunctionSpec, InvalidFunction, function_key
from cortex_rm.events.registration import RegistrationRequest
from cortex_rm.events.registry import FunctionRegistry, RegistryChange, RegistryLimits, UnknownRegistration
from cortex_rm.events.registry_store import RegistryStore
from cortex_rm.fs.model import User
from cortex_rm.fs.name_node import NameNode
from cortex_rm.fs.paths import parse_path
from cortex_rm.internal.errors import CallRateExceeded
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.roles.event_publication import REPUBLISH_INTERVAL_S, RegistryPublisher, RegistryRing
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import NodeRefused
from cortex_rm.yarn_api.user_auth import UserAuthenticator

log = Logger()

#: A node's token checks (callerKey): the node keeps each answer for 60 s.
AUTH_RATE = (50.0, 200.0)  # per second, burst
#: A node's code fetches (openFunctionCode): once per function version it runs, then cached.
CODE_RATE = (20.0, 100.0)


class RegistrationRecords:
    """Checks a registration record a node presents: signed by its writer, and the writer an RM."""

    def __init__(self, identity: NodeIdentity, resource_managers: frozenset[int]) -> None:
        # The ring's record check; the key and work puzzles are the ring's business, not this one's (0 bits).
        self._trust = KeyTrust(identity.key, 0, 0, 0)
        self.key = identity.key
        self.writers = resource_managers | {identity.ring_id}

    def spec_of(self, record: Record) -> FunctionSpec:
        """The registration ``record`` carries; UnknownRegistration saying why it is not an RM's."""
        error = self._trust.record_error(record)
        if error is not None:
            raise UnknownRegistration(f"the registration record is refused: {error}")
        if record.writer not in self.writers:
            raise UnknownRegistration(
                f"the registration record {record.key[:80]!r} was not written by a ResourceManager"
            )
        try:
            spec = FunctionSpec.decode(record.value)
        except InvalidFunction as e:
            raise UnknownRegistration(f"the registration record does not hold a registration: {e}") from None
        if record.key != function_key(spec.name):
            raise UnknownRegistration(
                f"the registration of {spec.name} is filed under another key ({record.key[:80]!r})"
            )
        return spec


class EventRegistry:
    """The RM's function registry (module docstring)."""

    def __init__(
        self,
        registry: FunctionRegistry,
        store: RegistryStore,
        name_node: NameNode,
        auth: UserAuthenticator,
        clock: IReactorTime,
        *,
        ring: RegistryRing | None = None,
        records: RegistrationRecords | None = None,
        republish_interval_s: float = REPUBLISH_INTERVAL_S,
    ) -> None:
        self.registry = registry
        self.store = store
        self.name_node = name_node
        self.auth = auth
        self.clock = clock
        self.records = records
        self.publisher = RegistryPublisher(ring, registry, clock) if ring is not None else None
        self.issuer = AssertionIssuer(records.key, self.now_ms) if records is not None else None
        self.republish_interval_s = republish_interval_s
        self._auth_limit = PeerRateLimit(*AUTH_RATE)
        self._code_limit = PeerRateLimit(*CODE_RATE)
        self._loop: task.LoopingCall | None = None

    @classmethod
    async def load(
        cls,
        store: RegistryStore,
        name_node: NameNode,
        auth: UserAuthenticator,
        clock: IReactorTime,
        *,
        limits: RegistryLimits | None = None,
        ring: RegistryRing | None = None,
        records: RegistrationRecords | None = None,
        republish_interval_s: float = REPUBLISH_INTERVAL_S,
    ) -> EventRegistry:
        """The registry as the store has it (empty at the first start)."""
        registry = FunctionRegistry(await store.load(), limits)
        log.info("function registry: {count} function(s) recovered", count=len(registry))
        return cls(registry, store, name_node, auth, clock, ring=ring, records=records,
                   republish_interval_s=republish_interval_s)  # fmt: skip

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- the REST API's operations (the caller is an authenticated user)

    async def register(self, user: str, name: str, request: RegistrationRequest) -> FunctionSpec:
        """``user`` registers ``name``; InvalidFunction, a RegistryRefusal or the file system's FsError."""
        self.registry.check_register(name, user, request.schedule is not None)
        path = parse_path(request.code_path)
        code = self.name_node.namespace.open_file(path, User(user, frozenset({user})))  # exists, a file, READ
        if code.length > MAX_CODE_BYTES:
            raise InvalidFunction(
                f"code: {path} is {code.length} bytes; a function's code may be at most {MAX_CODE_BYTES} bytes"
            )
        change = self.registry.register(
            name, user, replace(request, code_path=str(path)), code.length, code.modification_time, self.now_ms()
        )
        assert change.saved is not None
        await self._apply(change)
        log.info("function {name} version {version} registered by {user} ({path}, {length} bytes)",
                 name=name, version=change.saved.version, user=user, path=str(path), length=code.length)  # fmt: skip
        return change.saved

    async def delete(self, user: str, name: str) -> FunctionSpec:
        """``user`` deletes ``name``; the tombstone (its version one above the deleted registration's)."""
        change = self.registry.delete(name, user, self.now_ms())
        assert change.saved is not None
        await self._apply(change)
        log.info("function {name} deleted by {user} (version {version})", name=name, user=user,
                 version=change.saved.version - 1)  # fmt: skip
        return change.saved

    def get(self, user: str, name: str) -> FunctionSpec:
        return self.registry.get(name, user)

    def owned(self, user: str) -> list[FunctionSpec]:
        return self.registry.owned(user)

    async def _apply(self, change: RegistryChange) -> None:
        """Persist ``change``, then publish it (a failed put is retried later, not the caller's failure)."""
        await self.store.apply(change)
        if self.publisher is not None:
            puts = [self.publisher.publish(change.name), self.publisher.publish_schedules()]
            await defer.gatherResults(puts)

    # -- the nodes' calls (the tracker has checked the node is registered and on its own key)

    def open_function_code(self, node_id: NodeId, record: Record) -> tuple[int, int, str]:
        """The code of the registration ``record`` carries: (length, modification time, OPEN ticket as its owner)."""
        self._within(self._code_limit, node_id, "openFunctionCode")
        if self.records is None:
            raise UnknownRegistration("this ResourceManager is not on the ring: it serves no function's code")
        spec = self.records.spec_of(record)
        self.registry.check_presented(spec)
        return self.name_node.localization_source(parse_path(spec.code_path), User(spec.owner, frozenset({spec.owner})))

    def caller_key(self, node_id: NodeId, request: SignedRequest, audience: int, node_web: str) -> CallerKey:
        """For the entry node ``audience`` (the ring id of the node's key) at ``node_web`` (the web address it
        registered), shown one of a user's signed requests to it: who she is, asserted for that node, and her
        token's entry key for it and the request's hour, with which it checks her other requests
        (``events/request_proofs.py``); InvalidToken saying why nobody, NodeRefused off the ring."""
        self._within(self._auth_limit, node_id, "callerKey")
        user, key = self.auth.caller_key(request, audience, node_web)
        if self.issuer is None:
            raise NodeRefused("this ResourceManager is not on the ring: it asserts no caller for triggers")
        return CallerKey(self.issuer.issue(user, audience), key)

    def _within(self, limit: PeerRateLimit, node_id: NodeId, call: str) -> None:
        peer = int.from_bytes(hashlib.sha256(str(node_id).encode()).digest()[:8], "big")
        if not limit.allow(peer, self.clock.seconds()):
            raise CallRateExceeded(
                f"{call} from {node_id}: more than {limit.rate:g} calls a second (burst {limit.burst:g}); "
                "cache the answers and try again shortly",
                retry_after_ms=int(1000 / limit.rate) + 1,
            )

    # -- life

    def start(self, joined: defer.Deferred[None] | None = None) -> None:
        """Run the maintenance cycle (expired tombstones forgotten, everything republished) every
        interval: on the ring, from when ``joined`` fires (at once then); without one, from now on."""
        self._loop = loop = task.LoopingCall(self._maintain)
        loop.clock = self.clock
        if self.publisher is None or joined is None:
            loop.start(self.republish_interval_s, now=False)
            return
        self.publisher.start()

        def on_ring(_: object) -> None:
            if self._loop is loop:  # (not stopped meanwhile)
                loop.start(self.republish_interval_s, now=True)

        def off_ring(failure: Failure) -> None:
            log.warn("function registry: not published, the ring was not joined: {e}", e=failure.getErrorMessage())

        joined.addCallbacks(on_ring, off_ring)

    async def _cycle(self) -> None:
        for change in self.registry.expire_tombstones(self.now_ms()):
            await self.store.apply(change)
            log.info("function {name}: its tombstone expired and is forgotten", name=change.name)
        if self.publisher is not None:
            await self.publisher.republish_all()

    def _maintain(self) -> defer.Deferred[None]:
        d = defer.ensureDeferred(self._cycle())
        return d.addErrback(lambda f: log.failure("function registry: the republishing cycle failed", f))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self.publisher is not None:
            self.publisher.stop()
