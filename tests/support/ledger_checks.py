"""What the ledger's tests do to a running local cluster: the CLI, a mirror's status, an edited row, waiting."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.support.cluster import RunningCluster
from tests.support.ring_daemons import wait_for

REPO = Path(__file__).resolve().parents[2]


def cortex_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``cortex-rm ARGS`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cortex_rm", *args], capture_output=True, text=True, timeout=180,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip


def verify(cluster: RunningCluster) -> subprocess.CompletedProcess[str]:
    """``cortex-rm ledger verify --workdir``."""
    return cortex_cli("ledger", "verify", "--workdir", str(cluster.workdir))


def mirror_status(node_web: str) -> dict[str, Any]:
    """A node's ``GET /ws/v1/ledger-mirror`` ({} while the mirror has no copy yet)."""
    reply = requests.get(f"http://{node_web}/ws/v1/ledger-mirror", timeout=5)
    assert reply.status_code in (200, 503), reply.text
    return reply.json()["ledgerMirror"] if reply.status_code == 200 else {}


def rm_head(cluster: RunningCluster) -> dict[str, Any]:
    """The RM's latest signed tree head (``GET /ws/v1/cortex/ledger``)."""
    return requests.get(f"{cluster.rest}/ws/v1/cortex/ledger", timeout=5).json()["treeHead"]


def first_index(cluster: RunningCluster, kind: str) -> int | None:
    """The index of the first entry of ``kind`` in the RM's ``ledger.sqlite``."""
    with sqlite3.connect(Path(cluster.nodes[0].directory) / "ledger.sqlite") as db:
        (index,) = db.execute("SELECT min(idx) FROM ledger_entries WHERE kind = ?", (kind,)).fetchone()
    return None if index is None else int(index)


def edit_entry(cluster: RunningCluster, kind: str | None = None) -> int:
    """Append a byte to one entry's payload in the RM's ``ledger.sqlite`` (the last, or the first of ``kind``); its index.

    (SQLite's ``||`` makes TEXT of two BLOBs: the CAST keeps the column's type, as an edit meant to pass would.)
    """
    database = Path(cluster.nodes[0].directory) / "ledger.sqlite"
    with sqlite3.connect(database) as db:
        if kind is None:
            (index,) = db.execute("SELECT max(idx) FROM ledger_entries").fetchone()
        else:
            (index,) = db.execute("SELECT min(idx) FROM ledger_entries WHERE kind = ?", (kind,)).fetchone()
        db.execute("UPDATE ledger_entries SET payload = CAST(payload || x'00' AS BLOB) WHERE idx = ?", (index,))
    return int(index)


def wait_until(condition: Callable[[], bool], what: str, cluster: RunningCluster, timeout: float, log: str = "node1") -> None:
    """``ring_daemons.wait_for`` every 0.5 s, its failure with the tail of ``log``'s daemon log."""
    try:
        wait_for(condition, what, timeout, step=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}; {log} log tail:\n{cluster.daemon_log(log)[-4000:]}") from None
