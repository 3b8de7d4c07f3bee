"""``GET /ws/v1/ring``: a node's ``RingView`` as JSON, driven through twisted.web's ``DummyRequest`` (no sockets)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogEvent
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_member import RingMember, RingView
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.internal.ring_codec import piggyback_size
from cortex_rm.status_page.node_page import NodeInfo
from cortex_rm.yarn_api.nm_rest import _NodeInfoResource, build_nm_site
from cortex_rm.yarn_api.ring_rest import RingResource, mount_ring, ring_view_to_json

NOW_S = 1_700_000_000.25
ME = Peer(0x50 << 152, "127.0.0.2:7946")
A = Peer(0x10 << 152, "127.0.0.1:7946")
B = Peer(0x80 << 152, "127.0.0.3:7946")
C = Peer(0xC0 << 152, "127.0.0.4:7946")

VIEW = RingView(
    me=ME,
    state=RingState.MEMBER,
    incarnation=2,
    predecessor=A,
    successors=(B, C),
    finger_count=3,
    members=((C, MemberStatus.SUSPECT, 4), (A, MemberStatus.ALIVE, 0), (B, MemberStatus.ALIVE, 1)),
    records=12,
    verified=frozenset({A, B}),
)


def hexid(peer: Peer) -> str:
    return f"{peer.node_id:040x}"


def get(resource: Resource, method: bytes = b"GET", postpath: list[bytes] | None = None) -> tuple[DummyRequest, Any]:
    """Render ``resource`` for one request; the request and its decoded JSON body."""
    request = DummyRequest(postpath or [])
    request.method = method
    request.path = b"/ws/v1/ring"  # type: ignore[attr-defined]  # a real Request has one
    request.render(resource)
    assert request.finished == 1
    return request, json.loads(b"".join(request.written))


# ------------------------------------------------------------------ the document


def test_view_to_json_has_stable_fields_ids_as_hex_and_members_by_ring_id() -> None:
    """Every field of the view appears under its documented name; members are sorted by id and counted per status."""
    assert ring_view_to_json(VIEW, now_ms=1234) == {
        "ring": {
            "observedAtMs": 1234,
            "node": {"id": "5000000000000000000000000000000000000000", "address": "127.0.0.2:7946"},
            "state": "member",
            "incarnation": 2,
            "predecessor": {"id": hexid(A), "address": A.address},
            "successors": [{"id": hexid(B), "address": B.address}, {"id": hexid(C), "address": C.address}],
            "fingerCount": 3,
            "records": 12,
            "members": [
                {"id": hexid(A), "address": A.address, "status": "alive", "incarnation": 0, "addressVerified": True},
                {"id": hexid(B), "address": B.address, "status": "alive", "incarnation": 1, "addressVerified": True},
                {"id": hexid(C), "address": C.address, "status": "suspect", "incarnation": 4, "addressVerified": False},
            ],
            "memberCounts": {"alive": 2, "suspect": 1, "dead": 0, "left": 0},
            "refusals": {"senders": 0, "rumours": 0, "gossip": 0, "records": 0, "rateLimited": 0, "refutedDeathClaims": 0},
        }
    }


def test_view_to_json_of_a_fresh_member_alone_on_its_ring() -> None:
    """A RingMember that has not joined: state alone, no predecessor, no members, every count zero."""
    member = RingMember(ME, RingConfig(), random.Random(1), piggyback_size=piggyback_size)
    ring = ring_view_to_json(member.view(), now_ms=0)["ring"]
    assert ring["state"] == "alone"
    assert ring["node"] == {"id": hexid(ME), "address": ME.address}
    assert ring["predecessor"] is None
    assert ring["members"] == []
    assert ring["memberCounts"] == {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
    assert all(len(p["id"]) == 40 for p in ring["successors"])


def test_small_ids_are_zero_padded_to_40_hex_digits() -> None:
    """An id with leading zero bits keeps all 40 digits (so ids sort as strings like numbers)."""
    view = RingView(Peer(1, "h:1"), RingState.ALONE, 0, None, (), 0, (), 0)
    assert ring_view_to_json(view, now_ms=0)["ring"]["node"]["id"] == "0" * 39 + "1"


# ------------------------------------------------------------------ the resource


def test_get_answers_the_view_as_json_stamped_with_the_clock() -> None:
    """GET /ws/v1/ring: 200, application/json, the document of the current view at the clock's time in ms."""
    clock = Clock()
    clock.advance(NOW_S)
    request, body = get(RingResource(lambda: VIEW, clock))
    assert request.responseCode == 200
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    assert body == ring_view_to_json(VIEW, now_ms=1_700_000_000_250)


def test_each_request_reads_the_view_afresh() -> None:
    """The resource asks for the view on every request, so the answer follows the ring."""
    views = [VIEW, RingView(ME, RingState.LEFT, 3, None, (), 0, (), 0)]
    resource = RingResource(lambda: views[0], Clock())
    assert get(resource)[1]["ring"]["state"] == "member"
    views.pop(0)
    assert get(resource)[1]["ring"]["state"] == "left"


def test_trailing_slash_names_the_same_resource() -> None:
    """/ws/v1/ring/ answers as /ws/v1/ring."""
    request, body = get(RingResource(lambda: VIEW, Clock()), postpath=[b""])
    assert request.responseCode == 200
    assert body["ring"]["records"] == 12


def test_ring_not_started_is_503_remote_exception() -> None:
    """While view() returns None the answer is 503 in the REST layer's RemoteException form."""
    request, body = get(RingResource(lambda: None, Clock()))
    assert request.responseCode == 503
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    error = body["RemoteException"]
    assert error["exception"] == "WebApplicationException"
    assert error["javaClassName"] == "javax.ws.rs.WebApplicationException"
    assert "ring is not started" in error["message"]


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE"])
def test_other_methods_are_405_with_allow(method: bytes) -> None:
    """Only GET and HEAD are served; others get 405, an Allow header and a RemoteException."""
    request, body = get(RingResource(lambda: VIEW, Clock()), method=method)
    assert request.responseCode == 405
    assert request.responseHeaders.getRawHeaders(b"allow") == [b"GET, HEAD"]
    assert body["RemoteException"]["exception"] == "WebApplicationException"
    assert method.decode() in body["RemoteException"]["message"]


def test_head_is_answered_like_get() -> None:
    """HEAD gets GET's status and headers (twisted.web's Request drops the body)."""
    request, _ = get(RingResource(lambda: VIEW, Clock()), method=b"HEAD")
    assert request.responseCode == 200


def test_paths_below_the_ring_are_404() -> None:
    """/ws/v1/ring/anything is not a resource: 404 NotFoundException naming the ring's path."""
    request, body = get(RingResource(lambda: VIEW, Clock()), postpath=[b"members"])
    assert request.responseCode == 404
    assert body["RemoteException"]["exception"] == "NotFoundException"
    assert "/ws/v1/ring" in body["RemoteException"]["message"]


@pytest.mark.expect_logged_errors('GET /ws/v1/ring failed')
def test_a_failing_view_is_a_logged_500(logged: list[LogEvent]) -> None:
    """A bug behind view() is answered 500 YarnRuntimeException naming the error, and logged as a failure."""

    def broken() -> RingView:
        raise KeyError("chord")

    request, body = get(RingResource(broken, Clock()))
    assert request.responseCode == 500
    assert body["RemoteException"]["exception"] == "YarnRuntimeException"
    assert "KeyError" in body["RemoteException"]["message"]
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(KeyError)


# ------------------------------------------------------------------ mounting


def resolve(root: Resource, *path: bytes) -> Resource:
    return getChildForRequest(root, DummyRequest(list(path)))


def test_mount_ring_on_the_node_manager_site_keeps_node_info() -> None:
    """Mounted on the NM site, /ws/v1/ring is the ring and /ws/v1/node still the node info."""
    info = NodeInfo("node1", "127.0.0.1", 1024, 2, 0, "1.0")
    site = build_nm_site(info, lambda: 0, clock=Clock())
    ring = RingResource(lambda: VIEW, Clock())
    mount_ring(site.resource, ring)
    assert resolve(site.resource, b"ws", b"v1", b"ring") is ring
    assert resolve(site.resource, b"ws", b"v1", b"ring", b"") is ring
    assert isinstance(resolve(site.resource, b"ws", b"v1", b"node", b"info"), _NodeInfoResource)


def test_mount_ring_on_an_empty_root_creates_ws_and_v1() -> None:
    """On a bare root the ws and v1 levels are created."""
    root = Resource()
    ring = RingResource(lambda: VIEW, Clock())
    mount_ring(root, ring)
    assert resolve(root, b"ws", b"v1", b"ring") is ring


def test_mount_ring_refuses_a_leaf_ws() -> None:
    """A /ws that routes every path itself (the RM's) cannot hold the ring: ValueError, not a silent 404."""
    root = Resource()
    leaf = Resource()
    leaf.isLeaf = True
    root.putChild(b"ws", leaf)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="leaf"):
        mount_ring(root, RingResource(lambda: VIEW, Clock()))
