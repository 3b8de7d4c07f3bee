"""The NodeManager's containers: start, watch, stop and clean up, as YARN's ContainerManagerImpl.

``ContainerManager`` decides; the container runtime (``runtime.ContainerRuntime``:
LXC in the daemon, a fake in unit tests) runs processes, and every file operation
(directories, tokens, localization, the launch script, log tails, deletion) runs
through the injected ``run`` off the reactor thread.  The clock is injected too.

Starting (``start``) is synchronous and decides only whether the container is
accepted, as YARN's ``startContainers`` answers before anything runs; what it
checks, in YARN's order, is ``admission.py``'s.

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

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.container import container_files
from cortex_rm.container.admission import authorize, container_launch_plan, new_container, verified_grant
from cortex_rm.container.container_recovery import launched_fields, record_of
from cortex_rm.container.container_tokens import ContainerTokenVerifier
from cortex_rm.container.launch import LaunchPlan, NodeFacts
from cortex_rm.container.local_resources import LocalizationError
from cortex_rm.container.localizer import Localizer
from cortex_rm.container.resource_files import Requester
from cortex_rm.container.pinned_dirs import PlantedPathError
from cortex_rm.container.nm_container import (
    NM_CONTAINER_TRANSITIONS,
    NMContainer,
    NMContainerEvent,
    NMContainerState,
)
from cortex_rm.container.nm_recovery import ContainerRecordStore, pid_start_ticks
from cortex_rm.container.runtime import LAUNCH_FAILED_EXIT_CODE, ContainerExit, ContainerRuntime, ContainerSpec
from cortex_rm.container.runtime_spec import ContainerSettings, runtime_spec
from cortex_rm.container.start_request import ContainerRefused, Refusal, StartRequest
from cortex_rm.yarn.app_network import AppNetwork
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.ids import ApplicationId, ContainerId
from cortex_rm.yarn.resource_tracker import MAX_CONTAINERS, ContainerReport

log = Logger()

_S, _E = NMContainerState, NMContainerEvent
T = TypeVar("T")
MAX_REMEMBERED_CLEANUPS = 1000


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
        image_root: Callable[[], Path | None] = lambda: None,
        app_network: Callable[[ApplicationId], defer.Deferred[AppNetwork]] | None = None,
        records: ContainerRecordStore | None = None,
    ) -> None:
        """``image_root``: the unpacked runtime image containers run in now (None: none yet);
        ``app_network``: where an application was submitted from, as the RM saw it (its driver's
        only host outside the cluster), and its slot of source ports (None: no driver outside
        the cluster is reachable, and containers are reachable only from their own node);
        ``records``: NodeManager recovery's store (``container_recovery.py``), None without it."""
        self.clock = clock
        self.runtime = runtime
        self.run = run
        self.tokens = tokens
        self.node = node
        self.settings = settings
        self.localizer = localizer if localizer is not None else Localizer(run)
        self.image_root = image_root
        self.app_network = app_network
        self.records = records
        self._networks: dict[ApplicationId, AppNetwork] = {}
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
            self.localizer.release(str(c.container_id))
            if self.records is not None:
                self.records.remove(str(c.container_id))
            c.done.callback(None)
        return True

    # ------------------------------------------------------------ startContainers

    def start(self, request: StartRequest, caller: str | None) -> ContainerId:
        """Accept one container (its launch goes on asynchronously) or raise ContainerRefused."""
        if self.shutting_down:
            raise ContainerRefused(Refusal.REFUSED, "The NodeManager is shutting down")
        grant = verified_grant(self.tokens, request, self.containers)
        cid = grant.container_id
        authorize(caller, cid, "start")
        c = new_container(grant, request, self.settings)
        plan = container_launch_plan(c, request, self.node)
        self.tokens.mark_started(grant)
        self.containers[cid] = c
        log.info(
            "accepted container {container_id} of {user} with {resource}",
            container_id=str(cid),
            user=c.user,
            resource=str(c.resource),
        )
        self._fire(c, _E.INIT)
        requester = Requester(str(cid), str(c.app_id), c.user, request.token)
        defer.ensureDeferred(self._localize_and_launch(c, plan, requester))
        return cid

    def spec(self, c: NMContainer, plan: LaunchPlan) -> ContainerSpec:
        """What the runtime is asked to run for ``c``."""
        network = self._networks.get(c.container_id.attempt_id.app_id, AppNetwork("", None))
        return runtime_spec(c, plan, self.settings, self.image_root(), network)

    async def _learn_network(self, app_id: ApplicationId) -> None:
        """Ask the RM (once per application) where it was submitted from and its slot of source ports."""
        if self.app_network is None or app_id in self._networks:
            return
        try:
            self._networks[app_id] = await self.app_network(app_id)
        except Exception as e:  # noqa: BLE001 - the RM cannot say: the container cannot be placed in the network
            raise LocalizationError(
                f"cannot learn from the ResourceManager where {app_id} was submitted from and its"
                f" network slot ({e}); its containers could not reach a client-mode driver nor its"
                " other containers: try again once the node is registered"
            ) from None

    async def _localize_and_launch(self, c: NMContainer, plan: LaunchPlan, requester: Requester) -> None:
        try:
            await self.run(lambda: container_files.prepare_container(c.paths, plan.tokens))
            await self.localizer.localize(requester, c.paths, c.resources)
            await self._learn_network(c.container_id.attempt_id.app_id)
            if c.state is _S.LOCALIZING:
                await self.run(lambda: container_files.write_launch_script(c.paths, plan.script))
                sources = [r.url.file for r in c.resources if r.url.scheme == "file"]
                c.staging_dirs = await self.run(lambda: container_files.application_staging_dirs(sources, c.app_id))
        except Exception as e:  # noqa: BLE001 - every failure here is the container's, reported in its status
            if isinstance(e, LocalizationError):
                reason = str(e)
            elif isinstance(e, PlantedPathError):  # a container of the application planted it
                log.warn("container {container_id} refused: {error}", container_id=str(c.container_id), error=str(e))
                reason = f"Localization of {c.container_id} refused: {e}"
            else:
                log.failure("localizing container {container_id} failed", Failure(), container_id=str(c.container_id))
                reason = f"Localization of {c.container_id} failed: {type(e).__name__}: {e}"
            self._failed_before_running(c, _E.LOCALIZATION_FAILED, ContainerExitStatus.INVALID, reason)
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

    def _failed_before_running(
        self, c: NMContainer, event: NMContainerEvent, exit_code: int, diagnostics: str | None = None
    ) -> None:
        """Localization or launch failed (``event``): ``c`` ends with ``exit_code``, or as killed
        if a kill came meanwhile (then ``diagnostics`` are not added)."""
        if c.state is _S.KILLING:
            self._killed(c, exit_code)
            return
        c.exit_status = exit_code
        if diagnostics is not None:
            c.diagnostics.append(diagnostics)
        self._fire(c, event)
        self._fire(c, _E.CLEANED_UP)

    def _launch(self, c: NMContainer, plan: LaunchPlan) -> None:
        try:
            spec = self.spec(c, plan)
            c.root_image = spec.root_image
            if self.records is not None:  # before it starts: a daemon that dies then finds it
                self.records.write(record_of(c, spec))
            running = self.runtime.start(spec)
        except Exception as e:  # noqa: BLE001 - ContainerStartError, or a runtime bug: the container failed
            c.diagnostics.append(f"Failed to launch container {c.container_id}: {e}")
            self._failed_before_running(c, _E.LAUNCH_FAILED, LAUNCH_FAILED_EXIT_CODE)
            return
        c.running = running
        # The runtime's Deferreds are shared: pass on what they carry (see runtime.py), except
        # a failed start, which ends here (``exited`` carries the end to everyone).
        running.started.addCallbacks(self._passing(lambda _: self._started(c)), lambda f: self._start_failed(c, f))
        running.exited.addCallback(self._passing(functools.partial(self._exited, c)))

    @staticmethod
    def _passing(observe: Callable[[T], None]) -> Callable[[T], T]:
        def callback(result: T) -> T:
            try:
                observe(result)
            except Exception:  # noqa: BLE001 - a bug here must not break the runtime's chain
                log.failure("container event handling failed")
            return result

        return callback

    def _started(self, c: NMContainer) -> None:
        pid = c.running.pid if c.running is not None else None
        if self.records is not None and pid is not None and c.running is not None:
            self.records.launched(str(c.container_id), pid, pid_start_ticks(pid), **launched_fields(c.running))
        if c.state in (_S.LOCALIZED, _S.KILLING):
            self._fire(c, _E.LAUNCHED)

    def _start_failed(self, c: NMContainer, failure: Failure) -> None:
        """``started`` failed: the container never ran; ``exited`` (exit code -1) ends it."""
        c.start_failed = True
        if c.state is _S.LOCALIZED:
            c.diagnostics.append(f"Failed to launch container {c.container_id}: {failure.getErrorMessage()}")

    def _exited(self, c: NMContainer, exit: ContainerExit) -> None:
        if exit.diagnostics:
            c.diagnostics.append(exit.diagnostics)
        if c.state is _S.KILLING:
            c.diagnostics.append(f"Container killed on request. Exit code is {exit.exit_code}")
            self._killed(c, exit.exit_code)
            return
        if c.state is _S.LOCALIZED:
            if c.start_failed:
                self._failed_before_running(c, _E.LAUNCH_FAILED, exit.exit_code)
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
        self._handled(container_id, caller, "stop")
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
        d = defer.DeferredList([c.done for c in mine], consumeErrors=True).addCallback(
            lambda _: self.run(lambda: container_files.delete_application_dirs(self.settings.local_dirs, str(app_id)))
        )

        def deleted(dirs: list[Path]) -> list[Path]:
            self.localizer.forget_application(str(app_id))
            self._networks.pop(app_id, None)
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
        all_done = defer.DeferredList([c.done for c in live], consumeErrors=True)
        timeout = self.clock.callLater(self.settings.shutdown_timeout_s, all_done.cancel)

        def finished(result: object) -> None:
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
        return self._handled(container_id, caller, "get")

    def _handled(self, container_id: ContainerId, caller: str | None, verb: str) -> NMContainer:
        """The container ``caller`` asks to ``verb``; ContainerRefused if unknown here or not the caller's to ask about."""
        c = self.containers.get(container_id)
        if c is None:
            raise ContainerRefused(
                Refusal.REFUSED, f"Container {container_id} is not handled by this NodeManager", container_id
            )
        authorize(caller, container_id, verb)
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

    def image_roots_in_use(self) -> set[Path]:
        """The runtime image roots that containers not yet DONE were started in."""
        return {c.root_image for c in self.containers.values() if c.root_image is not None and c.state is not _S.DONE}

    def live_applications(self) -> set[str]:
        """The applications with a container here that is not DONE."""
        return {str(c.container_id.attempt_id.app_id) for c in self.containers.values() if c.state is not _S.DONE}

    def application_cleaned_up(self, app_id: ApplicationId) -> bool:
        """Whether the RM has had ``app_id`` cleaned up here (of the last MAX_REMEMBERED_CLEANUPS);
        read by the NodeManager's REST API."""
        return app_id in self._cleaned_apps

    def running_count(self) -> int:
        return sum(1 for c in self.containers.values() if c.state is not _S.DONE)

    def by_state(self) -> Mapping[NMContainerState, Sequence[ContainerId]]:
        out: dict[NMContainerState, list[ContainerId]] = {}
        for c in self.containers.values():
            out.setdefault(c.state, []).append(c.container_id)
        return out
