"""PySpark jobs run to completion on a local three-node Cortex, with the real spark-submit.

The cluster is isolated (``local-cluster up --isolated``): each node has its own network
and mount namespace, so the client (this process, its temporary directories) shares no
file and no loopback with the nodes and reaches them by the RM's address alone.

The ApplicationMaster and the executors run in LXC containers on the nodes; the
result is checked from the job's own output (client mode: spark-submit's stdout;
cluster mode: the driver's stdout, as Hadoop's `yarn logs` prints it once the nodes
have aggregated the logs into the cluster's file system).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.fsshell import fs_shell
from tests.support.java import YarnClientDriver
from tests.support.logs_cli import aggregated_logs
from tests.support.ring_daemons import wait_for
from tests.support.spark import EXECUTORS, PYTHON_CONF, application_id_from_output, spark_submit

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("spark-jobs"), nodes=3, spark=True, isolated=True) as c:
        yield c


def _report(cluster: RunningCluster, app_id: str) -> dict:
    return requests.get(f"{cluster.rest}/ws/v1/cluster/apps/{app_id}", headers=cluster.rest_headers(), timeout=10).json()["app"]


def _ended(cluster: RunningCluster, app_id: str) -> dict:
    """The report once the application has ended: in client mode spark-submit may return before
    its AM (ExecutorLauncher) has unregistered, so, as with YARN, it ends a moment later."""
    wait_for(lambda: _report(cluster, app_id)["state"] in ("FINISHED", "FAILED", "KILLED"), f"{app_id} to end", timeout=120)
    return _report(cluster, app_id)


def test_pi_in_cluster_mode_succeeds_and_yarn_logs_prints_the_drivers_output(cluster: RunningCluster) -> None:
    """cluster mode: the driver runs in the AM container; final status SUCCEEDED; Hadoop's own
    `yarn logs -applicationId` prints its stdout from the aggregated logs."""
    result = spark_submit(cluster.conf_dir, EXAMPLES / "pi.py", deploy_mode="cluster",
                          conf={**PYTHON_CONF, **EXECUTORS}, args=["4"], timeout=600)
    output = result.stdout + result.stderr
    app_id = application_id_from_output(output)
    assert result.returncode == 0, output[-6000:]
    assert app_id is not None
    report = _report(cluster, app_id)
    assert (report["state"], report["finalStatus"]) == ("FINISHED", "SUCCEEDED"), report
    driver_out = aggregated_logs(cluster.conf_dir, app_id, contains="Pi is roughly")
    assert re.search(r"LogType:stdout\n(.*\n)*?Pi is roughly 3\.1\d*", driver_out), driver_out[-2000:]


def test_wordcount_in_client_mode_shuffles_across_nodes(cluster: RunningCluster) -> None:
    """client mode, two executors: the shuffle's result is right and executors ran on more than one node."""
    result = spark_submit(cluster.conf_dir, EXAMPLES / "wordcount.py", deploy_mode="client",
                          conf={**PYTHON_CONF, **EXECUTORS, "spark.pyspark.driver.python": sys.executable},
                          args=["2000", "4"], timeout=600, env={"SPARK_LOCAL_IP": cluster.client_ip})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "WORD alpha 10000" in output and "WORD beta 6000" in output and "WORD delta 2000" in output
    nodes = re.search(r"EXECUTOR NODES (\d+)", output)
    assert nodes is not None and int(nodes.group(1)) >= 2, output[-3000:]
    app_id = application_id_from_output(output)
    assert app_id is not None
    assert _ended(cluster, app_id)["finalStatus"] == "SUCCEEDED"
    aggregated_logs(cluster.conf_dir, app_id, contains="CoarseGrainedExecutorBackend")  # an executor's log


def test_a_job_that_raises_fails_after_its_attempts_with_the_error(cluster: RunningCluster) -> None:
    """The driver raises: each AM attempt fails; the app ends FAILED with the error in diagnostics."""
    result = spark_submit(cluster.conf_dir, EXAMPLES / "fail.py", deploy_mode="cluster",
                          conf={**PYTHON_CONF, **EXECUTORS, "spark.yarn.maxAppAttempts": "2"}, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    app_id = application_id_from_output(output)
    assert app_id is not None
    yarn = YarnClientDriver(cluster.conf_dir)
    deadline = time.monotonic() + 60
    while (attempts := yarn.run("attempts", app_id)["attempts"])[-1]["state"] != "FINISHED":
        assert time.monotonic() < deadline, attempts  # the AM container's end is reported by its node
        time.sleep(0.5)
    assert [a["state"] for a in attempts] == ["FAILED", "FINISHED"]
    report = _report(cluster, app_id)
    assert (report["state"], report["finalStatus"]) == ("FINISHED", "FAILED"), report
    assert "User application exited with status 1" in report["diagnostics"]
    assert "RuntimeError: this job fails on purpose" in report["diagnostics"], report["diagnostics"]


def test_killing_a_running_job_ends_it_killed_with_no_container_left(cluster: RunningCluster, tmp_path: Path) -> None:
    """yarn kill while executors run: KILLED, and no container process survives on any node."""
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import time\nfrom pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.appName('slow').getOrCreate()\n"
        "spark.sparkContext.parallelize(range(4), 4).foreach(lambda _: time.sleep(600))\n"
    )
    done = spark_submit(cluster.conf_dir, slow, deploy_mode="cluster",
                        conf={**PYTHON_CONF, **EXECUTORS, "spark.yarn.submit.waitAppCompletion": "false"}, timeout=300)
    app_id = application_id_from_output(done.stdout + done.stderr)
    assert app_id is not None, (done.stdout + done.stderr)[-3000:]
    deadline = time.monotonic() + 300
    while _report(cluster, app_id)["state"] != "RUNNING" or _report(cluster, app_id)["runningContainers"] < 2:
        assert time.monotonic() < deadline, _report(cluster, app_id)
        time.sleep(0.5)
    yarn = YarnClientDriver(cluster.conf_dir)
    assert yarn.run("kill", app_id)["state"] == "KILLED"
    deadline = time.monotonic() + 60
    while _processes_of(app_id):
        assert time.monotonic() < deadline, _processes_of(app_id)
        time.sleep(0.5)


def _processes_of(app_id: str) -> list[str]:
    """Host processes whose command line mentions the application (its containers)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if app_id in line and "ps -eo" not in line]


def test_a_job_survives_losing_a_node_that_runs_no_am(cluster: RunningCluster, tmp_path: Path) -> None:
    """SIGKILL one node daemon (not the RM) mid-job: its executors are lost, Spark re-requests, the job succeeds."""
    slowcount = tmp_path / "slowcount.py"
    slowcount.write_text((EXAMPLES / "wordcount.py").read_text().replace(
        "text = sc.parallelize(range(lines), partitions).map(line_for)",
        "text = sc.parallelize(range(lines), partitions).map(lambda i: (__import__('time').sleep(0.01), line_for(i))[1])",
    ))
    from tests.support.spark import spark_submit_command, spark_submit_env

    command = spark_submit_command(slowcount, deploy_mode="client", conf={
        **PYTHON_CONF, **EXECUTORS, "spark.pyspark.driver.python": sys.executable,
        "spark.executor.instances": "2"}, args=["4000", "8"])
    def containers(node_name: str) -> set[str]:
        return {p.parent.name for p in cluster.workdir.glob(f"{node_name}/nm-logs/*/container_*/stderr")}

    before = {node.name: containers(node.name) for node in cluster.nodes}  # earlier tests' containers
    proc = subprocess.Popen(command, env=spark_submit_env(cluster.conf_dir, {"SPARK_LOCAL_IP": cluster.client_ip}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # The victim: a node (not the RM's) running an executor of this job and not its AM
    # (the AM is container ..._000001 of its attempt).
    victim = None
    deadline = time.monotonic() + 300
    while victim is None:
        assert time.monotonic() < deadline
        for node in cluster.nodes[1:]:
            new = containers(node.name) - before[node.name]
            if new and not any(name.endswith("_000001") for name in new):
                victim = node
                break
        time.sleep(0.5)
    os.kill(victim.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    (tmp_path / "spark-submit.out").write_text(out)  # all of it, for a failure's post-mortem
    reasons = [line for line in out.splitlines() if re.search(r"Job aborted|Lost task|Caused by|Exception:", line)]
    assert proc.returncode == 0, "\n".join(reasons[:40]) + "\n...\n" + out[-6000:]
    assert "WORD alpha 20000" in out  # 4000 lines of 5 alphas: nothing lost with the node
    # the RM learnt of the loss from the ring's failure detector, not from the heartbeat expiry
    assert "LOST: the ring declared its member dead" in cluster.daemon_log("node1")


def test_the_nodes_found_the_resource_manager_through_the_ring_alone(cluster: RunningCluster) -> None:
    """No node's configuration names the RM's tracker: each joined the ring through the
    first node, read the RM's record from the key space, and registered with it."""
    for node in cluster.nodes:
        config = Path(node.config).read_text()
        assert "resourcemanager_tracker =" not in config
        assert "the ring says the ResourceManager tracker is at" in cluster.daemon_log(node.name), node.name


def test_pi_in_client_mode_prints_its_result(cluster: RunningCluster) -> None:
    """client mode: the driver runs here, the ExecutorLauncher and executors in containers; SUCCEEDED."""
    result = spark_submit(cluster.conf_dir, EXAMPLES / "pi.py", deploy_mode="client",
                          conf={**PYTHON_CONF, **EXECUTORS}, args=["4"], timeout=600,
                          env={"SPARK_LOCAL_IP": cluster.client_ip})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert re.search(r"Pi is roughly 3\.1\d*", output), output[-3000:]
    app_id = application_id_from_output(output)
    assert app_id is not None and _ended(cluster, app_id)["finalStatus"] == "SUCCEEDED"


def test_wordcount_in_cluster_mode_writes_the_right_counts_in_the_drivers_log(cluster: RunningCluster) -> None:
    """cluster mode with a shuffle: the driver (in the AM container) prints the right counts, read back with yarn logs."""
    result = spark_submit(cluster.conf_dir, EXAMPLES / "wordcount.py", deploy_mode="cluster",
                          conf={**PYTHON_CONF, **EXECUTORS}, args=["2000", "4"], timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    app_id = application_id_from_output(output)
    assert app_id is not None and _ended(cluster, app_id)["finalStatus"] == "SUCCEEDED"
    driver_out = aggregated_logs(cluster.conf_dir, app_id, contains="WORD delta 2000")
    assert "WORD alpha 10000" in driver_out and "WORD delta 2000" in driver_out, driver_out[-2000:]


@pytest.mark.parametrize("deploy_mode", ["cluster", "client"])
def test_py_files_and_archives_with_input_and_output_through_fsshell_and_nothing_of_the_host_seen(
    cluster: RunningCluster, tmp_path: Path, deploy_mode: str
) -> None:
    """From a client directory no node can see, with the RM's address alone: the input goes in
    with FsShell, the job imports a module shipped with --py-files and reads a stop-word list
    shipped with --archives, shuffles, writes its output to the file system, and FsShell reads
    it back; its executors see neither the client's files nor a file only the host has."""
    (tmp_path / "wordlib.py").write_text("def words(line):\n    return [w.lower() for w in line.split()]\n")
    with zipfile.ZipFile(tmp_path / "wordlib.zip", "w") as z:
        z.write(tmp_path / "wordlib.py", "wordlib.py")
    (tmp_path / "stopwords.txt").write_text("the\na\n")
    subprocess.run(["tar", "-czf", str(tmp_path / "words.tar.gz"), "-C", str(tmp_path), "stopwords.txt"], check=True)
    (tmp_path / "input.txt").write_text("The cat saw a dog\nthe dog saw THE cat\nA bird\n" * 50)
    host_only = Path("/etc") / f"cortex-host-only-{os.getpid()}-{deploy_mode}"
    host_only.write_text("only on the host\n")
    base = f"/user/{os.environ.get('USER', 'root')}/wordfilter-{deploy_mode}"
    default_fs = f"webhdfs://{cluster.rm.webapp}"
    mine = cluster.conf_dir / "cortex-user.token"  # what client-config wrote for the cluster's user
    try:
        put = fs_shell(default_fs, "-mkdir", "-p", base, token_file=mine)
        assert put.returncode == 0, put.stderr
        put = fs_shell(default_fs, "-put", "-f", str(tmp_path / "input.txt"), f"{base}/input.txt", token_file=mine)
        assert put.returncode == 0, put.stderr
        client_only = tmp_path / "wordlib.py"
        result = spark_submit(
            cluster.conf_dir, EXAMPLES / "wordfilter.py", deploy_mode=deploy_mode,
            conf={**PYTHON_CONF, **EXECUTORS, "spark.pyspark.driver.python": sys.executable}
            if deploy_mode == "client" else {**PYTHON_CONF, **EXECUTORS},
            options=["--py-files", str(tmp_path / "wordlib.zip"), "--archives", f"{tmp_path / 'words.tar.gz'}#words"],
            args=[f"{base}/input.txt", f"{base}/out", str(client_only), str(host_only)],
            timeout=600, env={"SPARK_LOCAL_IP": cluster.client_ip},
        )
    finally:
        host_only.unlink()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    app_id = application_id_from_output(output)
    assert app_id is not None and _ended(cluster, app_id)["finalStatus"] == "SUCCEEDED"
    driver = output if deploy_mode == "client" else aggregated_logs(cluster.conf_dir, app_id, contains="SEEN")
    assert "KEPT cat 100" in driver and "KEPT dog 100" in driver and "KEPT bird 50" in driver, driver[-3000:]
    assert "KEPT the" not in driver and "KEPT a " not in driver
    assert f"SEEN {client_only} False" in driver and f"SEEN {host_only} False" in driver, driver[-3000:]
    back = fs_shell(default_fs, "-cat", f"{base}/out/part-*", token_file=mine)
    assert back.returncode == 0, back.stderr
    assert sorted(back.stdout.split("\n")) == sorted(["bird\t50", "cat\t100", "dog\t100", "saw\t100", ""])
