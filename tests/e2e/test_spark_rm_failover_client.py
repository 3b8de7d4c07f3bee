"""RM failover under a client-mode Spark job: the driver runs here, in spark-submit, and its YARN client and the
AM (ExecutorLauncher) fail over to the new active by themselves.

A local five-node Cortex in namespaces of its own (``--isolated``: the containers reach the driver on the
bridge, and each other across nodes), nodes 1 to 3 RM-eligible (``--rm-standbys 2``) with NodeManagers too
small for any container (``--rm-config`` merges ``[nodemanager] memory_mb``), so the job's AM and executors run on
nodes 4 and 5 and nothing of it dies with the active RM's daemon.  The active is SIGKILLed mid-job (see
``job_through_a_failover`` in ``tests/support/rm_failover_job.py``); an isolated node is not started again, so its return
as a standby is left to the cluster-mode test and ``tests/integration/test_rm_partition.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.rm_failover_job import RM_NODES, job_through_a_failover

pytestmark = pytest.mark.e2e

SMALL_NODEMANAGER = "[nodemanager]\nmemory_mb = 256  # below the 1 GiB minimum allocation: no container fits\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(
        tmp_path_factory.mktemp("rm-failover-client"), nodes=5, spark=True, isolated=True, rm_standbys=RM_NODES - 1,
        rm_config=SMALL_NODEMANAGER,
    ) as c:  # fmt: skip
        yield c


def test_a_client_mode_job_survives_a_sigkill_of_the_active_rm_with_one_attempt(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    job_through_a_failover(cluster, tmp_path, "client", {"SPARK_LOCAL_IP": cluster.client_ip})
