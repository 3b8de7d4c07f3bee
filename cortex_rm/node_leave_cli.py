"""``cortex-rm node leave``: ask this machine's daemon to leave gracefully, and wait until it has.

The daemon is found by its state dir (``--config FILE``'s ``[node] state_dir``, or
``--workdir`` DIR: a node's state dir, or a local cluster's work dir with ``--node
NAME``).  It is the process that holds the state dir's lock (``container/ofd_locks.py``,
taken by the daemon at its start and dropped by the kernel however it ends), which must be the
one its pid file names: a pid file left by a daemon killed with SIGKILL, the OOM killer or a
power loss may name a process that reused the pid, and is never signalled.  It gets SIGTERM, which starts its graceful leave
(``roles/graceful_leave.py``: DECOMMISSIONING, the containers' grace, DECOMMISSIONED,
then the ring's leave); while it runs, this command prints what the leave waits for
(the daemon's ``leave-progress`` file) whenever that changes, and exits 0 when the
daemon has exited, 1 if it is still running after ``--timeout`` seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cortex_rm.container.ofd_locks import STATE_LOCK_FILE, holder
from cortex_rm.node import PID_FILE
from cortex_rm.processes import alive
from cortex_rm.roles.graceful_leave import PROGRESS_FILE

CLUSTER_FILE = "cluster.json"  # (local_cluster.CLUSTER_FILE; read here without importing the cluster's machinery)


class LeaveError(Exception):
    """The daemon cannot be found or asked to leave."""


def state_dir_of(config: Path | None, workdir: Path | None, node: str | None) -> Path:
    """The daemon's state dir, from ``--config`` or ``--workdir`` [``--node``]."""
    if config is not None:
        from cortex_rm.config import ConfigError, load_config

        try:
            return load_config(config).state_dir
        except ConfigError as e:
            raise LeaveError(str(e)) from None
    if workdir is None:
        raise LeaveError("give --config FILE (the node's configuration) or --workdir DIR")
    cluster = workdir / CLUSTER_FILE
    if not cluster.exists():
        return workdir  # a node's state dir
    nodes = {entry["name"]: entry for entry in json.loads(cluster.read_text())}
    if node is None or node not in nodes:
        raise LeaveError(f"{workdir} is a local cluster: name one of its nodes with --node ({', '.join(sorted(nodes))})")
    return Path(nodes[node]["directory"])


def daemon_pid(state_dir: Path) -> int:
    """The pid of the daemon running on ``state_dir``: the pid file's, if that process holds the
    state dir's lock; LeaveError if none runs."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        raise LeaveError(f"no daemon runs on {state_dir} (no readable {PID_FILE})") from None
    if not _runs(state_dir, pid):
        raise LeaveError(
            f"no daemon runs on {state_dir}: pid {pid} of its {PID_FILE} does not hold {state_dir / STATE_LOCK_FILE}"
            " (the pid file is a dead daemon's)"
        )
    return pid


def _runs(state_dir: Path, pid: int) -> bool:
    """Whether ``pid`` is alive and holds ``state_dir``'s lock (the daemon on it)."""
    return holder(state_dir / STATE_LOCK_FILE) == pid and alive(pid)


def leave(
    state_dir: Path,
    timeout_s: float,
    say: Callable[[str], None],
    poll_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """SIGTERM the daemon of ``state_dir`` and wait for it to exit, saying what it waits for; True once
    it has exited, False if it still runs after ``timeout_s``."""
    pid = daemon_pid(state_dir)
    os.kill(pid, signal.SIGTERM)
    started = clock()
    say(f"asked the daemon (pid {pid}) to leave gracefully")
    said = ""
    while _runs(state_dir, pid):
        elapsed = clock() - started
        if elapsed > timeout_s:
            say(f"the daemon (pid {pid}) is still leaving after {timeout_s:.0f} s; a second SIGTERM stops it at once")
            return False
        try:
            doing = (state_dir / PROGRESS_FILE).read_text().strip()
        except OSError:
            doing = ""
        topic = doing.split(" (")[0]  # (a countdown alone is no news)
        if doing and topic != said:
            say(f"[{elapsed:5.1f} s] {doing}")
            said = topic
        sleep(poll_s)
    say(f"the daemon has left ({clock() - started:.1f} s)")
    return True


def leave_command(config: Path | None, workdir: Path | None, node: str | None, timeout_s: float) -> int:
    def say(line: str) -> None:
        print(line, flush=True)

    try:
        return 0 if leave(state_dir_of(config, workdir, node), timeout_s, say) else 1
    except LeaveError as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 2
