"""Issue 11's mirrors on a real local cluster of 3 nodes: two nodes mirror the RM's ledger and catch an edited row.

The RM (node1) keeps the ledger; node2 and node3 run with ``[accounting] mirror = true``
and a round every ``INTERVAL_S`` seconds.  Each mirror copies the log up to the RM's
signed head (membership entries and tree heads exist from the RM's start; no
witnessing needed) and passes the other's gossiped head.  Then one row of the RM's
``ledger.sqlite`` is edited: ``cortex-rm ledger verify`` fails, and each mirror's
``GET /ws/v1/ledger-mirror`` reports the rewritten entry within a few rounds.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.cluster import RunningCluster, running_cluster

pytestmark = pytest.mark.integration

INTERVAL_S = 2
MIRRORS = f"[accounting]\nmirror = true\nmirror_interval_s = {INTERVAL_S}\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(
        tmp_path_factory.mktemp("cortex-mirror"), nodes=3, node_config=MIRRORS, ring_settings=("key_bits = 8", "work_bits = 16")
    ) as c:
        yield c


def mirror_status(node_web: str) -> dict[str, Any]:
    reply = requests.get(f"http://{node_web}/ws/v1/ledger-mirror", timeout=5)
    assert reply.status_code in (200, 503), reply.text
    return reply.json()["ledgerMirror"] if reply.status_code == 200 else {}


def rm_head(cluster: RunningCluster) -> dict[str, Any]:
    return requests.get(f"{cluster.rest}/ws/v1/cortex/ledger", timeout=5).json()["treeHead"]


def wait_until(condition: Callable[[], bool], what: str, cluster: RunningCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}; node2 log tail:\n{cluster.daemon_log('node2')[-4000:]}")
        time.sleep(0.5)


def verify(cluster: RunningCluster) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cortex_rm", "ledger", "verify", "--workdir", str(cluster.workdir)],
        capture_output=True, text=True, timeout=180,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
    )  # fmt: skip


def test_mirrors_copy_the_ledger_and_report_a_row_edited_in_the_rms_database(cluster: RunningCluster) -> None:
    mirrors = [node.nm_webapp for node in cluster.nodes[1:]]

    def caught_up() -> bool:
        size = rm_head(cluster)["size"]
        return all(mirror_status(web).get("size") == size and mirror_status(web).get("treeHead") for web in mirrors)

    wait_until(caught_up, "both mirrors hold the RM's log", cluster, timeout=60)
    wait_until(lambda: all(mirror_status(web)["peerHeads"] >= 1 for web in mirrors), "each mirror heard the other's head", cluster, timeout=60)
    for web in mirrors:
        status = mirror_status(web)
        assert status["forksDetected"] == 0 and status["entriesRechecked"] > 0, status
    done = verify(cluster)
    assert done.returncode == 0 and "verify: OK" in done.stdout, done.stdout + done.stderr

    database = Path(cluster.nodes[0].directory) / "ledger.sqlite"
    with sqlite3.connect(database) as db:
        (index,) = db.execute("SELECT max(idx) FROM ledger_entries").fetchone()
        # (SQLite's || makes TEXT of two BLOBs: the CAST keeps the column's type, as an edit meant to pass would)
        db.execute("UPDATE ledger_entries SET payload = CAST(payload || x'00' AS BLOB) WHERE idx = ?", (index,))
    edited_at = time.monotonic()

    done = verify(cluster)
    assert done.returncode == 1 and "verify: FAILED" in done.stdout and f"entry {index}" in done.stdout, done.stdout

    def reported(web: str) -> bool:
        return any(f["kind"] == "rewritten" and f["index"] == index for f in mirror_status(web)["forks"])

    wait_until(lambda: all(reported(web) for web in mirrors), "both mirrors report the rewritten entry", cluster, timeout=10 * INTERVAL_S)
    took = time.monotonic() - edited_at
    for web in mirrors:
        status = mirror_status(web)
        [finding] = [f for f in status["forks"] if f["index"] == index]
        assert finding["conclusive"] and finding["mirroredLeafHash"] != finding["servedLeafHash"], finding
        assert finding["treeHead"]["size"] > index
    assert "LEDGER FORK DETECTED" in cluster.daemon_log("node2")
    print(f"both mirrors reported the edited entry {index} {took:.1f} s after the edit (rounds every {INTERVAL_S} s)")
