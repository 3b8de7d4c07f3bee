"""The node's own cgroup: every container of this NodeManager runs below it, and its limits are
the caps the contributor set, so that together the containers can never use more, whatever
their own limits say.

Layout, in every cgroup hierarchy (``lxc_sandbox.py`` makes the application's, LXC the container's)::

    cortex/                         shared by every node of the host (the network policy names it)
      n<first block>/               this node: memory and CPU caps (the name: NODE_PREFIX + its
                                    id range's first block number, unique per host because the
                                    ranges of a host's nodes do not overlap)
        b<block>/                   one application's containers (its block of host ids)
          <container id>/           one container: its own memory and pids limits

The caps, as cgroup v1 limits (``limits_of``; the runtime needs v1 memory and pids anyway):

* memory: ``memory_mb + container_memory_overhead_mb + sandbox memory`` MiB in
  ``memory.limit_in_bytes`` (and in ``memory.memsw.limit_in_bytes`` when the kernel accounts
  swap, so swap does not stretch it).  The RM hands out at most ``memory_mb`` to this node's
  containers; each container's own hard limit is its allocation plus the overhead (off-heap
  memory outside ``-Xmx``), so a full node whose containers each stay within their allocation
  fits, and the slack of one container's overhead is shared by all of them.  The function
  sandboxes (``roles/function_sandboxes.py``) start through the same runtime, so they sit in this
  cgroup too, beside what the RM placed: the sandbox memory is their node-wide budget
  (``[events] max_sandbox_memory_mb`` on a node that executes functions, else 0), which they
  never exceed together (each has its own limit too), so sandboxes can never push a full node
  of containers that stay within their allocations over the limit.  Beyond it the kernel
  reclaims, then its OOM killer picks a process of one of this node's containers: the machine's
  other work never pays for them;
* CPU: a CFS quota of ``vcores`` whole CPUs per period (``cpu.cfs_quota_us = vcores *
  cpu.cfs_period_us``), shared by all the node's containers: throttled, never killed.

``NodeCgroup.apply`` writes them (a few file writes, on the reactor) when the runtime first
starts a container and whenever the caps change (``[nodemanager]`` re-read on SIGHUP).  A lower
memory cap than the containers use now cannot be written (the kernel answers EBUSY after trying
to reclaim): the old one stays, it is logged and ``apply`` tries again at the next change or start.

A daemon that dies without its clean stop (SIGKILL, a crash) leaves its ``cortex/n<block>`` tree,
with the ``b<block>`` cgroups below it, in every hierarchy.  ``remove_left_node_cgroups`` removes
the trees of a range its caller holds, depth first, keeping any cgroup a process is still in: the
node's next start does it for its own range (``lxc_leftovers.reap_left_behind``), and
``local-cluster down`` for each of its nodes once their daemons are gone (``local_cluster_reap``).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from twisted.logger import Logger

from cortex_rm.container.id_ranges import BLOCK, IdRange
from cortex_rm.container.lxc_config import CGROUP_PARENT

log = Logger()

#: The node's cgroup below ``CGROUP_PARENT``: this, then its id range's first block number.
NODE_PREFIX: Final = "n"
_NODE_NAME: Final = re.compile(rf"{NODE_PREFIX}([1-9][0-9]*)")
#: The CFS period the quota is a multiple of (the kernel's default, 100 ms).
CFS_PERIOD_US: Final = 100_000
MIB: Final = 1 << 20


class Caps(Protocol):
    """What the caps are read from (``config.nodemanager.NodeManagerSection``)."""

    @property
    def memory_mb(self) -> int: ...

    @property
    def vcores(self) -> int: ...

    @property
    def container_memory_overhead_mb(self) -> int: ...


@dataclass(frozen=True)
class NodeLimits:
    """The limits of the node's cgroup (see the module docstring for the formulas)."""

    memory_bytes: int
    cpu_quota_us: int
    cpu_period_us: int = CFS_PERIOD_US


def limits_of(caps: Caps, sandbox_memory_mb: int = 0) -> NodeLimits:
    """The node cgroup's limits for ``caps``: memory_mb plus one container's overhead plus the
    function sandboxes' budget ``sandbox_memory_mb``, vcores CPUs."""
    return NodeLimits(
        memory_bytes=(caps.memory_mb + caps.container_memory_overhead_mb + sandbox_memory_mb) * MIB,
        cpu_quota_us=caps.vcores * CFS_PERIOD_US,
    )


def node_cgroup_name(ids: IdRange) -> str:
    """The node's cgroup below each hierarchy's root: ``cortex/n<first block of its id range>``."""
    return f"{CGROUP_PARENT}/{NODE_PREFIX}{ids.base // BLOCK}"


class NodeCgroup:
    """The node's cgroup in the v1 ``memory`` and ``cpu`` hierarchies under ``cgroup_root``."""

    def __init__(self, cgroup_root: Path, name: str) -> None:
        self.cgroup_root = cgroup_root
        self.name = name
        #: The limits last written in full (None: none yet).
        self.applied: NodeLimits | None = None

    def path(self, controller: str) -> Path:
        return self.cgroup_root / controller / self.name

    def apply(self, limits: NodeLimits) -> list[str]:
        """Make the node's cgroups and write ``limits``; what could not be done (empty: all of it)."""
        problems: list[str] = []
        memory = self.path("memory")
        try:
            memory.mkdir(parents=True, exist_ok=True)
            _write_memory(memory, limits.memory_bytes)
        except OSError as e:
            problems.append(_why(memory / "memory.limit_in_bytes", limits.memory_bytes, e))
        cpu = self.path("cpu")
        if (self.cgroup_root / "cpu" / "cpu.cfs_quota_us").exists():
            try:
                cpu.mkdir(parents=True, exist_ok=True)
                # the period first: the quota is checked against it (both in microseconds)
                (cpu / "cpu.cfs_period_us").write_text(str(limits.cpu_period_us))
                (cpu / "cpu.cfs_quota_us").write_text(str(limits.cpu_quota_us))
            except OSError as e:
                problems.append(_why(cpu / "cpu.cfs_quota_us", limits.cpu_quota_us, e))
        else:
            problems.append(f"no cgroup v1 cpu controller at {self.cgroup_root / 'cpu'}: the vcores cap is not enforced")
        if problems:
            for problem in problems:
                log.warn("node cgroup {name}: {problem}", name=self.name, problem=problem)
        else:
            self.applied = limits
            log.info(
                "node cgroup {name}: memory {memory_mb} MiB, CPU {cpus} ({quota_us} us per {period_us} us)",
                name=self.name, memory_mb=limits.memory_bytes // MIB, cpus=limits.cpu_quota_us / limits.cpu_period_us,
                quota_us=limits.cpu_quota_us, period_us=limits.cpu_period_us,
            )  # fmt: skip
        return problems

    def remove(self) -> None:
        """Remove the node's cgroups in every hierarchy (LXC makes it in each) if nothing is left below
        them (the node stops)."""
        for hierarchy in hierarchies(self.cgroup_root):
            try:
                (hierarchy / self.name).rmdir()
            except OSError:
                pass
        self.applied = None


@dataclass
class NodeCgroupSweep:
    """What ``remove_left_node_cgroups`` did: the cgroups removed and those kept, by path."""

    removed: list[str] = field(default_factory=list)
    #: A cgroup that could not be removed: the processes in it (empty: another reason, logged).
    kept: dict[str, list[int]] = field(default_factory=dict)


def hierarchies(cgroup_root: Path) -> list[Path]:
    """Every cgroup hierarchy under ``cgroup_root``: the v1 controllers' mounts and cgroup2's ``unified``
    (LXC makes a container's cgroup in each), one path per real directory."""
    try:
        found = sorted(p for p in cgroup_root.iterdir() if p.is_dir())
    except OSError:
        return []
    return list({os.path.realpath(p): p for p in found}.values())


def node_blocks(ids: IdRange) -> range:
    """The block numbers a node cgroup of a node whose range meets nothing but ``ids`` is named by."""
    return range(ids.base // BLOCK, (ids.base + ids.count) // BLOCK)


def remove_left_node_cgroups(
    cgroup_root: Path, ids: IdRange, spare: Collection[str] = (), rmdir: Callable[[Path], None] = os.rmdir
) -> NodeCgroupSweep:
    """Remove every node cgroup tree ``cortex/n<block>`` whose block is in ``ids``, in every hierarchy,
    depth first: each cgroup holding no process and no kept child goes, a cgroup with processes in it
    stays (logged, with them), and so do its ancestors.  ``spare``: cgroups (below the hierarchies'
    roots) left alone with everything below them (containers NodeManager recovery took back).

    A node cgroup is named by the first block of its node's range, and the caller holds ``ids``: its
    own node's lease (at start), or one no live process holds (``local-cluster down``); the ranges of
    a host's live nodes never meet (``range_leases.py``), so no tree removed is a live node's.
    ``cortex`` itself stays (other nodes' trees are in it).  ``rmdir`` removes one cgroup (cgroupfs
    removes a directory with its control files in it when no process and no child cgroup is left)."""
    sweep = NodeCgroupSweep()
    blocks = node_blocks(ids)
    for hierarchy in hierarchies(cgroup_root):
        parent = hierarchy / CGROUP_PARENT
        try:
            names = sorted(p.name for p in parent.iterdir())
        except OSError:
            continue
        for name in names:
            m = _NODE_NAME.fullmatch(name)
            if m is not None and int(m[1]) in blocks:
                _remove_tree(hierarchy, f"{CGROUP_PARENT}/{name}", set(spare), rmdir, sweep)
    if sweep.removed:
        log.info(
            "removed {count} empty cgroups of the node cgroup trees left in range {range}",
            count=len(sweep.removed), range=ids.text(),
        )  # fmt: skip
    return sweep


def _remove_tree(
    hierarchy: Path, name: str, spare: set[str], rmdir: Callable[[Path], None], sweep: NodeCgroupSweep
) -> bool:
    """Remove cgroup ``name`` of ``hierarchy`` after its children (see ``remove_left_node_cgroups``); whether
    it is gone."""
    path = hierarchy / name
    if name in spare or path.is_symlink() or not path.is_dir():
        return not path.exists()
    try:
        children = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        children = []
    gone = [_remove_tree(hierarchy, f"{name}/{child}", spare, rmdir, sweep) for child in children]
    if not all(gone):
        return False
    try:
        rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as e:
        sweep.kept[str(path)] = pids = procs_in(path)
        if pids:
            log.warn("left node cgroup {path} kept: processes {pids} are in it", path=str(path), pids=pids)
        else:
            log.warn("left node cgroup {path} not removed: {error}", path=str(path), error=str(e))
        return False
    sweep.removed.append(str(path))
    return True


def procs_in(cgroup: Path) -> list[int]:
    """The processes in ``cgroup`` (its ``cgroup.procs``; none when unreadable)."""
    try:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _write_memory(memory: Path, limit: int) -> None:
    """Write the memory limit (and the memory+swap one, kept equal): the kernel wants
    ``memsw >= limit`` at every step, so a raise writes memsw first and a cut writes it last."""
    memsw = memory / "memory.memsw.limit_in_bytes"
    plain = memory / "memory.limit_in_bytes"
    if not memsw.exists():
        plain.write_text(str(limit))
        return
    current = int(memsw.read_text())
    if limit >= current:
        memsw.write_text(str(limit))
        plain.write_text(str(limit))
    else:
        plain.write_text(str(limit))
        memsw.write_text(str(limit))


def _why(path: Path, value: int, e: OSError) -> str:
    if e.errno == errno.EBUSY:
        return f"{path}: cannot lower it to {value}: the containers use more now (kept the old limit)"
    return f"cannot write {value} to {path}: {e}"
