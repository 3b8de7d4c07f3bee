"""The node cgroup's limits from the caps, how they are written (into a directory tree that
stands for /sys/fs/cgroup; the kernel's side is in tests/integration/test_node_cgroup_lxc.py), and
how the trees a dead node left are removed (``tests/support/cgroupfs.py``'s fake; the real cgroupfs
in tests/integration/test_nm_leftovers.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent

from cortex_rm.config.events import EventsSection
from cortex_rm.config.nodemanager import NodeManagerSection
from cortex_rm.container.id_ranges import BLOCK, IdRange
from cortex_rm.container.lxc_sandbox import ContainerSandbox
from cortex_rm.container.node_cgroup import (
    CFS_PERIOD_US,
    MIB,
    NodeCgroup,
    NodeLimits,
    limits_of,
    node_cgroup_name,
    remove_left_node_cgroups,
)
from cortex_rm.roles.node_caps import NodeCaps
from tests.support.cgroupfs import HIERARCHIES, FakeCgroupFs
from tests.support.limits_runtime import LimitsRuntime


@dataclass(frozen=True)
class Caps:
    memory_mb: int
    vcores: int
    container_memory_overhead_mb: int = 256


@pytest.mark.parametrize(
    ("caps", "memory_mib", "quota_us"),
    [
        (Caps(8192, 8), 8192 + 256, 8 * CFS_PERIOD_US),
        (Caps(1024, 1, 0), 1024, CFS_PERIOD_US),
        (Caps(3000, 2, 100), 3100, 2 * CFS_PERIOD_US),
    ],
)
def test_limits_are_memory_plus_one_overhead_and_vcores_whole_cpus(caps: Caps, memory_mib: int, quota_us: int) -> None:
    """Memory: memory_mb plus one container's overhead allowance; CPU: vcores periods per period."""
    assert limits_of(caps) == NodeLimits(memory_mib * MIB, quota_us, CFS_PERIOD_US)


def test_the_config_section_gives_the_limits() -> None:
    """``[nodemanager]`` is what the NodeManager passes (it has the three fields)."""
    section = NodeManagerSection(memory_mb=2048, vcores=3, container_memory_overhead_mb=128)
    assert limits_of(section) == NodeLimits((2048 + 128) * MIB, 3 * CFS_PERIOD_US)


def test_the_node_cgroup_is_named_by_its_id_range_and_parents_the_applications() -> None:
    """``cortex/n<first block>``; an application's cgroup is below it (so every container is)."""
    ids = IdRange.parse("983040:131072")  # blocks 15 and 16
    assert node_cgroup_name(ids) == "cortex/n15"
    sandbox = ContainerSandbox(ids, Path("/nonexistent"))
    block, _ = sandbox.blocks.take("application_1_0001")
    assert sandbox.app_cgroup(block) == f"cortex/n15/b{block.number}"


def _fake_root(tmp_path: Path, swap: bool, cpu: bool = True) -> Path:
    root = tmp_path / "cgroup"
    (root / "memory").mkdir(parents=True)
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    if swap:
        (root / "memory" / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    if cpu:
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    return root


def _seed(node: NodeCgroup, swap: bool) -> None:
    """What the kernel puts in a new cgroup (a plain directory here)."""
    node.path("memory").mkdir(parents=True)
    (node.path("memory") / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    if swap:
        (node.path("memory") / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")


@pytest.mark.parametrize("swap", [False, True])
def test_apply_writes_memory_and_cpu_and_a_change_rewrites_them(tmp_path: Path, swap: bool) -> None:
    """memory.limit_in_bytes (and memsw, kept equal, when swap is accounted), the CFS period and
    quota; applying other limits later replaces them."""
    node = NodeCgroup(_fake_root(tmp_path, swap), "cortex/n15")
    _seed(node, swap)
    first = NodeLimits(512 * MIB, 150_000)
    assert node.apply(first) == []
    memory, cpu = node.path("memory"), node.path("cpu")
    assert (memory / "memory.limit_in_bytes").read_text() == str(512 * MIB)
    assert (cpu / "cpu.cfs_period_us").read_text() == str(CFS_PERIOD_US)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    assert node.applied == first
    for lower_or_higher in (NodeLimits(256 * MIB, 100_000), NodeLimits(2048 * MIB, 400_000)):
        assert node.apply(lower_or_higher) == []
        assert (memory / "memory.limit_in_bytes").read_text() == str(lower_or_higher.memory_bytes)
        if swap:
            assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(lower_or_higher.memory_bytes)
        assert (cpu / "cpu.cfs_quota_us").read_text() == str(lower_or_higher.cpu_quota_us)
        assert node.applied == lower_or_higher


def test_without_a_cpu_controller_the_memory_cap_still_holds_and_the_gap_is_said(tmp_path: Path) -> None:
    """No v1 cpu hierarchy: memory is written, the vcores cap is reported as not enforced."""
    node = NodeCgroup(_fake_root(tmp_path, swap=False, cpu=False), "cortex/n15")
    _seed(node, swap=False)
    problems = node.apply(NodeLimits(512 * MIB, 100_000))
    assert (node.path("memory") / "memory.limit_in_bytes").read_text() == str(512 * MIB)
    assert len(problems) == 1 and "vcores cap is not enforced" in problems[0]
    assert node.applied is None


def test_remove_takes_the_empty_node_cgroups_away(tmp_path: Path) -> None:
    """When the node stops its cgroups go (a plain empty directory here, as an empty cgroup is)."""
    node = NodeCgroup(_fake_root(tmp_path, swap=False), "cortex/n15")
    node.path("memory").mkdir(parents=True)
    node.path("cpu").mkdir(parents=True)
    node.remove()
    assert not node.path("memory").exists() and not node.path("cpu").exists()


def test_the_function_sandboxes_budget_is_inside_the_node_cgroup_limit_and_stays_after_a_reload() -> None:
    """Sandboxes run in the node cgroup beside the containers: its memory limit is memory_mb + one
    overhead + [events] max_sandbox_memory_mb on a node that executes functions (and stays so when
    the caps change); without execute, it is memory_mb + one overhead."""
    runtime = LimitsRuntime()
    section = NodeManagerSection(memory_mb=2048, vcores=2, container_memory_overhead_mb=128)
    containers = SimpleNamespace(runtime=runtime, run=defer.maybeDeferred)  # (its file threads: at once here)
    role: Any = SimpleNamespace(
        reactor=Clock(), data_node=None, status_updater=None, image=None, containers=containers, section=section,
    )  # fmt: skip
    caps = NodeCaps.attach(role, section, events=EventsSection(max_sandbox_memory_mb=1024))
    assert runtime.given == [NodeLimits((2048 + 128 + 1024) * MIB, 2 * CFS_PERIOD_US)]
    caps.apply(NodeManagerSection(memory_mb=4096, vcores=2, container_memory_overhead_mb=128))
    assert runtime.given[-1] == NodeLimits((4096 + 128 + 1024) * MIB, 2 * CFS_PERIOD_US)
    plain = NodeCaps.attach(role, section, events=EventsSection(execute=False, max_sandbox_memory_mb=1024))
    plain.apply(section)
    assert runtime.given[-1] == NodeLimits((2048 + 128) * MIB, 2 * CFS_PERIOD_US)
    assert limits_of(section, 512) == NodeLimits((2048 + 128 + 512) * MIB, 2 * CFS_PERIOD_US)


#: A node's range of four blocks, 15..18: its node cgroup is ``cortex/n15``.
RANGE = IdRange(15 * BLOCK, 4 * BLOCK)


def test_the_trees_a_dead_node_left_in_its_range_go_in_every_hierarchy_and_nothing_else_does(tmp_path: Path) -> None:
    """A SIGKILLed node's ``cortex/n15`` (two applications' cgroups, one with a container's below it) and an
    older node's ``cortex/n17`` (its range began inside this one) go in every hierarchy; ``cortex`` stays, and
    so do the trees of the nodes below and above the range (``n14``, ``n19``) and names no node has
    (``n016``, ``n15x``), although all are empty."""
    fs = FakeCgroupFs(tmp_path / "cgroup")
    for name in ("cortex/n15/b15/container_1_0001_01_000001", "cortex/n15/b16", "cortex/n17/b17",
                 "cortex/n14/b14", "cortex/n19", "cortex/n016", "cortex/n15x"):  # fmt: skip
        fs.make(name)
    sweep = remove_left_node_cgroups(fs.root, RANGE, rmdir=fs.rmdir)
    assert fs.exists("cortex/n15") == [] and fs.exists("cortex/n17") == []
    for name in ("cortex", "cortex/n14/b14", "cortex/n19", "cortex/n016", "cortex/n15x"):
        assert fs.exists(name) == list(HIERARCHIES), name
    assert len(sweep.removed) == 6 * len(HIERARCHIES) and sweep.kept == {}
    assert {p.relative_to(fs.root).parts[2] for p in fs.asked} == {"n15", "n17"}  # nothing else was tried


def test_a_cgroup_a_process_is_in_stays_with_its_ancestors_and_is_logged(
    tmp_path: Path, log_events: list[LogEvent]
) -> None:
    """A process is still in a container's memory cgroup: that cgroup, its application's and the node's stay in
    the memory hierarchy (the kernel refuses them; the sweep says which process keeps them), and the empty
    application cgroup beside them goes; in the other hierarchies the whole tree goes."""
    fs = FakeCgroupFs(tmp_path / "cgroup")
    busy = "cortex/n15/b15/container_1_0001_01_000001"
    fs.make(busy)
    fs.make(busy, pids=[4242], hierarchies=["memory"])
    fs.make("cortex/n15/b16")
    sweep = remove_left_node_cgroups(fs.root, RANGE, rmdir=fs.rmdir)
    assert fs.exists(busy) == ["memory"] and fs.exists("cortex/n15") == ["memory"]
    assert fs.exists("cortex/n15/b16") == []
    assert sweep.kept == {str(fs.root / "memory" / busy): [4242]}
    assert any("4242" in t and busy in t and "kept" in t for t in map(formatEvent, log_events))
    fs.make(busy, pids=[], hierarchies=["memory"])  # the process has gone: the next sweep takes the rest
    assert len(remove_left_node_cgroups(fs.root, RANGE, rmdir=fs.rmdir).removed) == 3
    assert fs.exists("cortex/n15") == [] and fs.exists("cortex") == list(HIERARCHIES)


def test_a_spared_cgroup_stays_even_when_empty(tmp_path: Path) -> None:
    """A cgroup the caller spares (a container NodeManager recovery took back, and its monitor's) stays
    with its ancestors although no process is in it; its empty sibling goes."""
    fs = FakeCgroupFs(tmp_path / "cgroup")
    kept = "cortex/n15/b15/container_1_0001_01_000001"
    for name in (kept, f"{kept}.monitor", "cortex/n15/b15/container_1_0001_01_000002"):
        fs.make(name)
    sweep = remove_left_node_cgroups(fs.root, RANGE, spare=[kept, f"{kept}.monitor"], rmdir=fs.rmdir)
    assert fs.exists(kept) == list(HIERARCHIES) and fs.exists(f"{kept}.monitor") == list(HIERARCHIES)
    assert fs.exists("cortex/n15/b15/container_1_0001_01_000002") == [] and sweep.kept == {}
