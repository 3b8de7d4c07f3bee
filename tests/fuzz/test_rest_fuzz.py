"""Fuzzing the RM's REST API: random requests through its twisted.web Site, in memory.

Every request (any method, any route with random parameters, a random query string,
a random or mutated body, any Content-Type) gets a complete answer that is not a
server error: 2xx/3xx, or 4xx in YARN's JSON ``RemoteException`` form; and nothing is
logged as a failure.  The submission body is fuzzed both as random JSON and as the
documented distributed-shell body with values replaced anywhere in its tree, or its
bytes mutated.  ``rest_submit``'s own readers are fuzzed directly too.
"""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.state_store import StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.delegation_tokens import to_url_string
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from cortex_rm.allocator.app_model import SchedulerLimits, Submission
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api.rest import build_rest_site
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.rest_services import ROUTES
from cortex_rm.yarn_api.rest_submit import submission_context_from_json, url_from_string
from tests.fuzz.fuzzing import failures_logged, fuzz_settings, mutated
from tests.fuzz.messages import texts
from tests.support.http_site import HttpConnection, HttpResponse
from tests.support.rm_core import result_of

START_S = 1_700_000_000
NODE = NodeId("127.0.0.1", 45454)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(12), inner, max_size=4),
    max_leaves=12,
)


class Site:
    """An RM at START_S with one node, a submitted and a new application, and its REST site."""

    def __init__(self) -> None:
        clock = Clock()
        clock.advance(START_S)
        apps = result_of(ApplicationTable.recover(clock, MemoryStateStore(), QueueTree(), SchedulerLimits()))
        nodes = NodeTable()
        nodes.register(NODE, "127.0.0.1:8042", Resource(8192, 8), START_S * 1000)
        self.rm = RMContext(clock, apps, nodes, START_S * 1000)
        submitted = result_of(apps.new_application("alice"))
        result_of(apps.submit(Submission(submitted, "alice")))
        self.submitted, self.new = str(submitted), str(result_of(apps.new_application("alice")))
        credentials = UserCredentials(MasterKey(2, b"f" * 20), MemoryStateStore(), StoredState(), lambda: 0)
        auth = UserAuthenticator(credentials)
        self.site = build_rest_site(
            self.rm, version="0", max_body_bytes=64 * 1024, auth=auth, access=AppAccess(["admin"], apps.queues)
        )
        [(_, token), _] = auth.tokens_for(result_of(credentials.issue("alice")), "127.0.0.1:1", "127.0.0.1:2")
        self.site.test_headers = {REST_TOKEN_HEADER: to_url_string(token)}  # alice, who owns the submitted app
        [(_, bobs), _] = auth.tokens_for(result_of(credentials.issue("bob")), "127.0.0.1:1", "127.0.0.1:2")
        self.callers = {"alice": self.site.test_headers, "bob": {REST_TOKEN_HEADER: to_url_string(bobs)}, "anonymous": {}}

    def as_caller(self, caller: str) -> None:
        """Send the next requests with ``caller``'s credential (none for "anonymous")."""
        self.site.test_headers = self.callers[caller]

    def applications(self) -> dict[str, dict[str, Any]]:
        """Every application the RM knows, as its state store would keep it."""
        return {str(a.app_id): a.to_document() for a in self.rm.apps}

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> HttpResponse:
        """One request on a fresh connection; the answer must be complete at once (a memory store)."""
        connection = HttpConnection(self.site)
        connection.send(method, path, body, headers)
        self.rm.clock.advance(0)  # type: ignore[attr-defined]
        response = connection.response()
        assert response is not None, f"{method} {path} got no complete response"
        return response


def check_answer(response: HttpResponse, method: str) -> None:
    """No server error; an error is JSON in YARN's RemoteException form (HEAD: no body at all)."""
    assert response.status < 500, response.body
    if response.status >= 400 and method != "HEAD":
        assert response.headers["content-type"].startswith("application/json"), response.headers
        error = response.json()["RemoteException"]
        assert {"exception", "message", "javaClassName"} <= set(error)
        assert error["javaClassName"].endswith("." + error["exception"])


def distributed_shell_body(app_id: str) -> dict[str, Any]:
    """The submit body of Hadoop's REST documentation, with every section."""
    return {
        "application-id": app_id,
        "application-name": "test",
        "queue": "default",
        "priority": 0,
        "am-container-spec": {
            "local-resources": {
                "entry": [
                    {
                        "key": "AppMaster.jar",
                        "value": {
                            "resource": "hdfs://hdfs-namenode:9000/user/testuser/AppMaster.jar",
                            "type": "FILE",
                            "visibility": "APPLICATION",
                            "size": 43004,
                            "timestamp": 1405452071209,
                        },
                    }
                ]
            },
            "commands": {"command": "{{JAVA_HOME}}/bin/java -Xmx10m AppMaster 1><LOG_DIR>/stdout"},
            "environment": {"entry": [{"key": "CLASSPATH", "value": "{{CLASSPATH}}<CPS>./*"}]},
            "service-data": {"entry": [{"key": "test", "value": "dmFsdWUxMg"}]},
            "credentials": {"tokens": {}, "secrets": {"entry": [{"key": "secret1", "value": "c2VjcmV0MQ"}]}},
            "application-acls": {"entry": [{"key": "VIEW_APP", "value": "testuser3"}]},
        },
        "unmanaged-AM": False,
        "max-app-attempts": 2,
        "resource": {"memory": 1024, "vCores": 1},
        "application-type": "YARN",
        "keep-containers-across-application-attempts": False,
        "application-tags": {"tag": ["a", "b"]},
        "log-aggregation-context": {"log-include-pattern": "file1"},
        "attempt-failures-validity-interval": 3600000,
        "reservation-id": "reservation_1454114874_1",
        "am-black-listing-requests": {"am-black-listing-enabled": True, "disable-failure-threshold": 0.01},
    }


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a JSON tree (dict keys and list indexes)."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


def _edited(document: Any, edits: list[tuple[int, Any]]) -> Any:
    """``document`` with the values at some of its paths (chosen by index) replaced."""
    document = copy.deepcopy(document)
    for choice, value in edits:
        paths = _paths(document)
        path = paths[choice % len(paths)]
        if not path:
            document = value
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = value
    return document


SAMPLE = distributed_shell_body("application_1700000000000_0002")
submit_documents = st.builds(
    _edited, st.just(SAMPLE), st.lists(st.tuples(st.integers(0, 200), JSON), min_size=1, max_size=3)
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["json", "edited", "mutated", "bytes", "empty"]))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "edited":
        return json.dumps(draw(submit_documents)).encode()
    if kind == "mutated":
        return draw(mutated(st.just(json.dumps(SAMPLE).encode()), max_mutations=3))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    return b""


def _segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


OTHER_PATHS = [
    "/",
    "/cluster",
    "/cluster/",
    "/ws",
    "/ws/v1",
    "/ws/v2/cluster/info",
    "/jmx",
    "/%ff",
    "/ws/v1/cluster/%ff",
]
OVERVIEW_PAGES = ("/", "/cluster", "/cluster/")  # fuzzed with GET and HEAD only: see the 405 test at the end


@st.composite
def paths(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(OTHER_PATHS))
    pattern, _ = draw(st.sampled_from(ROUTES))
    segments = []
    for part in pattern:
        if part != "*":
            segments.append(part)
            continue
        segments.append(
            draw(
                st.sampled_from(
                    [
                        "application_1700000000000_0001",
                        "application_1700000000000_0002",
                        "application_1700000000000_9999",
                        str(NODE),
                        "application_99999999999999999999_1",
                        "appattempt_1_1_1",
                    ]
                )
                | texts(20).map(_segment)
            )
        )
    tail = draw(st.sampled_from(["", "/"]))
    return "/ws/v1/cluster/" + "/".join(segments) + tail


QUERY_NAMES = [
    "user.name", "limit", "states", "state", "finalStatus", "queue", "user", "applicationTypes", "applicationTags",
    "name", "startedTimeBegin", "startedTimeEnd", "finishedTimeBegin", "finishedTimeEnd", "deSelects",
]  # fmt: skip
query_values = st.one_of(
    st.sampled_from(
        ["", "0", "-1", "1", "9" * 30, "RUNNING,ACCEPTED", "killed", "resourceRequests", "default", "%ff", "1e3"]
    ),
    texts(16),
)


@st.composite
def queries(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | texts(6), query_values), max_size=4))
    raw = "&".join(f"{_segment(k)}={_segment(v) if v != '%ff' else v}" for k, v in pairs)
    return "?" + raw if raw else ""


content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/xml",
        "",
        "application/vnd+json",
    ]
)


@fuzz_settings(210)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
    path=paths(),
    query=queries(),
    body=bodies(),
    content_type=content_types,
)
@example(
    method="POST",
    path="/ws/v1/cluster/apps",
    query="",
    body=json.dumps({**SAMPLE, "reservation-id": "reservation_" + "1" * 4400 + "_1"}).encode(),
    content_type="application/json",
).via("a reservation id too long for int()")
@example(
    method="POST",
    path="/ws/v1/cluster/apps",
    query="",
    body=json.dumps(
        {
            **SAMPLE,
            "am-container-spec": {
                "local-resources": {"entry": [{"key": "a", "value": {"resource": "hdfs://h:\u00b2/x"}}]}
            },
        }
    ).encode(),
    content_type="application/json",
).via("a local resource URL whose port is a superscript digit")
def test_any_request_is_answered_without_a_server_error(
    method: str, path: str, query: str, body: bytes, content_type: str | None
) -> None:
    """Any method, route, query, body and Content-Type: a complete answer, never 5xx, errors in YARN's form."""
    if path in OVERVIEW_PAGES and method not in ("GET", "HEAD"):
        method = "GET"
    site = Site()
    headers = {} if content_type is None else {"Content-Type": content_type}
    with failures_logged() as logged:
        response = site.request(method, path + query, body, headers)
    check_answer(response, method)
    assert not logged, logged[0]


@fuzz_settings(150)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=paths(),
    query=queries(),
    body=bodies(),
    content_type=content_types,
    caller=st.sampled_from(["bob", "anonymous"]),
)
@example(method="PUT", path="/ws/v1/cluster/apps/application_1700000000000_0001/state", query="", body=b'{"state": "KILLED"}', content_type="application/json", caller="bob")
@example(method="PUT", path="/ws/v1/cluster/apps/application_1700000000000_0001/queue", query="", body=b'{"queue": "default"}', content_type="application/json", caller="bob")
@example(method="PUT", path="/ws/v1/cluster/apps/application_1700000000000_0001/priority", query="", body=b'{"priority": 5}', content_type="application/json", caller="bob")
@example(method="POST", path="/ws/v1/cluster/apps", query="", body=json.dumps({**SAMPLE, "application-id": "application_1700000000000_0002"}).encode(), content_type="application/json", caller="bob")
@example(method="PUT", path="/ws/v1/cluster/apps/application_1700000000000_0001/state", query="", body=b'{"state": "KILLED"}', content_type="application/json", caller="anonymous")
@example(method="PUT", path="/ws/v1/cluster/apps/application_1700000000000_0001/queue", query="", body=b'{"queue": "default"}', content_type="application/json", caller="anonymous")
@example(method="PUT", path="/ws/v1/cluster/apps/application_1700000000000_0001/priority", query="", body=b'{"priority": 5}', content_type="application/json", caller="anonymous")
@example(method="POST", path="/ws/v1/cluster/apps", query="", body=json.dumps({**SAMPLE, "application-id": "application_1700000000000_0002"}).encode(), content_type="application/json", caller="anonymous")  # fmt: skip
def test_another_user_or_nobody_changes_nothing_of_alices_and_nobody_sees_it(
    method: str, path: str, query: str, body: bytes, content_type: str | None, caller: str
) -> None:
    """As bob or with no credential, any request leaves alice's applications (the submitted one
    and the id issued to her) as they were; with no credential, nothing names her application."""
    if path in OVERVIEW_PAGES:
        method = "GET"
    site = Site()
    before = site.applications()
    site.as_caller(caller)
    headers = {} if content_type is None else {"Content-Type": content_type}
    with failures_logged() as logged:
        response = site.request(method, path + query, body, headers)
    check_answer(response, method)
    assert not logged, logged[0]
    after = site.applications()
    assert {k: v for k, v in after.items() if v["user"] == "alice"} == before
    if caller == "anonymous":
        assert after == before
        assert site.submitted.encode() not in response.body or response.status >= 400


@fuzz_settings(210)
@given(document=st.one_of(submit_documents, JSON))
def test_submission_bodies_convert_or_are_rest_errors(document: Any) -> None:
    """submission_context_from_json over any JSON value: a complete context, or RestError 4xx."""
    try:
        context = submission_context_from_json(document, Resource(8192, 8))
    except RestError as error:
        assert 400 <= error.status < 500
        return
    context.SerializeToString()  # every required field set


@fuzz_settings(210)
@given(
    text=st.one_of(
        texts(40),
        st.builds(
            lambda scheme, host, port, path: f"{scheme}://{host}:{port}{path}",
            st.sampled_from(["hdfs", "file", "http", ""]),
            st.sampled_from(["h", "[::1]", "[::1", "u@h", ""]) | texts(8),
            st.sampled_from(["", "0", "65536", "\u00b2", "\u0661", "-1", "9" * 40]) | texts(4),
            texts(8),
        ),
    )
)
@example(text="hdfs://h:\u00b2/x").via("a superscript digit as the port")
@example(text="hdfs://[::1]:\u00b9/x").via("a superscript digit as an IPv6 literal's port")
def test_resource_urls_parse_or_are_bad_requests(text: str) -> None:
    """url_from_string: a URLProto with a port of -1 or 0..65535, or RestError 400."""
    try:
        url = url_from_string(text, "resource")
    except RestError as error:
        assert error.status == 400
        return
    assert url.port == -1 or 0 <= url.port <= 65535


@pytest.mark.parametrize(("method", "path"), [("POST", "/"), ("PUT", "/"), ("DELETE", "/cluster")])
def test_write_methods_on_the_overview_page_are_405_in_yarns_form(method: str, path: str) -> None:
    """A found input: a write method on the overview page is refused 405 in YARN's JSON form."""
    response = Site().request(method, path, b"", {})
    assert response.status == 405
    check_answer(response, method)
