"""The deadlines of one IPC connection: header, stalled partial frame, idle.

:func:`connection_deadline` is the rule, a pure function of the connection's state;
:class:`ConnectionDeadlines` keeps one timer per connection on an injected clock,
set to the nearest deadline and re-armed when it fires early (input moves deadlines
later, never earlier, except a partial frame starting, which pulls the timer in).
On expiry it calls back with the reason; the edge (``ipc_server.py``) closes the
connection: quietly when idle, with a FATAL otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from cortex_rm.yarn_api.ipc_connection import IpcConnection
from cortex_rm.yarn_api.ipc_events import ConnectionState
from cortex_rm.yarn_api.ipc_limits import FRAME_TIMEOUT, HEADER_TIMEOUT, IDLE, IpcLimits


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a connection expires if nothing changes, and why (one of the reason constants)."""

    at: float
    reason: str


def connection_deadline(
    limits: IpcLimits,
    *,
    opened_at: float,
    ready: bool,
    last_input_at: float,
    frame_started_at: float | None,
    outstanding: int,
) -> Deadline | None:
    """The earliest timeout a connection is heading for; None if none runs now.

    * not ready (no context served yet): ``opened_at + header_timeout_s``;
    * a partial frame pending (``frame_started_at``, None while reading is paused or no
      frame is partial): ``frame_started_at + frame_timeout_s``;
    * no call running: ``last_input_at + idle_timeout_s`` (a running call is the server's
      business, never the client's idleness).
    """
    candidates = []
    if not ready:
        candidates.append(Deadline(opened_at + limits.header_timeout_s, HEADER_TIMEOUT))
    if frame_started_at is not None:
        candidates.append(Deadline(frame_started_at + limits.frame_timeout_s, FRAME_TIMEOUT))
    if outstanding == 0:
        candidates.append(Deadline(last_input_at + limits.idle_timeout_s, IDLE))
    return min(candidates, key=lambda d: d.at, default=None)


class ConnectionDeadlines:
    """The timer of one connection: calls ``expire(reason)`` when a deadline of ``limits`` passes.

    ``paused`` (set by the edge) suspends the frame deadline while the server is not
    reading the connection: a frame cannot progress then, through no fault of the peer.
    """

    def __init__(
        self, limits: IpcLimits, clock: IReactorTime, core: IpcConnection, expire: Callable[[str], None]
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._core = core
        self._expire = expire
        self.paused = False
        self._opened_at = self._last_input_at = clock.seconds()
        self._frame_started_at: float | None = None  # when the pending partial frame began
        self._timer: IDelayedCall | None = None
        self._schedule()

    def input_seen(self, frames_before: int) -> None:
        """Bytes came in (``frames_before``: the core's ``frames_read`` before them); track the partial frame."""
        now = self._last_input_at = self._clock.seconds()
        if self._core.pending_bytes == 0:
            self._frame_started_at = None
        elif self._frame_started_at is None or self._core.frames_read != frames_before:
            self._frame_started_at = now
            self._check_by(now + self._limits.frame_timeout_s)

    def replied(self) -> None:
        """A reply went out: activity, so the idle time counts from now."""
        self._last_input_at = self._clock.seconds()

    def reading_resumed(self) -> None:
        """The server reads again: a pending partial frame's time starts afresh."""
        if self._frame_started_at is not None:
            self._frame_started_at = self._clock.seconds()
            self._check_by(self._frame_started_at + self._limits.frame_timeout_s)

    def stop(self) -> None:
        """The connection is gone: cancel the timer."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def waited(self, reason: str) -> float:
        """The timeout, in seconds, behind ``reason``."""
        return {HEADER_TIMEOUT: self._limits.header_timeout_s, FRAME_TIMEOUT: self._limits.frame_timeout_s}.get(
            reason, self._limits.idle_timeout_s
        )

    def _deadline(self) -> Deadline | None:
        return connection_deadline(
            self._limits,
            opened_at=self._opened_at,
            ready=self._core.state is ConnectionState.READY,
            last_input_at=self._last_input_at,
            frame_started_at=None if self.paused else self._frame_started_at,
            outstanding=self._core.outstanding,
        )

    def _schedule(self) -> None:
        """Check again at the next deadline (or an idle timeout from now while calls run)."""
        now = self._clock.seconds()
        deadline = self._deadline()
        at = deadline.at if deadline is not None else now + self._limits.idle_timeout_s
        self._timer = self._clock.callLater(max(0.0, at - now), self._check)

    def _check_by(self, at: float) -> None:
        """Make the next check come no later than ``at`` (a nearer deadline just started)."""
        if self._timer is not None and self._timer.active() and self._timer.getTime() > at:
            self._timer.reset(max(0.0, at - self._clock.seconds()))

    def _check(self) -> None:
        self._timer = None
        if self._core.closed:
            return
        deadline = self._deadline()
        if deadline is None or self._clock.seconds() < deadline.at:
            self._schedule()
        else:
            self._expire(deadline.reason)
