"""A NodeManager's LXC containers die with its daemon, and a restart cleans what a killed one left.

Real LXC containers (each ``sleep`` with a background child) run by an ``LxcRuntime`` in a process of
its own (``tests/support/lxc_runtime_child.py``, built as the NodeManager role builds it); the test
SIGKILLs that process, as the issue's operator SIGKILLed a node daemon:

* with the parent-death signal (the default), every process of every container -- init, the
  wrapper, the command, its child, and lxc-execute -- is gone within ``GONE_BOUND_S``;
* without it (a daemon killed before setpriv's ``prctl``), they outlive the daemon, and the next
  start over the same state dir kills them;

either way a restart leaves no container dir, cgroup, work dir or sysfs mount of the old run, and
starts containers of its own cleanly.  And the node cgroup trees (``cortex/n<block>``) a dead node
left in its range go at that start, in the real cgroupfs, but a cgroup a process is still in.

Skipped only where LXC cannot run (not root, no lxc-execute, no cgroup v1), or for the cgroup trees
where there is no cgroup v1 memory hierarchy and cgroup2 at /sys/fs/cgroup/unified, or not as root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cortex_rm.container.id_ranges import BLOCK, IdRange, node_id_range
from cortex_rm.container.lxc_sandbox import SYSFS_DIR
from cortex_rm.container.node_cgroup import remove_left_node_cgroups
from cortex_rm.container.range_leases import RangeLease, is_free
from tests.support.ring_daemons import REPO, wait_for

pytestmark = pytest.mark.integration

LXC_READY = os.geteuid() == 0 and shutil.which("lxc-execute") is not None and Path("/sys/fs/cgroup/memory").is_dir()
needs_lxc = pytest.mark.skipif(not LXC_READY, reason="needs root, Debian's lxc and cgroup v1")
CGROUPS = Path("/sys/fs/cgroup")
#: How soon a SIGKILLed daemon's containers must be gone (the kernel's parent-death signals: milliseconds).
GONE_BOUND_S = 5.0
START_S = 60.0


CGROUP_TREES_READY = os.geteuid() == 0 and all((CGROUPS / h / "cgroup.procs").exists() for h in ("memory", "unified"))


def _leased(indices: range) -> Iterator[IdRange]:
    """A node range no live node of this host holds (node ``indices``' shares), leased while the generator
    is suspended (nobody else starts in it)."""
    for index in indices:
        ids = IdRange.parse(node_id_range(index))
        if is_free(ids):
            lease = RangeLease.take(ids)
            yield ids
            lease.release()
            return
    pytest.skip("no free id range")


@pytest.fixture
def id_range() -> Iterator[IdRange]:
    """A node range no live node of this host holds, leased for the test (nobody else starts in it)."""
    yield from _leased(range(40, 200))


@pytest.fixture
def other_range(id_range: IdRange) -> Iterator[IdRange]:
    """A second leased range (another node's, for the test), not ``id_range``."""
    yield from _leased(range(240, 274))  # (the last node index whose range ends below 2**31: 273)


class RuntimeChild:
    """The runtime's process over one state dir (see ``lxc_runtime_child.py``)."""

    def __init__(self, state: Path, image: Path, ids: IdRange) -> None:
        self.state, self.image, self.ids = state, image, ids
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, count: int, *extra: str) -> dict[str, Any]:
        (self.state / "started.json").unlink(missing_ok=True)
        with open(self.state.parent / "child.out", "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.lxc_runtime_child", str(self.state), str(self.image),
                 str(count), self.ids.text(), *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )  # fmt: skip
        process = self.process
        wait_for(lambda: (self.state / "started.json").exists() or process.poll() is not None, "containers start", START_S)
        assert process.poll() is None, (self.state.parent / "child.out").read_text()
        started: dict[str, Any] = json.loads((self.state / "started.json").read_text())
        return started

    def sigkill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """A clean stop (SIGTERM): the child kills its containers and unmounts the sysfs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)

    def reaped_at_start(self) -> list[str]:
        lines = (self.state.parent / "child.out").read_text().splitlines()
        return [line for line in lines if line.startswith("reaped ")]


def cgroup_pids(cgroup: str) -> list[int]:
    """Every process of a container's pids cgroup and of its monitor's."""
    pids = []
    for name in (cgroup, f"{cgroup}.monitor"):
        try:
            pids += [int(p) for p in (CGROUPS / "pids" / name / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            pass
    return pids


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def left_cgroups(cgroup: str) -> list[Path]:
    return [h / name for h in CGROUPS.iterdir() for name in (cgroup, f"{cgroup}.monitor") if (h / name).exists()]


@pytest.fixture
def child(tmp_path: Path, runtime_image_root: Path, id_range: IdRange) -> Iterator[RuntimeChild]:
    if not LXC_READY:
        pytest.skip("needs root, Debian's lxc and cgroup v1")
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    runtime = RuntimeChild(state, runtime_image_root, id_range)
    yield runtime
    runtime.stop()
    if runtime.process is not None and runtime.process.poll() is None:
        runtime.sigkill()
    if any((state / "lxc" / "containers").glob("*")):  # what a failed test left: one more run reaps it
        runtime.start(0)
        runtime.stop()


def assert_restart_is_clean(child: RuntimeChild, old: dict[str, Any], reaped: set[str]) -> None:
    """A new run over the state dir reaps ``reaped``, and nothing of ``old`` is left; its own container runs."""
    new = child.start(1)
    assert child.reaped_at_start()[-1] == f"reaped {sorted(reaped)!r}"
    for cid, found in old.items():
        assert left_cgroups(found["cgroup"]) == []
        assert not (child.state / "lxc" / "containers" / cid).exists()
        assert not (child.state / "work" / cid).exists()
        assert (child.state / "logs" / cid).exists()  # logs stay, as YARN keeps a killed container's
    (cid,) = new
    assert alive(new[cid]["init"])
    assert os.path.ismount(child.state / "lxc" / SYSFS_DIR)
    child.stop()
    assert left_cgroups(new[cid]["cgroup"]) == []
    block = new[cid]["cgroup"].rsplit("/", 1)[0]  # cortex/b<block>: freed by the clean stop
    assert [h for h in CGROUPS.iterdir() if (h / block).exists()] == []
    assert not os.path.ismount(child.state / "lxc" / SYSFS_DIR)


@needs_lxc
def test_a_sigkilled_daemons_containers_die_with_it_and_a_restart_starts_clean(child: RuntimeChild) -> None:
    """SIGKILL of the runtime's process: every process of both containers is gone within the bound;
    the restart removes their dirs and cgroups (nothing left to kill) and runs a container of its own."""
    old = child.start(2)
    pids = {cid: cgroup_pids(found["cgroup"]) for cid, found in old.items()}
    for cid, found in old.items():
        assert found["init"] in pids[cid] and found["monitor"] in pids[cid] and len(pids[cid]) >= 5, pids
    child.sigkill()
    killed_at = time.monotonic()
    took = wait_for(lambda: not any(alive(p) for ps in pids.values() for p in ps), "the containers die", GONE_BOUND_S)
    print(f"containers gone {took * 1000:.0f} ms after the SIGKILL (bound {GONE_BOUND_S} s)")
    assert time.monotonic() - killed_at <= GONE_BOUND_S + 1
    assert_restart_is_clean(child, old, set(old))


@needs_lxc
def test_containers_that_outlived_a_killed_daemon_are_killed_at_the_next_start(child: RuntimeChild) -> None:
    """Without the parent-death signal the containers outlive the SIGKILL (as the issue saw); the next
    start over the same state dir kills every one of their processes and removes what they left."""
    old = child.start(2, "--as-before-setpriv")
    pids = {cid: cgroup_pids(found["cgroup"]) for cid, found in old.items()}
    child.sigkill()
    # (each container outlives the daemon: some of its processes are still alive; a short-lived one seen in its
    # cgroup before the kill, lxc's or the shell's, may have ended on its own meanwhile)
    assert all(any(alive(p) for p in ps) for ps in pids.values()), "the containers should have outlived the daemon"
    assert_restart_is_clean(child, old, set(old))
    assert not any(alive(p) for ps in pids.values() for p in ps)


@needs_lxc
def test_a_restart_deletes_no_work_dir_outside_the_nodemanagers_dirs_nor_through_a_symlink(
    child: RuntimeChild, tmp_path: Path
) -> None:
    """Two containers outlive a killed daemon; one's record.json then names a work dir outside the NodeManager's
    dirs, the other's a symlink (in its work root) to a directory outside.  The next start kills both and removes
    their container dirs and cgroups, but neither target loses a file."""
    old = child.start(2, "--as-before-setpriv")
    pids = {cid: cgroup_pids(found["cgroup"]) for cid, found in old.items()}
    child.sigkill()
    outside, victim = tmp_path / "outside", tmp_path / "victim"
    for target in (outside, victim):
        target.mkdir()
        (target / "data").write_text("keep")
    (child.state / "work" / "link").symlink_to(victim)
    for cid, work_dir in zip(sorted(old), (outside, child.state / "work" / "link")):
        record_file = child.state / "lxc" / "containers" / cid / "record.json"
        record_file.write_text(json.dumps({**json.loads(record_file.read_text()), "work_dir": str(work_dir)}))
    child.start(0)
    assert child.reaped_at_start()[-1] == f"reaped {sorted(old)!r}"
    assert not any(alive(p) for ps in pids.values() for p in ps)
    for cid, found in old.items():
        assert left_cgroups(found["cgroup"]) == [] and not (child.state / "lxc" / "containers" / cid).exists()
    assert (outside / "data").read_text() == "keep" and (victim / "data").read_text() == "keep"
    assert (child.state / "work" / "link").is_symlink()


@pytest.mark.skipif(
    not CGROUP_TREES_READY,
    reason="needs root, cgroup v1 memory at /sys/fs/cgroup/memory and cgroup2 at /sys/fs/cgroup/unified",
)
def test_the_node_cgroup_trees_a_dead_node_left_go_but_a_cgroup_a_process_is_in(
    id_range: IdRange, other_range: IdRange
) -> None:
    """Real cgroups in the memory, pids and cgroup2 hierarchies, as a SIGKILLed node of ``id_range`` leaves them:
    its ``n<first>`` tree with an empty container cgroup and one a live ``sleep`` is in, and an older node's
    ``n<first + 1>`` in the range; and another node's tree (``other_range``).  The sweep of ``id_range`` (what the
    node's next start does) removes every empty cgroup of the range, keeps the sleep's cgroup and its ancestors
    (saying its pid), and leaves the other node's tree and ``cortex``; once the sleep is gone the next sweep
    removes the rest."""
    first, other = id_range.base // BLOCK, other_range.base // BLOCK
    hierarchies = [CGROUPS / h for h in ("memory", "pids", "unified")]
    busy = f"cortex/n{first}/b{first + 1}/container_busy"
    older, others = f"cortex/n{first + 1}/b{first + 1}", f"cortex/n{other}/b{other}"
    names = [f"cortex/n{first}/b{first}/container_empty", busy, older, others]
    sleep = subprocess.Popen(["sleep", "600"])
    try:
        for h in hierarchies:
            for name in names:
                (h / name).mkdir(parents=True, exist_ok=True)
            (h / busy / "cgroup.procs").write_text(str(sleep.pid))
        sweep = remove_left_node_cgroups(CGROUPS, id_range)
        for h in hierarchies:
            assert not (h / f"cortex/n{first}/b{first}").exists() and not (h / f"cortex/n{first + 1}").exists()
            assert (h / busy / "cgroup.procs").read_text().split() == [str(sleep.pid)]
            assert (h / others).is_dir()
        assert sweep.kept == {str(h / busy): [sleep.pid] for h in hierarchies}
        sleep.kill()
        sleep.wait(timeout=10)
        procs = [h / busy / "cgroup.procs" for h in hierarchies]
        wait_for(lambda: not any(p.read_text().strip() for p in procs), "the sleep's cgroups empty", 10)
        assert remove_left_node_cgroups(CGROUPS, id_range).kept == {}
        assert [h for h in hierarchies if (h / f"cortex/n{first}").exists()] == []
        assert all((h / "cortex").is_dir() and (h / others).is_dir() for h in hierarchies)
    finally:
        if sleep.poll() is None:
            sleep.kill()
            sleep.wait(timeout=10)
        for ids in (id_range, other_range):  # (both leased by this test: nothing else is in them)
            remove_left_node_cgroups(CGROUPS, ids)
