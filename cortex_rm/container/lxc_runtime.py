"""LXC application containers: ``LxcRuntime``, the NodeManager's real ``ContainerRuntime``.

Each container is one ``lxc-execute`` child process of the reactor, with a
config file that ``start`` writes to ``<base_dir>/containers/<id>/config``::

    lxc-execute (monitor, on the host)     our child; its stdout/stderr go to <log_dir>/lxc-execute.log;
                                           SIGKILLed when the daemon dies (setpriv --pdeathsig), init with it
      init.lxc (pid 1 inside)              RunningContainer.pid
        /bin/sh -c WRAPPER (pid 2)         waits for the command, then SIGKILLs whatever is left
          <command>                        through env -i -C <work_dir> K=V...: exactly the spec's env and cwd

What the container gets — namespaces, the runtime image as root file system (a spec
without ``root_image`` is refused), cgroup limits, capabilities, seccomp — is in
``lxc_config.py``; its user namespace, ownership, sysfs and network policy in
``lxc_sandbox.py`` (``application_finished`` frees what an application held, ``close``
the sysfs); what lxc-execute and the cgroups report back is read by ``lxc_reports.py``.

Start: lxc-execute logs at NOTICE into a pipe on its fd ``LXC_LOG_FD``; ``started``
fires on its ``execute_post_start`` line, written once the namespaces, mounts and
cgroup limits are in place and init (which forks the command at once) has started.

End: when the command exits, the wrapper SIGKILLs every other process of the
container (as YARN's NodeManager kills a finished container's process group), so
init exits with the command's status, and lxc-execute with init's.  Before LXC
removes the cgroups, its ``lxc.hook.stop`` hook copies the memory cgroup's
``memory.oom_control``, ``memory.failcnt`` and ``memory.max_usage_in_bytes`` into the
container directory: an ``oom_kill`` count above zero means ``killed_for_memory``.
The container directory is removed before ``exited`` fires.

Kill: SIGTERM to every process in the container's pids cgroup but init (init
itself would SIGKILL everything a second later, whatever the grace), then, once
the grace has passed, SIGKILL to init through a pidfd: when a pid namespace's
init dies the kernel kills every other process in it.

Leftovers: the container directory also holds ``record.json``; what a daemon that died left
there, ``reap_left_behind`` kills and removes at the next start (``lxc_leftovers.py``).  With
``recovery`` (NodeManager recovery) containers outlive the daemon and write their exit code
(``lxc_config.launch_argv``); a restart takes the running ones back (``lxc_recovery.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
from collections import deque
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cortex_rm.container.id_ranges import DEFAULT_RANGE_TEXT, IdRange
from cortex_rm.container.lxc_config import (
    LXC_LOG_FD,
    ImageLayouts,
    check_image_root,
    check_reachable,
    check_spec_paths,
    launch_argv,
    prepare_host,
    prepare_rootfs,
    render_config,
)
from cortex_rm.container.lxc_leftovers import reap_left_behind, write_record
from cortex_rm.container.nm_recovery import EXIT_CODE_FILE
from cortex_rm.container.node_cgroup import NodeCgroup, NodeLimits, procs_in
from cortex_rm.container.lxc_sandbox import SYSFS_DIR, ContainerFirewall, ContainerSandbox, mount_sysfs, unmount_sysfs
from cortex_rm.container.lxc_reports import LxcExecuteProtocol, MemorySnapshot, parent_pid, parse_lxc_log_line, parse_memory_snapshot, signal_pids
from cortex_rm.container.runtime import (
    LAUNCH_FAILED_EXIT_CODE,
    RUNTIME_CONTAINER_LIFECYCLE,
    SIGKILL_EXIT_CODE,
    ContainerExit,
    ContainerSpec,
    ContainerStartError,
    RuntimeContainerEvent,
    RuntimeContainerState,
)
from cortex_rm.yarn.reactors import IReactorTimeProcess

log = Logger()

_S = RuntimeContainerState
_E = RuntimeContainerEvent

#: The file in the container's log_dir that gets lxc-execute's own stdout and stderr
#: (and the container's, where its launch script does not redirect them).
RUNTIME_LOG_NAME: Final = "lxc-execute.log"
_MAX_LOG_LINE: Final = 4096
_KEPT_LOG_LINES: Final = 20


class LxcContainer:
    """One container run by ``lxc-execute`` (a ``RunningContainer``)."""

    def __init__(self, runtime: LxcRuntime, spec: ContainerSpec, container_dir: Path, cgroup_dir: str) -> None:
        self.runtime = runtime
        #: Its cgroup below each hierarchy's root (``cortex/n<node>/b<block>/<id>``).
        self.cgroup_dir = cgroup_dir
        self.spec = spec
        self.container_id = spec.container_id
        self.container_dir = container_dir
        self.pid: int | None = None
        #: The host pid of lxc-execute (init's parent), once spawned.
        self.monitor_pid: int | None = None
        self._start_seen_gone = False  # a start line named an init that was gone when read
        self.started: Deferred[None] = Deferred()
        self.exited: Deferred[ContainerExit] = Deferred()
        self.state = _S.LAUNCHING
        #: Reactor time of ``start()`` and of ``started`` (start latency is the difference).
        self.launched_at = runtime.clock.seconds()
        self.started_at: float | None = None
        self._pidfd: int | None = None
        self._grace: IDelayedCall | None = None
        self._partial = b""
        self._reported: deque[str] = deque(maxlen=_KEPT_LOG_LINES)

    # -- the RunningContainer interface

    def signal(self, sig: int) -> None:
        """Deliver ``sig`` to every process of the container but init; ignored unless it runs."""
        if self.state in (_S.RUNNING, _S.TERMINATING, _S.KILLING):
            self._signal_processes(sig)

    def kill(self, grace_seconds: float) -> None:
        """SIGTERM everything, SIGKILL init after ``grace_seconds`` (see the module docstring).

        A process forked after the SIGTERM (or not yet forked when a kill follows
        ``started`` at once) does not get it; the SIGKILL ends it with the rest.
        """
        target = (_S.TERMINATING if grace_seconds > 0 else _S.KILLING) if self.state is _S.RUNNING else None
        if not self._fire(_E.KILL, target):
            return
        if self.state is _S.TERMINATING:
            self._signal_processes(signal.SIGTERM)
            self._grace = self.runtime.clock.callLater(grace_seconds, self._grace_expired)
        elif self.state is _S.KILLING:
            self._kill_init()

    # -- what lxc-execute reports

    def lxc_log_received(self, data: bytes) -> None:
        """Bytes of LXC's log: complete lines are parsed; a runaway line is cut."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-_MAX_LOG_LINE:]
        for raw in lines:
            parsed = parse_lxc_log_line(raw[:_MAX_LOG_LINE].decode("utf-8", "replace"))
            if parsed is None:
                continue
            if parsed.worth_reporting:
                self._reported.append(f"{parsed.level} {parsed.message}")
            pid = parsed.started_pid
            if pid is not None and self.state in (_S.LAUNCHING, _S.KILL_PENDING):
                # The container's root can write into this pipe through /proc/1/fd/3:
                # only a child of our lxc-execute is taken for the container's init.
                parent = parent_pid(pid)
                if self.monitor_pid is not None and parent == self.monitor_pid:
                    self._container_started(pid)
                elif parent is None:
                    # gone already (a container that exits at once, read late under load): it did
                    # run if lxc-execute then ends on its own; ``process_ended`` decides
                    self._start_seen_gone = True
                else:
                    log.warn("container {container_id}: ignored a start line naming pid {pid}", container_id=self.container_id, pid=pid)

    def process_ended(self, exit_code: int | None, sig: int | None) -> None:
        """lxc-execute has ended: find out how the container did, clean up, report."""
        if self.state is _S.LAUNCHING and self._start_seen_gone and sig is None and exit_code is not None:
            # its init was gone before the start line was read: it ran, and lxc-execute ended
            # with its code (no pid is kept: the number may already name another process)
            self._fire(_E.STARTED)
            self.started.callback(None)
        ran = self.state not in (_S.LAUNCHING, _S.KILL_PENDING)
        sigkilled = self.state is _S.KILLING
        self._fire(_E.EXITED)
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        diagnostics = []
        left = self._kill_leftovers()
        if left:
            diagnostics.append(f"{len(left)} process(es) of the container outlived it and were killed: {left}")
        snapshot = self._read_snapshot()
        try:
            shutil.rmtree(self.container_dir)
        except OSError as e:
            log.warn("could not remove {path}: {error}", path=str(self.container_dir), error=str(e))
        self.runtime.forget(self)
        if not ran:
            code = LAUNCH_FAILED_EXIT_CODE
            why = "; ".join(self._reported) or f"see {self.spec.log_dir / RUNTIME_LOG_NAME}"
            how = f"exited with {exit_code}" if sig is None else f"was killed by signal {sig}"
            message = f"LXC could not start container {self.container_id} (lxc-execute {how}): {why}"
            diagnostics.insert(0, message)
            log.warn("{message}", message=message, container_id=self.container_id)
            self.started.errback(ContainerStartError(message))
        elif sigkilled:
            code = SIGKILL_EXIT_CODE
        elif sig is not None:
            code = 128 + sig
            diagnostics.append(f"lxc-execute itself was killed by signal {sig}")
        else:
            code = exit_code if exit_code is not None else LAUNCH_FAILED_EXIT_CODE
        oom = ran and snapshot.killed_for_memory(code)
        if oom:
            diagnostics.insert(
                0,
                f"Container {self.container_id} was killed by the OOM killer of its memory cgroup: limit "
                f"{self.spec.memory_limit_bytes} bytes, peak {snapshot.max_usage_bytes} bytes, "
                f"{snapshot.oom_kills} process(es) killed.",
            )
        log.info(
            "container {container_id} exited with {exit_code}{oom}",
            container_id=self.container_id,
            exit_code=code,
            oom=" (out of memory)" if oom else "",
        )
        self.exited.callback(ContainerExit(code, oom, "\n".join(diagnostics)))

    # -- inside

    def _fire(self, event: RuntimeContainerEvent, target: RuntimeContainerState | None = None) -> bool:
        """Take the transition; False when the table says ``event`` is ignored here."""
        new = RUNTIME_CONTAINER_LIFECYCLE.next_state(self.state, event, target)
        if new is None:
            return False
        log.debug(
            "container {container_id}: {old} --{event}--> {new}",
            container_id=self.container_id,
            old=self.state.name,
            event=event.name,
            new=new.name,
        )
        self.state = new
        return True

    def _container_started(self, pid: int) -> None:
        self.pid = pid
        self.started_at = self.runtime.clock.seconds()
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError as e:  # it is gone already: process_ended follows
            log.debug("pidfd_open({pid}): {error}", pid=pid, error=str(e))
        self._fire(_E.STARTED)
        log.info(
            "container {container_id} started (init pid {pid}) in {ms:.1f} ms",
            container_id=self.container_id,
            pid=pid,
            ms=(self.started_at - self.launched_at) * 1000,
        )
        if self.state is _S.KILLING:
            self._kill_init()
        self.started.callback(None)

    def _grace_expired(self) -> None:
        self._grace = None
        self._fire(_E.GRACE_EXPIRED)
        self._kill_init()

    def _kill_init(self) -> None:
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            elif self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _cgroup_pids(self) -> list[int]:
        return procs_in(self.runtime.cgroup_root / "pids" / self.cgroup_dir)

    def _signal_processes(self, sig: int) -> None:
        signal_pids([pid for pid in self._cgroup_pids() if pid != self.pid], sig)

    def _kill_leftovers(self) -> list[int]:
        """Processes still in the container's cgroup after lxc-execute ended (none, normally)."""
        left = self._cgroup_pids()
        signal_pids(left, signal.SIGKILL)
        if left:
            log.warn("container {container_id}: killed leftover processes {pids}", container_id=self.container_id, pids=left)
        return left

    def _read_snapshot(self) -> MemorySnapshot:
        try:
            return parse_memory_snapshot((self.container_dir / "memory-cgroup").read_text())
        except OSError:
            return MemorySnapshot()


class LxcRuntime:
    """Runs each container with ``lxc-execute`` (a ``ContainerRuntime``; needs root and cgroup v1).

    ``base_dir`` holds the containers' config and root directories while they run
    (``containers/<id>/``) and the stop hook (``cgroup-snapshot``).  ``clock``
    times the kill grace (the reactor by default).  Each spec names the runtime
    image root it runs in (``ContainerSpec.root_image``).
    """

    def __init__(
        self,
        reactor: IReactorTimeProcess,
        base_dir: Path,
        clock: IReactorTime | None = None,
        *,
        lxc_execute: str = "/usr/bin/lxc-execute",
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        hostname: str | None = None,
        ids: IdRange | None = None,
        firewall: ContainerFirewall | None = None,
        recovery: bool = False,
        limits: NodeLimits | None = None,
    ) -> None:
        self.reactor = reactor
        self.recovery = recovery
        self.base_dir = base_dir
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.lxc_execute = lxc_execute
        self.cgroup_root = cgroup_root
        self.hostname = hostname or socket.gethostname()
        self.running: dict[str, LxcContainer] = {}
        self.sandbox = ContainerSandbox(ids or IdRange.parse(DEFAULT_RANGE_TEXT), cgroup_root, firewall)
        #: The node's cgroup, parent of every container's, with the caps as its limits (``node_cgroup.py``).
        self.node_cgroup = NodeCgroup(cgroup_root, self.sandbox.node_cgroup)
        self.limits = limits
        self._limits_lock = threading.Lock()  # (a reload writes them from a file thread)
        self._host_checked = False
        self._images = ImageLayouts(cgroup_root, self.hostname)

    def cgroup_dir(self, controller: str, container_id: str) -> Path:
        """Where a container's cgroup of ``controller`` is while it runs."""
        running = self.running.get(container_id)
        if running is not None:
            return self.cgroup_root / controller / running.cgroup_dir
        node = self.cgroup_root / controller / self.sandbox.node_cgroup
        found = sorted(node.glob(f"*/{container_id}"))
        return found[0] if found else node / container_id

    def set_limits(self, limits: NodeLimits | None = None) -> list[str]:
        """Write the node cgroup's limits, new ones if given (the caps changed), one writer at a time;
        what could not be written (the old ones stay)."""
        with self._limits_lock:
            self.limits = limits if limits is not None else self.limits
            return [] if self.limits is None else self.node_cgroup.apply(self.limits)

    def application_finished(self, application: str) -> None:
        """``application`` has ended on this node: free its ids, rules and cgroups."""
        self.sandbox.release(application)

    def start(self, spec: ContainerSpec) -> LxcContainer:
        """Write the container's config and root directory, and spawn ``lxc-execute``."""
        cid = spec.container_id
        if cid in self.running:
            raise ContainerStartError(f"container {cid} is running already")
        root_image = check_image_root(spec)
        self._check_host()
        image = self._images.of(root_image)
        binds = check_spec_paths(spec)
        container_dir = self.base_dir / "containers" / cid
        check_reachable(cid, [root_image, self.base_dir, *(Path(p) for p, _ in binds.in_mount_order())])
        admission = self.sandbox.admit(spec)
        try:
            if container_dir.exists():  # left by a runtime that died: nothing runs from it now
                shutil.rmtree(container_dir)
            rootfs = container_dir / "rootfs"
            rootfs.mkdir(parents=True)
            prepare_rootfs(rootfs, binds, image)
            config = container_dir / "config"
            config.write_text(
                render_config(
                    spec=spec,
                    binds=binds,
                    image=image,
                    rootfs=rootfs,
                    snapshot_hook=self.base_dir / "cgroup-snapshot",
                    snapshot_file=container_dir / "memory-cgroup",
                    cgroup_root=self.cgroup_root,
                    ids=admission.ids,
                    seccomp_profile=self.base_dir / "seccomp",
                    cgroup_dir=admission.cgroup_dir,
                    sysfs=self.base_dir / SYSFS_DIR,
                )
            )
            write_record(container_dir, spec, admission.cgroup_dir)
            log_fd = os.open(spec.log_dir / RUNTIME_LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            shutil.rmtree(container_dir, ignore_errors=True)
            raise ContainerStartError(f"{cid}: could not prepare the container: {e}") from e
        container = LxcContainer(self, spec, container_dir, admission.cgroup_dir)
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        exit_file = EXIT_CODE_FILE if self.recovery else None
        argv = launch_argv(spec, self.lxc_execute, config, self.base_dir / "containers", exit_file)
        try:
            transport = self.reactor.spawnProcess(
                LxcExecuteProtocol(container),
                argv[0],
                argv,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                childFDs={0: null_fd, 1: log_fd, 2: log_fd, LXC_LOG_FD: "r"},
            )
        except OSError as e:
            shutil.rmtree(container_dir, ignore_errors=True)
            raise ContainerStartError(f"{cid}: could not run {self.lxc_execute}: {e}") from e
        finally:
            os.close(null_fd)
            os.close(log_fd)
        container.monitor_pid = transport.pid
        self.running[cid] = container
        log.info("container {container_id}: lxc-execute spawned", container_id=cid)
        return container

    def forget(self, container: LxcContainer) -> None:
        """``container`` has ended: its id may run again."""
        if self.running.get(container.container_id) is container:
            del self.running[container.container_id]

    def reap_left_behind(self, roots: Sequence[Path], keep: Collection[str] = ()) -> list[str]:
        """At start, before any container: kill and remove what a previous run of this base dir left but
        ``keep`` (``lxc_leftovers.py``; blocking, bounded; work dirs only under ``roots``), and its sysfs."""
        reaped = reap_left_behind(self.base_dir, self.cgroup_root, self.sandbox.blocks.ids, roots, keep=keep)
        unmount_sysfs(self.base_dir / SYSFS_DIR)
        self.set_limits()  # the caps hold from the start (a problem is logged)
        return reaped

    def close(self) -> None:
        """The NodeManager stops (its containers have been killed): free every application's ids,
        rules and cgroups, and unmount the containers' sysfs."""
        for application in list(self.sandbox.blocks.held()):
            self.sandbox.release(application)
        unmount_sysfs(self.base_dir / SYSFS_DIR)
        self.node_cgroup.remove()
        self._host_checked = False

    def _check_host(self) -> None:
        """The checks that make a start worth trying, the stop hook and the sysfs (once per runtime)."""
        if not self._host_checked:
            prepare_host(self.lxc_execute, self.cgroup_root, self.base_dir)
            mount_sysfs(self.base_dir / SYSFS_DIR)
            self.set_limits()  # (a problem is logged: the containers' own limits still hold)
            self._host_checked = True
