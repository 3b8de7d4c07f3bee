"""An eligible node that lost its disk catches up by the leader's snapshot, with real daemons.

Three RM-eligible daemons on loopback keep a journal tail of 4 entries (``[resourcemanager] journal_log_tail``),
so the active discards its early entries while one standby is down.  That standby comes back with nothing but its
identity: the log it would need is gone, so the active sends it a snapshot of its stores in chunks, and then
Appends.  The test then makes the wiped node the only one able to lead (the other standby stopped while the active
wrote more, so its log is shorter) and reads from it, as the active, everything written before and after.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hdfs import TokenClient

from cortex_rm.internal.identity import IDENTITY_DIR
from cortex_rm.user_credential import load_credential
from tests.support.ring_daemons import wait_for
from tests.support.rm_nodes import RmNode, journal_applied, ring_formed, rm_nodes

pytestmark = pytest.mark.integration

TAIL = ("journal_log_tail = 4",)
WRITES = 30


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[RmNode]]:
    with rm_nodes(tmp_path, 3) as made:
        yield made


def test_a_wiped_eligible_node_catches_up_by_snapshot_and_can_lead_with_everything(nodes: list[RmNode]) -> None:
    rm1, rm2, rm3 = nodes
    order = [n.ring_id for n in nodes]
    rm1.start(order, None, rm_settings=TAIL)
    for node in (rm2, rm3):
        node.start(order, rm1.ports["ring"], rm_settings=TAIL)
    wait_for(lambda: rm1.serves() and "resourcemanager.tracker_address" in rm1.ready(), "rm1 to be the active", 90)
    wait_for(lambda: ring_formed(nodes), "every node to hold the others alive", 60)
    admin = load_credential(rm1.directory / "admin.token")
    hdfs = TokenClient(f"http://{rm1.webapp}", token=admin.webhdfs_delegation())
    hdfs.makedirs("/kept/before-the-wipe")
    wait_for(lambda: journal_applied(rm3) >= journal_applied(rm1) > 0, "rm3 to apply the first writes", 30)

    # rm3 loses everything but its identity (the ring knows it by its key) and its configuration
    rm3.kill()
    for entry in rm3.directory.iterdir():
        if entry.name not in (IDENTITY_DIR, "cortex.toml", "daemon.out", "admin.token"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for k in range(WRITES):  # (each a journal entry, committed by rm1 and rm2)
        hdfs.makedirs(f"/kept/while-wiped/{k}")
    wait_for(lambda: _base(rm1) > 0, "rm1 to discard the entries its stores hold", 30)
    print(f"rm1 applied {journal_applied(rm1)}, its log starts after {_base(rm1)}")

    started = time.monotonic()
    rm3.start(order, rm1.ports["ring"], rm_settings=TAIL)
    # (journal_applied is -1 while a file is missing or busy: both sides must be read)
    wait_for(lambda: journal_applied(rm3) >= journal_applied(rm1) > 0, "the wiped rm3 to catch up", 90)
    print(f"rm3 caught up {time.monotonic() - started:.1f} s after its restart")
    wait_for(lambda: "installed the leader's snapshot" in rm3.log(), "rm3's log to say it installed a snapshot", 30)
    assert rm3.ha_state() == "STANDBY" and rm3.refuses_rm_ports()

    # rm2 goes: a write commits only if the wiped rm3 takes part as a follower with a matching log
    wait_for(lambda: ring_formed(nodes), "the ring to hold rm3 again everywhere", 60)
    rm2.kill()
    hdfs.makedirs("/kept/after-the-snapshot")
    wait_for(lambda: journal_applied(rm3) >= journal_applied(rm1) > 0, "rm3 to apply the last write", 30)

    # rm1 goes, rm2 (whose log misses the last write) comes back: only rm3 can lead
    rm1.kill()
    rm2.start(order, rm3.ports["ring"], rm_settings=TAIL)
    wait_for(rm3.serves, "rm3 to serve as the active RM", 90)
    assert not rm2.serves()
    led = TokenClient(f"http://{rm3.webapp}", token=admin.webhdfs_delegation())
    assert sorted(led.list("/kept")) == ["after-the-snapshot", "before-the-wipe", "while-wiped"]
    assert sorted(led.list("/kept/while-wiped"), key=int) == [str(k) for k in range(WRITES)]
    led.makedirs("/kept/written-on-rm3")


def _base(node: RmNode) -> int:
    """The seq under ``node``'s journal log (entries up to it are discarded; 0 while none is)."""
    with sqlite3.connect(f"file:{node.directory / 'rm-journal.sqlite'}?mode=ro", uri=True) as db:
        try:
            row = db.execute("select seq from journal_base").fetchone()
        except sqlite3.Error:
            return 0
    return int(row[0]) if row else 0
