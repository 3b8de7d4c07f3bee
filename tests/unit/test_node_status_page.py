"""The node's own status page, ``/node`` on its NodeManager web port (``yarn_api/node_web``).

Served by the node's real web site (``build_nm_site``) without sockets, with the containers of
``test_nm_rest_logs``'s ContainerManager stand-in and a ring view given to the site.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from cortex_rm.container.nm_container import NMContainerState as S
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.yarn_api.nm_rest import build_nm_site
from tests.support.http_site import HttpConnection, HttpResponse
from tests.unit.test_nm_rest_logs import INFO, Node, node  # noqa: F401  (node: the fixture)
from tests.unit.test_ring_rest import VIEW

HOSTILE_ADDRESS = '<b onmouseover="x">evil</b>:1'


def get(site: object, path: str) -> HttpResponse:
    conn = HttpConnection(site, "nm.test:8042")
    conn.send("GET", path, b"")
    response = conn.response()
    assert response is not None
    return response


def test_the_node_page_shows_the_node_its_containers_by_state_and_no_application(node: Node) -> None:
    """/node: the node's id, caps and uptime, its containers counted by state with what the live ones hold,
    and no container, application or user named; 'not on a ring' without a ring view; 404 below it."""
    node.add(1, S.RUNNING, user="secret-user")
    node.add(2, S.RUNNING)
    node.add(3, S.DONE)
    node.add(4, S.LOCALIZATION_FAILED)  # (finished: holds nothing)
    response = get(node.site, "/node")
    assert response.status == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in response.headers["content-security-policy"]
    page = response.body.decode()
    assert INFO.node_id in page and '<meta http-equiv="refresh"' in page
    assert "<tr><td>RUNNING</td><td>2</td></tr>" in page and "<tr><td>DONE</td><td>1</td></tr>" in page
    assert "2048 MB / 4" in page  # two live containers of 1024 MB, 2 vCores
    assert "secret-user" not in page and "container_" not in page and "application_" not in page
    assert "not on a ring" in page and "/cluster/earnings" in page
    assert get(node.site, "/node/").status == 200
    assert get(node.site, "/node/anything").status == 404


def test_the_node_page_shows_the_ring_as_this_node_sees_it_suspicion_included() -> None:
    """With a ring view given to the site, /node lists its members with their SWIM status (suspect included) and
    whether their address was verified; a hostile member address is shown as text."""
    hostile = Peer(0xEE << 152, HOSTILE_ADDRESS)
    view = RingView(
        VIEW.me, VIEW.state, VIEW.incarnation, VIEW.predecessor, VIEW.successors, VIEW.finger_count,
        (*VIEW.members, (hostile, MemberStatus.DEAD, 9)), VIEW.records, verified=VIEW.verified,
    )  # fmt: skip
    site = build_nm_site(INFO, lambda: 5, ring=lambda: view, clock=Clock())
    page = get(site, "/node").body.decode()
    [suspect] = [peer for peer, status, _ in VIEW.members if status is MemberStatus.SUSPECT]
    assert f"<td>{format_id(suspect.node_id)}</td><td>{suspect.address}</td><td>suspect</td>" in page
    assert "Members alive / suspect / dead / left</th><td>2 / 1 / 1 / 0" in page
    assert "&lt;b onmouseover=&quot;x&quot;&gt;evil&lt;/b&gt;:1" in page and "<b onmouseover" not in page
    assert "containers are not started yet" in page  # a site without the containers' services
