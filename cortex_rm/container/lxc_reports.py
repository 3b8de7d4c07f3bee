"""What LXC and the kernel report about a container: its log lines, its memory cgroup, its processes,
and ``LxcExecuteProtocol``, the Twisted edge that hands lxc-execute's log pipe and end to its container."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from cortex_rm.container.lxc_config import LXC_LOG_FD
from cortex_rm.container.runtime import SIGKILL_EXIT_CODE

_LXC_LOG_LINE = re.compile(r"^lxc-\S+ \S+ \S+ (?P<level>[A-Z]+)\s+(?P<module>\S+) - \S+ - (?P<message>.*)$")
_STARTED = re.compile(r"started with pid '(?P<pid>\d+)'")
#: LXC warnings that are expected here and say nothing about a container.
_BENIGN = ("Inherited fd", "Failed to allocate new network namespace id")


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


def signal_pids(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each pid read from a container's cgroup; one already gone is skipped."""
    # A pid read from the cgroup belongs to the container until it is reaped, and
    # is signalled at once after: the window for reuse is microseconds.
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class MonitoredContainer(Protocol):
    """What ``LxcExecuteProtocol`` reports to (``lxc_runtime.LxcContainer``)."""

    def lxc_log_received(self, data: bytes) -> None: ...

    def process_ended(self, exit_code: int | None, sig: int | None) -> None: ...


class LxcExecuteProtocol(ProcessProtocol):
    """Forwards lxc-execute's log pipe and its end to the container."""

    def __init__(self, container: MonitoredContainer) -> None:
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
