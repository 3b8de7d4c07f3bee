"""The events on one node: its entry side, its executor side, their ring channel and their REST API.

Every ring member is an entry node (``event_gateway.py``); a member with a
NodeManager is an executor too (``event_executor.py``: its sandboxes are the
NodeManager's runtime, its code comes through the NodeManager's DataNode).  Both
speak on the ring's ``events`` direct channel (``internal/event_codec.py``); a
message to this node itself never leaves the process.  The REST API
(``yarn_api/event_rest.py``) is mounted on the NodeManager's web site, and on the
RM's beside its registry.

Callers sign their requests for this node; ``event_callers.CallerChecks`` checks them with
the key the RM gives this node for the caller's token (kept ``AUTH_CACHE_S``, so a revoked
credential stops working here within that time), with the user's ``CallerAssertion`` for
this node (``events/caller_assertions.py``), valid some minutes: the gateway puts a user's
newest in her triggers' ``InvokeFunction``s, so the executors check her grants on the RM's
word.  On the RM, its own REST API's users are asserted by this role with the RM's ring key
(the node's identity), and the RM also takes the plain token header.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource

from cortex_rm.config.events import EventsSection
from cortex_rm.dht.peer import Peer
from cortex_rm.events.activations import ActivationStore
from cortex_rm.events.caller_assertions import AssertionIssuer, CallerAssertion, CallerKey
from cortex_rm.events.functions import FunctionSpec
from cortex_rm.events.request_proofs import SignedRequest
from cortex_rm.events.schedules import tick_payload
from cortex_rm.events.spot_checks import SpotCheckConfig, SpotChecks
from cortex_rm.events.verdicts import Decision
from cortex_rm.events.outcomes import EVENTS_CHANNEL, EventMessage, FunctionOutcome, InvokeFunction, OutcomeStatus
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.event_codec import decode_event, encode_event
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.roles.event_callers import CallerChecks, rm_caller_checks
from cortex_rm.roles.event_executor import EventExecutor, Sandboxes
from cortex_rm.roles.event_gateway import EventGateway
from cortex_rm.roles.event_schedules import EventSchedules
from cortex_rm.roles.function_code import FunctionCode
from cortex_rm.roles.node_manager import NodeManagerRole
from cortex_rm.roles.ring_records import CapacityReports, find_resource_manager
from cortex_rm.roles.ring_service import RingService
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.reactors import INodeReactor
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.event_node_web import mount_event_calls, mount_events
from cortex_rm.yarn_api.event_registry_rest import EventsResource, FunctionsResource, mount_registry
from cortex_rm.yarn_api.event_rest import EventWebServices
from cortex_rm.yarn_api.user_auth import UserAuthenticator

log = Logger()

AUTH_CACHE_ENTRIES = 1024
RM_WEB_CACHE_S = 30.0


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class EventsRole:
    """See the module docstring."""

    def __init__(
        self,
        ring: RingService,
        identity: NodeIdentity,
        reactor: INodeReactor,
        capacities: CapacityReports | None,
        node_manager: NodeManagerRole | None,
        *,
        settings: EventsSection,
        state_dir: Path,
        run: Runner,
        sandboxes: Sandboxes | None = None,
    ) -> None:
        self.ring, self.identity, self.reactor, self.capacities = ring, identity, reactor, capacities
        self.node_manager = node_manager
        self.sandboxes = sandboxes
        rms: Callable[[], frozenset[int]] = lambda: ring.config.resource_managers  # noqa: E731
        self._callers: OrderedDict[str, CallerAssertion] = OrderedDict()  # each user's newest assertion
        store = ActivationStore(
            settings.activation_retention_s * 1000, settings.max_activations,
            max_running_bytes=settings.max_running_mb << 20, max_running_per_user=settings.max_running_per_user,
        )  # fmt: skip
        spot = SpotCheckConfig(settings.adaptive_replication, settings.trust_after, settings.spot_check_rate)
        self.spot_checks = SpotChecks(spot, random.Random())
        self.gateway = EventGateway(
            ring, identity.key, rms, reactor, self._send_invoke, store=store, accept_timeout_s=settings.accept_timeout_s,
            registry_cache_s=settings.registry_cache_s, plan=self.spot_checks.plan, agreed=self._agreed,
            caller_assertion=self._callers.get,
        )  # fmt: skip
        self.schedules = EventSchedules(
            reactor, me=identity.ring_id, resource_managers=ring.config.resource_managers, get=ring.get, put=ring.put,
            owns=self._owns, fire=self._fire, wall_clock_ms=_wall_clock_ms,
            refresh_s=settings.schedules_refresh_s, view=ring.view,
        )  # fmt: skip
        self.code: FunctionCode | None = None
        self.executor: EventExecutor | None = None
        data_node = node_manager.data_node if node_manager is not None else None
        if data_node is not None and sandboxes is not None:
            self.code = FunctionCode(state_dir / "functions", data_node, run)
            self.executor = EventExecutor(
                identity.key, identity.ring_id, rms, self.code.get, sandboxes, self._send_outcome, reactor,
                queue_length=settings.queue_length, wall_clock_ms=_wall_clock_ms,
            )  # fmt: skip
        self._rm_web: tuple[str | None, float] = (None, 0.0)
        self.malformed = 0
        ring.register_direct(EVENTS_CHANNEL, self._received)

    async def start(self) -> None:
        if self.code is not None:
            await self.code.start()
        self.schedules.start()

    async def stop(self) -> None:
        """Stop firing schedules, end the activations taken here, and stop the sandboxes."""
        self.schedules.stop()
        self.gateway.stop()
        if self.executor is not None:
            self.executor.stop()
        stop = getattr(self.sandboxes, "stop", None)
        if stop is not None:
            await stop()

    def web_services(self) -> EventWebServices:
        """The REST API's answers (``yarn_api/event_rest.py``)."""
        return EventWebServices(
            self.gateway, self.reactor, ring_id_hex=self.identity.ring_id_hex, introducers=self._introducers,
            rm_web=self._find_rm_web, node_web=self._node_web,
        )  # fmt: skip

    def mount_on_node(self, site_root: Resource, web_address: str) -> None:
        """Serve the REST API at ``/ws/v1/cortex/events`` on a node's web site (its registry calls: 307 to the RM)."""
        events = EventsResource()
        functions = mount_registry(events, None, None, rm_web_address=lambda: defer.ensureDeferred(self._rm_web_known()))
        callers = CallerChecks(self.identity.ring_id, lambda: (web_address,), self.reactor, _wall_clock_ms,
                               self._ask_rm, self._caller)  # fmt: skip
        mount_event_calls(events, functions, self.web_services(), callers.user_of)
        mount_events(site_root, events)

    def mount_on_rm(
        self, events: Resource, functions: FunctionsResource, auth: UserAuthenticator, web_address: str
    ) -> EventGateway:
        """Add the triggers, activations and introducers to the RM's events tree (its registry is there); its
        users are asserted with this node's key, the RM's ring key, and may show the plain token header.
        The gateway they are served from, for the RM's ``/cluster/events`` page."""
        issuer = AssertionIssuer(self.identity.key, _wall_clock_ms)
        checks = rm_caller_checks(auth, issuer, self.identity.ring_id, lambda: (web_address,), self.reactor,
                                  _wall_clock_ms, self._caller)  # fmt: skip
        functions.signed, functions.ring_id_hex = checks.user_of, self.identity.ring_id_hex
        mount_event_calls(events, functions, self.web_services(), checks.user_of)
        return self.gateway

    # ------------------------------------------------------------ schedules and spot checks

    def _owns(self, key: str) -> bool:
        """Whether this node owns ``key`` in its view of the ring: the first live member at or after its point."""
        executors = self.gateway.executors_of(key, 1)
        return bool(executors) and executors[0].node_id == self.identity.ring_id

    def _fire(self, spec: FunctionSpec, tick_ms: int) -> defer.Deferred[object]:
        payload = tick_payload(spec.schedule or "", tick_ms)  # (only scheduled functions fire)
        fired: defer.Deferred[object] = defer.ensureDeferred(self._trigger_tick(spec.name, payload, tick_ms))
        return fired

    async def _trigger_tick(self, name: str, payload: bytes, tick_ms: int) -> object:
        return await self.gateway.trigger(name, payload, None, tick_ms=tick_ms)

    def _agreed(self, spec: FunctionSpec, decision: Decision) -> None:
        if decision.outcome is not None:
            self.spot_checks.record(spec, decision.agreed, decision.dissenters + decision.missing)

    # ------------------------------------------------------------ the ring channel

    def _received(self, sender: Peer, body: bytes) -> None:
        try:
            message = decode_event(body)
        except MalformedEnvelope as e:
            self.malformed += 1
            if self.malformed in (1, 10, 100) or self.malformed % 1000 == 0:
                log.warn("events: a malformed message from {sender} ({count} so far): {error}", sender=sender.short(),
                         count=self.malformed, error=str(e))  # fmt: skip
            return
        self._dispatch(sender, message)

    def _dispatch(self, sender: Peer, message: EventMessage) -> None:
        if isinstance(message, InvokeFunction):
            if self.executor is None:  # the entry node asks the next replica at once
                refused = FunctionOutcome(message.request_id, message.activation_id, OutcomeStatus.REFUSED.value, b"",
                                          "this node does not run functions", b"", 0, False)  # fmt: skip
                self._send(sender, refused)
                return
            self.executor.invoke(sender, message)
        else:
            self.gateway.outcome(sender, message)

    def _send(self, to: Peer, message: EventMessage) -> None:
        if to.node_id == self.identity.ring_id:
            self.reactor.callLater(0, self._dispatch, self.ring.me, message)
            return
        self.ring.send_direct(to, EVENTS_CHANNEL, encode_event(message))

    def _send_invoke(self, to: Peer, message: InvokeFunction) -> None:
        self._send(to, message)

    def _send_outcome(self, to: Peer, message: FunctionOutcome) -> None:
        self._send(to, message)

    # ------------------------------------------------------------ the REST API's helpers

    def _ask_rm(self, request: SignedRequest) -> defer.Deferred[CallerKey]:
        data_node = self.node_manager.data_node if self.node_manager is not None else None
        if data_node is None:
            raise rest_errors.retriable("this node cannot check credentials (it has no RM); try another node")
        return data_node.caller_key(request)

    def _caller(self, assertion: CallerAssertion) -> None:
        """Her triggers carry her newest assertion (``assertion``, unless a newer one is kept)."""
        kept = self._callers.get(assertion.user)
        if kept is None or kept.issued_ms < assertion.issued_ms:
            self._callers[assertion.user] = assertion
        self._callers.move_to_end(assertion.user)
        while len(self._callers) > AUTH_CACHE_ENTRIES:
            self._callers.popitem(last=False)

    def _introducers(self) -> list[str]:
        reports = self.capacities.reports() if self.capacities is not None else []
        return sorted(str(r.http_address) for r in reports)

    async def _rm_web_known(self) -> str:
        address = await self._find_rm_web()
        if address is None:
            raise LookupError("no ResourceManager has published its addresses in the ring yet")
        return address

    async def _find_rm_web(self) -> str | None:
        address, until = self._rm_web
        if address is not None and until > self.reactor.seconds():
            return address
        try:
            record = await find_resource_manager(self.ring)
        except Exception as e:  # noqa: BLE001 - none published yet, or the ring is changing: the caller retries
            log.info("events: the RM's web address is not known: {error}", error=str(e))
            return address
        self._rm_web = (str(record.webapp_address), self.reactor.seconds() + RM_WEB_CACHE_S)
        return self._rm_web[0]

    def _node_web(self, prefix: str) -> str | None:
        if self.capacities is None:
            return None
        for report in self.capacities.reports():
            if report.ring_id.startswith(prefix):
                return str(report.http_address)
        return None

