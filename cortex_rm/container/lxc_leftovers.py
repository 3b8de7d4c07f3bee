"""What a NodeManager's LXC runtime leaves when its daemon dies without stopping, and how it goes.

While a container runs, its directory ``<base_dir>/containers/<id>/`` holds its LXC config
(whose ``lxc.cgroup.dir.container`` line names its cgroup, ``cortex/n<node>/b<block>/<id>``) and
``record.json`` (``write_record``: its application, work dir and log dir); the runtime removes
the directory when the container ends.  A directory found there at start was left by a
previous run of this state dir (the state dir's lock, ``ofd_locks.py``, keeps a live daemon's
out of reach): without NodeManager recovery, YARN's NodeManager kills such containers, and
so does ``reap_left_behind`` (with recovery, it spares those re-attached, ``lxc_recovery.py``):

1. SIGKILL to every process of every left container's pids cgroup and of its monitor's
   (``<cgroup>.monitor``: the old ``lxc-execute``), until all are empty (bounded).  Only then is
   anything deleted: an application's containers run as the host uid that owns its directory,
   so one still running could swap a directory on another's work dir path for a symlink while
   root deletes it.  If any process outlives the wait, nothing is removed (the next start retries);
2. their cgroups, in every hierarchy, are removed (deepest first; only empty ones can be),
   and an application's ``cortex/n<node>/b<block>`` when no other container is left in it and the
   block is in this node's id range;
3. their work dirs and runtime directories are deleted (their logs are kept, as YARN keeps a
   killed container's), and the containers' sysfs (``lxc_sandbox.mount_sysfs``) is unmounted.
   A work dir (read from ``record.json``) is deleted only if it is not a symlink and its
   parent's real path is strictly under one of the NodeManager's own dirs (``roots``: its local,
   log and sandbox dirs); the deletion opens each directory on the way with ``O_NOFOLLOW``
   and ``shutil.rmtree`` works from the parent's descriptor, so no symlink is ever followed.
   Any other work dir is logged and left.
4. every node cgroup tree ``cortex/n<block>`` of this node's id range (the node holds its lease: no
   other live node's is in it) is removed where no process is left in it, in every hierarchy
   (``node_cgroup.remove_left_node_cgroups``), but the cgroups of containers recovery took back.

A SIGKILLed daemon's containers do not wait for the next start: each ``lxc-execute`` runs
under ``setpriv --pdeathsig KILL`` (``lxc_config.launch_argv``), so the kernel SIGKILLs it when
the daemon's reactor thread, its parent, dies, and LXC has set its container's init to die with
it (``PR_SET_PDEATHSIG``, SIGKILL), which ends every process of the container's pid namespace.
A daemon killed between the fork and setpriv's ``prctl`` misses that; the next start reaps.
With NodeManager recovery there is no parent-death signal: the containers outlive the daemon.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from twisted.logger import Logger

from cortex_rm.container.id_ranges import BLOCK, IdRange
from cortex_rm.container.lxc_config import CGROUP_PARENT
from cortex_rm.container.node_cgroup import NODE_PREFIX, hierarchies, procs_in, remove_left_node_cgroups
from cortex_rm.container.lxc_reports import signal_pids
from cortex_rm.container.runtime import ContainerSpec

log = Logger()

RECORD_FILE: Final = "record.json"
#: How long a reap waits for a left container's processes to be gone (SIGKILLed: milliseconds).
REAP_WAIT_S: Final = 10.0
_CGROUP_LINE: Final = re.compile(r"^lxc\.cgroup\.dir\.container = (\S+)$", re.MULTILINE)
#: A container's cgroup: ``cortex/n<node>/b<block>/<id>`` (``cortex/b<block>/<id>`` before node cgroups).
_CGROUP_DIR: Final = re.compile(rf"{CGROUP_PARENT}/(?:{NODE_PREFIX}[0-9]+/)?b[0-9]+/[A-Za-z0-9_.-]+")


def write_record(container_dir: Path, spec: ContainerSpec, cgroup_dir: str) -> None:
    """What a later run of this state dir needs to clean the container up (see the module docstring)."""
    record = {
        "container_id": spec.container_id,
        "application": spec.application,
        "work_dir": str(spec.work_dir),
        "log_dir": str(spec.log_dir),
        "cgroup_dir": cgroup_dir,
    }
    (container_dir / RECORD_FILE).write_text(json.dumps(record))


@dataclass(frozen=True)
class LeftBehind:
    """A container a previous run left, as its directory tells."""

    container_id: str
    container_dir: Path
    cgroup_dir: str | None  # None: no readable config (it had not been written when the daemon died)
    work_dir: Path | None


def left_behind(base_dir: Path) -> list[LeftBehind]:
    """The containers a previous run of this runtime left (directories under ``<base_dir>/containers``)."""
    try:
        dirs = sorted(p for p in (base_dir / "containers").iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []
    found = []
    for container_dir in dirs:
        cgroup: str | None = None
        try:
            m = _CGROUP_LINE.search((container_dir / "config").read_text())
            cgroup = m[1] if m is not None and _CGROUP_DIR.fullmatch(m[1]) and ".." not in m[1] else None
        except OSError:
            pass
        work: Path | None = None
        try:
            record = json.loads((container_dir / RECORD_FILE).read_text())
            work = Path(record["work_dir"]) if isinstance(record.get("work_dir"), str) else None
        except (OSError, ValueError, AttributeError):
            pass
        found.append(LeftBehind(container_dir.name, container_dir, cgroup, work))
    return found


def _procs(cgroup_root: Path, cgroup: str) -> list[int]:
    """The processes of a container's cgroup and of its monitor's (in the ``pids`` hierarchy)."""
    return [pid for name in (cgroup, f"{cgroup}.monitor") for pid in procs_in(cgroup_root / "pids" / name)]


def remove_cgroups(cgroup_root: Path, cgroup: str, ids: IdRange, app_too: bool = True) -> None:
    """Remove the container's (and its monitor's) cgroup in every hierarchy, and (``app_too``) its
    application's (``cortex/n<node>/b<block>``) when it is empty and its block is in ``ids``, this node's:
    another node's may be empty only for the moment before its first container starts."""
    block = int(cgroup.split("/")[-2][1:])
    ours = app_too and ids.base // BLOCK <= block < (ids.base + ids.count) // BLOCK
    for hierarchy in hierarchies(cgroup_root):
        for name in (cgroup, f"{cgroup}.monitor"):
            top = hierarchy / name
            if top.is_dir() and not top.is_symlink():
                for path, _, _ in os.walk(top, topdown=False):  # children first: only empty cgroups go
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
        if ours:
            try:
                (hierarchy / cgroup).parent.rmdir()
            except OSError:
                pass


def reap_left_behind(
    base_dir: Path,
    cgroup_root: Path,
    ids: IdRange,
    roots: Sequence[Path],
    wait_s: float = REAP_WAIT_S,
    kill: Callable[[Iterable[int], int], None] = signal_pids,
    keep: Collection[str] = (),
    seen_from: Callable[[Path], Path] = lambda path: path,
    node_cgroups: bool = True,
) -> list[str]:
    """Kill and clean up every container a previous run left but those in ``keep`` (re-attached by
    NodeManager recovery: ``lxc_recovery.py``; see the module docstring); the ids reaped.

    Blocking (bounded by ``wait_s``).  Every container is killed (``kill``: SIGKILL to pids) before
    anything is deleted; if processes outlive the wait, nothing is, for the next start to try again.
    Work dirs are deleted only strictly under ``roots`` (the NodeManager's dirs); ``seen_from`` maps
    a recorded work dir to the path this process sees it at (another mount namespace's daemon).
    ``node_cgroups``: the caller holds the lease of ``ids`` (a node at its start), so the node cgroup
    trees of the range go too (step 4; ``local-cluster down`` does that itself, under the lease)."""
    every = left_behind(base_dir)
    found = [c for c in every if c.container_id not in keep]
    outlived = _kill_all(cgroup_root, found, wait_s, kill)
    if outlived:
        log.warn(
            "containers left by a previous run: processes {pids} outlived SIGKILL; nothing removed until next start",
            pids=outlived,
        )
        return []
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    reaped = []
    for left in found:
        if left.cgroup_dir is not None:
            remove_cgroups(cgroup_root, left.cgroup_dir, ids)
        if left.work_dir is not None:
            _remove_work_dir(left.container_id, seen_from(left.work_dir), real_roots)
        shutil.rmtree(left.container_dir, ignore_errors=True)
        log.info(
            "container {container_id} left by a previous run of this NodeManager: killed and removed",
            container_id=left.container_id,
        )
        reaped.append(left.container_id)
    if node_cgroups:
        kept = [c.cgroup_dir for c in every if c.container_id in keep and c.cgroup_dir is not None]
        remove_left_node_cgroups(cgroup_root, ids, spare=[*kept, *(f"{k}.monitor" for k in kept)])
    return reaped


def _kill_all(
    cgroup_root: Path, found: list[LeftBehind], wait_s: float, kill: Callable[[Iterable[int], int], None]
) -> dict[str, list[int]]:
    """SIGKILL every process of every container in ``found`` until their cgroups are all empty or
    ``wait_s`` has passed; the processes still there, by container (empty: all gone)."""
    cgroups = {c.container_id: c.cgroup_dir for c in found if c.cgroup_dir is not None}
    deadline = time.monotonic() + wait_s
    while alive := {cid: pids for cid, cgroup in cgroups.items() if (pids := _procs(cgroup_root, cgroup))}:
        if time.monotonic() > deadline:
            return alive
        kill([pid for pids in alive.values() for pid in pids], signal.SIGKILL)
        time.sleep(0.02)
    return {}


def deletable(path: Path, real_roots: Sequence[Path]) -> Path | None:
    """``path`` with its parent's symlinks resolved, if that is strictly under one of ``real_roots``
    (real paths) and is not itself a symlink; None if it is not to be deleted."""
    if not path.is_absolute() or ".." in path.parts or path.name in ("", "."):
        return None
    real = Path(os.path.realpath(path.parent)) / path.name
    if not any(root in real.parents for root in real_roots) or real.is_symlink():
        return None
    return real


def _remove_work_dir(container_id: str, work_dir: Path, real_roots: Sequence[Path]) -> None:
    """Delete a left container's work dir if ``deletable``, following no symlink; log one that is not."""
    real = deletable(work_dir, real_roots)
    if real is None:
        log.warn(
            "container {container_id} left by a previous run: its work dir {work_dir} is a symlink or not under "
            "this NodeManager's dirs {roots}; not deleted",
            container_id=container_id, work_dir=str(work_dir), roots=[str(r) for r in real_roots],
        )  # fmt: skip
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open("/", flags)
    except OSError as e:
        log.warn("container {container_id}: cannot open /: {error}", container_id=container_id, error=str(e))
        return
    try:
        for part in real.parent.parts[1:]:  # each directory of the resolved parent, none a symlink
            fd, above = os.open(part, flags, dir_fd=fd), fd
            os.close(above)
        shutil.rmtree(real.name, dir_fd=fd)  # (it refuses a symlink as the top, and follows none below)
    except FileNotFoundError:
        pass  # gone already
    except OSError as e:
        log.warn(
            "container {container_id} left by a previous run: its work dir {work_dir} not deleted: {error}",
            container_id=container_id, work_dir=str(real), error=str(e),
        )  # fmt: skip
    finally:
        os.close(fd)
