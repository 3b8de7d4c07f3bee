"""Activations: one trigger of a function, as the entry node that took it keeps it.

An activation is ``running`` from the trigger until its verdict (``verdicts.py``),
then ends with the verdict's status, the winning result, the executors' signed
replies (who agreed, who dissented, who never answered) and the winner's logs.
The entry node signs the ended activation (``signed_bytes``) with its node key;
with each executor's signature (``outcomes.signed_bytes``) a client can check,
against the ring's keys, that the answer is what those executors said.

``ActivationStore`` keeps activations for ``retention_ms`` after they end (a
running one is kept until it ends), at most ``max_count`` of them and at most
``max_bytes`` of results and logs: past a bound the oldest ended ones go first,
and when only running ones are left a new trigger is refused (the caller hears
429).  Running activations are bounded further, as nothing can be evicted to make
room for them: the events they hold (``held_bytes``: the payload the entry node keeps
to ask spares) at most ``max_running_bytes`` together, and at most
``max_running_per_user`` of one user's (a scheduled tick's: its owner's), so one user
cannot take the node's whole budget; a trigger past either is refused the same way.
Times come from the caller (ms), so the store is tested with a fake clock.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from cortex_rm.events.errors import EventError
from cortex_rm.events.outcomes import FunctionOutcome, result_digest

RUNNING = "running"
DEFAULT_RETENTION_MS = 24 * 3600 * 1000
DEFAULT_MAX_COUNT = 20_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_RUNNING_BYTES = 64 * 1024 * 1024  # 256 triggers of the largest event (outcomes.MAX_PAYLOAD_BYTES)
DEFAULT_MAX_RUNNING_PER_USER = 1000  # 5 % of DEFAULT_MAX_COUNT


def new_activation_id(entry_node: int, token_hex: str | None = None) -> str:
    """``<first 12 hex digits of the entry node's ring id>-<16 random hex digits>``."""
    return f"{entry_node:040x}"[:12] + "-" + (token_hex or secrets.token_hex(8))


def entry_prefix(activation_id: str) -> str | None:
    """The entry node's ring id prefix an activation id names (None: not an activation id)."""
    head, sep, tail = activation_id.partition("-")
    hexdigits = set("0123456789abcdef")
    if not sep or len(head) != 12 or len(tail) != 16 or not set(head + tail) <= hexdigits:
        return None
    return head


@dataclass(frozen=True)
class ExecutorReply:
    """One executor's signed outcome as the activation shows it."""

    node: int
    outcome: FunctionOutcome
    agreed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "node": f"{self.node:040x}",
            "status": self.outcome.status,
            "resultSha256": result_digest(self.outcome.result),
            "result": _json_or_none(self.outcome.result),
            "error": self.outcome.error,
            "durationMs": self.outcome.duration_ms,
            "coldStart": self.outcome.cold_start,
            "signerKey": base64.b64encode(self.outcome.signer_key).decode(),
            "signature": base64.b64encode(self.outcome.signature).decode(),
            "agreed": self.agreed,
        }


@dataclass
class Activation:
    """One trigger, running or ended (see the module docstring)."""

    activation_id: str
    function: str
    version: int
    caller: str
    owner: str
    mode: str
    replicas: int
    entry_node: int
    start_ms: int
    status: str = RUNNING
    end_ms: int | None = None
    result: bytes = b""
    error: str = ""
    logs: bytes = b""
    cold_start: bool = False
    replies: tuple[ExecutorReply, ...] = ()
    dissenters: tuple[int, ...] = ()
    missing: tuple[int, ...] = ()
    signer_key: bytes = b""
    signature: bytes = b""
    tick_ms: int | None = None  # fired by a schedule: the tick

    @property
    def ended(self) -> bool:
        return self.status != RUNNING

    @property
    def size(self) -> int:
        return len(self.result) + len(self.logs) + sum(len(r.outcome.result) + len(r.outcome.logs) for r in self.replies)

    @property
    def runner(self) -> str:
        """Whose running activation this is, for the per-user bound: its caller, or a scheduled tick's owner."""
        return self.caller or self.owner

    def may_read(self, user: str | None) -> bool:
        """Whether ``user`` may see this activation: who triggered it, or the function's owner."""
        return user is not None and user in (self.caller, self.owner)

    def to_json(self, signed: bool = True) -> dict[str, Any]:
        """The activation as the REST API shows it (without the entry node's signature: what it signs)."""
        body: dict[str, Any] = {
            "activationId": self.activation_id,
            "function": self.function,
            "version": self.version,
            "caller": self.caller,
            "status": self.status,
            "result": _json_or_none(self.result),
            "error": self.error,
            "start": self.start_ms,
            "end": self.end_ms,
            "durationMs": None if self.end_ms is None else self.end_ms - self.start_ms,
            "coldStart": self.cold_start,
            "mode": self.mode,
            "replicas": self.replicas,
            "executors": [r.to_json() for r in self.replies],
            "dissenters": [f"{n:040x}" for n in self.dissenters],
            "missing": [f"{n:040x}" for n in self.missing],
            "entryNode": f"{self.entry_node:040x}",
        }
        if self.tick_ms is not None:
            body["tick"] = self.tick_ms
        if signed and self.signature:
            body["signerKey"] = base64.b64encode(self.signer_key).decode()
            body["signature"] = base64.b64encode(self.signature).decode()
        return body


def _json_or_none(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


class StoreFull(EventError):
    """The store holds only running activations up to its bounds: the caller should retry later."""


class ActivationStore:
    """The entry node's activations, bounded in count, bytes and time (see the module docstring)."""

    def __init__(
        self,
        retention_ms: int = DEFAULT_RETENTION_MS,
        max_count: int = DEFAULT_MAX_COUNT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        max_running_bytes: int = DEFAULT_MAX_RUNNING_BYTES,
        max_running_per_user: int = DEFAULT_MAX_RUNNING_PER_USER,
    ) -> None:
        self.retention_ms, self.max_count, self.max_bytes = retention_ms, max_count, max_bytes
        self.max_running_bytes, self.max_running_per_user = max_running_bytes, max_running_per_user
        self._running: dict[str, Activation] = {}
        self._ended: OrderedDict[str, Activation] = OrderedDict()  # in the order they ended
        self._bytes = 0
        self._held: dict[str, int] = {}  # a running activation's id -> the bytes it holds
        self._held_bytes = 0
        self._per_user: Counter[str] = Counter()  # running activations by ``Activation.runner``

    def __len__(self) -> int:
        return len(self._running) + len(self._ended)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def running_bytes(self) -> int:
        return self._held_bytes

    def add(self, activation: Activation, now_ms: int, held_bytes: int = 0) -> None:
        """A new running activation holding ``held_bytes``; StoreFull, naming the bound, when one leaves no room."""
        self.expire(now_ms)
        user = activation.runner
        if self._per_user[user] >= self.max_running_per_user:
            raise StoreFull(
                f"{user} has {self._per_user[user]} activations running on this node, the most one user may "
                f"({self.max_running_per_user}); retry later"
            )
        if self._running and self._held_bytes + held_bytes > self.max_running_bytes:
            raise StoreFull(
                f"the activations running on this node hold {self._held_bytes} bytes of events; with {held_bytes} "
                f"more they would pass its bound of {self.max_running_bytes}; retry later"
            )
        if len(self) >= self.max_count:
            if not self._ended:
                raise StoreFull(f"{len(self._running)} activations are running on this node; retry later")
            self._forget_oldest()
        self._running[activation.activation_id] = activation
        self._held[activation.activation_id] = held_bytes
        self._held_bytes += held_bytes
        self._per_user[user] += 1

    def get(self, activation_id: str, now_ms: int) -> Activation | None:
        self.expire(now_ms)
        return self._running.get(activation_id) or self._ended.get(activation_id)

    def readable(self, user: str, function: str | None, limit: int, now_ms: int) -> list[Activation]:
        """The newest ``limit`` activations ``user`` may read (of ``function`` only, unless None), newest first."""
        self.expire(now_ms)
        found: list[Activation] = []
        for activation in [*self._running.values(), *reversed(self._ended.values())]:
            if activation.may_read(user) and function in (None, activation.function):
                found.append(activation)
        found.sort(key=lambda a: a.start_ms, reverse=True)
        return found[:limit]

    def ended(self, activation: Activation) -> None:
        """``activation`` has ended: it is kept from now for the retention, within the bounds."""
        if self._running.get(activation.activation_id) is not activation:
            return
        del self._running[activation.activation_id]
        self._held_bytes -= self._held.pop(activation.activation_id)
        self._per_user[activation.runner] -= 1
        if not self._per_user[activation.runner]:
            del self._per_user[activation.runner]
        self._ended[activation.activation_id] = activation
        self._bytes += activation.size
        while self._bytes > self.max_bytes and len(self._ended) > 1:
            self._forget_oldest()

    def expire(self, now_ms: int) -> int:
        """Forget ended activations past their retention (the oldest first); how many went."""
        gone = 0
        while self._ended:
            oldest = next(iter(self._ended.values()))
            if oldest.end_ms is None or oldest.end_ms + self.retention_ms > now_ms:
                break
            self._forget_oldest()
            gone += 1
        return gone

    def _forget_oldest(self) -> None:
        _, activation = self._ended.popitem(last=False)
        self._bytes -= activation.size
