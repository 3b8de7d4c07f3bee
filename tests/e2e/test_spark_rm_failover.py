"""RM failover with the real spark-submit: the active RM's daemon is SIGKILLed mid-job, a standby takes over, and
the job goes on with its one attempt; Hadoop's own clients (the driver's YARN client, the AM, LogsCLI, WebHDFS)
find the new active through their HA configuration.

A local three-node Cortex on loopback with two standbys (``local-cluster up --rm-standbys 2``: every node is
RM-eligible).  As in ``test_spark_rm_restart.py``, two NodeManagers (node1's and node2's) are made too small
for any container, so the job's AM and executors run on node3, whose daemon lives on (containers of different
nodes of a loopback cluster cannot reach each other); node1, listed first, leads again after that restart.
The active (node1) is killed and not restarted until the job has ended: node2's journal takes the lead (listed
next) and its RM recovers the application from the replicated state; the NodeManagers register with it listing
their containers, and the AM is answered ApplicationMasterNotRegisteredException, registers again and goes on.
Then node1 comes back as a standby.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cortex_rm import local_cluster
from tests.e2e.test_spark_rm_restart import EXPECTED, JOB, _restart, _shrink_nodemanagers, _stop
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.logs_cli import aggregated_logs
from tests.support.ring_daemons import wait_for
from tests.support.spark import EXECUTORS, PYTHON_CONF, application_id_from_output, spark_submit_command, spark_submit_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("rm-failover"), nodes=3, spark=True, rm_standbys=2) as c:
        _shrink_nodemanagers(c, (0, 1))  # (both down at once: node1, listed first, leads again)
        yield c


def _get(node: local_cluster.LocalNode, cluster: RunningCluster, path: str) -> Any | None:
    """``path`` of the REST API at ``node``'s RM web port (redirects not followed); None unless it answers 200."""
    assert node.rm is not None
    try:
        answer = requests.get(f"http://{node.rm.webapp}/ws/v1/cluster/{path}", headers=cluster.rest_headers(),
                              timeout=10, allow_redirects=False)  # fmt: skip
    except (requests.ConnectionError, requests.Timeout):
        return None
    return answer.json() if answer.status_code == 200 else None


def _active(node: local_cluster.LocalNode, cluster: RunningCluster) -> bool:
    info = _get(node, cluster, "info")
    return info is not None and info["clusterInfo"]["haState"] == "ACTIVE"


def _app(node: local_cluster.LocalNode, cluster: RunningCluster, app_id: str) -> dict[str, Any] | None:
    report = _get(node, cluster, f"apps/{app_id}")
    return None if report is None else report["app"]


def test_a_cluster_mode_job_survives_a_sigkill_of_the_active_rm_on_a_standby_with_one_attempt(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    node1, node2 = cluster.nodes[0], cluster.nodes[1]
    job = tmp_path / "slow_shuffle.py"
    job.write_text(JOB)
    command = spark_submit_command(job, deploy_mode="cluster", conf={**PYTHON_CONF, **EXECUTORS})
    proc = subprocess.Popen(command, env=spark_submit_env(cluster.conf_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    app_id: str | None = None

    def running_at(node: local_cluster.LocalNode) -> bool:
        nonlocal app_id
        assert proc.poll() is None, "".join(lines)[-6000:]
        app_id = app_id or application_id_from_output("".join(lines))
        report = _app(node, cluster, app_id) if app_id else None
        return report is not None and report["state"] == "RUNNING" and report["runningContainers"] >= 3

    try:
        wait_for(lambda: _active(node1, cluster), "node1 to be the active RM", 60, step=0.5)
        wait_for(lambda: running_at(node1), "the job's AM and two executors to run", timeout=300, step=0.5)
        time.sleep(8)  # some map tasks done, most still to come
        _stop(cluster, node1, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: _active(node2, cluster), "node2 to serve as the active RM", 60, step=0.2)
        print(f"kill -> node2's REST API answers as the active: {time.monotonic() - killed:.1f} s")
        wait_for(lambda: running_at(node2), "node2's RM to show the job RUNNING with its containers", 120, step=0.5)
        assert app_id is not None
        report = _app(node2, cluster, app_id)
        assert report is not None and report["runningContainers"] == 3, report
        proc.wait(timeout=600)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    out = "".join(lines)
    (tmp_path / "spark-submit.out").write_text(out)
    assert proc.returncode == 0 and app_id is not None, out[-6000:]
    assert "Failing over to rm2" in out, out[-6000:]  # the client (the driver's report loop) moved on by itself
    report = _app(node2, cluster, app_id)
    assert report is not None and (report["state"], report["finalStatus"]) == ("FINISHED", "SUCCEEDED"), report
    attempts = (_get(node2, cluster, f"apps/{app_id}/appattempts") or {})["appAttempts"]["appAttempt"]
    assert len(attempts) == 1, attempts
    assert attempts[0]["nodeId"].startswith(cluster.nodes[2].nm_webapp.split(":")[0] + ":"), attempts  # node3
    # the history through the HA configuration (node1 refuses): LogsCLI reads the aggregated logs over WebHDFS
    driver_out = aggregated_logs(cluster.conf_dir, app_id, contains="COUNTS")
    assert EXPECTED in driver_out, driver_out[-3000:]
    # node1 comes back a standby: node2 stays the active, and node1's web port redirects there
    _restart(cluster, 0)
    node1 = cluster.nodes[0]
    assert node1.rm is not None and node2.rm is not None
    wait_for(lambda: _standby_redirects(node1.rm.webapp, node2.rm.webapp), "node1 to answer as a standby", 120, step=0.5)
    assert _active(node2, cluster)


def _standby_redirects(standby: object, active: object) -> bool:
    try:
        answer = requests.get(f"http://{standby}/ws/v1/cluster/apps", timeout=5, allow_redirects=False)
    except (requests.ConnectionError, requests.Timeout):
        return False
    return answer.status_code == 307 and answer.headers["Location"].startswith(f"http://{active}/")
