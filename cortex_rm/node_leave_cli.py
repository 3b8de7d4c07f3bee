"""``cortex-rm node leave``: ask this machine's daemon to leave gracefully, and wait until it has.

The daemon is found by its state dir (``--config FILE``'s ``[node] state_dir``, or
``--workdir`` DIR: a node's state dir, or a local cluster's work dir with ``--node
NAME``), whose pid file names it.  It gets SIGTERM, which starts its graceful leave
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
    """The pid of the daemon running on ``state_dir``; LeaveError if none runs."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        raise LeaveError(f"no daemon runs on {state_dir} (no readable {PID_FILE})") from None
    if not alive(pid):
        raise LeaveError(f"the daemon of {state_dir} (pid {pid}) is not running")
    return pid


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
    while alive(pid):
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
