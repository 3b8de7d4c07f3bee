"""Fuzzing the NodeManager's web services (``/ws/v1/node/...``): containers, applications, logs.

Random methods, paths (container and application ids valid, unknown or garbage, log
file names with dots, slashes and bytes that are not UTF-8) and query parameters
(``size``, ``format``, ``state``, ``user``) against the NM's real Site, its containers'
log dirs real dirs: every answer is complete and not a server error; an error is
YARN's ``RemoteException`` JSON; nothing is logged as a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.container.launch import NodeFacts, container_paths
from cortex_rm.container.nm_container import NMContainer, NMContainerState
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api.nm_log_files import parse_size
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.status_page.node_page import NodeInfo
from cortex_rm.yarn_api.nm_rest import build_nm_site
from cortex_rm.yarn_api.nm_viewers import ViewTickets, view_ticket
from cortex_rm.yarn_api.rest_errors import RestError
from tests.fuzz.fuzzing import failures_logged, fuzz_settings
from tests.fuzz.messages import texts
from tests.support.http_site import HttpConnection

APP = ApplicationId(1_700_000_000_000, 7)
NODE = NodeFacts(nm_host="nm.test", nm_port=45454, nm_http_port=8042, java_home="/usr/lib/jvm/java")
INFO = NodeInfo(node_id="nm.test", host="nm.test", memory_mb=4096, vcores=4, started_ms=1, version="1.0")
CONTAINERS = [ContainerId(ApplicationAttemptId(APP, 1), seq) for seq in (1, 2)]
KEY = MasterKey(4, b"v" * 32)
TICKET = view_ticket(KEY, APP, "alice", "nm.test:45454", 0)[0]  # the node's clock stays at 0


def _now(fn: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn)


@dataclass
class FakeNode:
    """What the web services read of a ContainerManager; file work runs at once."""

    containers: dict[ContainerId, NMContainer] = field(default_factory=dict)
    node: NodeFacts = NODE
    run: Callable[[Callable[[], Any]], defer.Deferred[Any]] = _now

    def application_cleaned_up(self, app_id: ApplicationId) -> bool:
        return False


@pytest.fixture(scope="module")
def nm_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The NM's Site with a running and a finished container, each with stdout and stderr
    (read-only for the fuzzer, so one site serves every example)."""
    tmp = tmp_path_factory.mktemp("nm-fuzz")
    manager = FakeNode()
    for c_id, state in zip(CONTAINERS, (NMContainerState.RUNNING, NMContainerState.DONE)):
        paths = container_paths([tmp / "local"], [tmp / "logs"], "alice", str(APP), str(c_id), 0)
        for d in paths.log_dirs:
            d.mkdir(parents=True, exist_ok=True)
        (paths.log_dir / "stdout").write_bytes(b"out\n" * 100)
        (paths.log_dir / "stderr").write_bytes(b"")
        manager.containers[c_id] = NMContainer(c_id, "alice", Resource(1024, 1), paths, [], state=state)
    clock = Clock()
    viewers = ViewTickets("nm.test:45454", lambda: {KEY.key_id: KEY}, lambda: 0)
    yield build_nm_site(INFO, lambda: 5, containers=lambda: manager, viewers=viewers, clock=clock)


IDS = st.sampled_from(
    [str(CONTAINERS[0]), str(CONTAINERS[1]), "container_1700000000000_0007_01_000099", str(APP), "application_1_1", "x"]
)
SEGMENTS = st.one_of(
    IDS,
    st.sampled_from(["stdout", "stderr", "..", ".", "%2e%2e", "%2F", "%ff", "nope", "", "syslog.1"]),
    texts(12).map(lambda t: quote(t, safe="")),
)
# (/ws/v1/node and /info are fuzzed with GET and HEAD only: see the 405 test at the end.)
ROUTES = [
    ["containers"], ["containers", "*"], ["containers", "*", "logs"], ["containers", "*", "logs", "*"],
    ["containerlogs", "*", "*"], ["apps"], ["apps", "*"], ["info"], [""], ["nope", "*"],
]  # fmt: skip
_NODE_INFO = ("/ws/v1/node/info", "/ws/v1/node/")
QUERY_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "10",
            "-10",
            "99999999999999999999",
            "\u0661",
            "1e3",
            "text",
            "octet-stream",
            "RUNNING",
            "alice",
            "%ff",
        ]
    ),
    texts(10),
)


@st.composite
def targets(draw: st.DrawFn) -> str:
    route = draw(st.sampled_from(ROUTES))
    segments = [draw(SEGMENTS) if part == "*" else part for part in route]
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(["size", "format", "state", "user", "x"]), QUERY_VALUES), max_size=3)
    )
    query = "&".join(f"{k}={v if v == '%ff' else quote(v, safe='')}" for k, v in pairs)
    return "/ws/v1/node/" + "/".join(segments) + (f"?{query}" if query else "")


@fuzz_settings(210)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]),
    target=targets(),
    token=st.one_of(st.sampled_from([TICKET, "", "junk", TICKET[:-3] + "AAA"]), texts(20).filter(str.isprintable)),
)
@example(method="GET", token=TICKET, target=f"/ws/v1/node/containers/{CONTAINERS[0]}/logs/stdout?size=%D9%A1%D9%A2").via(
    "a size in Arabic digits"
)
@example(method="GET", token=TICKET, target=f"/ws/v1/node/containerlogs/{CONTAINERS[1]}/%ff").via("a file name that is not UTF-8")
def test_any_nm_request_is_answered_without_a_server_error(nm_site: Any, method: str, target: str, token: str) -> None:
    """Any method, route, id, file name, query and credential: a complete answer, never 5xx; errors in YARN's form."""
    if target.split("?")[0] in _NODE_INFO and method not in ("GET", "HEAD"):
        method = "GET"
    connection = HttpConnection(nm_site, "nm.test:8042")
    with failures_logged() as logged:
        connection.send(method, target + ("&" if "?" in target else "?") + f"ticket={quote(token, safe='')}")
    response = connection.response()
    connection.close()
    assert response is not None, f"{method} {target}: no complete answer"
    assert response.status < 500, (response.status, response.body)
    if response.status >= 400 and method != "HEAD":
        assert response.headers["content-type"].startswith("application/json")
        assert {"exception", "message", "javaClassName"} <= set(response.json()["RemoteException"])
    assert not logged, logged[0]


@fuzz_settings(140)
@given(text=st.one_of(st.none(), QUERY_VALUES, st.text(alphabet="0123456789+-\u0661\u00b2 ", max_size=25)))
def test_log_sizes_parse_or_are_bad_requests(text: str | None) -> None:
    """parse_size: None, an integer, or RestError 400."""
    try:
        size = parse_size(text)
    except RestError as error:
        assert error.status == 400
        return
    assert size is None or isinstance(size, int)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_on_node_info_are_405_in_yarns_form(nm_site: Any, method: str) -> None:
    """A found input: a write method on /ws/v1/node/info is refused 405 in YARN's JSON form, not 501 HTML."""
    connection = HttpConnection(nm_site, "nm.test:8042")
    connection.send(method, "/ws/v1/node/info")
    response = connection.response()
    assert response is not None
    assert response.status == 405 and response.headers["content-type"].startswith("application/json")
