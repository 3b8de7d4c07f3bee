"""The real ``spark-submit --master yarn`` against a real local Cortex cluster.

The client is PySpark's own ``spark-submit`` with the Hadoop configuration that
``cortex-rm local-cluster up`` writes (the same files ``cortex-rm client-config``
writes), nothing else.  spark-submit returns as soon as the application is
accepted; Hadoop's YarnClient then sees it as Cortex stored it (its AM is starting
or running), and kills it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import YarnClientDriver
from tests.support.spark import application_id_from_output, spark_submit

pytestmark = pytest.mark.e2e

PI = Path(__file__).resolve().parents[2] / "examples" / "pi.py"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("spark"), nodes=3, spark=True) as c:
        yield c


def test_cluster_mode_submit_gets_an_application_that_cortex_reports(cluster: RunningCluster, tmp_path: Path) -> None:
    """spark-submit obtains an id, Cortex accepts the app, YarnClient reports and kills it."""
    slow = tmp_path / "slow.py"  # runs until killed, so the kill below always finds it live
    slow.write_text(
        "import time\nfrom pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "spark.sparkContext.parallelize(range(2), 2).foreach(lambda _: time.sleep(600))\n"
    )
    result = spark_submit(
        cluster.conf_dir,
        slow,
        deploy_mode="cluster",
        conf={"spark.yarn.submit.waitAppCompletion": "false", "spark.app.name": "cortex-pi"},
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    app_id = application_id_from_output(output)
    assert app_id is not None, output[-4000:]
    assert f"Application report for {app_id} (state: ACCEPTED)" in output

    yarn = YarnClientDriver(cluster.conf_dir)
    report = yarn.run("report", app_id)
    assert report["state"] in ("ACCEPTED", "RUNNING")
    assert report["name"] == "cortex-pi"
    assert report["applicationType"] == "SPARK"
    assert report["queue"] == "default"
    listed = yarn.run("list", "--types", "SPARK")["applications"]
    assert app_id in [a["id"] for a in listed]

    # The REST API shows the same application, with the AM size Spark asked for.
    app = requests.get(f"{cluster.rest}/ws/v1/cluster/apps/{app_id}", headers=cluster.rest_headers(), timeout=10).json()["app"]
    assert app["state"] in ("ACCEPTED", "RUNNING") and app["name"] == "cortex-pi"

    killed = yarn.run("kill", app_id)
    assert killed["state"] == "KILLED" and killed["finalStatus"] == "KILLED"


def test_a_job_too_big_for_any_container_is_refused_by_spark_itself(cluster: RunningCluster) -> None:
    """Spark checks its AM size against getNewApplication's maximumCapability and fails fast."""
    result = spark_submit(
        cluster.conf_dir,
        PI,
        deploy_mode="cluster",
        conf={"spark.yarn.submit.waitAppCompletion": "false", "spark.driver.memory": "16g"},
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "is above the max threshold" in output, output[-4000:]
