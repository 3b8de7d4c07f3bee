"""RM failover with the real spark-submit: the active RM's daemon is SIGKILLed mid-job, a standby takes over, and
the job goes on with its one attempt; Hadoop's own clients (the driver's YARN client, the AM, LogsCLI, WebHDFS)
find the new active through their HA configuration.  Cluster mode here, client mode in
``test_spark_rm_failover_client.py`` (which uses ``job_through_a_failover`` too).

A local five-node Cortex on loopback with two standbys (``local-cluster up --rm-standbys 2``: nodes 1 to 3 are
RM-eligible, in that order of preference).  As in ``test_spark_rm_restart.py``, every NodeManager but node4's
is made too small for any container, so the job's AM and executors run on node4, whose daemon lives on
(containers of different nodes of a loopback cluster cannot reach each other); node1, listed first, leads again
after that restart.  The active is killed and not restarted until the job has ended: the next live eligible
node's journal takes the lead and its RM recovers the application from the replicated state; the NodeManagers
register with it listing their containers, and the AM is answered ApplicationMasterNotRegisteredException,
registers again and goes on.  Then the killed node comes back as a standby.  It prints how long the REST API
was without an active.
"""

from __future__ import annotations

import os
import re
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


RM_NODES = 3  # node1 (the first active) and its two standbys
JOB_NODE = 3  # node4: the only NodeManager with room for a container


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("rm-failover"), nodes=5, spark=True, rm_standbys=RM_NODES - 1) as c:
        _shrink_nodemanagers(c, (0, 1, 2, 4))  # (all down at once: node1, listed first, leads again)
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


def _the_active(cluster: RunningCluster, but: int = -1) -> int | None:
    """The index of the RM-eligible node whose REST API answers as the active (not ``but``), if any."""
    return next((i for i in range(RM_NODES) if i != but and _active(cluster.nodes[i], cluster)), None)


def _app(node: local_cluster.LocalNode, cluster: RunningCluster, app_id: str) -> dict[str, Any] | None:
    report = _get(node, cluster, f"apps/{app_id}")
    return None if report is None else report["app"]


def test_a_cluster_mode_job_survives_a_sigkill_of_the_active_rm_on_a_standby_with_one_attempt(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    killed_index, new_index = job_through_a_failover(cluster, tmp_path, "cluster", {}, job_node=JOB_NODE)
    # the killed node comes back a standby: the new active stays, and the old one's web port redirects there
    _restart(cluster, killed_index)
    old, new = cluster.nodes[killed_index].rm, cluster.nodes[new_index].rm
    assert old is not None and new is not None
    wait_for(lambda: _standby_redirects(old.webapp, new.webapp), "the old active to answer as a standby", 120, step=0.5)
    assert _active(cluster.nodes[new_index], cluster)


def job_through_a_failover(
    cluster: RunningCluster, tmp_path: Path, deploy_mode: str, env: dict[str, str], job_node: int | None = None
) -> tuple[int, int]:
    """Run ``JOB`` in ``deploy_mode``, SIGKILL the active RM's daemon mid-job, and check that the job succeeds
    with one attempt (on ``job_node`` if given) through the new active, and that its history is complete;
    the indices of the killed node and of the new active."""
    wait_for(lambda: _the_active(cluster) is not None, "an active RM", 60, step=0.5)
    killed_index = _the_active(cluster)
    assert killed_index is not None
    old = cluster.nodes[killed_index]
    job = tmp_path / "slow_shuffle.py"
    job.write_text(JOB)
    command = spark_submit_command(job, deploy_mode=deploy_mode, conf={**PYTHON_CONF, **EXECUTORS})
    proc = subprocess.Popen(command, env=spark_submit_env(cluster.conf_dir, env), stdout=subprocess.PIPE,
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

    new_index: int | None = None
    try:
        wait_for(lambda: running_at(old), "the job's AM and two executors to run", timeout=300, step=0.5)
        time.sleep(8)  # some map tasks done, most still to come
        _stop(cluster, old, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: _the_active(cluster, but=killed_index) is not None, "a standby to serve as the active RM",
                 60, step=0.2)  # fmt: skip
        print(f"{deploy_mode} mode: kill -> a standby's REST API answers as the active: "
              f"{time.monotonic() - killed:.1f} s")  # fmt: skip
        new_index = _the_active(cluster, but=killed_index)
        assert new_index is not None
        new = cluster.nodes[new_index]
        wait_for(lambda: running_at(new), "the new active to show the job RUNNING with its containers", 120, step=0.5)
        assert app_id is not None
        report = _app(new, cluster, app_id)
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


def _standby_redirects(standby: object, active: object) -> bool:
    try:
        answer = requests.get(f"http://{standby}/ws/v1/cluster/apps", timeout=5, allow_redirects=False)
    except (requests.ConnectionError, requests.Timeout):
        return False
    return answer.status_code == 307 and answer.headers["Location"].startswith(f"http://{active}/")
