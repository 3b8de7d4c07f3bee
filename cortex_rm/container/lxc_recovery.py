"""Re-attaching the LXC runtime to a container a previous run of the NodeManager left running.

With NodeManager recovery the container's ``lxc-execute`` has no parent-death signal and outlives
the daemon (``lxc_config.launch_argv``); the container's record (``nm_recovery``) names its init.
``reattach`` takes it back:

1. a pidfd of its init, then a check that the pid still names the process the record does (its
   start time): from then on the pidfd cannot name another process;
2. its application's block of host ids (read from its cgroup, ``cortex/n<node>/b<block>/<id>``) and its
   network rules, through ``ContainerSandbox.readmit`` (the node's table was replaced at start);
3. a ``RecoveredContainer`` that watches the pidfd, signals the container through its pids cgroup
   and SIGKILLs init through the pidfd, and when the container has ended kills what is left in its
   cgroup and removes its cgroups (when its old lxc-execute could not) and its runtime directory.

Anything in ``<base_dir>/containers`` not re-attached is a leftover that ``reap_left_behind``
kills and removes, as without recovery.

A container started before the node cgroup layout (``cortex/b<block>/<id>``, without the node's
cgroup) is not re-attached: its rules would have to name its old cgroup, which the network policy
(cgroupv2 level 3: the application's, under the node's) no longer matches.  It is refused with a
ContainerStartError that says so (logged by ``container_recovery``) and, as any container that
cannot be re-attached, reported to the RM as ended (LOST when it wrote no exit code).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cortex_rm.container.container_recovery import recover_containers
from cortex_rm.container.lxc_config import CGROUP_PARENT
from cortex_rm.container.node_cgroup import NODE_PREFIX, procs_in
from cortex_rm.container.lxc_leftovers import remove_cgroups
from cortex_rm.container.lxc_reports import signal_pids
from cortex_rm.container.lxc_runtime import LxcRuntime
from cortex_rm.container.nm_recovery import ContainerRecord, Reattach, same_process_alive, written_exit_code
from cortex_rm.container.recovered_container import RecoveredContainer
from cortex_rm.container.runtime import ContainerRuntime, ContainerStartError

if TYPE_CHECKING:
    from cortex_rm.container.container_manager import ContainerManager

_CGROUP: Final = re.compile(rf"{CGROUP_PARENT}/{NODE_PREFIX}[0-9]+/b([0-9]+)/([A-Za-z0-9_.-]+)")
#: The layout before the node cgroup (not recovered: see the module docstring).
_LEGACY_CGROUP: Final = re.compile(rf"{CGROUP_PARENT}/b[0-9]+/[A-Za-z0-9_.-]+")


def reattach(runtime: LxcRuntime, record: ContainerRecord) -> RecoveredContainer:
    """Take back the running container of ``record`` (see the module docstring); ContainerStartError
    when it cannot be (its init is gone, its record does not name an LXC container of this node, its
    block or rules cannot be had again): the caller then treats it as ended."""
    cid = record.container_id
    if _LEGACY_CGROUP.fullmatch(record.cgroup_dir):
        raise ContainerStartError(
            f"{cid}: it was started before the node cgroup layout (its cgroup {record.cgroup_dir!r} is not under"
            f" {CGROUP_PARENT}/{NODE_PREFIX}<node>/) and is not recovered: it is reported as lost"
        )
    m = _CGROUP.fullmatch(record.cgroup_dir)
    if m is None or m[2] != cid or record.pid is None:
        raise ContainerStartError(f"{cid}: its record names no LXC container (cgroup {record.cgroup_dir!r})")
    pid = record.pid
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as e:
        raise ContainerStartError(f"{cid}: its init {pid} is gone: {e}") from e
    try:
        if not same_process_alive(record):  # checked after the pidfd is open: it names the same process
            raise ContainerStartError(f"{cid}: its init {pid} is gone")
        runtime.sandbox.readmit(record.application, int(m[1]), frozenset(record.peers), record.port_slot)
    except BaseException:
        os.close(pidfd)
        raise
    container_dir = runtime.base_dir / "containers" / cid

    def cgroup_pids() -> list[int]:
        return procs_in(runtime.cgroup_root / "pids" / record.cgroup_dir)

    def alive() -> bool:
        readable, _, _ = select.select([pidfd], [], [], 0)  # a pidfd is readable once its process has ended
        return not readable

    def kill_init() -> None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finished() -> None:
        os.close(pidfd)
        signal_pids(cgroup_pids(), signal.SIGKILL)
        remove_cgroups(runtime.cgroup_root, record.cgroup_dir, runtime.sandbox.blocks.ids, app_too=False)
        shutil.rmtree(container_dir, ignore_errors=True)

    return RecoveredContainer(
        cid,
        pid,
        runtime.clock,
        alive=alive,
        exit_code=lambda: written_exit_code(record),
        signal_others=lambda sig: signal_pids([p for p in cgroup_pids() if p != pid], sig),
        kill_init=kill_init,
        finished=finished,
    )



def recover_or_reap(runtime: ContainerRuntime, manager: ContainerManager, roots: Sequence[Path]) -> None:
    """At start, before the node registers: with NodeManager recovery (``manager.records``), take
    back the containers a previous run left (``container_recovery.recover_containers``); then kill
    and remove every other leftover of the LXC runtime (work dirs only under ``roots``).  Another
    runtime (the tests' fake) leaves nothing behind."""
    if not isinstance(runtime, LxcRuntime):
        return
    reattached: set[str] = set()
    if manager.records is not None:
        decisions = recover_containers(manager, manager.records, lambda record: reattach(runtime, record))
        reattached = {d.record.container_id for d in decisions if isinstance(d, Reattach)}
    runtime.reap_left_behind(roots, keep=reattached)
