"""Running a node's graceful leave (``container/graceful_leave.py``) with the reactor.

``LeaveRequest`` is what the daemon knows about its stop: SIGTERM asks for a graceful
leave (``install_stop_signals``), a second SIGTERM or a SIGINT cuts it short and the
daemon stops at once, as it did before graceful leaves.  ``CortexNode._stop`` runs
``LeaveRequest.run`` first, while the ring, the file system and the tracker
connection still work, and goes on with its usual stop when it is over.

``LeaveDriver`` checks the core every ``poll_s``: it tells the status updater what
the heartbeats say (``NodeStatusUpdater.leave``), kills the containers the grace did
not let finish, and writes what it waits for to ``<state_dir>/leave-progress``
(read by ``cortex-rm node leave``) and to the log when that changes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cortex_rm.container.container_manager import ContainerManager
from cortex_rm.container.graceful_leave import GracefulLeave, KillContainers
from cortex_rm.container.nm_container import NMContainerState
from cortex_rm.container.status_updater import NodeStatusUpdater, UpdaterState
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.reactors import INodeReactor

if TYPE_CHECKING:
    from cortex_rm.roles.node_manager import NodeManagerRole

log = Logger()

PROGRESS_FILE = "leave-progress"
"""In the state dir, while a graceful leave runs: what it waits for, one line."""


class LeaveDriver:
    """Runs one ``GracefulLeave`` against this node's containers and status updater."""

    def __init__(
        self,
        clock: IReactorTime,
        containers: ContainerManager,
        updater: NodeStatusUpdater | None,
        grace_s: float,
        *,
        poll_s: float = 0.25,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.clock = clock
        self.containers = containers
        self.updater = updater
        self.poll_s = poll_s
        self.progress = progress
        self.core = GracefulLeave(clock.seconds(), grace_s)
        self._said = ""
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._done: defer.Deferred[None] = defer.Deferred()

    def run(self) -> defer.Deferred[None]:
        """Fires once the node has left (or the leave was cut short)."""
        log.info("leaving gracefully: no new containers; running ones have {grace_s:g} s", grace_s=self.core.grace_s)
        self._loop.start(self.poll_s, now=True).addErrback(self._failed)
        return self._done

    def cut_short(self) -> None:
        """Stop at once: kill what is left and wait for nothing more."""
        self._act(self.core.cut_short(self.clock.seconds()))
        self._tick()

    def _rm_reachable(self) -> bool:
        """Whether the RM hears from this node now: registered, and not cut off (backing off, reconnecting)."""
        u = self.updater
        return u is not None and u.registered and u.state in (UpdaterState.REPORTING, UpdaterState.HEARTBEATING)

    def _rm_known(self) -> bool:
        """Whether an RM ever registered this node (one did: it may be out of reach only for a while)."""
        return self.updater is not None and self.updater.rm_identifier is not None

    def _tick(self) -> None:
        if self._done.called:
            return
        now = self.clock.seconds()
        core = self.core
        if self.updater is not None and self.updater.decommissioned:
            core.confirmed(now)
        self._act(core.check(now, self.containers.running_count(), self._rm_reachable(), rm_known=self._rm_known()))
        if self.updater is not None:
            self.updater.leave = core.report
        doing = core.doing(now)
        if doing != self._said:
            if doing.split(" (")[0] != self._said.split(" (")[0]:  # (the countdown alone is no news)
                log.info("graceful leave: {doing}", doing=doing)
            self.progress(doing)
            self._said = doing
        if core.left:
            if self._loop.running:
                self._loop.stop()
            self._done.callback(None)

    def _act(self, actions: list[KillContainers]) -> None:
        for action in actions:
            live = [cid for cid, c in self.containers.containers.items() if c.state is not NMContainerState.DONE]
            for cid in live:
                self.containers.kill(cid, ContainerExitStatus.KILLED_BY_RESOURCEMANAGER, f"Container killed: {action.reason}")
            if live:
                log.info("killed {n} containers: {reason}", n=len(live), reason=action.reason)

    def _failed(self, failure: Any) -> None:
        log.failure("the graceful leave failed; stopping at once", failure)
        if not self._done.called:
            self._done.callback(None)


class LeaveRequest:
    """Whether this daemon's stop is a graceful leave, and the leave under way (see the module docstring)."""

    def __init__(self) -> None:
        self.requested = False  # SIGTERM: leave gracefully
        self.stopping = False  # the reactor has been asked to stop
        self.cut = False  # a second SIGTERM, or SIGINT: stop at once
        self.current: LeaveDriver | None = None

    async def run(self, clock: IReactorTime, nm: NodeManagerRole | None, state_dir: Path) -> None:
        """The graceful leave of ``nm``'s node, if one was asked for and it runs a NodeManager; else nothing."""
        if nm is None or nm.containers is None or not self.requested or self.cut:
            return
        containers, updater, grace_s = nm.containers, nm.status_updater, nm.section.decommission_grace_s
        progress_file = state_dir / PROGRESS_FILE
        core = updater.updater if updater is not None else None
        self.current = LeaveDriver(clock, containers, core, grace_s, progress=lambda text: _write(progress_file, text))
        try:
            await self.current.run()
        finally:
            progress_file.unlink(missing_ok=True)

    def cut_short(self) -> None:
        self.cut = True
        if self.current is not None:
            self.current.cut_short()


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text + "\n")
    except OSError as e:  # the leave goes on without its progress file
        log.warn("cannot write {path}: {error}", path=str(path), error=str(e))


def install_stop_signals(reactor: INodeReactor, request: LeaveRequest) -> None:
    """SIGTERM: a graceful leave; a second SIGTERM, or SIGINT: stop at once.  Call once the reactor
    runs (it installs its own handlers then, which these replace)."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGTERM and not request.requested and not request.stopping:
            log.info("SIGTERM: leaving gracefully (a second SIGTERM, or SIGINT, stops at once)")
            request.requested = True
        elif not request.cut:
            log.info("signal {signum}: stopping at once", signum=signum)
            reactor.callFromThread(request.cut_short)
        if not request.stopping:
            request.stopping = True
            reactor.callFromThread(_stop, reactor)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _stop(reactor: INodeReactor) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:  # it stopped already (a failed start stops it)
        pass
