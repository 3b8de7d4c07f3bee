"""The bounds an IPC port keeps under hostile load, as plain objects with no I/O.

* :class:`IpcLimits` -- the numbers, frozen, with the reasoning behind each default;
* :class:`ConnectionSlots` -- admission: connections per port and per source address;
* :class:`BufferBudget` / :class:`BufferAccount` -- the bytes of partial frames a port
  holds across all its connections, and which connection gives way when it is full;
and the reasons a connection is refused or cut.  The deadlines themselves are in
``ipc_deadlines.py``.  The Twisted edge (``ipc_server.py``) and the connection core (``ipc_connection.py``)
only ask these; every rule is tested here with numbers, without sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.errors import FatalRpcError

MiB: Final = 1024 * 1024

# Why a connection was refused or cut, as the rate-limited log counts them.
TOO_MANY_CONNECTIONS: Final = "too many connections"
TOO_MANY_FROM_ADDRESS: Final = "too many connections from one address"
BUFFER_BUDGET_EXHAUSTED: Final = "buffer budget exhausted"
HEADER_TIMEOUT: Final = "no connection header in time"
FRAME_TIMEOUT: Final = "partial frame stalled"
#: Not a refusal: a quiet connection closed as Hadoop's server closes one.
IDLE: Final = "idle"


@dataclass(frozen=True, slots=True)
class IpcLimits:
    """Per-port bounds of an IPC server (one instance per listening port's factory).

    ``max_connections`` (2,048): connections open at once on the port.  Hadoop's
    ``ipc.server.max.connections`` is unbounded by default; a Cortex RM port serves one
    connection per running AM (scheduler port) or per YarnClient JVM (client port), so
    2,048 is room for the largest clusters we target while keeping file descriptors and
    per-connection state (a few KiB each) bounded.

    ``max_connections_per_address`` (256): connections from one source address.  One host
    runs at most a few dozen AMs or spark-submits; 256 leaves room for a busy gateway host
    but stops one host from taking every slot.

    ``max_buffered_bytes`` (72 MiB): bytes of not-yet-complete frames held across all the
    port's connections.  Room for one frame of Hadoop's default maximum (64 MiB,
    ``ipc.maximum.data.length``) plus 8 MiB for everyone else; honest YARN frames are
    kilobytes, so the budget only binds under abuse.  Frames that arrive whole in one read
    are never held and never counted.

    ``max_outstanding_calls`` (256): a connection is not read while this many of its calls
    are unanswered, as Hadoop's bounded call queue pushes back.

    ``header_timeout_s`` (10 s): from accept to a served connection context (preamble,
    SASL if any, context).  A Java client needs one to three round trips, milliseconds on
    a LAN; ten seconds forgives a stalled RM event loop and a slow WAN.

    ``frame_timeout_s`` (10 s): a partial frame pending this long without a frame
    completing.  The Java client writes each call in one flush, so a frame left half sent
    for seconds is a stalled or hostile peer holding buffer budget.  Not counted while the
    server itself stops reading the connection (``max_outstanding_calls``).

    ``idle_timeout_s`` (20 s): no input at all and no call running.  Hadoop's server
    closes connections idle for twice ``ipc.client.connection.maxidletime`` (2 x 10 s);
    AMs heartbeat every 1-3 s and YarnClient polls every 1 s, so live connections never
    get near it, and a Java client whose idle connection was closed reconnects
    transparently on its next call.

    ``refusal_log_interval_s`` (10 s): refusals are logged as one count per reason per
    interval, never one line per connection and never with client bytes.
    """

    max_connections: int = 2048
    max_connections_per_address: int = 256
    max_buffered_bytes: int = 72 * MiB
    max_outstanding_calls: int = 256
    header_timeout_s: float = 10.0
    frame_timeout_s: float = 10.0
    idle_timeout_s: float = 20.0
    refusal_log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_address", "max_buffered_bytes", "max_outstanding_calls"):
            if getattr(self, name) < 1:
                raise ValueError(f"IpcLimits.{name} must be at least 1, not {getattr(self, name)}")
        for name in ("header_timeout_s", "frame_timeout_s", "idle_timeout_s", "refusal_log_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"IpcLimits.{name} must be positive, not {getattr(self, name)}")
        if self.max_connections_per_address > self.max_connections:
            raise ValueError("IpcLimits.max_connections_per_address cannot exceed max_connections")

    def fitting(self, max_data_length: int) -> IpcLimits:
        """These limits, the budget grown if it must be to hold one ``max_data_length`` frame plus 8 MiB."""
        if self.max_buffered_bytes >= max_data_length + 4:
            return self
        return replace(self, max_buffered_bytes=max_data_length + 4 + 8 * MiB)


class ConnectionSlots:
    """Counts a port's open connections, in all and per source address."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self._by_address: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Take a slot for a connection from ``address``: None if admitted, else the refusal reason."""
        if self.total >= self.max_total:
            return TOO_MANY_CONNECTIONS
        held = self._by_address.get(address, 0)
        if held >= self.max_per_address:
            return TOO_MANY_FROM_ADDRESS
        self.total += 1
        self._by_address[address] = held + 1
        return None

    def release(self, address: str) -> None:
        """Give back the slot of an admitted connection from ``address``."""
        held = self._by_address[address]
        if held == 1:
            del self._by_address[address]
        else:
            self._by_address[address] = held - 1
        self.total -= 1

    def from_address(self, address: str) -> int:
        """How many admitted connections ``address`` has open."""
        return self._by_address.get(address, 0)


class BufferBudget:
    """The bytes a port's connections hold in partial frames, bounded by ``limit``.

    Each connection holds through a :class:`BufferAccount`.  When one needs room the
    budget lacks, the accounts receiving larger frames than its own give way -- largest
    frame first, then most bytes held -- and are evicted (their bytes released here,
    their owners told to refuse their connections) until it fits; if even that cannot
    make room, nothing is evicted and the claim fails.  A frame never evicts one of its
    own size or smaller, so a flood of large declared frames cannot starve smaller
    honest frames: to block frames of F bytes, a peer needs ``limit / F`` connections
    each holding up to F bytes, which the connection caps forbid for small F (with the
    defaults, 72 MiB / 2,048 connections: every frame under 36 KiB always gets in).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a buffer budget must be at least 1 byte, not {limit}")
        self.limit = limit
        self.total = 0
        self._held: dict[BufferAccount, int] = {}
        self._frame: dict[BufferAccount, int] = {}  # the size of the frame each holder is receiving

    def account(self, on_evict: Callable[[], None]) -> BufferAccount:
        """A new, empty account; ``on_evict`` is called if the budget takes its bytes for another."""
        return BufferAccount(self, on_evict)

    def held_by(self, account: BufferAccount) -> int:
        """Bytes ``account`` holds."""
        return self._held.get(account, 0)

    def set_held(self, account: BufferAccount, amount: int) -> None:
        """``account`` now holds ``amount`` bytes (0 drops it)."""
        self.total += amount - self._held.pop(account, 0)
        if amount:
            self._held[account] = amount
        else:
            self._frame.pop(account, None)

    def make_room(self, account: BufferAccount, amount: int, frame_size: int) -> list[BufferAccount] | None:
        """Room for ``account`` to hold ``amount`` bytes in all, of a frame of ``frame_size`` bytes.

        None if there is no room even after evicting every holder of a larger frame;
        else the accounts evicted to make it (already released; usually none).
        """
        excess = self.total - self._held.get(account, 0) + amount - self.limit
        victims: list[BufferAccount] = []
        if excess > 0:
            larger = sorted(
                (a for a in self._held if a is not account and self._frame.get(a, 0) > frame_size),
                key=lambda a: (self._frame[a], self._held[a]),
                reverse=True,
            )
            for candidate in larger:
                if excess <= 0:
                    break
                victims.append(candidate)
                excess -= self._held[candidate]
            if excess > 0:
                return None
            for victim in victims:
                self.set_held(victim, 0)
        self._frame[account] = frame_size
        return victims


class BufferAccount:
    """One connection's share of a :class:`BufferBudget`."""

    def __init__(self, budget: BufferBudget, on_evict: Callable[[], None]) -> None:
        self.budget = budget
        self._on_evict = on_evict

    @property
    def held(self) -> int:
        """Bytes this connection holds now."""
        return self.budget.held_by(self)

    def claim(self, amount: int, frame_size: int) -> bool:
        """May this connection hold ``amount`` bytes of a ``frame_size``-byte frame?  Evicts larger holders if needed."""
        victims = self.budget.make_room(self, amount, frame_size)
        if victims is None:
            return False
        for victim in victims:
            victim._on_evict()
        return True

    def hold(self, amount: int) -> None:
        """This connection now holds ``amount`` bytes (after a successful claim, or fewer)."""
        self.budget.set_held(self, amount)


class OverBudget(FatalRpcError):
    """The FATAL refusing a frame the port's buffer budget cannot hold (a refusal, logged rate-limited)."""


def over_budget(account: BufferAccount, frame_size: int) -> OverBudget:
    """FATAL ``RetriableException`` "Server too busy", as Hadoop's overloaded call queue disconnects."""
    return OverBudget(
        errors.RETRIABLE_EXCEPTION,
        f"Server too busy: this IPC port's buffers ({account.budget.limit} bytes) cannot hold a frame of "
        f"{frame_size} bytes now; retry later",
        errors.FATAL_UNKNOWN,
    )
