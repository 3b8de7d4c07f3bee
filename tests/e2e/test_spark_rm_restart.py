"""Work-preserving RM restart with the real spark-submit: the RM's daemon is SIGKILLed mid-job and
started again on its state, and the job goes on with its one attempt.

A local three-node Cortex on loopback (not isolated: ``restart_node`` starts a node again in
place).  node1 runs the RM; its NodeManager and node3's are made too small for any container
(256 MiB, below the 1 GiB minimum allocation), so the job's AM and both executors run on node2:
nothing of the job dies with node1's daemon, and the containers reach each other (on a loopback
cluster that is not isolated, containers of different nodes cannot: their networks are alike).
The job (cluster mode) sleeps in its map tasks long enough to be caught mid-way, then shuffles
between its two executors (``reduceByKey``).

While node1 is down the AM's heartbeats are refused and its driver and executors go on; once the
RM is back, the NodeManagers are answered RESYNC and register again listing their containers, and
the AM is answered ApplicationMasterNotRegisteredException, registers again and re-sends its
asks.  The job must succeed with the right counts and ONE attempt, and the RM must have counted
the AM's and the executors' containers back in.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.logs_cli import aggregated_logs
from tests.support.ring_daemons import wait_for
from tests.support.spark_jobs import EXPECTED, SlowJob, app_report, rest_get, restart, shrink_nodemanagers, stop_daemon

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("rm-restart"), nodes=3, spark=True) as c:
        shrink_nodemanagers(c, (0, 2))
        yield c


def test_a_cluster_mode_job_survives_a_sigkill_of_the_rm_with_one_attempt(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """SIGKILL of node1's daemon (the RM) mid-job, then its restart: the job succeeds with the right
    counts and one attempt, and the restarted RM counted the AM and both executors back in."""
    with SlowJob(cluster, tmp_path) as job:
        _run_with_a_restart(cluster, job)
        out = job.finish()
    app_id = job.application
    assert job.proc.returncode == 0 and app_id is not None, out[-6000:]
    report = app_report(cluster, app_id)
    assert report is not None and (report["state"], report["finalStatus"]) == ("FINISHED", "SUCCEEDED"), report
    attempts = rest_get(cluster, f"apps/{app_id}/appattempts")["appAttempts"]["appAttempt"]
    assert len(attempts) == 1, attempts
    assert attempts[0]["nodeId"].startswith(cluster.nodes[1].nm_webapp.split(":")[0] + ":"), attempts  # node2
    driver_out = aggregated_logs(cluster.conf_dir, app_id, contains="COUNTS")
    assert EXPECTED in driver_out, driver_out[-3000:]


def _run_with_a_restart(cluster: RunningCluster, job: SlowJob) -> None:
    """Wait until the job's AM and two executors run, SIGKILL node1, restart it, and check the RM took the
    application's containers back."""

    def report_shows_the_job_running() -> bool:
        app_id = job.app_id()
        report = app_report(cluster, app_id) if app_id else None
        return report is not None and report["state"] == "RUNNING" and report["runningContainers"] >= 3

    wait_for(report_shows_the_job_running, "the job's AM and two executors to run", timeout=300, step=0.5)
    time.sleep(8)  # some map tasks done, most still to come
    stop_daemon(cluster, cluster.nodes[0], signal.SIGKILL)
    time.sleep(2)
    restart(cluster, 0)
    # the AM registered again (RUNNING) and the nodes' registrations brought its three containers back
    wait_for(report_shows_the_job_running, "the restarted RM to show the job RUNNING with its containers",
             timeout=90, step=0.5)  # fmt: skip
    app_id = job.app_id()
    assert app_id is not None
    report = app_report(cluster, app_id)
    assert report is not None and report["runningContainers"] == 3, report
