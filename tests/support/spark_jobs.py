"""What the Spark restart, recovery, leave and failover tests share: a slow job with a shuffle and its expected
result, ``SlowJob`` (that job submitted in the background, its output collected), stopping, restarting and
shrinking a local cluster's nodes, and the REST calls they make of its RM.

``JOB`` (cluster or client mode) sleeps in its map tasks long enough to be caught mid-way, then shuffles between
its two executors (``reduceByKey``) and prints ``EXPECTED``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from cortex_rm import local_cluster
from cortex_rm.processes import alive
from tests.support.cluster import RunningCluster
from tests.support.ring_daemons import wait_for
from tests.support.spark import EXECUTORS, PYTHON_CONF, application_id_from_output, spark_submit_command, spark_submit_env

PARTITIONS = 16
TASK_SLEEP_S = 6  # 16 tasks on 2 one-core executors: about 50 s of map stage
JOB = f"""
import sys, time
from operator import add
from pyspark.sql import SparkSession

def words(i):
    time.sleep({TASK_SLEEP_S})
    return [("k%d" % (n % 4), 1) for n in range(i * 100, (i + 1) * 100)]

spark = SparkSession.builder.appName("CortexRMRestart").getOrCreate()
sc = spark.sparkContext
counts = sc.parallelize(range({PARTITIONS}), {PARTITIONS}).flatMap(words).reduceByKey(add, 4).collect()
print("COUNTS", sorted(counts))
spark.stop()
"""
EXPECTED = "COUNTS " + str(sorted((f"k{k}", PARTITIONS * 100 // 4) for k in range(4)))



class SlowJob:
    """``JOB`` submitted with the real ``spark-submit`` (two executors), running in the background: its output is
    collected as it comes (``output``), its application id read from it (``app_id``).  As a context manager, the
    submission's process group is killed on the way out if it still runs."""

    def __init__(
        self, cluster: RunningCluster, tmp_path: Path, deploy_mode: str = "cluster", env: Mapping[str, str] | None = None
    ) -> None:
        self.tmp_path = tmp_path
        job = tmp_path / "slow_shuffle.py"
        job.write_text(JOB)
        command = spark_submit_command(job, deploy_mode=deploy_mode, conf={**PYTHON_CONF, **EXECUTORS})
        self.proc = subprocess.Popen(command, env=spark_submit_env(cluster.conf_dir, env), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout or ()), daemon=True)
        self.reader.start()
        self._app_id: str | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def app_id(self) -> str | None:
        """The application's id once spark-submit printed it (AssertionError, with its output, if it ended)."""
        assert self.proc.poll() is None, self.output[-6000:]
        self._app_id = self._app_id or application_id_from_output(self.output)
        return self._app_id

    @property
    def application(self) -> str | None:
        """The application's id as far as the output shows it (after ``finish``: all of it)."""
        return self._app_id

    def finish(self, timeout: float = 600) -> str:
        """Wait for spark-submit to end; its whole output (also written to ``spark-submit.out``)."""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=30)
        out = self.output
        (self.tmp_path / "spark-submit.out").write_text(out)
        self._app_id = self._app_id or application_id_from_output(out)
        return out

    def __enter__(self) -> SlowJob:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Kill spark-submit's process group if it still runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()


def stop_daemon(cluster: RunningCluster, node: local_cluster.LocalNode, sig: signal.Signals) -> None:
    """Signal the node's daemon and wait until it is gone (reaped: this process started it)."""
    os.kill(node.pid, sig)

    def gone() -> bool:
        try:
            os.waitpid(node.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return not alive(node.pid)

    wait_for(gone, f"{node.name} to stop", 30)


def restart(cluster: RunningCluster, index: int) -> None:
    node = cluster.nodes[index]
    cluster.nodes[index] = local_cluster.restart_node(cluster.workdir, node.name, say=lambda _: None)


def shrink_nodemanagers(cluster: RunningCluster, indices: tuple[int, ...]) -> None:
    """These nodes again, each with a NodeManager no container fits on (node1's RM starts again too)."""
    for index in indices:
        node = cluster.nodes[index]
        stop_daemon(cluster, node, signal.SIGINT)  # (at once: SIGTERM would be a graceful leave)
        config = Path(node.config)
        text = config.read_text()
        assert "\n[nodemanager]\n" in text
        config.write_text(text.replace("\n[nodemanager]\n", "\n[nodemanager]\nmemory_mb = 256\n"))
    for index in indices:
        restart(cluster, index)
    count = len(cluster.nodes)
    wait_for(lambda: nodes_running(cluster) == count, f"the {count} nodes to be RUNNING again", timeout=120, step=0.5)


def rest_get(cluster: RunningCluster, path: str) -> Any:
    answer = requests.get(f"{cluster.rest}/ws/v1/cluster/{path}", headers=cluster.rest_headers(), timeout=10)
    answer.raise_for_status()
    return answer.json()


def rest_answers(cluster: RunningCluster, path: str) -> Any | None:
    try:
        return rest_get(cluster, path)
    except (requests.ConnectionError, requests.HTTPError, requests.Timeout):
        return None


def nodes_running(cluster: RunningCluster) -> int:
    nodes = rest_answers(cluster, "nodes")
    return 0 if nodes is None else sum(1 for n in (nodes["nodes"] or {}).get("node", []) if n["state"] == "RUNNING")


def app_report(cluster: RunningCluster, app_id: str) -> dict[str, Any] | None:
    report = rest_answers(cluster, f"apps/{app_id}")
    return None if report is None else report["app"]
