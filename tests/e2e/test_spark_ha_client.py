"""A PySpark job submitted with an HA client configuration whose first RM refuses connections.

``client-config`` with two RMs (``rm1``: ports where nothing listens, as a standby's; ``rm2``:
the real RM of an isolated local cluster) writes YARN HA and the logical ``webhdfs://cortex``
file system.  ``spark-submit`` in cluster mode must fail over to rm2, stage through the logical
URI (with the ``ha-webhdfs:cortex`` token), and its AM -- which gets the same configuration --
must register through the failover and read its staged files; the nodes localize resources
named by the logical URI.  The job ends SUCCEEDED with its result in the driver's log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cortex_rm.client_config import NAMESERVICE, RMAddresses, write_client_config
from cortex_rm.local_cluster import free_ports
from cortex_rm.yarn.addresses import HostPort
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.logs_cli import aggregated_logs
from tests.support.spark import EXECUTORS, PYTHON_CONF, application_id_from_output, spark_submit

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("spark-ha"), nodes=3, spark=True, isolated=True) as c:
        yield c


def test_pi_in_cluster_mode_fails_over_from_a_refusing_rm1_and_succeeds(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """spark-submit and the AM fail over to rm2; the staged files and the Spark archive are named
    webhdfs://cortex/...; the job succeeds and the driver printed Pi; ``yarn logs`` with the HA
    configuration reads the aggregated logs through the logical file system."""
    ports = free_ports(3)
    rm1 = RMAddresses(*(HostPort("127.0.0.1", port) for port in ports))  # refused on the host and in containers
    conf = tmp_path / "ha-conf"
    write_client_config(conf, [rm1, cluster.rm], cluster.credential, None, upload_spark=False, say=lambda _: None)
    # the cluster's own Spark archive, named by the logical URI (uploading it again would take minutes)
    archive = next(
        line.split()[1] for line in (cluster.conf_dir / "spark-defaults.conf").read_text().splitlines()
        if line.startswith("spark.yarn.archive ")
    )
    logical = re.sub(r"^webhdfs://[^/]+", f"webhdfs://{NAMESERVICE}", archive)
    (conf / "spark-defaults.conf").write_text(
        (cluster.conf_dir / "spark-defaults.conf").read_text().replace(archive, logical)
    )
    result = spark_submit(conf, EXAMPLES / "pi.py", deploy_mode="cluster", conf={**PYTHON_CONF, **EXECUTORS},
                          args=["4"], timeout=600)
    output = result.stdout + result.stderr
    app_id = application_id_from_output(output)
    assert result.returncode == 0, output[-6000:]
    assert app_id is not None
    assert "Failing over to rm2" in output, output[-6000:]
    assert f"webhdfs://{NAMESERVICE}/" in output, output[-6000:]  # Spark's upload lines name the logical URI
    report = requests.get(f"{cluster.rest}/ws/v1/cluster/apps/{app_id}", headers=cluster.rest_headers(), timeout=30)
    app = report.json()["app"]
    assert (app["state"], app["finalStatus"]) == ("FINISHED", "SUCCEEDED"), app
    driver_out = aggregated_logs(conf, app_id, contains="Pi is roughly")
    assert re.search(r"Pi is roughly 3\.1\d*", driver_out), driver_out[-2000:]
    # the containers' logs: the AM (only it talks to the RM) was given rm1 first too and failed over
    assert "Failing over to rm2" in driver_out, driver_out[-6000:]
