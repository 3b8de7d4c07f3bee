"""The uptime ledger across a failover, on three RM-eligible daemons on loopback (``tests/support/rm_nodes.py``): the
next active serves the very log the first one wrote, and goes on with it under its own key.

The first active (node1) records the ring's members in its ledger and signs a head over them; the test reads the
head and the entries over the REST API (``/ws/v1/cortex/ledger...``).  Then node1 is SIGKILLed.  node2 (or
node3) takes over: its ledger serves the same entries at the same indices, a head of its own key over a larger
log, and a consistency proof from node1's head to its own that verifies; ``cortex-rm ledger verify`` of its copy
(where its log says the copy is: ``roles/rm_stores.py``) finds every head, node1's and its own, good.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_rm.accounting.merkle import verify_consistency
from cortex_rm.user_credential import UserCredential, load_credential
from tests.support.ledger_checks import cortex_cli
from tests.support.ring_daemons import wait_for
from tests.support.rm_nodes import RmNode, rest, ring_formed, rm_nodes

pytestmark = pytest.mark.integration


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[RmNode]]:
    with rm_nodes(tmp_path, 3) as made:
        yield made


def head_of(node: RmNode, admin: UserCredential) -> dict:
    return rest(node, "/ws/v1/cortex/ledger", admin)["treeHead"]


def entries_of(node: RmNode, admin: UserCredential, end: int) -> list[tuple[str, bytes]]:
    listed = rest(node, f"/ws/v1/cortex/ledger/entries?start=0&end={end}", admin)["entries"]
    return [(e["kind"], base64.b64decode(e["payload"])) for e in listed]


def ledger_answers(node: RmNode, admin: UserCredential) -> bool:
    try:
        return head_of(node, admin)["size"] >= 1
    except Exception:  # noqa: BLE001 - not serving yet, or its ledger not open yet (503)
        return False


def test_the_next_active_serves_the_ledger_the_first_wrote_and_signs_on_over_it(nodes: list[RmNode]) -> None:
    rm1, rm2, rm3 = nodes
    order = [n.ring_id for n in nodes]
    rm1.start(order, None)
    for node in (rm2, rm3):
        node.start(order, rm1.ports["ring"])
    wait_for(lambda: all(n.ready() for n in nodes), "all three daemons ready", 120)
    wait_for(lambda: rm1.serves() and "resourcemanager.tracker_address" in rm1.ready(),
             "rm1 (listed first) to serve as the active RM", 90)  # fmt: skip
    wait_for((rm1.directory / "admin.token").exists, "rm1's admin credential", 30)
    admin = load_credential(rm1.directory / "admin.token")
    wait_for(lambda: ledger_answers(rm1, admin), "rm1's ledger to hold its membership snapshot", 60)
    first = head_of(rm1, admin)
    written = entries_of(rm1, admin, first["size"])
    assert len(written) == first["size"] and written[0][0] == "membership"

    wait_for(lambda: ring_formed(nodes), "every node to hold the others alive", 60)  # (rm1 is their introducer)
    rm1.kill()
    # (rm2 is listed first, but rm3 leads when it alone holds the last entries rm1 committed: the journal's rule)
    wait_for(lambda: rm2.serves() or rm3.serves(), "another node to serve as the active RM", 60)
    rm2, rm3 = (rm2, rm3) if rm2.serves() else (rm3, rm2)
    wait_for(lambda: ledger_answers(rm2, admin), "rm2's ledger to answer", 60)
    wait_for(lambda: head_of(rm2, admin)["size"] > first["size"], "rm2's own membership snapshot", 60)
    second = head_of(rm2, admin)
    assert second["keyId"] != first["keyId"], "rm2 signs with its own key"
    assert entries_of(rm2, admin, first["size"]) == written  # the same entries at the same indices
    proof = rest(rm2, f"/ws/v1/cortex/ledger/consistency?first={first['size']}&second={second['size']}", admin)
    hashes = [bytes.fromhex(h) for h in proof["consistency"]["proof"]]
    old_root, new_root = bytes.fromhex(first["rootHash"]), bytes.fromhex(second["rootHash"])
    assert verify_consistency(first["size"], second["size"], old_root, new_root, hashes)

    [copy] = set(re.findall(r"ledger open at (\S+) \(a copy: written through the RM's journal\)", rm2.log()))
    done = cortex_cli("ledger", "verify", "--config", str(rm2.directory / "cortex.toml"), "--url", copy)
    assert done.returncode == 0 and "verify: OK" in done.stdout, done.stdout + done.stderr
    checked = int(done.stdout.split(" signed tree heads checked")[0].rsplit("\n", 1)[-1].strip())
    assert checked >= 2, done.stdout  # rm1's head and rm2's at least
    print(done.stdout)
    assert rm3.refuses_rm_ports()
