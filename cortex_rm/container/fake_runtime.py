"""An in-memory ``ContainerRuntime`` for unit tests of the NodeManager: ``FakeRuntime``.

It fakes the seam, not LXC: no process, file or cgroup exists.  A container
"runs" from ``start_delay`` seconds after ``start`` (on the injected clock) until
the test ends it (``finish``, ``oom_kill``) or its ``FakeProgram`` does; ``kill``
follows the same lifecycle table and grace logic as the real runtime
(``runtime.RUNTIME_CONTAINER_LIFECYCLE``): SIGTERM ends a program that does not
ignore it with its ``sigterm_exit_code`` (143 by default), otherwise SIGKILL
ends it with 137 once the grace has passed.  A program that needs more memory
than the spec allows is OOM-killed as soon as it runs (137,
``killed_for_memory``).  Every spec is recorded, and every signal delivered.

Everything that happens because time passed or a signal arrived happens in a
``callLater`` on the clock, as it would in a real runtime: with
``twisted.internet.task.Clock``, ``clock.advance(0)`` delivers it.  What the
test does itself (``finish``, ``oom_kill``, ``fail_launch``) happens at once.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from cortex_rm.container.runtime import (
    LAUNCH_FAILED_EXIT_CODE,
    RUNTIME_CONTAINER_LIFECYCLE,
    SIGKILL_EXIT_CODE,
    SIGTERM_EXIT_CODE,
    ContainerExit,
    ContainerSpec,
    ContainerStartError,
    RuntimeContainerEvent,
    RuntimeContainerState,
)

_S = RuntimeContainerState
_E = RuntimeContainerEvent

#: Fake host pids start here, so that they never look like a real small pid.
FIRST_FAKE_PID: Final = 100_000


@dataclass(frozen=True)
class FakeProgram:
    """How a fake container's process behaves: what a test would otherwise write as a script."""

    #: Exit by itself with this code ``runs_for`` seconds after starting; None: run until ended.
    exit_code: int | None = None
    runs_for: float = 0.0
    #: The code it exits with on SIGTERM; None: it ignores SIGTERM (only SIGKILL ends it).
    sigterm_exit_code: int | None = SIGTERM_EXIT_CODE
    #: The memory it needs; more than the spec's limit gets it OOM-killed as soon as it runs.
    peak_memory_bytes: int = 0


def run_until_ended(spec: ContainerSpec) -> FakeProgram:
    """The default program: runs until the test ends it, dies on SIGTERM."""
    return FakeProgram()


class FakeContainer:
    """One fake container (a ``RunningContainer``), with what the test may inspect."""

    def __init__(self, runtime: FakeRuntime, spec: ContainerSpec, program: FakeProgram) -> None:
        self.runtime = runtime
        self.spec = spec
        self.program = program
        self.container_id = spec.container_id
        self.pid: int | None = None
        self.started: Deferred[None] = Deferred()
        self.exited: Deferred[ContainerExit] = Deferred()
        self.state = _S.LAUNCHING
        #: Every signal delivered while it ran, in order (``kill``'s SIGTERM included).
        self.signals_received: list[int] = []
        #: The grace of the first ``kill``, if it was killed.
        self.kill_grace: float | None = None
        self.result: ContainerExit | None = None
        self._timers: list[IDelayedCall] = []

    # -- the RunningContainer interface

    def signal(self, sig: int) -> None:
        """Deliver ``sig``: SIGTERM and SIGKILL end the program as above; others are only recorded."""
        if self.state not in (_S.RUNNING, _S.TERMINATING, _S.KILLING):
            return
        self.signals_received.append(sig)
        if sig == signal.SIGKILL:
            self._later(0, self._end_by_sigkill)
        elif sig == signal.SIGTERM and self.program.sigterm_exit_code is not None:
            self._later(0, self._end, self.program.sigterm_exit_code, False, "")

    def kill(self, grace_seconds: float) -> None:
        """SIGTERM now, SIGKILL when ``grace_seconds`` have passed on the clock."""
        target = (_S.TERMINATING if grace_seconds > 0 else _S.KILLING) if self.state is _S.RUNNING else None
        if not self._fire(_E.KILL, target):
            return
        self.kill_grace = grace_seconds
        if self.state is _S.TERMINATING:
            self.signal(signal.SIGTERM)
            self._later(grace_seconds, self._grace_expired)
        elif self.state is _S.KILLING:
            self._sigkill()

    # -- what the test does

    def finish(self, exit_code: int, diagnostics: str = "") -> None:
        """The process exits with ``exit_code`` now."""
        if self.state not in (_S.RUNNING, _S.TERMINATING, _S.KILLING):
            raise AssertionError(f"fake container {self.container_id} is {self.state.name}: it cannot exit now")
        self._end(exit_code, False, diagnostics)

    def oom_kill(self) -> None:
        """The memory cgroup's OOM killer kills the process now."""
        if self.state not in (_S.RUNNING, _S.TERMINATING, _S.KILLING):
            raise AssertionError(f"fake container {self.container_id} is {self.state.name}: it cannot be OOM-killed")
        self._end(SIGKILL_EXIT_CODE, True, self._oom_diagnostics())

    # -- inside

    def _fire(self, event: RuntimeContainerEvent, target: RuntimeContainerState | None = None) -> bool:
        """Take the transition; False when the table says ``event`` is ignored here."""
        new = RUNTIME_CONTAINER_LIFECYCLE.next_state(self.state, event, target)
        if new is None:
            return False
        self.state = new
        return True

    def _later(self, delay: float, f: Callable[..., None], *args: object) -> None:
        self._timers.append(self.runtime.clock.callLater(delay, f, *args))

    def launch(self, failure: str | None) -> None:
        """The fake LXC has done its work: the program runs, or the launch fails."""
        if failure is not None:
            self._fire(_E.EXITED)
            self.result = ContainerExit(LAUNCH_FAILED_EXIT_CODE, False, failure)
            self.runtime.forget(self)
            self.started.errback(ContainerStartError(failure))
            self.exited.callback(self.result)
            return
        self.pid = next(self.runtime.pids)
        self._fire(_E.STARTED)
        if self.state is _S.KILLING:
            self._sigkill()
        elif self.program.peak_memory_bytes > self.spec.memory_limit_bytes:
            self._later(0, self._end, SIGKILL_EXIT_CODE, True, self._oom_diagnostics())
        elif self.program.exit_code is not None:
            self._later(self.program.runs_for, self._end, self.program.exit_code, False, "")
        self.started.callback(None)

    def _grace_expired(self) -> None:
        if self.state is _S.TERMINATING:
            self._fire(_E.GRACE_EXPIRED)
            self._sigkill()

    def _sigkill(self) -> None:
        self.signals_received.append(signal.SIGKILL)
        self._later(0, self._end_by_sigkill)

    def _end_by_sigkill(self) -> None:
        self._end(SIGKILL_EXIT_CODE, False, "")

    def _end(self, exit_code: int, killed_for_memory: bool, diagnostics: str) -> None:
        if self.state is _S.EXITED:  # another cause came first
            return
        self._fire(_E.EXITED)
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self.result = ContainerExit(exit_code, killed_for_memory, diagnostics)
        self.runtime.forget(self)
        self.exited.callback(self.result)

    def _oom_diagnostics(self) -> str:
        return (
            f"Container {self.container_id} was killed by the OOM killer of its memory cgroup: "
            f"limit {self.spec.memory_limit_bytes} bytes."
        )


class FakeRuntime:
    """An in-memory ``ContainerRuntime`` on ``clock`` (see the module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        program: Callable[[ContainerSpec], FakeProgram] = run_until_ended,
        start_delay: float = 0.0,
    ) -> None:
        self.clock = clock
        self.program = program
        self.start_delay = start_delay
        #: Every spec ``start`` was given, in order.
        self.specs: list[ContainerSpec] = []
        #: Every container started, by id (the latest of an id that ran more than once).
        self.containers: dict[str, FakeContainer] = {}
        self.running: dict[str, FakeContainer] = {}
        self.pids = itertools.count(FIRST_FAKE_PID)
        self._launch_failures: dict[str, str] = {}
        self._refusals: dict[str, str] = {}

    def start(self, spec: ContainerSpec) -> FakeContainer:
        """Record ``spec``; the container runs ``start_delay`` seconds later."""
        self.specs.append(spec)
        cid = spec.container_id
        if cid in self._refusals:
            raise ContainerStartError(self._refusals.pop(cid))
        if cid in self.running:
            raise ContainerStartError(f"container {cid} is running already")
        container = FakeContainer(self, spec, self.program(spec))
        self.containers[cid] = container
        self.running[cid] = container
        container._later(self.start_delay, container.launch, self._launch_failures.pop(cid, None))
        return container

    def refuse_start(self, container_id: str, message: str) -> None:
        """The next ``start`` of ``container_id`` raises ``ContainerStartError(message)``."""
        self._refusals[container_id] = message

    def fail_launch(self, container_id: str, message: str) -> None:
        """The next launch of ``container_id`` fails: ``started`` fails with ``message``, exit code -1."""
        self._launch_failures[container_id] = message

    def finish(self, container_id: str, exit_code: int, diagnostics: str = "") -> None:
        """The running container ``container_id`` exits with ``exit_code`` now."""
        self._running(container_id).finish(exit_code, diagnostics)

    def oom_kill(self, container_id: str) -> None:
        """The running container ``container_id`` is OOM-killed now."""
        self._running(container_id).oom_kill()

    def forget(self, container: FakeContainer) -> None:
        """``container`` has ended: its id may run again."""
        if self.running.get(container.container_id) is container:
            del self.running[container.container_id]

    def _running(self, container_id: str) -> FakeContainer:
        try:
            return self.running[container_id]
        except KeyError:
            raise AssertionError(f"no fake container {container_id} is running") from None
