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

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.ring_daemons import wait_for
from tests.support.rm_failover_job import RM_NODES, active, job_through_a_failover
from tests.support.spark_jobs import restart, shrink_nodemanagers

pytestmark = pytest.mark.e2e


JOB_NODE = 3  # node4: the only NodeManager with room for a container


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("rm-failover"), nodes=5, spark=True, rm_standbys=RM_NODES - 1) as c:
        shrink_nodemanagers(c, (0, 1, 2, 4))  # (all down at once: node1, listed first, leads again)
        yield c


def test_a_cluster_mode_job_survives_a_sigkill_of_the_active_rm_on_a_standby_with_one_attempt(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    killed_index, new_index = job_through_a_failover(cluster, tmp_path, "cluster", {}, job_node=JOB_NODE)
    # the killed node comes back a standby: the new active stays, and the old one's web port redirects there
    restart(cluster, killed_index)
    old, new = cluster.nodes[killed_index].rm, cluster.nodes[new_index].rm
    assert old is not None and new is not None
    wait_for(lambda: _standby_redirects(old.webapp, new.webapp), "the old active to answer as a standby", 120, step=0.5)
    assert active(cluster.nodes[new_index], cluster)


def _standby_redirects(standby: object, to: object) -> bool:
    try:
        answer = requests.get(f"http://{standby}/ws/v1/cluster/apps", timeout=5, allow_redirects=False)
    except (requests.ConnectionError, requests.Timeout):
        return False
    return answer.status_code == 307 and answer.headers["Location"].startswith(f"http://{to}/")
