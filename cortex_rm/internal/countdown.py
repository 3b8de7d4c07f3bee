"""A one-shot call on the injected clock that can start over: the ring connections' handshake and idle timeouts."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Countdown:
    """Calls ``action`` once ``seconds`` after it starts (or last restarted), unless cancelled first."""

    def __init__(self, clock: IReactorTime, seconds: float, action: Callable[[], None]) -> None:
        self._call: IDelayedCall = clock.callLater(seconds, action)
        self._seconds = seconds

    def restart(self) -> None:
        """Count the whole time again from now (no effect once it has fired or been cancelled)."""
        if self._call.active():
            self._call.reset(self._seconds)

    def cancel(self) -> None:
        """Never call the action (no effect once it has fired)."""
        if self._call.active():
            self._call.cancel()
