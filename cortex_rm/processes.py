"""Host processes, for the commands that start and stop daemons (``local_cluster``): whether a
pid still runs, and killing every process whose command line names a marker, with all its
descendants (containers a daemon killed outright left behind)."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

from cortex_rm.container.lxc_reports import parent_pid


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child of ours counts as gone)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_marked(markers: Sequence[bytes]) -> int:
    """SIGKILL every process (but this one) whose command line holds one of ``markers``, and
    their descendants; how many were killed."""
    children: dict[int, list[int]] = {}
    marked: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        ppid = parent_pid(pid)
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid is None:
            continue
        children.setdefault(ppid, []).append(pid)
        if pid != os.getpid() and any(m in cmdline for m in markers):
            marked.append(pid)
    doomed: set[int] = set()
    stack = list(marked)
    while stack:
        pid = stack.pop()
        if pid not in doomed:
            doomed.add(pid)
            stack.extend(children.get(pid, []))
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(doomed)
