"""What ``local-cluster down`` removes of a node whose daemon died without stopping its containers.

A daemon that stops cleanly kills its containers and removes what they used.  One that is
SIGKILLed cannot: without NodeManager recovery its containers die with it (a parent-death
signal) but their LXC directories, cgroups, the containers' sysfs mount and the node's nftables
table stay until its next start; with ``[nodemanager] recovery = true`` the containers themselves
run on, on purpose, for a restart to take back.  ``down`` restarts nothing, so it does what that
next start would do to containers it does not take back (``lxc_leftovers.reap_left_behind``), for
every node of the cluster once its daemon is gone:

1. each recovery record's init (``nm_recovery``) is SIGKILLed through a pidfd, and only if the pid
   still names the process the record does (its start time, ``same_process_alive``, checked after
   the pidfd is open, so the signal cannot reach a process that reused the pid);
2. every left LXC container is killed through its pids cgroup (pids the kernel lists, not a file)
   and, once all are empty, its cgroups, work dir and directory are removed;
3. the containers' sysfs mount is unmounted, and the node's table (named by its id range) is
   deleted when no live process holds the range's lease (an isolated node's table was in its
   network namespace, which ``isolation.remove`` deletes);
4. the node cgroup trees of its range (``cortex/n<block>``, in every hierarchy) are removed where
   no process is left in them (``node_cgroup.remove_left_node_cgroups``), while ``down`` holds the
   range's lease: not at all when a live process holds it.

The recovery records are kept: they are the node's state, as YARN keeps its NodeManager's state
store, and a later start over the same state dir reports those containers ended (LOST, 154).
A node whose state dir lock a live process holds (a daemon started outside ``local-cluster``) is
left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cortex_rm.config import ConfigError, load_config
from cortex_rm.container import ofd_locks
from cortex_rm.container.id_ranges import IdRange, IdRangeError
from cortex_rm.container.lxc_leftovers import left_behind, reap_left_behind
from cortex_rm.container.lxc_sandbox import SYSFS_DIR, unmount_sysfs
from cortex_rm.container.net_firewall import inet_tables
from cortex_rm.container.net_policy import render_table_removed, table_name
from cortex_rm.container.nm_recovery import RECOVERY_DIR, ContainerRecord, ContainerRecordStore, same_process_alive
from cortex_rm.container.node_cgroup import NodeCgroupSweep, remove_left_node_cgroups
from cortex_rm.container.range_leases import LEASE_DIR, RangeLease, is_free

#: The directory of the node's LXC runtime under its state dir (``node_manager.py``: ``<state_dir>/lxc``).
LXC_DIR = "lxc"
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: How long a dead daemon's state dir lock may take to be released.
LOCK_WAIT_S = 5.0


@dataclass
class NodeReap:
    """What was found and done for one node."""

    #: Recorded container inits that were still running, SIGKILLed.
    killed_inits: list[str] = field(default_factory=list)
    #: LXC containers killed (whatever still ran in their cgroups) and removed.
    removed: list[str] = field(default_factory=list)
    #: LXC containers whose processes outlived SIGKILL (nothing of them removed).
    outlived: list[str] = field(default_factory=list)
    table_removed: str = ""
    #: The node cgroup trees of its range, removed where no process is in them (None: not swept).
    cgroups: NodeCgroupSweep | None = None
    #: Why its node cgroup trees were not swept ("" when they were).
    cgroups_skipped: str = ""
    #: Why nothing was done ("" when it was).
    skipped: str = ""
    #: The pid a live process holding its state dir's lock wrote (nothing was done then).
    held_by: int | None = None


def kill_recorded(record: ContainerRecord, proc: Path = Path("/proc")) -> bool:
    """SIGKILL the record's init if it is the very process recorded (pid and start time); whether it was."""
    if record.pid is None or record.pid_start_ticks is None:
        return False  # (no start time: the pid cannot be told from a reused one; its cgroup is killed instead)
    try:
        pidfd = os.pidfd_open(record.pid)
    except OSError:
        return False
    try:
        if not same_process_alive(record, proc):  # checked after the pidfd is open: it names the same process
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def reap_stopped_node(
    state_dir: Path,
    config: Path,
    *,
    isolated: bool,
    cgroup_root: Path = CGROUP_ROOT,
    lock_wait_s: float = LOCK_WAIT_S,
    lease_dir: Path = LEASE_DIR,
) -> NodeReap:
    """Kill and remove what the node whose state dir is ``state_dir`` (on this machine) and whose
    configuration is ``config`` left of its containers (see the module docstring).  Its daemon must
    be gone; a node whose state dir's lock is still held after ``lock_wait_s`` is left alone.
    ``isolated``: the node ran in namespaces of its own (its nftables table was in its network namespace)."""
    report = NodeReap()
    # (a SIGKILLed daemon's lock outlives it for a moment: its threads' exit, or a child between fork and exec)
    lock = state_dir / ofd_locks.STATE_LOCK_FILE
    deadline = time.monotonic() + lock_wait_s
    while (holder := ofd_locks.holder(lock)) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if holder is not None:
        report.held_by = holder
        report.skipped = f"its state dir is held by a live process (pid {holder})"
        return report
    try:
        loaded = load_config(config)
        nm = loaded.nodemanager
        ids = IdRange.parse(nm.container_id_range)
    except (ConfigError, IdRangeError, OSError) as e:
        report.skipped = f"its configuration cannot be read: {e}"
        return report
    for record in ContainerRecordStore(state_dir / RECOVERY_DIR).load():
        if kill_recorded(record):
            report.killed_inits.append(record.container_id)
    lxc = state_dir / LXC_DIR
    left = [c.container_id for c in left_behind(lxc)]
    dirs = nm.dirs(state_dir)  # (isolated: its default dirs as this machine sees them)
    roots = [*dirs.local_dirs, *dirs.log_dirs, state_dir.resolve() / "functions-sandboxes"]
    daemon_state_dir = Path(loaded.node.state_dir)  # (isolated: in its mount namespace, where state_dir is bound)

    def seen_from(path: Path) -> Path:
        return state_dir / path.relative_to(daemon_state_dir) if path.is_relative_to(daemon_state_dir) else path

    report.removed = reap_left_behind(lxc, cgroup_root, ids, roots, seen_from=seen_from, node_cgroups=False)
    report.outlived = [cid for cid in left if cid not in report.removed]
    unmount_sysfs(lxc / SYSFS_DIR)
    try:
        report.cgroups = _remove_node_cgroups(cgroup_root, ids, lease_dir)
    except IdRangeError as e:
        report.cgroups_skipped = f"its id range is held by a live process ({e}); run down again once it has stopped"
    except OSError as e:
        report.cgroups_skipped = f"cannot take its id range's lease in {lease_dir} or remove its cgroups: {e}"
    nft = shutil.which("nft")
    if not isolated and nft is not None:
        table = table_name(f"{ids.base}_{ids.count}")  # (named so by node_manager.py's container_firewall)
        if is_free(ids) and table in inet_tables(nft):
            done = subprocess.run(
                [nft, "-f", "-"], input=render_table_removed(table), capture_output=True, text=True, timeout=30
            )
            if done.returncode == 0:
                report.table_removed = table
    return report


def _remove_node_cgroups(cgroup_root: Path, ids: IdRange, lease_dir: Path) -> NodeCgroupSweep:
    """Remove the empty node cgroup trees of ``ids`` while holding its lease (no node can start in the
    range meanwhile and make its cgroup); IdRangeError, touching nothing, when a live process holds it."""
    lease = RangeLease.take(ids, lease_dir)
    try:
        return remove_left_node_cgroups(cgroup_root, ids)
    finally:
        lease.release()

