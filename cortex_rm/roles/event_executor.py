"""The executor side of events: runs the activations entry nodes send this node, and signs what came of them.

An ``InvokeFunction`` (a ring ``Direct`` message on the ``events`` channel, from a
member the ring authenticated) carries the registration as an RM signed it.  The
executor:

1. checks the registration (``Verifier.registration``: written and signed by an RM,
   for the function it names; not deleted) and the caller, or answers REFUSED.  The
   entry node checked the grants, but any member can send an executor an
   ``InvokeFunction``, so the executor checks them again on the RM's word: the
   request's ``caller`` is an assertion the RM signed for the sending node
   (``events/caller_assertions.py``, checked by ``Verifier.caller_error``, cached),
   and its user must be the owner or granted.  A request without one is run only as
   a **scheduled tick**: ``tick_ms`` set, the function has a schedule, the tick is one
   of its ticks and not in the future (beyond ``SKEW_MS``), and the payload is that
   tick's (``schedules.tick_payload``).  A hostile member can thus fire a scheduled
   function on one of its past ticks again, or a due tick early, as it can today by
   writing tick records; it cannot choose the event, nor run a function without a
   schedule, nor act for a user;
2. takes the activation if a sandbox can run it now, or queues it (one node-wide
   FIFO of ``queue_length``), or answers BUSY at once so the entry node tries the
   next replica; a taken activation is acknowledged at once (ACCEPTED, unsigned),
   so the entry node knows within a round trip that this executor is alive.  A
   queued activation waits at most the entry node's slack beyond the function's
   timeout, then is BUSY after all (it must still end in time at the entry node);
3. fetches the code (``function_code.py``; once per version), runs the activation in
   a sandbox (``FunctionSandboxes``), and answers with the outcome signed by this
   node's key (``outcomes.signed_bytes``).

**Fault injection, for tests only.**  With ``CORTEX_RM_FAULT_INJECTION=wrong-results``
in its environment the executor replaces every successful result by a wrong one
(and signs it, as a lying node would), so a test can show a ``vote`` naming it.
It says so loudly at start.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cortex_rm.dht.peer import Peer
from cortex_rm.events.caller_assertions import SKEW_MS
from cortex_rm.events.functions import FunctionSpec, InvalidFunction
from cortex_rm.events.outcomes import (
    MAX_ERROR_CHARS,
    MAX_LOG_BYTES,
    MAX_RESULT_BYTES,
    FunctionOutcome,
    InvokeFunction,
    OutcomeStatus,
    SandboxResult,
    signed_bytes,
)
from cortex_rm.events.schedules import Schedule, tick_payload
from cortex_rm.events.signatures import Verifier, sign, spki_of
from cortex_rm.roles.function_code import CodeChanged, CodeSource, CodeUnavailable

log = Logger()

DEFAULT_QUEUE_LENGTH = 64
MIN_QUEUE_WAIT_S = 0.2
FAULT_INJECTION_ENV = "CORTEX_RM_FAULT_INJECTION"
WRONG_RESULTS = "wrong-results"


class Sandboxes(Protocol):
    """The node's function sandboxes, as the executor uses them."""

    def invoke(self, spec: FunctionSpec, code: Path, payload: bytes, activation_id: str) -> defer.Deferred[SandboxResult]: ...

    def busy(self, spec: FunctionSpec) -> bool: ...

    def refusal(self, spec: FunctionSpec) -> str | None: ...


@dataclass
class _Queued:
    sender: Peer
    request: InvokeFunction
    spec: FunctionSpec
    expiry: IDelayedCall | None = None


class EventExecutor:
    """Runs activations sent to this node (see the module docstring)."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        ring_id: int,
        resource_managers: Callable[[], frozenset[int]],
        code: CodeSource,
        sandboxes: Sandboxes,
        reply: Callable[[Peer, FunctionOutcome], None],
        reactor: IReactorTime,
        *,
        queue_length: int = DEFAULT_QUEUE_LENGTH,
        verifier: Verifier | None = None,
        fault: str | None = None,
        wall_clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.key, self.ring_id, self.spki = key, ring_id, spki_of(key)
        self.resource_managers = resource_managers
        self.code = code
        self.sandboxes = sandboxes
        self.reply = reply
        self.reactor = reactor
        self.queue_length = queue_length
        self.verifier = verifier or Verifier()
        self.fault = os.environ.get(FAULT_INJECTION_ENV) if fault is None else fault
        self.wall_clock_ms = wall_clock_ms or (lambda: int(reactor.seconds() * 1000))
        self.queue: deque[_Queued] = deque()
        self.running = 0
        self.refused = 0
        if self.fault == WRONG_RESULTS:
            log.warn("events: FAULT INJECTION ({env}={value}): this node returns wrong results, for tests only",
                     env=FAULT_INJECTION_ENV, value=self.fault)  # fmt: skip

    def invoke(self, sender: Peer, request: InvokeFunction) -> None:
        """An entry node's request (see the module docstring)."""
        try:
            spec = self.verifier.registration(request.function, self.resource_managers())
            if spec.deleted:
                raise InvalidFunction(f"{spec.name} was deleted")
            caller = self._caller_refusal(sender, request, spec)
            if caller is not None:
                raise InvalidFunction(f"the caller may not trigger it ({caller})")
            why = self.sandboxes.refusal(spec)
            if why is not None:
                raise InvalidFunction(why)
        except InvalidFunction as e:
            self.refused += 1
            self._answer(sender, request, None, OutcomeStatus.REFUSED, error=f"this node will not run it: {e}")
            return
        if self.sandboxes.busy(spec):
            if len(self.queue) >= self.queue_length:
                self._answer(sender, request, spec, OutcomeStatus.BUSY, error=f"the node's queue is full ({self.queue_length})")
                return
            queued = _Queued(sender, request, spec)
            # it may wait only as long as the entry node's slack beyond the function's timeout, so that it
            # still ends in time there; then it is BUSY, and the entry node asks the next replica
            wait_s = max(MIN_QUEUE_WAIT_S, (request.timeout_ms - spec.limits.timeout_ms) / 1000)
            queued.expiry = self.reactor.callLater(wait_s, self._expired, queued)
            self.queue.append(queued)
            self._accepted(sender, request)
            return
        self._accepted(sender, request)
        defer.ensureDeferred(self._run(sender, request, spec))

    # ------------------------------------------------------------ internals

    def _caller_refusal(self, sender: Peer, request: InvokeFunction, spec: FunctionSpec) -> str | None:
        """Why ``request``'s caller may not trigger ``spec`` (None: she may, or it is a scheduled tick)."""
        caller = request.caller
        if caller is None:
            return self._tick_refusal(request, spec)
        error = self.verifier.caller_error(caller, sender.node_id, self.resource_managers(), self.wall_clock_ms())
        if error is not None:
            return f"its caller assertion is refused: {error}"
        if not spec.may_trigger(caller.user):
            return f"{caller.user} is not granted it by its owner {spec.owner}"
        return None

    def _tick_refusal(self, request: InvokeFunction, spec: FunctionSpec) -> str | None:
        tick = request.tick_ms
        if tick is None:
            return "it carries no caller assertion and is no scheduled tick"
        if spec.schedule is None:
            return "a scheduled tick of a function without a schedule"
        if tick > self.wall_clock_ms() + SKEW_MS:
            return "a scheduled tick in the future"
        try:
            if not Schedule.parse(spec.schedule).matches(tick):
                return "the tick is not one of its schedule's"
        except ValueError as e:
            return f"its schedule cannot be checked: {e}"
        if request.payload != tick_payload(spec.schedule, tick):
            return "a scheduled tick's event must be the tick's own"
        return None

    def stop(self) -> None:
        """Forget the queue (its entry nodes time those activations out, or ask another replica)."""
        for queued in self.queue:
            if queued.expiry is not None and queued.expiry.active():
                queued.expiry.cancel()
        self.queue.clear()

    def _accepted(self, sender: Peer, request: InvokeFunction) -> None:
        self.reply(sender, FunctionOutcome(request.request_id, request.activation_id, OutcomeStatus.ACCEPTED.value,
                                           b"", "", b"", 0, False))  # fmt: skip

    def _expired(self, queued: _Queued) -> None:
        queued.expiry = None
        try:
            self.queue.remove(queued)
        except ValueError:
            return
        self._answer(queued.sender, queued.request, queued.spec, OutcomeStatus.BUSY,
                     error="it waited in the queue of a busy node and never ran")  # fmt: skip

    async def _run(self, sender: Peer, request: InvokeFunction, spec: FunctionSpec) -> None:
        self.running += 1
        started = self.reactor.seconds()
        try:
            try:
                path = await self.code(spec, request.function)
            except CodeUnavailable as e:
                status = OutcomeStatus.DEVELOPER_ERROR if isinstance(e, CodeChanged) else OutcomeStatus.INTERNAL_ERROR
                self._answer(sender, request, spec, status, error=str(e))
                return
            outcome = await self.sandboxes.invoke(spec, path, request.payload, request.activation_id)
            result = outcome.result
            if self.fault == WRONG_RESULTS and outcome.status is OutcomeStatus.SUCCESS:
                result = json.dumps({"fault": "injected", "node": f"{self.ring_id:040x}"}).encode()
            self._answer(sender, request, spec, outcome.status, result=result, error=outcome.error, logs=outcome.logs,
                         duration_ms=outcome.duration_ms, cold=outcome.cold_start)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - the executor's own failure: the activation says so, the node goes on
            log.failure("events: activation {id} of {name} failed on this node", id=request.activation_id, name=spec.name)
            elapsed = int((self.reactor.seconds() - started) * 1000)
            self._answer(sender, request, spec, OutcomeStatus.INTERNAL_ERROR, error=f"the executor failed: {e}",
                         duration_ms=elapsed)  # fmt: skip
        finally:
            self.running -= 1
            self._drain()

    def _drain(self) -> None:
        """Start queued activations whose function a sandbox can take now, oldest first."""
        for queued in list(self.queue):
            if self.sandboxes.busy(queued.spec):
                continue
            self.queue.remove(queued)
            if queued.expiry is not None and queued.expiry.active():
                queued.expiry.cancel()
            defer.ensureDeferred(self._run(queued.sender, queued.request, queued.spec))

    def _answer(
        self, sender: Peer, request: InvokeFunction, spec: FunctionSpec | None, status: OutcomeStatus,
        *, result: bytes = b"", error: str = "", logs: bytes = b"", duration_ms: int = 0, cold: bool = False,
    ) -> None:  # fmt: skip
        if len(result) > MAX_RESULT_BYTES:
            status, result = OutcomeStatus.APPLICATION_ERROR, b""
            error = f"the handler's result is larger than {MAX_RESULT_BYTES} bytes"
        outcome = FunctionOutcome(request.request_id, request.activation_id, status.value, result,
                                  error[:MAX_ERROR_CHARS], logs[:MAX_LOG_BYTES], duration_ms, cold, self.spki)  # fmt: skip
        name, version = (spec.name, spec.version) if spec is not None else ("", 0)
        signature = sign(self.key, signed_bytes(outcome, name, version, self.ring_id))
        try:
            self.reply(sender, FunctionOutcome(**{**outcome.__dict__, "signature": signature}))
        except Exception:
            log.failure("events: cannot answer {sender} for {id}", sender=sender.short(), id=request.activation_id)
