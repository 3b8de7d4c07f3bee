"""Issue 11's mirrors on a real local cluster of 3 nodes: two nodes mirror the RM's ledger and catch an edited row.

The RM (node1) keeps the ledger; node2 and node3 run with ``[accounting] mirror = true``
and a round every ``INTERVAL_S`` seconds.  Each mirror copies the log up to the RM's
signed head (membership entries and tree heads exist from the RM's start; no
witnessing needed) and passes the other's gossiped head.  Then one row of the RM's
``ledger.sqlite`` is edited: ``cortex-rm ledger verify`` fails, and each mirror's
``GET /ws/v1/ledger-mirror`` reports the rewritten entry within a few rounds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.ledger_checks import edit_entry, mirror_status, rm_head, verify, wait_until

pytestmark = pytest.mark.integration

INTERVAL_S = 2
MIRRORS = f"[accounting]\nmirror = true\nmirror_interval_s = {INTERVAL_S}\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(
        tmp_path_factory.mktemp("cortex-mirror"), nodes=3, node_config=MIRRORS, ring_settings=("key_bits = 8", "work_bits = 16")
    ) as c:
        yield c


def test_mirrors_copy_the_ledger_and_report_a_row_edited_in_the_rms_database(cluster: RunningCluster) -> None:
    mirrors = [node.nm_webapp for node in cluster.nodes[1:]]

    def caught_up() -> bool:
        size = rm_head(cluster)["size"]
        return all(mirror_status(web).get("size") == size and mirror_status(web).get("treeHead") for web in mirrors)

    wait_until(caught_up, "both mirrors hold the RM's log", cluster, timeout=60, log="node2")
    wait_until(lambda: all(mirror_status(web)["peerHeads"] >= 1 for web in mirrors), "each mirror heard the other's head", cluster, timeout=60, log="node2")
    for web in mirrors:
        status = mirror_status(web)
        assert status["forksDetected"] == 0 and status["entriesRechecked"] > 0, status
    done = verify(cluster)
    assert done.returncode == 0 and "verify: OK" in done.stdout, done.stdout + done.stderr

    index = edit_entry(cluster)
    edited_at = time.monotonic()

    done = verify(cluster)
    assert done.returncode == 1 and "verify: FAILED" in done.stdout and f"entry {index}" in done.stdout, done.stdout

    def reported(web: str) -> bool:
        return any(f["kind"] == "rewritten" and f["index"] == index for f in mirror_status(web)["forks"])

    wait_until(lambda: all(reported(web) for web in mirrors), "both mirrors report the rewritten entry", cluster, timeout=10 * INTERVAL_S, log="node2")
    took = time.monotonic() - edited_at
    for web in mirrors:
        status = mirror_status(web)
        [finding] = [f for f in status["forks"] if f["index"] == index]
        assert finding["conclusive"] and finding["mirroredLeafHash"] != finding["servedLeafHash"], finding
        assert finding["treeHead"]["size"] > index
    assert "LEDGER FORK DETECTED" in cluster.daemon_log("node2")
    print(f"both mirrors reported the edited entry {index} {took:.1f} s after the edit (rounds every {INTERVAL_S} s)")
