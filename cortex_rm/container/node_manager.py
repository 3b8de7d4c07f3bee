"""The NodeManager role of a node: its containers and their RPC port, wired.

Built by the composition root (``node.py``) when ``[nodemanager] enabled``:

* a ``ContainerManager`` with the LXC runtime (``lxc_runtime.LxcRuntime``, its
  working files under ``<state_dir>/lxc``), the configured directories and limits,
  and a small thread pool for every file operation (directories, localization,
  launch scripts, log tails, deletion), so no disk work runs on the reactor;
* ``nodemanager.address``: ContainerManagementProtocol over Hadoop IPC, SASL
  simple-only (an AM's NMClient falls back to SIMPLE and connects as its attempt);
  the ContainerToken in each request is what authorizes a start;
* the hooks the ``NodeStatusUpdaterService`` calls: ``registered`` (the RM's
  container-token master key), ``health`` (container statuses for each heartbeat),
  ``acknowledged``, ``cleanup_containers`` and ``cleanup_applications``.

``stop`` kills every container (bounded wait) and stops the thread pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from cortex_rm.allocator.ids import ApplicationId, ContainerId, NodeId
from cortex_rm.config import Config, parse_address
from cortex_rm.container.container_manager import ContainerManager, ContainerSettings
from cortex_rm.container.container_tokens import ContainerTokenVerifier
from cortex_rm.container.launch import NodeFacts
from cortex_rm.container.localizer import Localizer, default_fetchers
from cortex_rm.container.runtime import ContainerRuntime
from cortex_rm.internal.tracker_messages import NodeHealth, RegistrationAnswer
from cortex_rm.yarn_api.ipc_server import PORT_IDLE_TIMEOUT_S, PORT_MAX_OUTSTANDING_CALLS, IpcServerFactory
from cortex_rm.yarn_api.nm_service import ContainerManagementService, nm_protocol
from cortex_rm.yarn_api.sasl import SaslServer

log = Logger()

Listen = Callable[[str, str, Any], str]  # (name, configured address, factory) -> bound host:port

FILE_THREADS = 4  # localizations of different applications, script writes and deletions in parallel


def existing_dirs(dirs: tuple[Path, ...], key: str) -> tuple[Path, ...]:
    """``dirs`` without symlinks (the runtime mounts real paths); missing ones dropped with a warning."""
    found = []
    for d in dirs:
        real = Path(os.path.realpath(d))
        if real.is_dir():
            found.append(real)
        else:
            log.warn("nodemanager.{key}: {dir} is not a directory; containers will not see it", key=key, dir=str(d))
    return tuple(found)


class NodeManagerRole:
    """Starts and stops everything the NodeManager role needs (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        listen: Listen,
        *,
        runtime: ContainerRuntime | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self._listen = listen
        self._runtime = runtime
        self.environ = dict(os.environ if environ is None else environ)
        self.containers: ContainerManager | None = None
        self.tokens: ContainerTokenVerifier | None = None
        self._pool: ThreadPool | None = None

    def _run(self, func: Callable[[], Any]) -> defer.Deferred[Any]:
        assert self._pool is not None
        return deferToThreadPool(self.reactor, self._pool, func)

    def start(self, webapp_address: str) -> None:
        """Build the ContainerManager and serve ContainerManagementProtocol (``webapp_address``:
        the bound NodeManager web address, whose port containers get as ``NM_HTTP_PORT``)."""
        nm = self.config.nodemanager
        dirs = self.config.nodemanager_dirs
        host, port = parse_address(nm.address, "nodemanager.address")
        node_id = NodeId(host, port)
        java_home = Path(os.path.realpath(dirs.java_home))
        if not (java_home / "bin" / "java").exists():
            log.warn("nodemanager.java_home {java_home} has no bin/java: JVM containers will fail", java_home=str(java_home))
        readonly = existing_dirs(dirs.readonly_dirs, "readonly_dirs")
        shared = existing_dirs(dirs.shared_dirs, "shared_dirs")
        self._pool = ThreadPool(minthreads=0, maxthreads=FILE_THREADS, name="nodemanager-files")
        self._pool.start()
        runtime = self._runtime
        if runtime is None:
            from cortex_rm.container.lxc_runtime import LxcRuntime

            runtime = LxcRuntime(self.reactor, self.config.state_dir.resolve() / "lxc")
        self.tokens = ContainerTokenVerifier(node_id, self.reactor)
        forbidden = [self.config.state_dir.resolve(), *dirs.local_dirs, *dirs.log_dirs]
        self.containers = ContainerManager(
            clock=self.reactor,
            runtime=runtime,
            run=self._run,
            tokens=self.tokens,
            node=NodeFacts(
                nm_host=host,
                nm_port=port,
                nm_http_port=parse_address(webapp_address, "nodemanager.webapp_address")[1],
                java_home=str(java_home),
                user_home_dir=nm.user_home_dir,
                nm_environment=self.environ,
            ),
            settings=ContainerSettings(
                local_dirs=dirs.local_dirs,
                log_dirs=dirs.log_dirs,
                readonly_dirs=readonly,
                shared_dirs=shared,
                memory_overhead_mb=nm.container_memory_overhead_mb,
                pids_limit=nm.pids_limit,
            ),
            localizer=Localizer(self._run, default_fetchers(forbidden)),
        )
        factory = IpcServerFactory(
            [nm_protocol(ContainerManagementService(self.containers))],
            SaslServer.simple_only(),
            max_data_length=self.config.resourcemanager.ipc_max_data_length,
            max_outstanding_calls=PORT_MAX_OUTSTANDING_CALLS,
            idle_timeout=PORT_IDLE_TIMEOUT_S,
            clock=self.reactor,
        )
        self._listen("nodemanager.address", nm.address, factory)
        log.info(
            "NodeManager {node_id}: containers in {local_dirs}, logs in {log_dirs}, JVM {java_home}",
            node_id=str(node_id),
            local_dirs=[str(d) for d in dirs.local_dirs],
            log_dirs=[str(d) for d in dirs.log_dirs],
            java_home=str(java_home),
        )

    # ------------------------------------------------------------ status updater hooks

    def registered(self, answer: RegistrationAnswer) -> None:
        """The RM accepted this node: keep the key it signs ContainerTokens with."""
        if answer.container_token_master_key is None:
            log.warn("the ResourceManager sent no container-token key: no container can start here yet")
            return
        assert self.tokens is not None
        self.tokens.set_master_key(answer.container_token_master_key)

    def health(self) -> NodeHealth:
        """What each heartbeat reports: every container's status."""
        assert self.containers is not None
        return NodeHealth(containers=self.containers.statuses_for_heartbeat())

    def acknowledged(self, container_ids: tuple[ContainerId, ...]) -> None:
        assert self.containers is not None
        self.containers.acknowledge(container_ids)

    def cleanup_containers(self, container_ids: tuple[ContainerId, ...]) -> None:
        assert self.containers is not None
        self.containers.cleanup_containers(container_ids)

    def cleanup_applications(self, app_ids: tuple[ApplicationId, ...]) -> None:
        assert self.containers is not None
        for app_id in app_ids:
            d: defer.Deferred[Any] = self.containers.cleanup_application(app_id)
            d.addErrback(self._cleanup_failed, app_id)

    @staticmethod
    def _cleanup_failed(failure: Failure, app_id: ApplicationId) -> None:
        log.failure("cleaning up {app_id} failed", failure, app_id=str(app_id))

    # ------------------------------------------------------------ stop

    @defer.inlineCallbacks
    def stop(self):  # type: ignore[no-untyped-def]
        """Kill every container (bounded wait), then stop the file threads."""
        if self.containers is not None:
            yield self.containers.stop_all()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()
