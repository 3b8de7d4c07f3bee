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
window.  Then one row of the ledger's database is edited: ``verify`` fails, and the
mirror on node2 (``[accounting] mirror``) reports the rewritten entry.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cortex_rm import local_cluster
from cortex_rm.processes import alive
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.ledger_checks import cortex_cli, edit_entry, first_index, mirror_status, verify, wait_until

pytestmark = pytest.mark.integration

NODES = 4
ATTESTATION_S = 3
CLOSE_DELAY_S = 5
PROBE_S = 1.0
TOLERANCE_S = 5 * PROBE_S  # "within a few probe intervals"
# A restarted node is witnessed again once it has rejoined, its witnesses' successor lists hold it
# (stabilization, every second) and two of them have probed it (a pass over their 3 neighbours):
# 4-6 probe intervals after it is ready (measured: 20.4 s short for a 15.0 s stop, ready again after 16.0 s).
REJOIN_S = 8 * PROBE_S
RING = (f"attestation_interval_s = {ATTESTATION_S}", "key_bits = 8", "work_bits = 16")
ACCOUNTING = f"[accounting]\nperiod_length_s = 60\nclose_delay_s = {CLOSE_DELAY_S}\nclass_update_interval_s = 2\nmax_batches_per_hour = 100000\n"
MIRROR = "[accounting]\nmirror = true\nmirror_interval_s = 2\n"  # nodes 2-4 mirror the ledger


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(
        tmp_path_factory.mktemp("cortex-ledger"), nodes=NODES, rm_config=ACCOUNTING, ring_settings=RING, node_config=MIRROR
    ) as c:
        yield c


def payouts(cluster: RunningCluster, start_ms: int | None = None, end_ms: int | None = None) -> dict[str, dict]:
    """``cortex-rm payouts --json`` by NodeId."""
    window = ["--start", str(start_ms), "--end", str(end_ms)] if start_ms is not None and end_ms is not None else []
    done = cortex_cli("payouts", "--workdir", str(cluster.workdir), "--json", *window)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert all(set(row) == {"node", "ring_id", "uptime_s", "share"} for row in rows)
    return {row["node"]: row for row in rows}


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

    window_s = (end_ms - start_ms) / 1000
    victim_id = _nm_address(victim)
    stopped_s = up_at - down_at

    def attested() -> bool:  # every witness has reported the window (they report every ATTESTATION_S)
        got = payouts(cluster, start_ms, end_ms)
        others_full = all(row["uptime_s"] >= window_s - TOLERANCE_S for node, row in got.items() if node != victim_id)
        return set(got) == set(ids) and others_full and window_s - got[victim_id]["uptime_s"] <= ready_at - down_at + REJOIN_S

    wait_until(attested, "the window is attested", cluster, timeout=120)
    got = payouts(cluster, start_ms, end_ms)
    missing_s = window_s - got[victim_id]["uptime_s"]
    print(f"window {window_s:.1f} s; node4 stopped {stopped_s:.1f} s (ready again {ready_at - down_at:.1f} s after), "
          f"paid {missing_s:.1f} s short; others short by {[round(window_s - r['uptime_s'], 1) for n, r in got.items() if n != victim_id]} s")
    assert stopped_s - TOLERANCE_S <= missing_s <= (ready_at - down_at) + REJOIN_S, (missing_s, stopped_s, got)
    assert abs(sum(row["share"] for row in got.values()) - 1) < 1e-9

    # a period closes (a minute long, 5 s after its end): its statement recomputes exactly
    wait_until(lambda: "recomputes exactly" in verify(cluster).stdout, "a period is closed", cluster, timeout=90)
    done = verify(cluster)
    assert done.returncode == 0 and "verify: OK" in done.stdout, done.stdout + done.stderr

    # one edited row: verify fails and says where, and the mirror (node2) reports the rewrite
    mirror = cluster.nodes[1].nm_webapp
    first = first_index(cluster, "attestations")
    assert first is not None
    wait_until(lambda: mirror_status(mirror).get("size", 0) > first, "node2 mirrors the attestations", cluster, timeout=60, log="node2")
    index = edit_entry(cluster, kind="attestations")
    assert index == first
    done = verify(cluster)
    assert done.returncode == 1 and "verify: FAILED" in done.stdout, done.stdout + done.stderr
    assert f"entry {index}" in done.stdout

    def reported() -> bool:
        return any(f["kind"] == "rewritten" and f["index"] == index for f in mirror_status(mirror)["forks"])

    wait_until(reported, "the mirror reports the edited entry", cluster, timeout=60, log="node2")
    assert "LEDGER FORK DETECTED" in cluster.daemon_log("node2")


def _nm_address(node: local_cluster.LocalNode) -> str:
    from cortex_rm.config import load_config

    return str(load_config(Path(node.config)).nodemanager.address)
