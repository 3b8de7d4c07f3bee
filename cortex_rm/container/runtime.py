"""The container runtime seam of the NodeManager: what runs a container, and what it reports.

The NodeManager core (``container_manager``) decides *what* to run; a
``ContainerRuntime`` runs it and reports how it ended.  Two implementations
honour this interface and pass the same contract suite
(``tests/integration/test_container_runtime.py``):

* ``lxc_runtime.LxcRuntime``: every container is an LXC application container
  (``lxc-execute``) with its own pid, ipc, uts, mount and cgroup namespaces,
  cgroup v1 memory and pids limits, and only the host paths it is given;
* ``fake_runtime.FakeRuntime``: an in-memory runtime on an injected clock, for
  unit tests of the NodeManager core.

The life of one container, the same in every runtime::

    LAUNCHING --started--> RUNNING --exited--> EXITED
    LAUNCHING --exited--> EXITED                   (it never ran: ``started`` fails)
    LAUNCHING --kill--> KILL_PENDING --started--> KILLING --exited--> EXITED
    RUNNING --kill--> TERMINATING --grace expired--> KILLING --exited--> EXITED
    RUNNING --kill(grace 0)--> KILLING
    TERMINATING --exited--> EXITED                 (it ended on SIGTERM, within the grace)

``kill`` sends SIGTERM to every process of the container, then SIGKILL to all
of them once ``grace_seconds`` have passed on the runtime's clock.  The exit
code is the container's main process's, as a shell reports it: its own exit
status, or ``128 + signal`` when a signal ended it (143 for SIGTERM, 137 for
SIGKILL); a container that had to be SIGKILLed reports 137.

Both Deferreds of a ``RunningContainer`` are shared: a consumer's callbacks
must return what they were given (or chain a new Deferred), so that the next
consumer sees the same result.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from twisted.internet.defer import Deferred

from cortex_rm.yarn.transitions import TransitionTable

#: What a container id may look like: YARN's ``container_e17_1700000000000_0001_01_000001``
#: and Cortex's event ids fit; the id names files, cgroups and LXC containers.
CONTAINER_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")

#: The exit code of a container whose process never ran (YARN's ContainerLaunch reports -1).
LAUNCH_FAILED_EXIT_CODE: Final = -1

#: Exit codes as a shell reports a process ended by SIGTERM / SIGKILL.
SIGTERM_EXIT_CODE: Final = 128 + 15
SIGKILL_EXIT_CODE: Final = 128 + 9

_ENV_NAME = re.compile(r"[^=\x00]+")


class ContainerRuntimeError(Exception):
    """Base of every error the container runtimes raise on purpose."""


class InvalidContainerSpec(ContainerRuntimeError, ValueError):
    """A ``ContainerSpec`` breaks the rules of the seam (an id, a path, a limit)."""


class ContainerStartError(ContainerRuntimeError):
    """The runtime could not start a container; the message says which and why."""


@dataclass(frozen=True)
class ContainerSpec:
    """What to run in one container, and with which limits.

    Every path is absolute and is the same inside the container as on the host,
    so absolute paths in ``command`` and ``env`` stay valid.
    """

    container_id: str
    #: The container's working directory (the launch script is inside it); writable.
    work_dir: Path
    #: Where the container writes its logs; writable.
    log_dir: Path
    #: argv run inside the container, e.g. ``["/bin/bash", "<work_dir>/launch_container.sh"]``.
    command: list[str]
    #: The whole environment of the command (nothing else is inherited).
    env: Mapping[str, str]
    #: The memory cgroup's limit; exceeding it gets the container OOM-killed.
    memory_limit_bytes: int
    #: The pids cgroup's limit: every task (process or thread) in the container counts.
    pids_limit: int
    #: Host directories the container may write, besides ``work_dir`` and ``log_dir``.
    writable_dirs: tuple[Path, ...] = ()
    #: Host directories the container may read (a resource cache, a Spark installation).
    readonly_dirs: tuple[Path, ...] = ()
    #: The unpacked runtime image the container runs in (its /usr, /etc and top-level links;
    #: ``runtime_image.ImageCache``); None when the cluster names none (a runtime that needs
    #: one refuses to start the container).
    root_image: Path | None = None
    #: The application the container belongs to: its containers share one block of host ids
    #: and one network policy (``lxc_sandbox.py``); "" (a lone container): the container id.
    application: str = ""
    #: Writable dirs that are the container's or its application's own, not shared with other
    #: applications: an unprivileged runtime gives them to the container's root.
    own_dirs: tuple[Path, ...] = ()
    #: ``(IPv4 address, port)`` endpoints outside the cluster that the container's launch
    #: command names as its driver (Spark in client mode): an unprivileged runtime's network
    #: policy lets its application's containers reach them (``net_policy.driver_endpoints``).
    peers: frozenset[tuple[str, int]] = frozenset()
    #: The application's slot of source ports (``yarn/app_network.py``): an unprivileged
    #: runtime's network policy sends its containers' connections to other containers from
    #: those ports, and lets other machines reach them only from those; None: reachable
    #: only from this node.
    port_slot: int | None = None
    #: A network namespace of its own with only a loopback device (no network at all: functions'
    #: sandboxes); False: the host's network, under the node's network policy.
    own_network: bool = False

    def __post_init__(self) -> None:
        if not self.application:
            object.__setattr__(self, "application", self.container_id)
        if not CONTAINER_ID_PATTERN.fullmatch(self.container_id):
            raise InvalidContainerSpec(
                f"container id {self.container_id!r} must match {CONTAINER_ID_PATTERN.pattern}"
            )
        if self.root_image is not None and not self.root_image.is_absolute():
            raise InvalidContainerSpec(f"{self.container_id}: root_image {str(self.root_image)!r} is not an absolute path")
        for what, path in self.paths():
            if not path.is_absolute():
                raise InvalidContainerSpec(f"{self.container_id}: {what} {str(path)!r} is not an absolute path")
        if not self.command or not all(isinstance(a, str) and "\x00" not in a for a in self.command):
            raise InvalidContainerSpec(f"{self.container_id}: command must be a non-empty list of strings without NUL")
        if "=" in self.command[0]:
            raise InvalidContainerSpec(f"{self.container_id}: the program {self.command[0]!r} contains '='")
        for name, value in self.env.items():
            if not _ENV_NAME.fullmatch(name) or "\x00" in value:
                raise InvalidContainerSpec(f"{self.container_id}: invalid environment variable {name!r}")
        if self.memory_limit_bytes <= 0:
            raise InvalidContainerSpec(f"{self.container_id}: memory_limit_bytes must be positive")
        if self.pids_limit <= 0:
            raise InvalidContainerSpec(f"{self.container_id}: pids_limit must be positive")

    def paths(self) -> list[tuple[str, Path]]:
        """Every host path the spec names, with what it is for."""
        return [
            ("work_dir", self.work_dir),
            ("log_dir", self.log_dir),
            *(("writable dir", p) for p in self.writable_dirs),
            *(("read-only dir", p) for p in self.readonly_dirs),
            *(("own dir", p) for p in self.own_dirs),
        ]


@dataclass(frozen=True)
class ContainerExit:
    """How a container ended."""

    #: The main process's exit code, or 128+signal when a signal ended it; -1 if it never ran.
    exit_code: int
    #: The memory cgroup's OOM killer killed a process of the container.
    killed_for_memory: bool
    #: What the runtime knows about the end, for the application's diagnostics ("" if nothing).
    diagnostics: str = field(default="")


class RunningContainer(Protocol):
    """One started container: its lifecycle Deferreds and the signals it can be sent."""

    @property
    def container_id(self) -> str:
        """The spec's container id."""

    @property
    def pid(self) -> int | None:
        """The host pid of the container's root process (None until it runs).

        For LXC this is the container's init (pid 1 inside), the ancestor of every
        process in the container.
        """

    @property
    def started(self) -> Deferred[None]:
        """Fires when the container's process runs; fails with ``ContainerStartError`` if it never does."""

    @property
    def exited(self) -> Deferred[ContainerExit]:
        """Fires once the container has ended and every process of it is gone; never fails."""

    def signal(self, sig: int) -> None:
        """Deliver ``sig`` to the container's processes.

        Ignored when the container is not running (a race with its end is normal).
        """

    def kill(self, grace_seconds: float) -> None:
        """SIGTERM every process of the container, then SIGKILL them after ``grace_seconds``.

        ``exited`` fires when it is over.  A kill before the container runs kills it
        as soon as it does; a second kill, or a kill after the end, changes nothing.
        """


class ContainerRuntime(Protocol):
    """Starts containers."""

    def start(self, spec: ContainerSpec) -> RunningContainer:
        """Start ``spec``'s command in a new container.

        Raises ``ContainerStartError`` when it cannot even try (an id already
        running, a directory missing, the runtime not installed); a failure after
        this returns shows as ``started`` failing.
        """


class RuntimeContainerState(enum.Enum):
    """Where one container is in its life (see the module docstring)."""

    LAUNCHING = "LAUNCHING"
    KILL_PENDING = "KILL_PENDING"  # killed before it ran: killed as soon as it runs
    RUNNING = "RUNNING"
    TERMINATING = "TERMINATING"  # SIGTERM sent, SIGKILL due when the grace expires
    KILLING = "KILLING"  # SIGKILL sent
    EXITED = "EXITED"


class RuntimeContainerEvent(enum.Enum):
    """What can happen to one container."""

    STARTED = "STARTED"
    KILL = "KILL"
    GRACE_EXPIRED = "GRACE_EXPIRED"
    EXITED = "EXITED"


_S = RuntimeContainerState
_E = RuntimeContainerEvent

#: The transition table every runtime's containers follow.
RUNTIME_CONTAINER_LIFECYCLE: Final = TransitionTable[RuntimeContainerState, RuntimeContainerEvent](
    "runtime container",
    {
        (_S.LAUNCHING, _E.STARTED): _S.RUNNING,
        (_S.LAUNCHING, _E.KILL): _S.KILL_PENDING,
        (_S.LAUNCHING, _E.EXITED): _S.EXITED,
        (_S.KILL_PENDING, _E.STARTED): _S.KILLING,
        (_S.KILL_PENDING, _E.EXITED): _S.EXITED,
        (_S.RUNNING, _E.KILL): (_S.TERMINATING, _S.KILLING),
        (_S.RUNNING, _E.EXITED): _S.EXITED,
        (_S.TERMINATING, _E.GRACE_EXPIRED): _S.KILLING,
        (_S.TERMINATING, _E.EXITED): _S.EXITED,
        (_S.KILLING, _E.EXITED): _S.EXITED,
    },
    ignored=[
        (_S.KILL_PENDING, _E.KILL),
        (_S.TERMINATING, _E.KILL),
        (_S.KILLING, _E.KILL),
        (_S.EXITED, _E.KILL),
    ],
)
