"""NodeManager recovery with the real spark-submit: the daemon of the node that runs a job's AM and
executors is SIGKILLed mid-job and started again; its containers run on through it and are taken back.

A local three-node Cortex on loopback, as ``test_spark_rm_restart.py``'s: node1 runs the RM, and its
NodeManager and node3's are too small for any container, so the job's AM and both executors run on
node2, whose NodeManager has ``recovery = true``.  Its daemon is SIGKILLed while the map tasks run:
the containers (no parent-death signal) keep running; the restarted daemon finds their records,
re-attaches them and lists them RUNNING in its registration, so the RM shows the application's three
containers again.  The job must succeed with the right counts and ONE attempt, the restarted node's
log must show no ``FileExistsError``, and once the application is cleaned up no record is left.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_rm.container.nm_recovery import RECOVERY_DIR, ContainerRecord, same_process_alive
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.logs_cli import aggregated_logs
from tests.support.ring_daemons import wait_for
from tests.support.spark_jobs import EXPECTED, SlowJob, app_report, nodes_running, rest_get, restart, stop_daemon

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("nm-recovery"), nodes=3, spark=True) as c:
        _configure(c, {0: "memory_mb = 256", 1: "recovery = true", 2: "memory_mb = 256"})
        yield c


def _configure(cluster: RunningCluster, lines: dict[int, str]) -> None:
    """These nodes again, each with a line added to its ``[nodemanager]`` table."""
    for index, line in lines.items():
        node = cluster.nodes[index]
        stop_daemon(cluster, node, signal.SIGINT)  # (at once: SIGTERM would be a graceful leave)
        config = Path(node.config)
        text = config.read_text()
        assert "\n[nodemanager]\n" in text
        config.write_text(text.replace("\n[nodemanager]\n", f"\n[nodemanager]\n{line}\n"))
    for index in lines:
        restart(cluster, index)
    wait_for(lambda: nodes_running(cluster) == 3, "the three nodes to be RUNNING again", timeout=120, step=0.5)


def _records(cluster: RunningCluster) -> list[ContainerRecord]:
    directory = Path(cluster.nodes[1].directory) / RECOVERY_DIR
    return [ContainerRecord.from_json(p.read_text()) for p in sorted(directory.glob("*.json"))]


def test_a_jobs_containers_outlive_a_sigkill_of_their_nodemanager_and_are_taken_back(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """SIGKILL of node2's daemon (AM and executors) mid-job, then its restart: the containers ran on, the RM
    shows them again, and the job succeeds with the right counts and one attempt."""
    with SlowJob(cluster, tmp_path) as job:

        def running_with(containers: int) -> bool:
            app_id = job.app_id()
            report = app_report(cluster, app_id) if app_id else None
            return report is not None and report["state"] == "RUNNING" and report["runningContainers"] >= containers

        wait_for(lambda: running_with(3), "the job's AM and two executors to run", timeout=300, step=0.5)
        time.sleep(8)  # some map tasks done, most still to come
        records = _records(cluster)
        assert len(records) == 3 and all(r.pid is not None for r in records), records
        stop_daemon(cluster, cluster.nodes[1], signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(2)
        assert all(same_process_alive(r) for r in records), "the containers should outlive their NodeManager"
        restart(cluster, 1)
        wait_for(lambda: running_with(3), "the RM to show the job's three containers again", timeout=90, step=0.5)
        print(f"node2 SIGKILLed; its 3 containers RUNNING at the RM again {time.monotonic() - killed_at:.1f} s later")
        out = job.finish()
    app_id = job.application
    assert job.proc.returncode == 0 and app_id is not None, out[-6000:]
    report = app_report(cluster, app_id)
    assert report is not None and (report["state"], report["finalStatus"]) == ("FINISHED", "SUCCEEDED"), report
    attempts = rest_get(cluster, f"apps/{app_id}/appattempts")["appAttempts"]["appAttempt"]
    assert len(attempts) == 1, attempts
    driver_out = aggregated_logs(cluster.conf_dir, app_id, contains="COUNTS")
    assert EXPECTED in driver_out, driver_out[-3000:]
    node2_log = cluster.daemon_log("node2")
    assert node2_log.count("re-attached after a restart") == 3, node2_log[-6000:]
    assert "FileExistsError" not in node2_log
    wait_for(lambda: _records(cluster) == [], "the containers' records to go with the application", 60)
    assert list((Path(cluster.nodes[1].directory) / "lxc" / "containers").iterdir()) == []
