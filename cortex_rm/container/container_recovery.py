"""The ContainerManager's side of NodeManager recovery: records of its containers, and taking back
what a previous run left (``nm_recovery.py`` has the records and the decisions).

* ``record_of``: what is stored before the runtime starts a container (its grant, its dirs, what
  its network policy needs), written by the ``ContainerManager`` when it has a record store; the
  pid and cgroup are added once it runs, and the record is removed once the container is DONE.
* ``recover_containers``, at start, before the node registers: each record is decided; a running
  container is re-attached by the runtime (``reattach``; one that cannot be is taken as ended and
  left to the runtime's reap), the ended ones get their exit status, and both are put in the
  ``ContainerManager`` (``adopt``), so the registration lists them (YARN's NMContainerStatus) and
  the RM counts running ones back in, reports the complete ones to their AM, and has the
  containers of finished applications cleaned up.  The shared caches' entries that a re-attached
  container links to are kept (``cache_entries_linked``): its processes may still open them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.logger import Logger

from cortex_rm.container.launch import ContainerPaths
from cortex_rm.container.nm_container import NMContainer, NMContainerEvent, NMContainerState
from cortex_rm.container.nm_recovery import (
    Completed,
    ContainerRecord,
    ContainerRecordStore,
    Reattach,
    RecoveryDecision,
    recover,
    same_process_alive,
    written_exit_code,
)
from cortex_rm.container.runtime import ContainerRuntimeError, ContainerSpec, RunningContainer
from cortex_rm.yarn.ids import ContainerId
from cortex_rm.yarn.resources import Resource

if TYPE_CHECKING:
    from cortex_rm.container.container_manager import ContainerManager

log = Logger()

_S, _E = NMContainerState, NMContainerEvent


def record_of(c: NMContainer, spec: ContainerSpec) -> ContainerRecord:
    """What the state store keeps of ``c`` before the runtime starts it as ``spec``."""
    return ContainerRecord(
        container_id=str(c.container_id),
        application=spec.application,
        user=c.user,
        memory_mb=c.resource.memory_mb,
        vcores=c.resource.vcores,
        priority=c.priority,
        creation_time_ms=c.creation_time_ms,
        work_dir=str(c.paths.work_dir),
        log_dir=str(c.paths.log_dir),
        log_dirs=tuple(map(str, c.paths.log_dirs)),
        app_dirs=tuple(map(str, c.paths.app_dirs)),
        user_dirs=tuple(map(str, c.paths.user_dirs)),
        lxc_name=spec.container_id,
        root_image=str(spec.root_image) if spec.root_image is not None else "",
        port_slot=spec.port_slot,
        peers=tuple(sorted(spec.peers)),
    )


def recover_containers(
    manager: ContainerManager,
    store: ContainerRecordStore,
    reattach: Callable[[ContainerRecord], RunningContainer],
    alive: Callable[[ContainerRecord], bool] = same_process_alive,
    exit_code: Callable[[ContainerRecord], int | None] = written_exit_code,
) -> list[RecoveryDecision]:
    """Take back what the records of ``store`` name (see the module docstring; blocking: at start);
    the decisions taken, a re-attach that failed turned into a ``Completed``."""
    taken: list[RecoveryDecision] = []
    for decision in recover(store.load(), alive, exit_code):
        running: RunningContainer | None = None
        if isinstance(decision, Reattach):
            try:
                running = reattach(decision.record)
            except ContainerRuntimeError as e:
                log.warn(
                    "container {container_id} cannot be re-attached: {error}",
                    container_id=decision.record.container_id, error=str(e),
                )  # fmt: skip
                decision = recover([decision.record], lambda _: False, exit_code)[0]
        try:
            adopt(manager, decision, running)
        except ValueError as e:  # a record that names no YARN container
            log.warn("container record {id} dropped: {error}", id=decision.record.container_id, error=str(e))
            store.remove(decision.record.container_id)
            continue
        taken.append(decision)
        if running is not None:
            manager.localizer.keep.update(cache_entries_linked(Path(decision.record.work_dir)))
    return taken


def adopt(manager: ContainerManager, decision: RecoveryDecision, running: RunningContainer | None) -> NMContainer:
    """Put a recovered container into ``manager``: RUNNING and watched (``running``, for a
    ``Reattach``), or DONE with its exit status (a ``Completed``).  ValueError for a bad id."""
    r = decision.record
    cid = ContainerId.parse(r.container_id)
    paths = ContainerPaths(
        work_dir=Path(r.work_dir),
        app_dirs=tuple(map(Path, r.app_dirs)),
        user_dirs=tuple(map(Path, r.user_dirs)),
        log_dir=Path(r.log_dir),
        log_dirs=tuple(map(Path, r.log_dirs)) or (Path(r.log_dir),),
    )
    resource = Resource(r.memory_mb, r.vcores)
    c = NMContainer(cid, r.user, resource, paths, [], priority=r.priority, creation_time_ms=r.creation_time_ms)
    c.root_image = Path(r.root_image) if r.root_image else None
    manager.containers[cid] = c
    # (the manager's own lifecycle steps, as for a container it started)
    if isinstance(decision, Reattach) and running is not None:
        c.running = running
        manager._fire(c, _E.RECOVERED, _S.RUNNING)
        running.exited.addCallback(manager._passing(functools.partial(manager._exited, c)))
        log.info("container {container_id} re-attached after a restart (init {pid})", container_id=str(cid), pid=r.pid)
        return c
    assert isinstance(decision, Completed)
    c.exit_status = decision.exit_code
    c.diagnostics.append(decision.diagnostics)
    manager._fire(c, _E.RECOVERED, _S.EXITED_WITH_SUCCESS if decision.exit_code == 0 else _S.EXITED_WITH_FAILURE)
    manager._fire(c, _E.CLEANED_UP)
    log.info(
        "container {container_id} ended while the NodeManager was down: exit status {exit_status}",
        container_id=r.container_id,
        exit_status=decision.exit_code,
    )
    return c


def cache_entries_linked(work_dir: Path) -> set[Path]:
    """The cache entries (``<cache>/<n>``) that the work dir's links (the localized resources) point to."""
    entries: set[Path] = set()
    try:
        names = list(os.scandir(work_dir))
    except OSError:
        return entries
    for entry in names:
        if entry.is_symlink():
            try:
                target = Path(os.readlink(entry.path))
            except OSError:
                continue
            if target.is_absolute() and target.parent.name.isdigit():
                entries.add(target.parent)
    return entries


def launched_fields(running: RunningContainer) -> dict[str, object]:
    """What the runtime adds to a container's record once it runs (its LXC cgroup, for the LXC runtime)."""
    cgroup = getattr(running, "cgroup_dir", None)
    return {"cgroup_dir": cgroup} if isinstance(cgroup, str) else {}

