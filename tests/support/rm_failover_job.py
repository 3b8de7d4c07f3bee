"""The RM failover job of the Spark failover tests (cluster mode on loopback, client mode isolated): a slow
job with a shuffle, the active RM's daemon SIGKILLed mid-job, and what must hold afterwards
(``job_through_a_failover``); and the REST calls that find which eligible node is the active.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import requests

from cortex_rm import local_cluster
from tests.support.cluster import RunningCluster
from tests.support.logs_cli import aggregated_logs
from tests.support.ring_daemons import wait_for
from tests.support.spark_jobs import EXPECTED, SlowJob, stop_daemon

RM_NODES = 3  # node1 (the first active) and its two standbys


def _get(node: local_cluster.LocalNode, cluster: RunningCluster, path: str) -> Any | None:
    """``path`` of the REST API at ``node``'s RM web port (redirects not followed); None unless it answers 200."""
    assert node.rm is not None
    try:
        answer = requests.get(f"http://{node.rm.webapp}/ws/v1/cluster/{path}", headers=cluster.rest_headers(),
                              timeout=10, allow_redirects=False)  # fmt: skip
    except (requests.ConnectionError, requests.Timeout):
        return None
    return answer.json() if answer.status_code == 200 else None


def active(node: local_cluster.LocalNode, cluster: RunningCluster) -> bool:
    info = _get(node, cluster, "info")
    return info is not None and info["clusterInfo"]["haState"] == "ACTIVE"


def the_active(cluster: RunningCluster, but: int = -1) -> int | None:
    """The index of the RM-eligible node whose REST API answers as the active (not ``but``), if any."""
    return next((i for i in range(RM_NODES) if i != but and active(cluster.nodes[i], cluster)), None)


def _app(node: local_cluster.LocalNode, cluster: RunningCluster, app_id: str) -> dict[str, Any] | None:
    report = _get(node, cluster, f"apps/{app_id}")
    return None if report is None else report["app"]


def job_through_a_failover(
    cluster: RunningCluster, tmp_path: Path, deploy_mode: str, env: dict[str, str], job_node: int | None = None
) -> tuple[int, int]:
    """Run ``JOB`` in ``deploy_mode``, SIGKILL the active RM's daemon mid-job, and check that the job succeeds
    with one attempt (on ``job_node`` if given) through the new active, and that its history is complete;
    the indices of the killed node and of the new active."""
    wait_for(lambda: the_active(cluster) is not None, "an active RM", 60, step=0.5)
    killed_index = the_active(cluster)
    assert killed_index is not None
    old = cluster.nodes[killed_index]
    job = SlowJob(cluster, tmp_path, deploy_mode, env)

    def running_at(node: local_cluster.LocalNode) -> bool:
        app_id = job.app_id()
        report = _app(node, cluster, app_id) if app_id else None
        return report is not None and report["state"] == "RUNNING" and report["runningContainers"] >= 3

    new_index: int | None = None
    try:
        wait_for(lambda: running_at(old), "the job's AM and two executors to run", timeout=300, step=0.5)
        time.sleep(8)  # some map tasks done, most still to come
        stop_daemon(cluster, old, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: the_active(cluster, but=killed_index) is not None, "a standby to serve as the active RM",
                 60, step=0.2)  # fmt: skip
        print(f"{deploy_mode} mode: kill -> a standby's REST API answers as the active: "
              f"{time.monotonic() - killed:.1f} s")  # fmt: skip
        new_index = the_active(cluster, but=killed_index)
        assert new_index is not None
        new = cluster.nodes[new_index]
        wait_for(lambda: running_at(new), "the new active to show the job RUNNING with its containers", 120, step=0.5)
        app_id = job.app_id()
        assert app_id is not None
        report = _app(new, cluster, app_id)
        assert report is not None and report["runningContainers"] == 3, report
        out = job.finish()
    finally:
        job.stop()
    assert job.proc.returncode == 0 and app_id is not None, out[-6000:]
    assert re.search(r"Failing over to rm[1-3]", out), out[-6000:]  # the client moved on by itself
    report = _app(new, cluster, app_id)
    assert report is not None and (report["state"], report["finalStatus"]) == ("FINISHED", "SUCCEEDED"), report
    attempts = (_get(new, cluster, f"apps/{app_id}/appattempts") or {})["appAttempts"]["appAttempt"]
    assert len(attempts) == 1, attempts
    if job_node is not None:
        assert attempts[0]["nodeId"].startswith(cluster.nodes[job_node].nm_webapp.split(":")[0] + ":"), attempts
    # the result, and the history through the HA configuration (the killed node refuses): LogsCLI reads the
    # aggregated logs over WebHDFS -- the driver's output in cluster mode, the AM's (ExecutorLauncher) in client mode
    if deploy_mode == "cluster":
        assert EXPECTED in aggregated_logs(cluster.conf_dir, app_id, contains="COUNTS")
    else:
        assert EXPECTED in out, out[-6000:]
        # (each node aggregates on its own: LogsCLI shows the executors' node once that one has)
        executor = re.compile(rf"container_(?:e\d+_)?{app_id.removeprefix('application_')}_01_00000[23]\b")
        deadline = time.monotonic() + 120
        while len(set(executor.findall(history := aggregated_logs(cluster.conf_dir, app_id, "ApplicationMaster")))) < 2:
            assert time.monotonic() < deadline, history[-3000:]
            time.sleep(2)
    return killed_index, new_index
