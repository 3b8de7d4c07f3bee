"""Issue 14's graceful leave with the real spark-submit: a node running one of a job's executors is
stopped with SIGTERM (``cortex-rm node leave``) mid-job.

A local four-node Cortex, isolated (every node in namespaces of its own, so the executors on one
node reach the driver on another); node1 (the RM) offers too little memory for any container, so
the job's AM and its two executors run on nodes 2 to 4.  A node with an executor but not the AM
is asked to leave, with a grace of ``GRACE_S``: while its executor runs on, the RM shows the node
DECOMMISSIONING (REST, and Hadoop's NodeCLI ``-list -states DECOMMISSIONING``); when the grace
passes its executor is killed with KILLED_BY_RESOURCEMANAGER (-106), which Spark's YarnAllocator
counts neither as an executor failure nor against the tasks it ran; then the node is DECOMMISSIONED (REST and NodeCLI
``-status``), never LOST.  The job succeeds with the right counts and one attempt, and the AM's
log shows the -106 exit and the lost tasks not counted.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import quiet_jvm_options, run_driver
from tests.support.logs_cli import aggregated_logs
from tests.support.ring_daemons import wait_for
from tests.support.spark_jobs import EXPECTED, SlowJob, app_report, rest_get

pytestmark = pytest.mark.e2e

GRACE_S = 40
SMALL_NODEMANAGER = "[nodemanager]\nmemory_mb = 256  # below the 1 GiB minimum allocation: no container fits\n"
NODE_CLI = "org.apache.hadoop.yarn.client.cli.NodeCLI"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(
        tmp_path_factory.mktemp("spark-leave"), nodes=4, spark=True, isolated=True, rm_config=SMALL_NODEMANAGER,
        node_config=f"[nodemanager]\ndecommission_grace_s = {GRACE_S}\n",
    ) as c:  # fmt: skip
        yield c


def _nodes(cluster: RunningCluster) -> list[dict[str, Any]]:
    return list((rest_get(cluster, "nodes")["nodes"] or {}).get("node", []))


def _node_cli(cluster: RunningCluster, tmp_path: Path, *args: str) -> str:
    classes = tmp_path / "classes"  # empty: NodeCLI's own main class is run
    classes.mkdir(exist_ok=True)
    result = run_driver(NODE_CLI, list(args), classes=classes, conf_dir=cluster.conf_dir,
                        jvm_options=quiet_jvm_options(), timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_job_survives_a_sigterm_of_an_executors_node_which_is_decommissioned_not_lost(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    job = SlowJob(cluster, tmp_path)

    def running() -> bool:
        app_id = job.app_id()
        report = app_report(cluster, app_id) if app_id else None  # (None until the RM has it)
        return report is not None and report["state"] == "RUNNING" and report["runningContainers"] >= 3

    leave: subprocess.Popen[str] | None = None
    states: list[str] = []
    try:
        wait_for(running, "the job's AM and two executors to run", timeout=300, step=0.5)
        app_id = job.app_id()
        assert app_id is not None
        am_node = rest_get(cluster, f"apps/{app_id}/appattempts")["appAttempts"]["appAttempt"][0]["nodeId"]
        victim = next(n for n in _nodes(cluster) if n["id"] != am_node and n["numContainers"] > 0)
        node = next(n for n in cluster.nodes if n.nm_webapp == victim["nodeHTTPAddress"])
        time.sleep(8)  # some map tasks done, most still to come
        leave = subprocess.Popen(
            [sys.executable, "-m", "cortex_rm", "node", "leave", "--workdir", str(cluster.workdir), "--node", node.name],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

        def state() -> str:
            now = next(n["state"] for n in _nodes(cluster) if n["id"] == victim["id"])
            if not states or states[-1] != now:
                states.append(now)
            return str(now)

        wait_for(lambda: state() == "DECOMMISSIONING", f"{node.name} DECOMMISSIONING", 60, step=0.2)
        listed = _node_cli(cluster, tmp_path, "-list", "-states", "DECOMMISSIONING")
        assert re.search(rf"^\s*{re.escape(victim['id'])}\s+DECOMMISSIONING\b", listed, re.MULTILINE), listed
        assert state() == "DECOMMISSIONING", "NodeCLI ran within the grace"
        wait_for(lambda: state() in ("DECOMMISSIONED", "LOST"), f"{node.name} to go", GRACE_S + 120, step=0.5)
        leave_out, _ = leave.communicate(timeout=300)
        assert leave.returncode == 0, leave_out
        status = _node_cli(cluster, tmp_path, "-status", victim["id"])
        assert re.search(r"Node-State\s*:\s*DECOMMISSIONED\s*$", status, re.MULTILINE), status
        all_nodes = _node_cli(cluster, tmp_path, "-list", "-all")
        assert re.search(rf"^\s*{re.escape(victim['id'])}\s+DECOMMISSIONED\b", all_nodes, re.MULTILINE), all_nodes
        out = job.finish()
    finally:
        job.stop()
        if leave is not None and leave.poll() is None:
            leave.kill()
            leave.communicate()
    assert states == ["DECOMMISSIONING", "DECOMMISSIONED"] or states == ["RUNNING", "DECOMMISSIONING", "DECOMMISSIONED"], states
    assert job.proc.returncode == 0 and app_id is not None, out[-6000:]
    report = rest_get(cluster, f"apps/{app_id}")["app"]
    assert (report["state"], report["finalStatus"]) == ("FINISHED", "SUCCEEDED"), report
    attempts = rest_get(cluster, f"apps/{app_id}/appattempts")["appAttempts"]["appAttempt"]
    assert len(attempts) == 1, attempts
    history = aggregated_logs(cluster.conf_dir, app_id, contains="COUNTS")
    (tmp_path / "history.txt").write_text(history)
    assert EXPECTED in history
    # Spark's YarnAllocator saw its executor's container end -106, not caused by the application (its
    # NOT_APP_AND_SYSTEM_FAULT_EXIT_STATUS; it still words it "Container marked as failed"), so neither the
    # executor failure nor the tasks it was running count
    assert re.search(r"Completed container \S+ on host: \S+ \(state: COMPLETE, exit status: -106", history), history[-6000:]
    assert "its executor exited for a reason unrelated to the task. Not counting this failure" in history
    assert "caused by one of the running tasks" not in history
    assert "exit status: -100" not in history
