"""Issue 11 on a real local cluster of 4 nodes: witnessed uptime, payouts, and an audit that catches an edit.

The daemons run as a contributor runs them (``local-cluster up``), with short
intervals so the test takes minutes, not hours: witnesses attest every
``ATTESTATION_S`` seconds, pay periods last a minute and close ``CLOSE_DELAY_S``
after they end.  Everything is read through what a user has: ``cortex-rm payouts
--json`` (the RM's REST API) and ``cortex-rm ledger verify`` (the ledger's
database itself).

One node is stopped for a measured time and started again with its state; its
witnessed uptime in a window around that must be short by that time, within a
few probe intervals (1 s each), and the other nodes' uptime must be the whole
window.  Then one row of the ledger's database is edited, and ``verify`` fails.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from cortex_rm import local_cluster
from cortex_rm.processes import alive
from tests.support.cluster import RunningCluster, running_cluster

pytestmark = pytest.mark.integration

NODES = 4
ATTESTATION_S = 3
CLOSE_DELAY_S = 5
PROBE_S = 1.0
TOLERANCE_S = 5 * PROBE_S  # "within a few probe intervals"
RING = (f"attestation_interval_s = {ATTESTATION_S}", "key_bits = 8", "work_bits = 16")
ACCOUNTING = f"[accounting]\nperiod_length_s = 60\nclose_delay_s = {CLOSE_DELAY_S}\nclass_update_interval_s = 2\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(
        tmp_path_factory.mktemp("cortex-ledger"), nodes=NODES, rm_config=ACCOUNTING, ring_settings=RING
    ) as c:
        yield c


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cortex_rm", *args], capture_output=True, text=True, timeout=180,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
    )  # fmt: skip


def payouts(cluster: RunningCluster, start_ms: int | None = None, end_ms: int | None = None) -> dict[str, dict]:
    """``cortex-rm payouts --json`` by NodeId."""
    window = ["--start", str(start_ms), "--end", str(end_ms)] if start_ms is not None and end_ms is not None else []
    done = cli("payouts", "--workdir", str(cluster.workdir), "--json", *window)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert all(set(row) == {"node", "ring_id", "uptime_s", "share"} for row in rows)
    return {row["node"]: row for row in rows}


def wait_until(condition: Callable[[], bool], what: str, cluster: RunningCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}; RM log tail:\n{cluster.daemon_log()[-4000:]}")
        time.sleep(0.5)


def node_ids(cluster: RunningCluster) -> list[str]:
    nodes = requests.get(f"{cluster.rest}/ws/v1/cluster/nodes", headers=cluster.rest_headers(), timeout=5).json()
    return sorted(n["id"] for n in nodes["nodes"]["node"])


def test_a_stopped_node_is_paid_short_by_its_downtime_and_the_ledger_verifies(cluster: RunningCluster) -> None:
    ids = node_ids(cluster)
    assert len(ids) == NODES
    wait_until(lambda: set(payouts(cluster)) == set(ids), "every node has witnessed uptime", cluster, timeout=60)

    start_ms = int(time.time() * 1000)
    time.sleep(8)
    victim = cluster.nodes[3]
    os.kill(victim.pid, signal.SIGTERM)
    wait_until(lambda: not alive(victim.pid), "node4 has stopped", cluster, timeout=60)
    down_at = time.time()
    time.sleep(15)
    up_at = time.time()
    local_cluster.restart_node(cluster.workdir, victim.name, say=lambda _: None)
    ready_at = time.time()
    time.sleep(10)
    end_ms = int(time.time() * 1000)
    time.sleep(2 * ATTESTATION_S + 3)  # every witness has attested the window

    window_s = (end_ms - start_ms) / 1000
    got = payouts(cluster, start_ms, end_ms)
    victim_id = _nm_address(victim)
    assert set(got) == set(ids), got
    for node, row in got.items():
        if node != victim_id:
            assert row["uptime_s"] >= window_s - TOLERANCE_S, (node, row, window_s)
    missing_s = window_s - got[victim_id]["uptime_s"]
    stopped_s = up_at - down_at
    assert stopped_s - TOLERANCE_S <= missing_s <= (ready_at - down_at) + TOLERANCE_S, (missing_s, stopped_s, got)
    assert abs(sum(row["share"] for row in got.values()) - 1) < 1e-9

    # a period closes (a minute long, 5 s after its end): its statement recomputes exactly
    wait_until(lambda: "recomputes exactly" in verify(cluster).stdout, "a period is closed", cluster, timeout=90)
    done = verify(cluster)
    assert done.returncode == 0 and "verify: OK" in done.stdout, done.stdout + done.stderr

    # one edited row: verify fails and says where
    database = Path(cluster.nodes[0].directory) / "ledger.sqlite"
    with sqlite3.connect(database) as db:
        (index,) = db.execute("SELECT idx FROM ledger_entries WHERE kind = 'attestations' ORDER BY idx LIMIT 1").fetchone()
        db.execute("UPDATE ledger_entries SET payload = CAST(payload || x'00' AS BLOB) WHERE idx = ?", (index,))
    done = verify(cluster)
    assert done.returncode == 1 and "verify: FAILED" in done.stdout, done.stdout + done.stderr
    assert f"entry {index}" in done.stdout


def verify(cluster: RunningCluster) -> subprocess.CompletedProcess[str]:
    return cli("ledger", "verify", "--workdir", str(cluster.workdir))


def _nm_address(node: local_cluster.LocalNode) -> str:
    from cortex_rm.config import load_config

    return str(load_config(Path(node.config)).nodemanager.address)
