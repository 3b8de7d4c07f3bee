"""The function registry over the RM's REST API (``yarn_api/event_registry_rest.py`` mounted on the
RM's site as ``roles/resource_manager.py`` does): HTTP/1.1 over an in-memory transport to the real
site, the registry on a fake clock.  Each answer's status, JSON and RemoteException are checked as
a client sees them; a node's resource (no registry) redirects to the RM."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet import defer
from twisted.web.resource import Resource

from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.events.caller_assertions import AssertionIssuer
from cortex_rm.events.functions import function_key
from cortex_rm.events.request_proofs import sign
from cortex_rm.roles.event_callers import rm_caller_checks
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn_api.event_registry_rest import FUNCTIONS_PATH, EventsResource, mount_registry
from cortex_rm.yarn_api.http_limits import API_LIMITS
from cortex_rm.yarn_api.rest import RestSite, build_rest_site
from cortex_rm.yarn_api.rest_errors import NOT_FOUND
from cortex_rm.yarn_api.status_web import ActivationsOf
from tests.support.event_registry_rig import CODE, CODE_MTIME, IDENTITY, NOW_MS, RegistryRig
from tests.support.http_site import HttpConnection, HttpResponse
from tests.support.rm_core import new_table

BODY = {"code": {"path": CODE}}


class Site:
    """The RM's web site with the registry mounted, and each user's header."""

    def __init__(self, activations: ActivationsOf | None = None) -> None:
        self.rig = RegistryRig()
        rm = RMContext(self.rig.clock, new_table(clock=self.rig.clock), NodeTable(), NOW_MS)
        events = EventsResource()
        self.functions = mount_registry(events, self.rig.events, self.rig.auth)
        self.site = build_rest_site(rm, version="test", auth=self.rig.auth, events=events,
                                    event_functions=self.rig.events.owned, event_activations=activations)  # fmt: skip
        self._headers: dict[str, dict[str, str]] = {}

    def as_user(self, user: str) -> dict[str, str]:
        if user not in self._headers:
            self._headers[user] = {REST_TOKEN_HEADER: self.rig.token(user)}
        return self._headers[user]

    def call(
        self, method: str, path: str, body: Any = None, user: str | None = "alice", **headers: str
    ) -> HttpResponse:
        data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {**(self.as_user(user) if user else {}), **headers}
        if data and "Content-Type" not in sent:
            sent["Content-Type"] = "application/json"
        conn = HttpConnection(self.site)
        conn.send(method, path, data, sent)
        response = conn.response()
        assert response is not None, f"{method} {path}: no complete response"
        return response


@pytest.fixture
def web() -> Site:
    return Site()


def remote(response: HttpResponse) -> tuple[int, str, str]:
    error = response.json()["RemoteException"]
    return response.status, error["exception"], error["message"]


def test_register_get_list_reregister_and_delete(web: Site) -> None:
    created = web.call("POST", f"{FUNCTIONS_PATH}/hello", BODY)
    assert created.status == 200, created.body
    function = created.json()["function"]
    assert (function["name"], function["owner"], function["version"]) == ("hello", "alice", 1)
    assert function["code"] == {"path": CODE, "length": 5, "modificationTime": CODE_MTIME, "kind": "python"}
    assert created.headers["content-type"].startswith("application/json")
    assert web.call("GET", f"{FUNCTIONS_PATH}/hello").json() == {"function": function}
    again = web.call("POST", f"{FUNCTIONS_PATH}/hello/", {**BODY, "replicas": 3, "mode": "vote"}).json()["function"]
    assert (again["version"], again["replicas"], again["mode"]) == (2, 3, "vote")
    assert [f["name"] for f in web.call("GET", FUNCTIONS_PATH).json()["functions"]] == ["hello"]
    assert web.call("GET", FUNCTIONS_PATH + "/", user="bob").json() == {"functions": []}
    deleted = web.call("DELETE", f"{FUNCTIONS_PATH}/hello")
    assert deleted.status == 200 and deleted.json() == {"deleted": "hello", "version": 2}
    assert web.call("GET", FUNCTIONS_PATH).json() == {"functions": []}
    assert remote(web.call("GET", f"{FUNCTIONS_PATH}/hello"))[:2] == (404, NOT_FOUND[0])
    assert json.loads(web.rig.ring.records[function_key("hello")].value)["deleted"] is True


def test_another_users_name_is_refused_and_read_only_with_a_grant(web: Site) -> None:
    web.call("POST", f"{FUNCTIONS_PATH}/hello", {**BODY, "grants": ["carol"]})
    status, exception, message = remote(web.call("POST", f"{FUNCTIONS_PATH}/hello", BODY, user="bob"))
    assert (status, exception) == (403, "AccessControlException") and "registered by another user" in message
    assert remote(web.call("GET", f"{FUNCTIONS_PATH}/hello", user="bob"))[:2] == (403, "AccessControlException")
    assert remote(web.call("DELETE", f"{FUNCTIONS_PATH}/hello", user="bob"))[:2] == (403, "AccessControlException")
    assert web.call("GET", f"{FUNCTIONS_PATH}/hello", user="carol").json()["function"]["owner"] == "alice"


@pytest.mark.parametrize(
    ("body", "status", "exception", "message"),
    [
        ({"code": {"path": "/user/alice/missing.py"}}, 400, "FileNotFoundException", "code: "),
        ({"code": {"path": "/user/alice/private.py"}}, 200, None, ""),
        ({"code": {"path": CODE}, "replicas": 9}, 400, "IllegalArgumentException", "replicas must be"),
        ({"code": {"path": CODE}, "limits": {"memoryMb": 1}}, 400, "IllegalArgumentException", "limits.memoryMb"),
        ({"code": {"path": CODE}, "colour": "red"}, 400, "IllegalArgumentException", "colour: unknown field"),
        ({"code": {"path": "/user/alice/big.py"}}, 400, "IllegalArgumentException", "code: /user/alice/big.py is"),
        (b"{not json", 400, "IllegalArgumentException", "malformed JSON"),
        (b"", 400, "IllegalArgumentException", "needs a JSON body"),
    ],
)
def test_a_bad_registration_is_refused_naming_what_is_wrong(
    web: Site, body: Any, status: int, exception: str | None, message: str
) -> None:
    response = web.call("POST", f"{FUNCTIONS_PATH}/hello", body)
    if exception is None:
        assert response.status == status
        return
    got = remote(response)
    assert got[:2] == (status, exception) and message in got[2], got


def test_bobs_unreadable_code_is_403_and_a_bad_name_400(web: Site) -> None:
    unreadable = web.call("POST", f"{FUNCTIONS_PATH}/hello", {"code": {"path": "/user/alice/private.py"}}, user="bob")
    assert remote(unreadable)[:2] == (403, "AccessControlException")
    assert remote(web.call("POST", f"{FUNCTIONS_PATH}/bad%20name", BODY))[:2] == (400, "IllegalArgumentException")


def test_a_caller_without_a_valid_users_credential_is_refused(web: Site) -> None:
    assert web.call("GET", FUNCTIONS_PATH, user=None).status == 401
    bad = web.call("GET", FUNCTIONS_PATH, user=None, **{REST_TOKEN_HEADER: "AAAA"})
    assert bad.status == 401 and REST_TOKEN_HEADER in remote(bad)[2]
    assert web.call("POST", f"{FUNCTIONS_PATH}/hello", BODY, user=None).status == 401
    assert web.rig.events.registry.names() == []


def test_a_wrong_method_is_405_and_an_unknown_path_404(web: Site) -> None:
    assert web.call("POST", FUNCTIONS_PATH, BODY).status == 405
    assert web.call("PUT", f"{FUNCTIONS_PATH}/hello", BODY).status == 405
    assert remote(web.call("GET", f"{FUNCTIONS_PATH}/hello/nothing"))[:2] == (404, NOT_FOUND[0])
    assert remote(web.call("GET", "/ws/v1/cortex/events/nothing"))[:2] == (404, NOT_FOUND[0])
    assert web.call("GET", "/ws/v1/cluster/info").status == 200  # the RM's own API is untouched


def test_an_action_below_a_function_goes_to_the_resource_mounted_for_it(web: Site) -> None:
    """``add_action(b"trigger", make)``: ``functions/{name}/trigger`` is ``make(name)``'s."""

    class Trigger(Resource):
        isLeaf = True

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def render_POST(self, request: Any) -> bytes:  # noqa: N802 (twisted.web's name)
            return json.dumps({"triggered": self.name}).encode()

    web.functions.add_action(b"trigger", Trigger)
    assert web.call("POST", f"{FUNCTIONS_PATH}/hello/trigger", {"x": 1}).json() == {"triggered": "hello"}


def test_a_nodes_registry_resource_redirects_to_the_rm() -> None:
    events = EventsResource()
    mount_registry(events, None, None, rm_web_address=lambda: defer.succeed("rm.example:8088"))
    site = RestSite(_ws(events), limits=API_LIMITS, clock=RegistryRig().clock)
    conn = HttpConnection(site)
    conn.send("POST", f"{FUNCTIONS_PATH}/hello?x=1", json.dumps(BODY).encode(), {"Content-Type": "application/json"})
    response = conn.response()
    assert response is not None and response.status == 307
    assert response.headers["location"] == f"http://rm.example:8088{FUNCTIONS_PATH}/hello?x=1"


def _ws(events: Resource) -> Resource:
    root, ws, v1, cortex = Resource(), Resource(), Resource(), Resource()
    root.putChild(b"ws", ws)
    ws.putChild(b"v1", v1)
    v1.putChild(b"cortex", cortex)
    cortex.putChild(b"events", events)
    return root


def test_the_rm_takes_requests_signed_for_it_once_on_the_ring_and_its_401_names_it(web: Site) -> None:
    alice = web.rig.token_proto("alice")
    wall = lambda: int(web.rig.clock.seconds() * 1000)  # noqa: E731
    body = json.dumps(BODY).encode()
    target = f"{FUNCTIONS_PATH}/hello"

    def signed(node: int, method: str = "POST", data: bytes = body, host: str = "rm.test:8088") -> dict[str, str]:
        return {"Authorization": sign(alice.identifier, alice.password, node, method, host, target, data, wall())}

    off_ring = web.call("POST", target, body, user=None, **signed(IDENTITY.ring_id))
    assert off_ring.status == 401 and "not on the ring yet" in remote(off_ring)[2]
    rm_id = IDENTITY.ring_id
    issuer = AssertionIssuer(IDENTITY.key, wall)
    checks = rm_caller_checks(web.rig.auth, issuer, rm_id, lambda: ("rm.test:8088",), web.rig.clock, wall, lambda a: None)
    web.functions.signed, web.functions.ring_id_hex = checks.user_of, f"{rm_id:040x}"
    created = web.call("POST", target, body, user=None, **signed(rm_id))
    assert created.status == 200 and created.json()["function"]["owner"] == "alice"
    assert web.call("GET", target, user=None, **signed(rm_id, "GET", b"")).json()["function"]["version"] == 1
    tampered = signed(rm_id)
    wrong_body = web.call("POST", target, json.dumps({**BODY, "replicas": 3}).encode(), user=None, **tampered)
    assert wrong_body.status == 401 and "does not match" in remote(wrong_body)[2]
    for refused in (web.call("GET", target, user=None), wrong_body):
        assert refused.headers["www-authenticate"] == f'Cortex-HMAC-SHA256 node="{rm_id:040x}"'
        assert refused.headers["cortex-ring-id"] == f"{rm_id:040x}"
    other = web.call("GET", target, user=None, **signed(rm_id + 1, "GET", b""))
    assert other.status == 401 and "signed for node" in remote(other)[2]
    relayed = web.call("GET", target, user=None, **signed(rm_id, "GET", b"", host="10.0.0.5:8042"))
    assert relayed.status == 401 and "does not match" in remote(relayed)[2]  # made at a node, relayed with our Host
    elsewhere = HttpConnection(web.site, host="10.0.0.5:8042")  # ... or with the node's
    elsewhere.send("GET", target, b"", signed(rm_id, "GET", b"", host="10.0.0.5:8042"))
    answer = elsewhere.response()
    assert answer is not None and answer.status == 401 and "addressed to '10.0.0.5:8042'" in remote(answer)[2]
