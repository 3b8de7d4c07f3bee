"""The NodeManager's containers: start, watch, stop and clean up, as YARN's ContainerManagerImpl.

``ContainerManager`` decides; the container runtime (``runtime.ContainerRuntime``:
LXC in the daemon, a fake in unit tests) runs processes, and every file operation
(directories, tokens, localization, the launch script, log tails, deletion) runs
through the injected ``run`` off the reactor thread.  The clock is injected too.

Starting (``start``) is synchronous and decides only whether the container is
accepted, as YARN's ``startContainers`` answers before anything runs:

* the ContainerToken must verify (``container_tokens.py``) -> else ``InvalidToken``;
* the container must not be known here ("already is running on this node");
* a caller naming an application attempt (NMClient's user is the attempt id) must
  belong to the container's application;
* the launch context must be usable: link names, resource URLs and timestamps,
  variable names, a command -> else ``YarnException`` with the reason.

Then the container goes through its lifecycle (``nm_container.py``):
LOCALIZING (dirs, ``container_tokens``, resources), LOCALIZED (``launch_container.sh``
written, the runtime asked to start it), RUNNING, and finally DONE with an exit status:

* the process's exit code (0, or e.g. 143/137 after a signal);
* ``-104`` KILLED_EXCEEDED_PMEM when the runtime says the memory limit killed it;
* ``-105`` KILLED_BY_APPMASTER after ``stop``; ``-106`` KILLED_BY_RESOURCEMANAGER
  after ``cleanup_containers``; ``-107`` KILLED_AFTER_APP_COMPLETION after
  ``cleanup_application``;
* ``-1000`` INVALID when localization failed, ``-1`` when the runtime could not
  launch it (as YARN's ContainerLaunch); the diagnostics say why.

What the runtime is asked to run — limits, writable and read-only dirs — is
``runtime_spec.py``'s.

Reporting: ``statuses_for_heartbeat`` lists every container that is not DONE, and
every DONE container until the RM acknowledges it (``acknowledge``, see
``status_updater.py``).  An acknowledged container is still answered for by
``statuses``/``stop`` for ``completed_retention_ms`` (YARN's
``yarn.nodemanager.duration-to-track-stopped-containers``), then forgotten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.container import container_files
from cortex_rm.container.container_tokens import ContainerGrant, ContainerTokenVerifier, InvalidContainerToken
from cortex_rm.container.launch import LaunchContextError, LaunchPlan, NodeFacts, container_paths, plan_launch
from cortex_rm.container.local_resources import LocalizationError, check_local_resources
from cortex_rm.container.localizer import Localizer
from cortex_rm.container.nm_container import (
    NM_CONTAINER_TRANSITIONS,
    NMContainer,
    NMContainerEvent,
    NMContainerState,
)
from cortex_rm.container.runtime import LAUNCH_FAILED_EXIT_CODE, ContainerExit, ContainerRuntime, ContainerSpec
from cortex_rm.container.runtime_spec import ContainerSettings, runtime_spec
from cortex_rm.container.start_request import ContainerRefused, Refusal, StartRequest
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId
from cortex_rm.yarn.resource_tracker import MAX_CONTAINERS, ContainerReport

log = Logger()

_S, _E = NMContainerState, NMContainerEvent
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
MAX_REMEMBERED_CLEANUPS = 1000


def caller_attempt(caller: str | None) -> ApplicationAttemptId | None:
    """The application attempt a caller names (NMClient's user is ``appattempt_...``), if any."""
    if caller is None:
        return None
    try:
        return ApplicationAttemptId.parse(caller)
    except MalformedId:
        return None


class ContainerManager:
    """This node's containers (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        runtime: ContainerRuntime,
        run: Runner,
        tokens: ContainerTokenVerifier,
        node: NodeFacts,
        settings: ContainerSettings,
        localizer: Localizer | None = None,
    ) -> None:
        self.clock = clock
        self.runtime = runtime
        self.run = run
        self.tokens = tokens
        self.node = node
        self.settings = settings
        self.localizer = localizer if localizer is not None else Localizer(run)
        self.containers: dict[ContainerId, NMContainer] = {}
        self.shutting_down = False
        # applications already cleaned up (the RM may name one in several answers)
        self._cleaned_apps: dict[ApplicationId, None] = {}

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # ------------------------------------------------------------ the lifecycle

    def _fire(self, c: NMContainer, event: NMContainerEvent, target: NMContainerState | None = None) -> bool:
        new = NM_CONTAINER_TRANSITIONS.next_state(c.state, event, target)
        if new is None:
            return False
        old, c.state = c.state, new
        if new is not old:
            log.info(
                "container {container_id} {old} -> {new} on {event}",
                container_id=str(c.container_id),
                old=old.name,
                new=new.name,
                event=event.name,
                exit_status=c.exit_status,
            )
        if new is _S.DONE and not c.done.called:
            c.done.callback(None)
        return True

    # ------------------------------------------------------------ startContainers

    def start(self, request: StartRequest, caller: str | None) -> ContainerId:
        """Accept one container (its launch goes on asynchronously) or raise ContainerRefused."""
        if self.shutting_down:
            raise ContainerRefused(Refusal.REFUSED, "The NodeManager is shutting down")
        if request.token is None:
            raise ContainerRefused(Refusal.INVALID_TOKEN, "No container token in the request")
        try:
            grant = self.tokens.verify(request.token)
        except InvalidContainerToken as e:
            raise ContainerRefused(Refusal.INVALID_TOKEN, str(e), e.container_id) from None
        cid = grant.container_id
        if cid in self.containers:
            raise ContainerRefused(Refusal.REFUSED, f"Container {cid} already is running on this node!!", cid)
        try:
            self.tokens.check_not_started(grant)
        except InvalidContainerToken as e:
            raise ContainerRefused(Refusal.INVALID_TOKEN, str(e), cid) from None
        self._authorize(caller, cid, "start")
        c = self._new_container(grant, request)
        plan = self._plan(c, request)
        self.tokens.mark_started(grant)
        self.containers[cid] = c
        log.info(
            "accepted container {container_id} of {user} with {resource}",
            container_id=str(cid),
            user=c.user,
            resource=str(c.resource),
        )
        self._fire(c, _E.INIT)
        self._localize_and_launch(c, plan)
        return cid

    def _authorize(self, caller: str | None, cid: ContainerId, verb: str) -> None:
        attempt = caller_attempt(caller)
        if attempt is not None and attempt.app_id != cid.attempt_id.app_id:
            raise ContainerRefused(
                Refusal.REFUSED,
                f"Unauthorized request to {verb} container. "
                f"{caller} does not belong to application {cid.attempt_id.app_id} of container {cid}",
                cid,
            )

    def _new_container(self, grant: ContainerGrant, request: StartRequest) -> NMContainer:
        cid = grant.container_id
        if not _USER.match(grant.user):
            raise ContainerRefused(Refusal.REFUSED, f"Invalid user name {grant.user!r} in the container token", cid)
        try:
            resources = check_local_resources(request.launch_context.local_resources)
        except LocalizationError as e:
            raise ContainerRefused(Refusal.REFUSED, f"Invalid launch context for {cid}: {e}", cid) from None
        paths = container_paths(
            self.settings.local_dirs, self.settings.log_dirs, grant.user, str(cid.attempt_id.app_id), str(cid), cid.sequence
        )
        return NMContainer(cid, grant.user, grant.resource, paths, resources)

    def _plan(self, c: NMContainer, request: StartRequest) -> LaunchPlan:
        clc = request.launch_context
        try:
            return plan_launch(
                container_id=str(c.container_id),
                user=c.user,
                clc_environment=dict(clc.environment),
                commands=list(clc.commands),
                tokens=clc.tokens,
                paths=c.paths,
                node=self.node,
            )
        except LaunchContextError as e:
            raise ContainerRefused(Refusal.REFUSED, f"Invalid launch context for {c.container_id}: {e}", c.container_id) from None

    def spec(self, c: NMContainer, plan: LaunchPlan) -> ContainerSpec:
        """What the runtime is asked to run for ``c``."""
        return runtime_spec(c, plan, self.settings, Path(self.node.java_home))

    @defer.inlineCallbacks
    def _localize_and_launch(self, c: NMContainer, plan: LaunchPlan) -> Generator[defer.Deferred[Any], Any, None]:
        try:
            yield self.run(lambda: container_files.prepare_container(c.paths, plan.tokens))
            yield self.localizer.localize(c.app_id, c.paths.app_dirs[0], c.paths.work_dir, c.resources)
            if c.state is _S.LOCALIZING:
                yield self.run(lambda: container_files.write_launch_script(c.paths, plan.script))
                sources = [r.url.file for r in c.resources if r.url.scheme == "file"]
                c.staging_dirs = yield self.run(lambda: container_files.application_staging_dirs(sources, c.app_id))
        except Exception as e:  # noqa: BLE001 - every failure here is the container's, reported in its status
            if isinstance(e, LocalizationError):
                reason = str(e)
            else:
                log.failure("localizing container {container_id} failed", Failure(), container_id=str(c.container_id))
                reason = f"Localization of {c.container_id} failed: {type(e).__name__}: {e}"
            self._localization_failed(c, reason)
            return
        if c.state is _S.KILLING:
            self._killed(c)
            return
        self._fire(c, _E.RESOURCES_LOCALIZED)
        self._launch(c, plan)

    def _killed(self, c: NMContainer, exit_code: int = ContainerExitStatus.INVALID) -> None:
        """What was in progress when the kill came has ended (``exit_code``: the process's, if it ran)."""
        c.exit_status = c.kill_status if c.kill_status is not None else exit_code
        self._fire(c, _E.KILLED)

    def _localization_failed(self, c: NMContainer, reason: str) -> None:
        if c.state is _S.KILLING:
            self._killed(c)
            return
        c.exit_status = ContainerExitStatus.INVALID
        c.diagnostics.append(reason)
        self._fire(c, _E.LOCALIZATION_FAILED)
        self._fire(c, _E.CLEANED_UP)

    def _launch(self, c: NMContainer, plan: LaunchPlan) -> None:
        try:
            running = self.runtime.start(self.spec(c, plan))
        except Exception as e:  # noqa: BLE001 - ContainerStartError, or a runtime bug: the container failed
            c.diagnostics.append(f"Failed to launch container {c.container_id}: {e}")
            self._launch_failed(c, LAUNCH_FAILED_EXIT_CODE)
            return
        c.running = running
        # The runtime's Deferreds are shared: pass on what they carry (see runtime.py), except
        # a failed start, which ends here (``exited`` carries the end to everyone).
        running.started.addCallbacks(self._passing(lambda _: self._started(c)), lambda f: self._start_failed(c, f))
        running.exited.addCallback(self._passing(lambda exit: self._exited(c, exit)))

    @staticmethod
    def _passing(observe: Callable[[Any], None]) -> Callable[[Any], Any]:
        def callback(result: Any) -> Any:
            try:
                observe(result)
            except Exception:  # noqa: BLE001 - a bug here must not break the runtime's chain
                log.failure("container event handling failed")
            return result

        return callback

    def _started(self, c: NMContainer) -> None:
        if c.state in (_S.LOCALIZED, _S.KILLING):
            self._fire(c, _E.LAUNCHED)

    def _start_failed(self, c: NMContainer, failure: Failure) -> None:
        """``started`` failed: the container never ran; ``exited`` (exit code -1) ends it."""
        c.start_failed = True
        if c.state is _S.LOCALIZED:
            c.diagnostics.append(f"Failed to launch container {c.container_id}: {failure.getErrorMessage()}")

    def _launch_failed(self, c: NMContainer, exit_code: int) -> None:
        if c.state is _S.KILLING:
            self._killed(c, exit_code)
            return
        c.exit_status = exit_code
        self._fire(c, _E.LAUNCH_FAILED)
        self._fire(c, _E.CLEANED_UP)

    def _exited(self, c: NMContainer, exit: ContainerExit) -> None:
        if exit.diagnostics:
            c.diagnostics.append(exit.diagnostics)
        if c.state is _S.KILLING:
            c.diagnostics.append(f"Container killed on request. Exit code is {exit.exit_code}")
            self._killed(c, exit.exit_code)
            return
        if c.state is _S.LOCALIZED:
            if c.start_failed:
                self._launch_failed(c, exit.exit_code)
                return
            self._fire(c, _E.LAUNCHED)  # exited before the runtime said it started
        if c.state is not _S.RUNNING:
            return
        if exit.killed_for_memory:
            c.exit_status = ContainerExitStatus.KILLED_EXCEEDED_PMEM
            limit = c.resource.memory_mb + self.settings.memory_overhead_mb
            c.diagnostics.append(
                f"Container {c.container_id} is running beyond its physical memory limit of {limit} MB. Killing container."
            )
            self._fire(c, _E.EXITED, _S.EXITED_WITH_FAILURE)
            self._fire(c, _E.CLEANED_UP)
            return
        c.exit_status = exit.exit_code
        if exit.exit_code == 0:
            self._fire(c, _E.EXITED, _S.EXITED_WITH_SUCCESS)
            self._fire(c, _E.CLEANED_UP)
            return
        self._fire(c, _E.EXITED, _S.EXITED_WITH_FAILURE)
        d = self.run(lambda: container_files.failure_diagnostics(c.paths.log_dir, exit.exit_code))
        d.addCallbacks(c.diagnostics.append, lambda f: log.failure("reading the logs of {c} failed", f, c=str(c.container_id)))
        d.addBoth(lambda _: self._fire(c, _E.CLEANED_UP))

    # ------------------------------------------------------------ kills

    def _signal_kill(self, c: NMContainer) -> None:
        if c.running is not None:
            try:
                c.running.kill(self.settings.kill_grace_s)
            except Exception:  # noqa: BLE001 - the exit is still awaited; log and go on
                log.failure("killing container {container_id} failed", container_id=str(c.container_id))

    def kill(self, container_id: ContainerId, exit_status: int | None, diagnostics: str) -> bool:
        """Kill a container with the exit status it will report; False if it already ended."""
        c = self.containers.get(container_id)
        if c is None:
            return False
        was = c.state
        if not self._fire(c, _E.KILL):
            return False
        c.kill_status = exit_status
        c.diagnostics.append(diagnostics)
        if was is _S.NEW:
            c.exit_status = exit_status if exit_status is not None else ContainerExitStatus.INVALID
        else:  # a container the runtime has not started yet is killed as soon as it runs
            self._signal_kill(c)
        return True

    def stop(self, container_id: ContainerId, caller: str | None) -> None:
        """stopContainers for one container (KILLED_BY_APPMASTER); ContainerRefused if unknown."""
        if container_id not in self.containers:
            raise ContainerRefused(
                Refusal.REFUSED, f"Container {container_id} is not handled by this NodeManager", container_id
            )
        self._authorize(caller, container_id, "stop")
        self.kill(container_id, ContainerExitStatus.KILLED_BY_APPMASTER, "Container killed by the ApplicationMaster.")

    def cleanup_containers(self, container_ids: Iterable[ContainerId]) -> None:
        """The RM wants these containers gone (KILLED_BY_RESOURCEMANAGER)."""
        for cid in container_ids:
            self.kill(cid, ContainerExitStatus.KILLED_BY_RESOURCEMANAGER, "Container Killed by ResourceManager")

    def cleanup_application(self, app_id: ApplicationId) -> defer.Deferred[list[Path]]:
        """Kill what is left of ``app_id`` (KILLED_AFTER_APP_COMPLETION), then delete its
        local dirs (logs stay); fires with the dirs deleted."""
        mine = [c for c in self.containers.values() if c.container_id.attempt_id.app_id == app_id]
        if app_id in self._cleaned_apps and all(c.state is _S.DONE for c in mine):
            return defer.succeed([])
        self._cleaned_apps[app_id] = None
        while len(self._cleaned_apps) > MAX_REMEMBERED_CLEANUPS:
            del self._cleaned_apps[next(iter(self._cleaned_apps))]
        for c in mine:
            self.kill(c.container_id, ContainerExitStatus.KILLED_AFTER_APP_COMPLETION, "Container killed on application-finish event")
        d: defer.Deferred[Any] = defer.DeferredList([c.done for c in mine], consumeErrors=True)
        d.addCallback(lambda _: self.run(lambda: container_files.delete_application_dirs(self.settings.local_dirs, str(app_id))))

        def deleted(dirs: list[Path]) -> list[Path]:
            self.localizer.forget_application(str(app_id))
            log.info("cleaned up application {app_id}: deleted {dirs}", app_id=str(app_id), dirs=[str(p) for p in dirs])
            return dirs

        return d.addCallback(deleted)

    def stop_all(self) -> defer.Deferred[None]:
        """The daemon stops: refuse new containers, kill every one, wait (bounded) for them to end."""
        self.shutting_down = True
        live = [c for c in self.containers.values() if c.state is not _S.DONE]
        for c in live:
            self.kill(c.container_id, None, "Container killed on NodeManager shutdown")
        if not live:
            return defer.succeed(None)
        all_done: defer.Deferred[Any] = defer.DeferredList([c.done for c in live], consumeErrors=True)
        timeout = self.clock.callLater(self.settings.shutdown_timeout_s, all_done.cancel)

        def finished(result: Any) -> None:
            if timeout.active():
                timeout.cancel()
            left = [str(c.container_id) for c in live if c.state is not _S.DONE]
            if left:
                log.warn("NodeManager stopped with containers still ending: {left}", left=left)

        return all_done.addBoth(finished)

    # ------------------------------------------------------------ statuses

    def status(self, container_id: ContainerId, caller: str | None) -> NMContainer:
        """getContainerStatuses for one container; ContainerRefused if unknown."""
        self._forget_old()
        c = self.containers.get(container_id)
        if c is None:
            raise ContainerRefused(
                Refusal.REFUSED, f"Container {container_id} is not handled by this NodeManager", container_id
            )
        self._authorize(caller, container_id, "get")
        return c

    def statuses_for_heartbeat(self) -> tuple[ContainerReport, ...]:
        """Every container not DONE, and every DONE one the RM has not acknowledged (live ones
        first; at most what one heartbeat may carry, the rest in later ones)."""
        self._forget_old()
        pending = [c for c in self.containers.values() if c.acknowledged_ms is None]
        pending.sort(key=lambda c: c.state is _S.DONE)
        return tuple(c.report() for c in pending[:MAX_CONTAINERS])

    def acknowledge(self, container_ids: Iterable[ContainerId]) -> None:
        """The RM has recorded these completed containers: stop reporting them."""
        now = self.now_ms()
        for cid in container_ids:
            c = self.containers.get(cid)
            if c is not None and c.state is _S.DONE and c.acknowledged_ms is None:
                c.acknowledged_ms = now

    def _forget_old(self) -> None:
        horizon = self.now_ms() - self.settings.completed_retention_ms
        old = [cid for cid, c in self.containers.items() if c.acknowledged_ms is not None and c.acknowledged_ms < horizon]
        for cid in old:
            del self.containers[cid]

    def running_count(self) -> int:
        return sum(1 for c in self.containers.values() if c.state is not _S.DONE)

    def by_state(self) -> Mapping[NMContainerState, Sequence[ContainerId]]:
        out: dict[NMContainerState, list[ContainerId]] = {}
        for c in self.containers.values():
            out.setdefault(c.state, []).append(c.container_id)
        return out
