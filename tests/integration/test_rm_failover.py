"""Three RM-eligible daemons on loopback: the first listed is the active, a SIGKILL of it hands the RM to the next
with everything it acknowledged, and a restarted old active comes back as a standby.

Each daemon is ``cortex-rm node`` with its ring member and the ResourceManager enabled (no NodeManager: nothing
here needs containers or blocks), at its own loopback address, its own RM ports, and ``[ring] resource_managers`` naming
all three, node1 first.  What the test acknowledges through the active — a directory made over WebHDFS, an
application submitted over REST, a user's credential — must be there, unchanged, on the next active.  A standby
binds only the RM's web port, where it answers as YARN's standby (``haState`` STANDBY, a redirect to the active,
WebHDFS's ``StandbyException``); its IPC ports refuse connections, so Hadoop's clients fail over.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hdfs import TokenClient

from cortex_rm.user_credential import load_credential, request_credential, write_private
from cortex_rm.yarn.addresses import HostPort
from tests.support.ring_daemons import wait_for
from tests.support.rm_nodes import RmNode, apps, journal_applied, rm_nodes, ring_formed, submit

pytestmark = pytest.mark.integration

@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[RmNode]]:
    with rm_nodes(tmp_path, 3) as made:
        yield made


def test_the_next_eligible_node_takes_over_with_everything_acknowledged_and_the_old_active_rejoins_as_standby(
    nodes: list[RmNode], tmp_path: Path
) -> None:
    rm1, rm2, rm3 = nodes
    order = [n.ring_id for n in nodes]
    rm1.start(order, None)
    for node in (rm2, rm3):
        node.start(order, rm1.ports["ring"])
    wait_for(lambda: all(n.ready() for n in nodes), "all three daemons ready", 120)
    wait_for(lambda: rm1.serves() and "resourcemanager.tracker_address" in rm1.ready(),
             "rm1 (listed first) to serve as the active RM", 90)  # fmt: skip
    assert rm2.refuses_rm_ports() and rm3.refuses_rm_ports(), "a standby bound an RM IPC or tracker port"
    assert [k for k in rm2.ready() if k.startswith("resourcemanager.")] == ["resourcemanager.webapp_address"]
    _standby_web_points_at(rm3, rm1)
    # any node names every eligible RM, in order, and which is active
    wait_for(lambda: (rm3.rm_directory() or {}).get("active") == rm1.ring_id and len(rm3.rm_directory()["rm"]) == 3,
             "rm3's directory to name all three, rm1 active", 30)  # fmt: skip
    assert [r["webappAddress"] for r in rm3.rm_directory()["rm"]] == [n.webapp for n in nodes]

    # acknowledged by the active: a user's credential, a file, an application
    admin = load_credential(rm1.directory / "admin.token")
    token = tmp_path / "alice.token"
    write_private(token, request_credential(HostPort.parse(rm1.webapp), admin, "alice"))
    alice = load_credential(token)
    as_admin = TokenClient(f"http://{rm1.webapp}", token=admin.webhdfs_delegation())
    as_admin.makedirs("/user/alice")
    as_admin.set_owner("/user/alice", owner="alice")
    hdfs = TokenClient(f"http://{rm1.webapp}", token=alice.webhdfs_delegation())
    hdfs.makedirs("/user/alice/kept", permission="750")  # (no DataNodes here: the namespace alone)
    first = submit(rm1, alice, "before-failover")

    wait_for(lambda: ring_formed(nodes), "every node to hold the others alive", 60)
    rm1.kill()
    killed = time.monotonic()
    took = wait_for(lambda: rm2.serves() or rm3.serves(), "another node to serve as the active RM", 60)
    print(f"failover: kill -> the next active's REST API answers in {took:.1f} s")
    # rm2 is listed first, but only a node holding every committed entry may lead: rm3 when it alone has rm1's last
    new, other = (rm2, rm3) if rm2.serves() else (rm3, rm2)
    assert other.refuses_rm_ports()
    wait_for(lambda: (other.rm_directory() or {}).get("active") == new.ring_id, "the directory to name the new active", 30)
    # the same credential works on the new active (master keys and tokens were replicated)
    assert apps(new, alice) == {first: "before-failover"}
    moved = TokenClient(f"http://{new.webapp}", token=alice.webhdfs_delegation())
    assert moved.status("/user/alice/kept")["permission"] == "750"
    second = submit(new, alice, "after-failover")
    assert second != first
    moved.makedirs("/user/alice/later")
    print(f"{new.name} took {time.monotonic() - killed:.1f} s from the kill to a second submission")

    # the old active comes back: a standby that catches up, and does not take the lead back
    rm1.start(order, new.ports["ring"])
    wait_for(lambda: bool(rm1.ready()), "rm1 ready again", 120)
    wait_for(lambda: journal_applied(rm1) >= journal_applied(new) > 0, "rm1 to catch up with the journal", 60)
    assert rm1.refuses_rm_ports() and new.serves()

    # and when the new active goes too, another (rm1, caught up, or the third) takes over with everything
    wait_for(lambda: ring_formed([rm1, new, other]), "the ring to hold rm1 again everywhere", 60)
    new.kill()
    wait_for(lambda: rm1.serves() or other.serves(), "rm1 or the third to serve", 60)
    last = rm1 if rm1.serves() else other
    assert apps(last, alice) == {first: "before-failover", second: "after-failover"}
    back = TokenClient(f"http://{last.webapp}", token=alice.webhdfs_delegation())
    assert sorted(back.list("/user/alice")) == ["kept", "later"]


def _standby_web_points_at(standby: RmNode, active: RmNode) -> None:
    """A standby's web port: STANDBY in its cluster info, the REST API redirected, WebHDFS told to fail over."""
    assert standby.ha_state() == "STANDBY"
    wait_for(lambda: _status(f"http://{standby.webapp}/ws/v1/cluster/apps?states=RUNNING")[0] == 307,
             "the standby to know the active", 30)  # fmt: skip
    status, headers, _ = _status(f"http://{standby.webapp}/ws/v1/cluster/apps?states=RUNNING")
    assert headers["Location"] == f"http://{active.webapp}/ws/v1/cluster/apps?states=RUNNING"
    status, headers, body = _status(f"http://{standby.webapp}/webhdfs/v1/user?op=LISTSTATUS")
    assert status == 403 and json.loads(body)["RemoteException"]["javaClassName"] == "org.apache.hadoop.ipc.StandbyException"
    assert "Content-Type" not in headers  # (WebHDFS's JSON has none: yarn-wire-facts.md §7)


def _status(url: str) -> tuple[int, dict[str, str], bytes]:
    """One GET, redirects not followed: its status, headers and body."""
    connection = http.client.HTTPConnection(url.split("/")[2], timeout=10)
    try:
        connection.request("GET", "/" + url.split("/", 3)[3])
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_an_active_cut_off_stops_acting_and_comes_back_a_standby(nodes: list[RmNode], tmp_path: Path) -> None:
    """SIGSTOP of the active (cut off from everyone, as by a partition or a long pause): the others elect a new
    active; when the old one runs again it does not act as the active (its writes cannot commit), closes its RM
    ports within its lease, and follows; nothing acknowledged by either is lost."""
    rm1, rm2, rm3 = nodes
    order = [n.ring_id for n in nodes]
    rm1.start(order, None)
    for node in (rm2, rm3):
        node.start(order, rm1.ports["ring"])
    wait_for(lambda: rm1.serves() and "resourcemanager.tracker_address" in rm1.ready(), "rm1 to be the active", 90)
    admin = load_credential(rm1.directory / "admin.token")
    first = submit(rm1, admin, "before-the-cut")
    wait_for(lambda: ring_formed(nodes), "every node to hold the others alive", 60)
    assert rm1.process is not None
    rm1.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: rm2.serves() or rm3.serves(), "another node to take over while rm1 is cut off", 60)
        new, other = (rm2, rm3) if rm2.serves() else (rm3, rm2)
        second = submit(new, admin, "during-the-cut")
    finally:
        rm1.process.send_signal(signal.SIGCONT)
    # the old active learns of the new epoch or its lease ends: it stands down and answers as a standby
    wait_for(lambda: rm1.ha_state() == "STANDBY" and rm1.refuses_rm_ports(), "rm1 to stand down", 30)
    assert new.serves() and not other.serves()
    wait_for(lambda: journal_applied(rm1) >= journal_applied(new) > 0, "rm1 to catch up as a standby", 60)
    assert apps(new, admin) == {first: "before-the-cut", second: "during-the-cut"}
    assert "this node stands down as the active ResourceManager" in rm1.log()
