"""LXC application containers: ``LxcRuntime``, the NodeManager's real ``ContainerRuntime``.

Each container is one ``lxc-execute`` child process of the reactor, with a
config file that ``start`` writes to ``<base_dir>/containers/<id>/config``::

    lxc-execute (monitor, on the host)     our child; its stdout/stderr go to <log_dir>/lxc-execute.log
      init.lxc (pid 1 inside)              RunningContainer.pid
        /bin/sh -c WRAPPER (pid 2)         waits for the command, then SIGKILLs whatever is left
          <command>                        through env -i -C <work_dir> K=V...: exactly the spec's env and cwd

What the container gets (``render_config``):

* namespaces: mount, pid, ipc, uts (the hostname stays the host's, so Java and
  Spark resolve it as they would on the host) and cgroup.  **Not network**:
  ``lxc.net.0.type = none`` keeps the host's network namespace, so executors
  listen on the host's addresses as YARN expects;
* a root file system that is an empty read-only directory with mount points:
  the host's ``/usr`` and ``/etc`` bind-mounted read-only (``/bin``, ``/lib``,
  ... are the same symlinks as on a merged-/usr host, read-only binds otherwise),
  secrets in ``/etc`` masked (``DEFAULT_MASKED_PATHS``), ``/proc`` (its ``sys``
  read-only), ``/sys`` and the container's own cgroups read-only, a minimal
  ``/dev`` (``lxc.autodev``) with a private ``/dev/shm``, and a private ``/tmp``;
  the spec's read-only dirs read-only; ``work_dir``, ``log_dir`` and the writable
  dirs read-write, each at the same path as on the host;
* cgroup v1 limits in ``cortex/<id>`` of every hierarchy: ``memory.limit_in_bytes``
  (and ``memory.memsw.limit_in_bytes`` when the kernel accounts swap, so swap
  cannot stretch the limit), ``pids.max`` (init and the wrapper count: 2 tasks),
  and a whitelist of the ``/dev`` nodes above;
* root inside, with the capabilities cut to ``KEPT_CAPABILITIES`` (no sys_admin,
  so no remounting; no net_admin or net_raw on the host's network; no mknod,
  sys_ptrace, dac_read_search, sys_module...) and ``no_new_privs``.

Start: lxc-execute logs at NOTICE into a pipe on its fd ``LXC_LOG_FD``;
``started`` fires on its ``execute_post_start`` line, which LXC writes once the
namespaces, mounts and cgroup limits are in place and init has been started
(init forks the command at once).  *Start latency* is the time from ``start()``
to ``started``.

End: when the command exits, the wrapper SIGKILLs every other process of the
container (YARN's NodeManager kills a finished container's process group the
same way), so init exits with the command's status, and lxc-execute with init's.
Before LXC removes the cgroups, its ``lxc.hook.stop`` hook copies the memory
cgroup's ``memory.oom_control``, ``memory.failcnt`` and
``memory.max_usage_in_bytes`` into the container directory: an ``oom_kill`` count
above zero means ``killed_for_memory``.  The container directory is removed
before ``exited`` fires.

Kill: SIGTERM to every process in the container's pids cgroup but init (init
itself would SIGKILL everything a second later, whatever the grace), then, once
the grace has passed, SIGKILL to init through a pidfd: when a pid namespace's
init dies the kernel kills every other process in it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

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
#: lxc-execute's fd that carries LXC's log to the runtime; the wrapper closes it.
LXC_LOG_FD: Final = 3
#: The cgroup under which every container's cgroups are made, in every hierarchy.
CGROUP_PARENT: Final = "cortex"
#: Files in the host's /etc that no container reads: they are masked by /dev/null or an empty tmpfs.
DEFAULT_MASKED_PATHS: Final = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/ssl/private",
)
#: Capabilities root keeps inside a container (Docker's default set less mknod, net_raw,
#: net_bind_service and setfcap); every other one is dropped from the bounding set.
KEPT_CAPABILITIES: Final = (
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "sys_chroot",
    "audit_write",
)
#: The device nodes a container may use: null, zero, full, random, urandom, tty.
ALLOWED_DEVICES: Final = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm")
#: Top-level host entries that are symlinks into /usr on a merged-/usr system.
_ROOT_LINK_CANDIDATES: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: Container paths that the runtime mounts itself; a spec may not put a directory there.
_RESERVED: Final = (PurePosixPath("/proc"), PurePosixPath("/sys"), PurePosixPath("/dev"))
_HOST_RO: Final = (PurePosixPath("/usr"), PurePosixPath("/etc"))

#: Run as pid 2 by init: close the log pipe, shrug off the signals that ``signal``
#: and ``kill`` deliver to every process (a handler, not SIG_IGN, so the command
#: does not inherit it), run the command, then SIGKILL what is left and exit with
#: the command's status (128+signal when a signal ended it).
WRAPPER_SCRIPT: Final = (
    f"exec {LXC_LOG_FD}>&-; trap : HUP INT QUIT ABRT USR1 USR2 PIPE ALRM TERM; "
    '"$@"; code=$?; kill -KILL -1 2>/dev/null; exit $code'
)

#: The stop hook: copies the memory cgroup's figures before LXC removes the cgroup.
#: LXC appends its own arguments after the two of the config line.  Builtins only,
#: so it costs one ``sh`` when a container ends; the runtime reads the file after
#: lxc-execute has exited.
SNAPSHOT_HOOK: Final = """#!/bin/sh
# lxc.hook.stop of Cortex containers: LXC runs it on the host once the
# container's processes are gone and before it removes the container's cgroups.
# Usage: cgroup-snapshot MEMORY_CGROUP_DIR OUT_FILE [LXC's arguments...]
d=$1
out=$2
{
  for f in memory.oom_control memory.failcnt memory.max_usage_in_bytes memory.limit_in_bytes; do
    if [ -r "$d/$f" ]; then
      while read -r line; do echo "$f $line"; done < "$d/$f"
    fi
  done
} > "$out" 2>/dev/null
exit 0
"""

_SAFE_PATH = re.compile(r"/[A-Za-z0-9_.,:@+=/-]*")
_LXC_LOG_LINE = re.compile(r"^lxc-\S+ \S+ \S+ (?P<level>[A-Z]+)\s+(?P<module>\S+) - \S+ - (?P<message>.*)$")
_STARTED = re.compile(r"started with pid '(?P<pid>\d+)'")
#: LXC warnings that are expected here and say nothing about a container.
_BENIGN = ("Inherited fd", "Failed to allocate new network namespace id")
_MAX_LOG_LINE: Final = 4096
_KEPT_LOG_LINES: Final = 20


# ---------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class HostLayout:
    """What a container's root file system copies from the host (looked up once per runtime)."""

    #: Top-level names that are symlinks on the host, with their targets (``bin -> usr/bin``).
    root_links: tuple[tuple[str, str], ...]
    #: Top-level names that are real directories on the host and get read-only binds.
    root_dirs: tuple[str, ...]
    #: Masked paths that exist on the host, and whether each is a directory.
    masked: tuple[tuple[str, bool], ...]
    #: The kernel accounts swap in the memory cgroup (``memory.memsw.*`` exists).
    swap_accounting: bool
    hostname: str

    @classmethod
    def of_host(cls, cgroup_root: Path, masked_paths: Sequence[str], hostname: str) -> HostLayout:
        """Look at this host: a handful of ``lstat`` calls."""
        links, dirs = [], []
        for name in _ROOT_LINK_CANDIDATES:
            path = Path("/") / name
            if path.is_symlink():
                links.append((name, os.readlink(path)))
            elif path.is_dir():
                dirs.append(name)
        masked = tuple((p, Path(p).is_dir()) for p in masked_paths if os.path.lexists(p))
        swap = (cgroup_root / "memory" / "memory.memsw.limit_in_bytes").exists()
        return cls(tuple(links), tuple(dirs), masked, swap, hostname)


@dataclass(frozen=True)
class Binds:
    """The spec's own directories, checked and in mount order (parents before children)."""

    writable: tuple[PurePosixPath, ...]
    readonly: tuple[PurePosixPath, ...]

    def in_mount_order(self) -> list[tuple[PurePosixPath, bool]]:
        """(path, writable) pairs, shallow paths first so that a nested bind lands on its parent's."""
        both = [(p, True) for p in self.writable] + [(p, False) for p in self.readonly]
        return sorted(both, key=lambda e: (len(e[0].parts), str(e[0])))


def check_spec_paths(spec: ContainerSpec) -> Binds:
    """The directories to bind for ``spec``; raises ``ContainerStartError`` naming a bad one.

    Each must be an existing directory, given without symlinks (it is mounted at
    the same path inside) and in characters that an ``lxc.mount.entry`` carries
    as they are; none may be under /proc, /sys or /dev; writable ones not under
    the read-only host /usr or /etc.  Read-only dirs under /usr or /etc are
    visible already and need no bind.
    """
    writable = list(dict.fromkeys([spec.work_dir, spec.log_dir, *spec.writable_dirs]))
    readonly = [p for p in dict.fromkeys(spec.readonly_dirs) if p not in writable]
    for what, path in spec.paths():
        text = str(path)
        if not _SAFE_PATH.fullmatch(text) or os.path.normpath(text) != text or text == "/":
            raise ContainerStartError(
                f"{spec.container_id}: {what} {text!r} must be a normalised absolute path of "
                "letters, digits and _.,:@+=- (an LXC mount entry carries no others)"
            )
        pure = PurePosixPath(text)
        if any(pure == r or r in pure.parents for r in _RESERVED):
            raise ContainerStartError(f"{spec.container_id}: {what} {text} is under /proc, /sys or /dev")
        if path in writable and any(pure == r or r in pure.parents for r in _HOST_RO):
            raise ContainerStartError(f"{spec.container_id}: {what} {text} is under the host's read-only /usr or /etc")
        if not path.is_dir():
            raise ContainerStartError(f"{spec.container_id}: {what} {text} is not an existing directory")
        if path.resolve() != path:
            raise ContainerStartError(
                f"{spec.container_id}: {what} {text} goes through a symlink (to {path.resolve()}); give the real path"
            )
    visible = [p for p in readonly if not any(r in PurePosixPath(p).parents for r in _HOST_RO)]
    return Binds(tuple(PurePosixPath(p) for p in writable), tuple(PurePosixPath(p) for p in visible))


def _entry(source: str, target: PurePosixPath | str, fstype: str, options: str) -> str:
    relative = str(target).lstrip("/")
    return f"lxc.mount.entry = {source} {relative} {fstype} {options} 0 0"


def render_config(
    *,
    spec: ContainerSpec,
    binds: Binds,
    host: HostLayout,
    rootfs: Path,
    snapshot_hook: Path,
    snapshot_file: Path,
    cgroup_root: Path,
) -> str:
    """The LXC config of one container (see the module docstring for what each part is for)."""
    cid = spec.container_id
    tmpfs = f"rw,nosuid,nodev,mode=1777,size={spec.memory_limit_bytes}"
    lines = [
        f"# Cortex RM container {cid}: written by LxcRuntime, removed when the container ends",
        f"lxc.uts.name = {host.hostname}",
        f"lxc.rootfs.path = dir:{rootfs}",
        "lxc.rootfs.options = ro",
        "# the host's network namespace (no network isolation yet)",
        "lxc.net.0.type = none",
        "lxc.console.path = none",
        "lxc.tty.max = 0",
        "lxc.autodev = 1",
        "lxc.mount.auto = proc:mixed sys:ro cgroup:ro",
        _entry("/usr", "usr", "none", "ro,bind"),
        _entry("/etc", "etc", "none", "ro,bind"),
        *(_entry(f"/{name}", name, "none", "ro,bind") for name in host.root_dirs),
        _entry("tmpfs", "tmp", "tmpfs", tmpfs),
        _entry("tmpfs", "dev/shm", "tmpfs", tmpfs + ",create=dir"),
        *(
            _entry("tmpfs", path, "tmpfs", "ro,size=4k") if is_dir else _entry("/dev/null", path, "none", "ro,bind")
            for path, is_dir in host.masked
        ),
        *(
            _entry(str(path), path, "none", ("rw" if writable else "ro") + ",bind,create=dir")
            for path, writable in binds.in_mount_order()
        ),
        f"lxc.cgroup.dir.container = {CGROUP_PARENT}/{cid}",
        f"lxc.cgroup.dir.monitor = {CGROUP_PARENT}/{cid}.monitor",
        f"lxc.cgroup.memory.limit_in_bytes = {spec.memory_limit_bytes}",
        *([f"lxc.cgroup.memory.memsw.limit_in_bytes = {spec.memory_limit_bytes}"] if host.swap_accounting else []),
        f"lxc.cgroup.pids.max = {spec.pids_limit}",
        "lxc.cgroup.devices.deny = a",
        *(f"lxc.cgroup.devices.allow = {d}" for d in ALLOWED_DEVICES),
        f"lxc.cap.keep = {' '.join(KEPT_CAPABILITIES)}",
        "lxc.no_new_privs = 1",
        f"lxc.hook.stop = {snapshot_hook} {cgroup_root / 'memory' / CGROUP_PARENT / cid} {snapshot_file}",
    ]
    return "\n".join(lines) + "\n"


def prepare_rootfs(rootfs: Path, binds: Binds, host: HostLayout) -> None:
    """Make the empty root file system: mount points and the host's top-level symlinks.

    Bind targets below /tmp are made by LXC in the private /tmp (``create=dir``);
    targets below /usr or /etc exist through those binds; any other is made here,
    in a tree that holds no symlink but the top-level ones it never descends.
    """
    for name in ("usr", "etc", "proc", "sys", "dev", "tmp", "root", *host.root_dirs):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    for name, target in host.root_links:
        (rootfs / name).symlink_to(target)
    skip = {"usr", "etc", "tmp", "proc", "sys", "dev", *host.root_dirs, *(n for n, _ in host.root_links)}
    for path, _ in binds.in_mount_order():
        if path.parts[1] not in skip:
            (rootfs / str(path).lstrip("/")).mkdir(parents=True, exist_ok=True)


def launch_argv(spec: ContainerSpec, lxc_execute: str, config: Path, lxcpath: Path) -> list[str]:
    """lxc-execute's argv: the container, LXC's log on fd 3, then the wrapper, env and the command."""
    env = [f"{k}={v}" for k, v in spec.env.items()]
    return [
        lxc_execute,
        "-n",
        spec.container_id,
        "-P",
        str(lxcpath),
        "-f",
        str(config),
        "-o",
        f"/proc/self/fd/{LXC_LOG_FD}",
        "-l",
        "NOTICE",
        "--",
        "/usr/bin/env",
        "-i",
        "-C",
        str(spec.work_dir),
        "/bin/sh",
        "-c",
        WRAPPER_SCRIPT,
        "cortex-container",
        "/usr/bin/env",
        "-i",
        *env,
        *spec.command,
    ]


@dataclass(frozen=True)
class LxcLogLine:
    """One line of LXC's log: its level and message."""

    level: str
    module: str
    message: str

    @property
    def started_pid(self) -> int | None:
        """The host pid of the container's init, if this is LXC's "started" line."""
        if self.module != "execute":
            return None
        m = _STARTED.search(self.message)
        return int(m.group("pid")) if m else None

    @property
    def worth_reporting(self) -> bool:
        """An error or warning that says something about this container."""
        return self.level in ("WARN", "ERROR", "CRIT", "ALERT", "FATAL") and not any(
            b in self.message for b in _BENIGN
        )


def parse_lxc_log_line(line: str) -> LxcLogLine | None:
    """``lxc-execute NAME TIMESTAMP LEVEL module - file:func:line - message``, or None."""
    m = _LXC_LOG_LINE.match(line)
    if not m:
        return None
    return LxcLogLine(m.group("level"), m.group("module"), m.group("message"))


@dataclass(frozen=True)
class MemorySnapshot:
    """The memory cgroup as the stop hook found it (None: not available on this kernel)."""

    oom_kills: int | None = None
    failcnt: int | None = None
    max_usage_bytes: int | None = None
    limit_bytes: int | None = None

    def killed_for_memory(self, exit_code: int) -> bool:
        """The OOM killer killed a process of the container.

        ``oom_kill`` (Linux 4.13+) counts exactly that; without it, a SIGKILLed
        container whose cgroup hit its limit is taken as OOM-killed.
        """
        if self.oom_kills is not None:
            return self.oom_kills > 0
        return bool(self.failcnt) and exit_code == SIGKILL_EXIT_CODE


def parse_memory_snapshot(text: str) -> MemorySnapshot:
    """Parse what ``SNAPSHOT_HOOK`` wrote: ``<file> <line>`` per line."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        try:
            if parts[0] == "memory.oom_control" and parts[1] == "oom_kill":
                values["oom_kills"] = int(parts[2])
            elif parts[0] == "memory.failcnt":
                values["failcnt"] = int(parts[1])
            elif parts[0] == "memory.max_usage_in_bytes":
                values["max_usage_bytes"] = int(parts[1])
            elif parts[0] == "memory.limit_in_bytes":
                values["limit_bytes"] = int(parts[1])
        except (IndexError, ValueError):
            continue
    return MemorySnapshot(**values)


def parent_pid(pid: int) -> int | None:
    """The parent of host process ``pid`` (from ``/proc/<pid>/stat``), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1])


# ---------------------------------------------------------------- Twisted edge


class _LxcExecuteProtocol(ProcessProtocol):
    """Forwards lxc-execute's log pipe and its end to the container."""

    def __init__(self, container: LxcContainer) -> None:
        self.container = container

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == LXC_LOG_FD:
            self.container.lxc_log_received(data)

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessDone):
            self.container.process_ended(0, None)
        elif isinstance(value, ProcessTerminated):
            self.container.process_ended(value.exitCode, value.signal)
        else:  # pragma: no cover - Twisted reports one of the two
            self.container.process_ended(None, None)


class LxcContainer:
    """One container run by ``lxc-execute`` (a ``RunningContainer``)."""

    def __init__(self, runtime: LxcRuntime, spec: ContainerSpec, container_dir: Path) -> None:
        self.runtime = runtime
        self.spec = spec
        self.container_id = spec.container_id
        self.container_dir = container_dir
        self.pid: int | None = None
        #: The host pid of lxc-execute (init's parent), once spawned.
        self.monitor_pid: int | None = None
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
                if self.monitor_pid is not None and parent_pid(pid) == self.monitor_pid:
                    self._container_started(pid)
                else:
                    log.warn("container {container_id}: ignored a start line naming pid {pid}", container_id=self.container_id, pid=pid)

    def process_ended(self, exit_code: int | None, sig: int | None) -> None:
        """lxc-execute has ended: find out how the container did, clean up, report."""
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
        procs = self.runtime.cgroup_dir("pids", self.container_id) / "cgroup.procs"
        try:
            return [int(p) for p in procs.read_text().split()]
        except FileNotFoundError:
            return []

    def _signal_processes(self, sig: int) -> None:
        # A pid read from the cgroup belongs to the container until it is reaped, and
        # is signalled at once after: the window for reuse is microseconds.
        for pid in self._cgroup_pids():
            if pid != self.pid:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def _kill_leftovers(self) -> list[int]:
        """Processes still in the container's cgroup after lxc-execute ended (none, normally)."""
        left = self._cgroup_pids()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
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
    times the kill grace (the reactor by default).
    """

    def __init__(
        self,
        reactor: IReactorTimeProcess,
        base_dir: Path,
        clock: IReactorTime | None = None,
        *,
        lxc_execute: str = "/usr/bin/lxc-execute",
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        masked_paths: Sequence[str] = DEFAULT_MASKED_PATHS,
        hostname: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.base_dir = base_dir
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.lxc_execute = lxc_execute
        self.cgroup_root = cgroup_root
        self.masked_paths = tuple(masked_paths)
        self.hostname = hostname or socket.gethostname()
        self.running: dict[str, LxcContainer] = {}
        self._host: HostLayout | None = None

    def cgroup_dir(self, controller: str, container_id: str) -> Path:
        """Where a container's cgroup of ``controller`` is while it runs."""
        return self.cgroup_root / controller / CGROUP_PARENT / container_id

    def start(self, spec: ContainerSpec) -> LxcContainer:
        """Write the container's config and root directory, and spawn ``lxc-execute``."""
        cid = spec.container_id
        if cid in self.running:
            raise ContainerStartError(f"container {cid} is running already")
        host = self._check_host()
        binds = check_spec_paths(spec)
        container_dir = self.base_dir / "containers" / cid
        try:
            if container_dir.exists():  # left by a runtime that died: nothing runs from it now
                shutil.rmtree(container_dir)
            rootfs = container_dir / "rootfs"
            rootfs.mkdir(parents=True)
            prepare_rootfs(rootfs, binds, host)
            config = container_dir / "config"
            config.write_text(
                render_config(
                    spec=spec,
                    binds=binds,
                    host=host,
                    rootfs=rootfs,
                    snapshot_hook=self.base_dir / "cgroup-snapshot",
                    snapshot_file=container_dir / "memory-cgroup",
                    cgroup_root=self.cgroup_root,
                )
            )
            log_fd = os.open(spec.log_dir / RUNTIME_LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as e:
            shutil.rmtree(container_dir, ignore_errors=True)
            raise ContainerStartError(f"{cid}: could not prepare the container: {e}") from e
        container = LxcContainer(self, spec, container_dir)
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            transport = self.reactor.spawnProcess(
                _LxcExecuteProtocol(container),
                self.lxc_execute,
                launch_argv(spec, self.lxc_execute, config, self.base_dir / "containers"),
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

    def _check_host(self) -> HostLayout:
        """The host layout, and the checks that make a start worth trying (once per runtime)."""
        if self._host is not None:
            return self._host
        if os.geteuid() != 0:
            raise ContainerStartError("LxcRuntime runs containers as root for now; this process is not root")
        if not os.access(self.lxc_execute, os.X_OK):
            raise ContainerStartError(f"{self.lxc_execute} is missing: install Debian's lxc (scripts/install does)")
        for controller in ("memory", "pids"):
            if not (self.cgroup_root / controller / "cgroup.procs").exists():
                raise ContainerStartError(f"no cgroup v1 {controller} controller at {self.cgroup_root / controller}")
        if not _SAFE_PATH.fullmatch(str(self.base_dir)):
            raise ContainerStartError(f"base dir {str(self.base_dir)!r} must be an absolute path of letters, digits and _.,:@+=-")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        hook = self.base_dir / "cgroup-snapshot"
        hook.write_text(SNAPSHOT_HOOK)
        hook.chmod(0o755)
        self._host = HostLayout.of_host(self.cgroup_root, self.masked_paths, self.hostname)
        return self._host

