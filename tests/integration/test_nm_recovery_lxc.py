"""NodeManager recovery with real LXC containers: they outlive a SIGKILLed daemon, and its restart
re-attaches the running ones and reports the ended ones with the exit code their wrapper wrote.

An ``LxcRuntime`` with ``recovery`` runs in a process of its own (``tests/support/lxc_recovery_child.py``,
keeping the records as the ``ContainerManager`` does); the test SIGKILLs it, makes one container end
while nothing watches it, and starts the next run over the same state dir.  (Without recovery the
containers die with the daemon: ``test_nm_leftovers.py``.)

Skipped only where LXC cannot run (not root, no lxc-execute, no cgroup v1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cortex_rm.container.id_ranges import IdRange
from cortex_rm.container.nm_recovery import EXIT_CODE_FILE, RECOVERY_DIR
from tests.integration.test_nm_leftovers import CGROUPS, alive, cgroup_pids, id_range, left_cgroups, needs_lxc
from tests.support.ring_daemons import REPO, wait_for

pytestmark = pytest.mark.integration
__all__ = ["id_range"]  # (a fixture)
START_S = 60.0
#: How soon a recovered container's end is reported (it is polled every second).
END_S = 10.0


class RecoveryChild:
    """The runtime's process over one state dir (see ``lxc_recovery_child.py``)."""

    def __init__(self, state: Path, image: Path, ids: IdRange) -> None:
        self.state, self.image, self.ids = state, image, ids
        self.process: subprocess.Popen[bytes] | None = None

    def run(self, mode: str, *args: str, ready: str) -> dict[str, Any]:
        (self.state / ready).unlink(missing_ok=True)
        with open(self.state.parent / "child.out", "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.lxc_recovery_child", str(self.state), str(self.image),
                 self.ids.text(), mode, *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )  # fmt: skip
        process = self.process
        wait_for(lambda: (self.state / ready).exists() or process.poll() is not None, f"{mode} is done", START_S)
        assert process.poll() is None, (self.state.parent / "child.out").read_text()
        found: dict[str, Any] = json.loads((self.state / ready).read_text())
        return found

    def sigkill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture
def child(tmp_path: Path, runtime_image_root: Path, id_range: IdRange) -> Iterator[RecoveryChild]:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    runtime = RecoveryChild(state, runtime_image_root, id_range)
    yield runtime
    runtime.stop()
    if runtime.process is not None and runtime.process.poll() is None:
        runtime.sigkill()
    if any((state / "lxc" / "containers").glob("*")):  # what a failed test left: a recovery run, then a clean stop
        runtime.run("recover", ready="recovered.json")
        runtime.stop()


@needs_lxc
def test_containers_outlive_a_sigkilled_daemon_and_its_restart_takes_them_back(child: RecoveryChild) -> None:
    """Two containers outlive the SIGKILL; A ends with 7 while the daemon is down, B runs on.  The restart
    reports A complete with 7 (its wrapper's code) and re-attaches B, whose end (3) it then sees; a clean
    stop leaves no cgroup, container dir or record behind."""
    started = child.run("start", "2", ready="started.json")
    (a, b) = sorted(started)
    work = {cid: child.state / "work" / cid for cid in started}
    pids = {cid: cgroup_pids(found["cgroup"]) for cid, found in started.items()}
    child.sigkill()
    time.sleep(1.0)  # (a parent-death signal would have ended them within milliseconds)
    assert all(alive(found["init"]) for found in started.values()), "the containers should outlive the daemon"
    (work[a] / "stop").write_text("7\n")
    wait_for(lambda: not alive(started[a]["init"]), "container A ends while the daemon is down", END_S)
    assert (work[a] / EXIT_CODE_FILE).read_text().strip() == "7"

    recovered = child.run("recover", ready="recovered.json")
    assert recovered == {a: {"reattached": False, "exit_code": 7}, b: {"reattached": True, "exit_code": None}}
    assert alive(started[b]["init"])
    assert not (child.state / "lxc" / "containers" / a).exists()  # reaped: its dir and cgroups
    assert left_cgroups(started[a]["cgroup"]) == []
    assert (child.state / "lxc" / "containers" / b).exists()
    assert [p.name for p in (child.state / RECOVERY_DIR).iterdir()] == [f"{b}.json"]

    (work[b] / "stop").write_text("3\n")
    took = wait_for(lambda: (child.state / "exited.json").exists(), "the re-attached container's end is seen", END_S)
    print(f"re-attached container's end seen {took * 1000:.0f} ms after its stop file")
    assert json.loads((child.state / "exited.json").read_text()) == {b: 3}
    assert not any(alive(p) for ps in pids.values() for p in ps)
    assert left_cgroups(started[b]["cgroup"]) == []
    assert not (child.state / "lxc" / "containers" / b).exists()
    assert list((child.state / RECOVERY_DIR).iterdir()) == []
    child.stop()
    blocks = {found["cgroup"].rsplit("/", 1)[0] for found in started.values()}
    assert [h / blk for h in CGROUPS.iterdir() for blk in blocks if (h / blk).exists()] == []


@needs_lxc
def test_a_restarted_daemon_kills_a_reattached_container_on_request(child: RecoveryChild) -> None:
    """A container re-attached after a SIGKILL is killed through its kill path (init SIGKILLed through its
    pidfd) when the new run stops: every process of it is gone, and it ends 137 (no exit code written)."""
    started = child.run("start", "1", ready="started.json")
    (cid,) = started
    pids = cgroup_pids(started[cid]["cgroup"])
    child.sigkill()
    assert alive(started[cid]["init"])
    assert child.run("recover", ready="recovered.json") == {cid: {"reattached": True, "exit_code": None}}
    child.stop()
    assert json.loads((child.state / "exited.json").read_text()) == {cid: 137}
    assert not any(alive(p) for p in pids)
    assert left_cgroups(started[cid]["cgroup"]) == []
