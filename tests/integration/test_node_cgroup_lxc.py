"""The node's cgroup with real LXC: every container is below it and its limits, the caps, bound
what the containers use together even when a container's own limit is larger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from cortex_rm.container.lxc_runtime import LxcRuntime
from cortex_rm.container.node_cgroup import CFS_PERIOD_US, NodeLimits
from tests.integration.test_container_runtime import LXC_READY, MIB, LxcHarness, Program, outcome
from tests.support.reactor import reactor

pytestmark = pytest.mark.integration

CGROUPS = Path("/sys/fs/cgroup")


@pytest.fixture
def capped(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LxcHarness]:
    """An LXC harness whose runtime caps the node at 200 MiB and half a CPU."""
    if not LXC_READY:
        pytest.skip("needs root, Debian's lxc and cgroup v1")
    harness = LxcHarness(tmp_path, request.getfixturevalue("runtime_image_root"))
    harness.runtime = LxcRuntime(reactor(), tmp_path / "runtime", limits=NodeLimits(200 * MIB, CFS_PERIOD_US // 2))
    yield harness
    harness.close()


def _memory_cgroup_of(pid: int) -> str:
    """The memory cgroup of host process ``pid``, as /proc/<pid>/cgroup names it."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    raise AssertionError(f"no memory cgroup in /proc/{pid}/cgroup")


@pytest_twisted.inlineCallbacks
def test_containers_run_below_the_node_cgroup_whose_limits_are_the_caps(capped: LxcHarness):  # type: ignore[no-untyped-def]
    """The node cgroup's memory.limit_in_bytes and CFS quota are the caps, and a running
    container's cgroup (seen from the host) is below it; closing the runtime removes it."""
    container = capped.start(Program())
    yield capped.ready(container)
    node = capped.runtime.node_cgroup.name
    assert node.startswith("cortex/n")
    assert int((CGROUPS / "memory" / node / "memory.limit_in_bytes").read_text()) == 200 * MIB
    assert int((CGROUPS / "cpu" / node / "cpu.cfs_period_us").read_text()) == CFS_PERIOD_US
    assert int((CGROUPS / "cpu" / node / "cpu.cfs_quota_us").read_text()) == CFS_PERIOD_US // 2
    assert container.pid is not None
    assert _memory_cgroup_of(container.pid).startswith(f"/{node}/b")
    assert _memory_cgroup_of(container.pid).endswith(f"/{container.container_id}")
    cpu_dirs = list((CGROUPS / "cpu" / node).glob(f"b*/{container.container_id}"))
    assert len(cpu_dirs) == 1  # the CPU quota's hierarchy holds it too
    container.kill(0)
    yield outcome(container.exited)
    capped.close()
    assert not (CGROUPS / "memory" / node).exists()


@pytest_twisted.inlineCallbacks
def test_the_node_cap_bounds_a_container_whose_own_limit_is_larger(capped: LxcHarness):  # type: ignore[no-untyped-def]
    """A container allowed 1 GiB by its own limit that allocates 400 MB under a node capped at
    200 MiB is OOM-killed (137), while 50 MB in the same set-up runs to its end."""
    small = yield outcome(capped.start(Program(exit_code=0, allocate_bytes=50 * MIB), memory_limit_bytes=1024 * MIB).exited)
    assert small.exit_code == 0
    big = yield outcome(capped.start(Program(exit_code=0, allocate_bytes=400 * MIB), memory_limit_bytes=1024 * MIB).exited)
    assert big.exit_code == 137


@pytest_twisted.inlineCallbacks
def test_new_caps_are_written_to_the_node_cgroup_while_containers_run(capped: LxcHarness):  # type: ignore[no-untyped-def]
    """``set_limits`` (a SIGHUP's new caps) rewrites the running node cgroup: raised, then lowered."""
    container = capped.start(Program())
    yield capped.ready(container)
    node = capped.runtime.node_cgroup.name
    for limits in (NodeLimits(300 * MIB, 2 * CFS_PERIOD_US), NodeLimits(150 * MIB, CFS_PERIOD_US)):
        assert capped.runtime.set_limits(limits) == []
        assert int((CGROUPS / "memory" / node / "memory.limit_in_bytes").read_text()) == limits.memory_bytes
        assert int((CGROUPS / "cpu" / node / "cpu.cfs_quota_us").read_text()) == limits.cpu_quota_us
    container.kill(0)
    yield outcome(container.exited)
