"""Node classes at work: a Spark job's AM lands on a static node and survives losing the volatile ones.

A local four-node Cortex (isolated: each node in namespaces of its own), with the
class thresholds shortened from hours to seconds (``[accounting]``: static after a
45-second session with 80% of the time up since a node was first witnessed).  Right
after the cluster is up, nodes 3 and 4 are frozen (SIGSTOP) for ``FROZEN_S``: the
ring declares them dead, and when they thaw their witnessed uptime has a gap that
keeps them volatile for about 5 x FROZEN_S (80% up), well past the moment the test
kills them.  Nodes 1 and 2 lose witnessed time too: while a frozen prober of theirs
is not yet declared dead, their quorum needs it (``accounting/payouts.py``), which
took SWIM 10 to 25 s here with two of four members silent (at most about 50 s);
they become static within about two minutes of the thaw.  Hadoop's NodeCLI shows
exactly that; then a Spark job in cluster mode puts its AM (and driver) on a static
node, and SIGKILL of every volatile node running one of its executors does not fail it.
While the job runs, the RM's status pages, opened in headless Chromium, show the
four nodes with their classes and the job in progress (a screenshot's path is printed).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.chromium import dump_dom, screenshot
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import labels_by_node, quiet_jvm_options, run_driver
from tests.support.spark import EXECUTORS, PYTHON_CONF, application_id_from_output, spark_submit_command, spark_submit_env

pytestmark = pytest.mark.e2e

FROZEN_S = 120
ACCOUNTING = """[accounting]
static_after_s = 45
static_uptime_fraction = 0.80
volatile_below_fraction = 0.65
class_window_s = 3600
session_gap_s = 2
gone_after_s = 10
class_update_interval_s = 2
max_batches_per_hour = 100000
"""
RING = ("attestation_interval_s = 2",)
NODE_CLI = "org.apache.hadoop.yarn.client.cli.NodeCLI"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(
        tmp_path_factory.mktemp("node-classes"), nodes=4, spark=True, isolated=True, rm_config=ACCOUNTING, ring_settings=RING
    ) as c:
        yield c


def node_labels(cluster: RunningCluster, tmp_path: Path) -> dict[str, str]:
    """``yarn node -list -all -showDetails`` (Hadoop's NodeCLI): each node's labels by NodeId."""
    classes = tmp_path / "classes"
    classes.mkdir(exist_ok=True)
    done = run_driver(
        NODE_CLI, ["-list", "-all", "-showDetails"], classes=classes, conf_dir=cluster.conf_dir,
        jvm_options=quiet_jvm_options(), timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return labels_by_node(done.stdout)


def class_story(cluster: RunningCluster) -> str:
    """The RM's log lines on classes and on members declared dead or back (a failure's message)."""
    story = re.compile(r"is now (static|volatile)|static nodes now|-> dead|dead -> alive|RUNNING -> LOST")
    return "\n".join([line for line in cluster.daemon_log("node1").splitlines() if story.search(line)][-60:])


def node_id_of(cluster: RunningCluster, index: int) -> str:
    from cortex_rm.config import load_config

    return str(load_config(Path(cluster.nodes[index].config)).nodemanager.address)


def test_the_am_goes_to_a_static_node_and_the_job_survives_losing_the_volatile_ones(
    cluster: RunningCluster, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    frozen = cluster.nodes[2:]
    for node in frozen:
        os.kill(node.pid, signal.SIGSTOP)
    try:
        time.sleep(FROZEN_S)
    finally:
        for node in frozen:
            os.kill(node.pid, signal.SIGCONT)
    ids = [node_id_of(cluster, i) for i in range(4)]
    expected = {ids[0]: "static", ids[1]: "static", ids[2]: "volatile", ids[3]: "volatile"}
    deadline = time.monotonic() + 240
    while (labels := node_labels(cluster, tmp_path)) != expected:
        assert time.monotonic() < deadline, (labels, class_story(cluster))
        time.sleep(5)

    slow = tmp_path / "slowcount.py"
    slow.write_text(
        "import time\nfrom pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.appName('classes').getOrCreate()\n"
        "total = spark.sparkContext.parallelize(range(64), 8).map(lambda i: (time.sleep(1.5), i)[1]).sum()\n"
        "print('TOTAL', total)\n"
    )
    command = spark_submit_command(slow, deploy_mode="cluster", conf={**PYTHON_CONF, **EXECUTORS})

    def containers(node_name: str) -> set[str]:
        return {p.parent.name for p in cluster.workdir.glob(f"{node_name}/nm-logs/*/container_*/stderr")}

    before = {node.name: containers(node.name) for node in cluster.nodes}
    proc = subprocess.Popen(command, env=spark_submit_env(cluster.conf_dir, {"SPARK_LOCAL_IP": cluster.client_ip}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # the AM (container ..._000001) starts on a static node; executors follow wherever there is room
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "the AM did not start"
            am_nodes = [n.name for n in cluster.nodes if any(c.endswith("_000001") for c in containers(n.name) - before[n.name])]
            if am_nodes:
                break
            time.sleep(0.5)
        assert am_nodes[0] in ("node1", "node2"), am_nodes
        deadline = time.monotonic() + 120
        while not any(containers(n.name) - before[n.name] for n in frozen):
            assert time.monotonic() < deadline and proc.poll() is None, "no executor ran on a volatile node"
            time.sleep(0.5)
        time.sleep(3)  # the executors are at work
        status_pages_show(cluster, tmp_path, expected, tmp_path_factory.getbasetemp())
        for node in frozen:
            os.kill(node.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    (tmp_path / "spark-submit.out").write_text(out)
    assert proc.returncode == 0, out[-6000:]
    app_id = application_id_from_output(out)
    assert app_id is not None
    report = requests.get(f"{cluster.rest}/ws/v1/cluster/apps/{app_id}", headers=cluster.rest_headers(), timeout=10).json()
    assert (report["app"]["state"], report["app"]["finalStatus"]) == ("FINISHED", "SUCCEEDED"), report
    # the RM said which nodes it classed static: nodes 1 and 2 (and never 3 or 4 before they were killed)
    said = re.findall(r"static nodes now: (.*)", cluster.daemon_log("node1"))
    assert any(ids[0] in line and ids[1] in line for line in said), said
    assert not any(ids[2] in line or ids[3] in line for line in said), said


def status_pages_show(cluster: RunningCluster, tmp_path: Path, classes: dict[str, str], keep: Path) -> None:
    """The RM's status pages in headless Chromium, signed in as the job's user (HTTP Basic, the credential's
    REST value as the password): every node RUNNING with its class, the job in progress; a screenshot, copied
    to ``keep`` (pytest's basetemp: a passing test's tmp_path is removed)."""
    user = cluster.credential.user
    signed_in = f"http://{user}:{cluster.credential.rest_header()}@{cluster.rm.webapp}"
    profile = tmp_path / "chromium-profile"
    nodes = dump_dom(f"{signed_in}/cluster/nodes", profile)
    for node_id, label in classes.items():
        assert f">{node_id}</a></td><td>{label}</td><td>RUNNING</td>" in nodes, (node_id, label, nodes[-3000:])
    listed = requests.get(f"{cluster.rest}/ws/v1/cluster/apps?states=RUNNING", headers=cluster.rest_headers(), timeout=10)
    [app_id] = [a["id"] for a in listed.json()["apps"]["app"]]
    running = dump_dom(f"{signed_in}/cluster/apps?state=running", profile)
    row = rf'<a href="/cluster/app/{app_id}">{app_id}</a></td><td>[^<]*</td><td>{re.escape(user)}</td><td>SPARK</td>'
    assert re.search(row + r"<td>[^<]*</td><td>RUNNING</td>", running), running[-3000:]
    screenshot(f"{signed_in}/cluster/login", tmp_path / "status-page-mid-job.png", profile, keep=keep)
