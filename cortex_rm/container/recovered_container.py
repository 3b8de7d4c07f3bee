"""A container a restarted NodeManager found still running: ``RecoveredContainer``.

Its ``lxc-execute`` was the dead daemon's child, so nothing tells the new daemon when it ends:
``RecoveredContainer`` asks every ``POLL_S`` whether its init still runs (the process the record
names: ``nm_recovery.same_process_alive``) and, once it has gone, reads the exit code its wrapper
wrote (``nm_recovery.written_exit_code``; none: YARN's LOST, 154), has the runtime's leftovers of
it removed (``finished``) and fires ``exited``.  Its kill path is the runtime's: SIGTERM to every
process of its cgroup but init, SIGKILL to init after the grace (the kernel then ends every
process of its pid namespace).  Its memory figures died with the old ``lxc-execute``: an
out-of-memory kill is not told apart from another SIGKILL.

It is a ``runtime.RunningContainer``; the probes and signals are injected, so a unit test runs it
with a fake clock and a fake process table.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Final

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cortex_rm.container.nm_recovery import LOST_EXIT_CODE
from cortex_rm.container.runtime import SIGKILL_EXIT_CODE, ContainerExit

log = Logger()

#: How often a recovered container's init is looked at (its end is noticed within this).
POLL_S: Final = 1.0


class RecoveredContainer:
    """A running container re-attached after a restart (see the module docstring)."""

    def __init__(
        self,
        container_id: str,
        pid: int,
        clock: IReactorTime,
        *,
        alive: Callable[[], bool],
        exit_code: Callable[[], int | None],
        signal_others: Callable[[int], None],
        kill_init: Callable[[], None],
        finished: Callable[[], None],
    ) -> None:
        """``alive``: its init still runs; ``exit_code``: what its wrapper wrote; ``signal_others``:
        a signal to every process of the container but init; ``kill_init``: SIGKILL to init;
        ``finished``: remove what the runtime kept of it (called once, before ``exited`` fires)."""
        self._container_id = container_id
        self._pid = pid
        self.clock = clock
        self._alive = alive
        self._exit_code = exit_code
        self._signal_others = signal_others
        self._kill_init = kill_init
        self._finished = finished
        self._started: Deferred[None] = succeed(None)
        self._exited: Deferred[ContainerExit] = Deferred()
        self._killed = False
        self._grace: IDelayedCall | None = None
        self._poll: IDelayedCall | None = clock.callLater(0, self._look)

    @property
    def container_id(self) -> str:
        return self._container_id

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def started(self) -> Deferred[None]:
        return self._started

    @property
    def exited(self) -> Deferred[ContainerExit]:
        return self._exited

    def signal(self, sig: int) -> None:
        """Deliver ``sig`` to every process of the container but init, while it runs."""
        if not self._exited.called:
            self._signal_others(sig)

    def kill(self, grace_seconds: float) -> None:
        """SIGTERM everything but init, then SIGKILL init after ``grace_seconds`` (at once without one)."""
        if self._exited.called or self._killed:
            return
        self._killed = True
        if grace_seconds > 0:
            self._signal_others(signal.SIGTERM)
            self._grace = self.clock.callLater(grace_seconds, self._kill_now)
        else:
            self._kill_now()

    def _kill_now(self) -> None:
        self._grace = None
        self._kill_init()
        if self._poll is not None and self._poll.active():
            self._poll.reset(0)

    def _look(self) -> None:
        self._poll = None
        if self._alive():
            self._poll = self.clock.callLater(POLL_S, self._look)
            return
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        code = self._exit_code()
        diagnostics = ""
        if code is None:
            code = SIGKILL_EXIT_CODE if self._killed else LOST_EXIT_CODE
            if not self._killed:
                diagnostics = f"Container exited with a non-zero exit code {LOST_EXIT_CODE} (no exit code was written)"
        try:
            self._finished()
        except Exception:  # noqa: BLE001 - its end is still reported
            log.failure("removing what was left of recovered container {id} failed", id=self.container_id)
        log.info("recovered container {container_id} exited with {code}", container_id=self.container_id, code=code)
        self._exited.callback(ContainerExit(code, False, diagnostics))
