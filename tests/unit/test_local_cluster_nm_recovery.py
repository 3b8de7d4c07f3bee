"""``local-cluster up --nm-recovery``: every node's configuration turns NodeManager recovery on, and
only then; the check ``down`` makes before it SIGKILLs a recorded container's init by its pid; and
the node cgroup trees ``down`` removes of a dead node (an empty directory stands for an empty cgroup,
which ``rmdir`` removes; the real cgroupfs is in tests/integration/test_local_cluster_down_reaps.py)."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_rm.cli import _parser
from cortex_rm.config import load_config
from cortex_rm.container.id_ranges import BLOCK, IdRange
from cortex_rm.container.nm_recovery import ContainerRecord, pid_start_ticks
from cortex_rm.container.range_leases import RangeLease
from cortex_rm.local_cluster_config import plan_nodes
from cortex_rm.local_cluster_reap import kill_recorded, reap_stopped_node

RING_IDS = ("a" * 40, "b" * 40)


def configs(tmp_path: Path, nm_recovery: bool) -> list[Path]:
    hosts = [f"127.0.0.{i}" for i in range(1, 4)]
    state_dirs = [tmp_path / f"node{i}" for i in range(1, 4)]
    plans = plan_nodes(hosts, state_dirs, itertools.count(30000), RING_IDS, [1, 2, 3], nm_recovery=nm_recovery)
    paths = []
    for plan, state_dir in zip(plans, state_dirs):
        state_dir.mkdir()
        (state_dir / "cortex.toml").write_text(plan.config_text)
        paths.append(state_dir / "cortex.toml")
    return paths


@pytest.mark.parametrize("nm_recovery", [True, False])
def test_every_node_recovers_its_containers_exactly_when_asked(tmp_path: Path, nm_recovery: bool) -> None:
    """RM-eligible or not, each node's config validates and has ``[nodemanager] recovery`` as asked."""
    assert [load_config(p).nodemanager.recovery for p in configs(tmp_path, nm_recovery)] == [nm_recovery] * 3


def test_the_option_is_off_unless_given() -> None:
    """``--nm-recovery`` sets it; without it, NodeManager recovery stays off (YARN's default)."""
    up = ["local-cluster", "up", "--workdir", "/tmp/x"]
    assert _parser().parse_args(up).nm_recovery is False
    assert _parser().parse_args([*up, "--nm-recovery"]).nm_recovery is True


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def record_of(pid: int, ticks: int | None) -> ContainerRecord:
    return ContainerRecord(
        container_id="container_1_0001_01_000001", application="application_1_0001", user="u", memory_mb=1, vcores=1,
        priority=0, creation_time_ms=0, work_dir="/nonexistent", log_dir="/nonexistent", pid=pid, pid_start_ticks=ticks,
    )  # fmt: skip


def test_a_recorded_pid_is_killed_only_if_it_is_the_process_recorded(sleeper: subprocess.Popen[bytes]) -> None:
    """A record whose start time is not the live process's (the pid was reused), or that has none, does
    not kill it; the record of the very process does (SIGKILL); a record of a process gone kills nothing."""
    ticks = pid_start_ticks(sleeper.pid)
    assert ticks is not None
    assert not kill_recorded(record_of(sleeper.pid, ticks + 1))
    assert not kill_recorded(record_of(sleeper.pid, None))
    assert sleeper.poll() is None
    assert kill_recorded(record_of(sleeper.pid, ticks))
    assert sleeper.wait(timeout=10) == -9
    assert not kill_recorded(record_of(sleeper.pid, ticks))  # (reaped: gone)


def test_down_removes_the_node_cgroup_trees_of_a_dead_nodes_range_unless_its_range_is_held(tmp_path: Path) -> None:
    """A dead node's ``cortex/n<block>`` trees in two hierarchies: while another process holds the node's id
    range (a node started in it since), ``down``'s reap leaves them; once the range is free it removes them,
    and the next node's tree (outside the range) and ``cortex`` stay."""
    config = configs(tmp_path, nm_recovery=False)[0]
    ids = IdRange.parse(load_config(config).nodemanager.container_id_range)
    first = ids.base // BLOCK
    root, leases = tmp_path / "cgroup", tmp_path / "leases"
    ours = [root / h / "cortex" / f"n{first}" / f"b{first + 1}" for h in ("memory", "unified")]
    theirs = root / "memory" / "cortex" / f"n{first + ids.blocks}"
    for path in (*ours, theirs):
        path.mkdir(parents=True)

    def reap() -> list[str] | None:
        found = reap_stopped_node(
            config.parent, config, isolated=True, cgroup_root=root, lock_wait_s=0, lease_dir=leases
        )
        assert found.skipped == "", found.skipped
        held.append(found.cgroups_skipped)
        return None if found.cgroups is None else found.cgroups.removed

    held: list[str] = []
    lease = RangeLease.take(ids, leases)
    try:
        assert reap() is None and all(p.is_dir() for p in ours)
        assert "held by a live process" in held[-1] and "run down again once it has stopped" in held[-1]
    finally:
        lease.release()
    assert reap() == [str(ours[0]), str(ours[0].parent), str(ours[1]), str(ours[1].parent)]  # children first
    assert theirs.is_dir() and (root / "memory" / "cortex").is_dir() and (root / "unified" / "cortex").is_dir()
