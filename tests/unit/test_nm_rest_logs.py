"""The NodeManager's containers, applications and container logs over REST (``nm_rest_containers``).

Requests are raw HTTP written into the NM's real ``Site`` (``build_nm_site``) over a
``StringTransport``; the containers are ``NMContainer``s whose log dirs are real dirs
under ``tmp_path``; file work goes through a runner the test drives (inline, or queued
and released read by read to watch the streaming).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cortex_rm.container.launch import NodeFacts, container_paths
from cortex_rm.container.nm_container import NMContainer, NMContainerState
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api.nm_log_files import CHUNK_BYTES, log_range, yarn_time
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.status_page.node_page import NodeInfo
from cortex_rm.yarn_api.nm_rest import build_nm_site
from cortex_rm.yarn_api.nm_viewers import VIEW_TICKET_MS, ViewTickets, view_ticket
from tests.support.http_site import HttpConnection, HttpResponse

APP = ApplicationId(1_700_000_000_000, 7)
ATTEMPT = ApplicationAttemptId(APP, 1)
NODE = NodeFacts(nm_host="nm.test", nm_port=45454, nm_http_port=8042, java_home="/usr/lib/jvm/java")
INFO = NodeInfo(node_id="nm.test", host="nm.test", memory_mb=4096, vcores=4, started_ms=1, version="1.0")
S = NMContainerState


def cid(seq: int, app: ApplicationId = APP) -> ContainerId:
    return ContainerId(ApplicationAttemptId(app, 1), seq)


def run_now(fn: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn)


class HeldRunner:
    """A runner that keeps each piece of work until the test releases it (and counts them)."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], defer.Deferred[Any]]] = []
        self.calls = 0

    def __call__(self, fn: Callable[[], Any]) -> defer.Deferred[Any]:
        self.calls += 1
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append((fn, d))
        return d

    def step(self) -> Any:
        fn, d = self.pending.pop(0)
        result = fn()
        d.callback(result)
        return result

    def drain(self) -> None:
        while self.pending:
            self.step()


@dataclass
class FakeNode:
    """What the REST API reads of a ContainerManager."""

    run: Runner
    containers: dict[ContainerId, NMContainer] = field(default_factory=dict)
    node: NodeFacts = NODE
    cleaned: set[ApplicationId] = field(default_factory=set)

    def application_cleaned_up(self, app_id: ApplicationId) -> bool:
        return app_id in self.cleaned


@dataclass
class Node:
    tmp: Path
    manager: FakeNode
    site: Any
    log_roots: tuple[Path, ...]

    def add(
        self, seq: int, state: NMContainerState = S.RUNNING, user: str = "alice", app: ApplicationId = APP, **files: bytes
    ) -> NMContainer:
        """A container of ``app`` in ``state`` whose first log dir holds ``files`` (``stdout=b"..."``)."""
        c_id = cid(seq, app)
        paths = container_paths(
            [self.tmp / "local"], list(self.log_roots), user, str(c_id.attempt_id.app_id), str(c_id), 0
        )
        for d in paths.log_dirs:
            d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (paths.log_dir / name).write_bytes(data)
        c = NMContainer(c_id, user, Resource(1024, 2), paths, [], state=state)
        self.manager.containers[c_id] = c
        return c


OTHER = ApplicationId(1_700_000_000_000, 8)
KEY = MasterKey(4, b"v" * 32)  # the key the RM signs tickets with, as the node holds it
CLOCK_MS = 1_000_000


def ticket(app: ApplicationId = APP, node: str = "nm.test:45454", key: MasterKey = KEY, now_ms: int = CLOCK_MS) -> str:
    """A view ticket as the RM's POST /cortex/apps/{app}/view-ticket signs it."""
    return view_ticket(key, app, "alice", node, now_ms)[0]


def nm_site(containers: Any, clock: Clock | None = None) -> Any:
    """The NM's site (NodeId nm.test:45454) taking view tickets signed with KEY; its clock starts at CLOCK_MS."""
    clock = clock or Clock()
    clock.advance(CLOCK_MS / 1000)
    viewers = ViewTickets("nm.test:45454", lambda: {KEY.key_id: KEY}, lambda: int(clock.seconds() * 1000))
    return build_nm_site(INFO, lambda: 5, containers=containers, viewers=viewers, clock=clock)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    roots = (tmp_path / "logs1", tmp_path / "logs2")
    manager = FakeNode(run_now)
    return Node(tmp_path, manager, nm_site(lambda: manager), roots)


def get(
    site: Any, target: str, method: str = "GET", headers: dict[str, str] | None = None, view: str | None = ""
) -> HttpResponse:
    """``target`` with a view ticket for APP added (``view``: another one; None: none)."""
    if view is not None and "ticket=" not in target:
        target += ("&" if "?" in target else "?") + f"ticket={view or ticket()}"
    conn = HttpConnection(site, "nm.test:8042")
    conn.send(method, target, headers=headers)
    response = conn.response()
    assert response is not None, f"{method} {target} got no complete response"
    return response


def assert_error(
    response: HttpResponse, status: int, exception: str, package: str = "org.apache.hadoop.yarn.webapp"
) -> str:
    """YARN's RemoteException form; its message."""
    assert response.status == status, response.body
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["RemoteException"]
    assert error["exception"] == exception
    assert error["javaClassName"] == f"{package}.{exception}"
    return str(error["message"])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------ pure parts


def test_times_are_formatted_as_hadoops_times_format() -> None:
    """``lastModifiedTime`` and ``LogLastModifiedTime`` read as Hadoop's ``Times.format`` writes them."""
    assert yarn_time(1_585_100_823_000, timezone(timedelta(hours=8))) == "Wed Mar 25 09:47:03 +0800 2020"
    assert yarn_time(1_585_100_823_000, UTC) == "Wed Mar 25 01:47:03 +0000 2020"
    assert yarn_time(0) == "N/A"


@pytest.mark.parametrize(
    ("length", "size", "expected"),
    [
        (100, None, (0, 100)),
        (100, 10, (0, 10)),
        (100, -10, (90, 10)),
        (100, 0, (0, 0)),
        (100, 1000, (0, 100)),
        (100, -1000, (0, 100)),
        (100, -100, (0, 100)),
        (0, -5, (0, 0)),
    ],
)
def test_size_picks_the_first_or_last_bytes_as_hadoop(length: int, size: int | None, expected: tuple[int, int]) -> None:
    """Negative ``size``: the last ``-size`` bytes; positive: the first ``size``; never past the file."""
    assert log_range(length, size) == expected


@given(st.integers(0, 1 << 40), st.one_of(st.none(), st.integers(-(1 << 41), 1 << 41)))
def test_the_range_always_lies_in_the_file(length: int, size: int | None) -> None:
    """Whatever ``size`` is, the bytes sent are inside the file and at most ``|size|`` of them."""
    offset, count = log_range(length, size)
    assert 0 <= offset and 0 <= count and offset + count <= length
    if size is not None:
        assert count == min(abs(size), length)
        assert offset == (length - count if size < 0 else 0)


# ------------------------------------------------------------------ containers and applications


def test_containers_are_listed_in_yarns_container_info_shape(node: Node) -> None:
    """``/ws/v1/node/containers`` lists every container with YARN's ContainerInfo fields, its log files included."""
    running = node.add(1, stdout=b"out", stderr=b"")
    done = node.add(2, S.DONE, user="bob")
    done.exit_status = 143
    done.diagnostics.append("Container killed on request. Exit code is 143")
    body = get(node.site, "/ws/v1/node/containers").json()
    assert body == {
        "containers": {
            "container": [
                {
                    "id": str(running.container_id),
                    "state": "RUNNING",
                    "exitCode": -1000,
                    "diagnostics": "",
                    "user": "alice",
                    "totalMemoryNeededMB": 1024,
                    "totalVCoresNeeded": 2,
                    "containerLogsLink": f"http://nm.test:8042/ws/v1/node/containers/{running.container_id}/logs",
                    "nodeId": "nm.test:45454",
                    "containerLogFiles": ["stderr", "stdout"],
                },
                {
                    "id": str(done.container_id),
                    "state": "DONE",
                    "exitCode": 143,
                    "diagnostics": "Container killed on request. Exit code is 143",
                    "user": "bob",
                    "totalMemoryNeededMB": 1024,
                    "totalVCoresNeeded": 2,
                    "containerLogsLink": f"http://nm.test:8042/ws/v1/node/containers/{done.container_id}/logs",
                    "nodeId": "nm.test:45454",
                    "containerLogFiles": [],
                },
            ]
        }
    }
    one = get(node.site, f"/ws/v1/node/containers/{running.container_id}/").json()
    assert one == {"container": body["containers"]["container"][0]}


def test_before_the_container_manager_exists_the_node_has_no_containers(tmp_path: Path) -> None:
    """The site starts before the ContainerManager: lists are empty and every container is unknown."""
    site = nm_site(lambda: None)
    assert get(site, "/ws/v1/node/containers").json() == {"containers": {"container": []}}
    assert get(site, "/ws/v1/node/apps").json() == {"apps": {"app": []}}
    assert_error(get(site, f"/ws/v1/node/containers/{cid(1)}/logs"), 404, "NotFoundException")
    assert_error(get(site, f"/ws/v1/node/containerlogs/{cid(1)}/stdout"), 404, "NotFoundException")
    assert get(site, "/ws/v1/node/info").json()["nodeInfo"]["id"] == "nm.test"


@pytest.mark.parametrize("suffix", ["", "/logs", "/logs/stdout"])
def test_a_malformed_container_id_is_a_bad_request_and_an_unknown_one_not_found(node: Node, suffix: str) -> None:
    """As NMWebServices: ``invalid container id, X`` (400) and ``container with id, X, not found`` (404)."""
    node.add(1, stdout=b"x")
    message = assert_error(
        get(node.site, f"/ws/v1/node/containers/container_bogus{suffix}"), 400, "BadRequestException"
    )
    assert message == "invalid container id, container_bogus"
    message = assert_error(get(node.site, f"/ws/v1/node/containers/{cid(9)}{suffix}"), 404, "NotFoundException")
    assert message == f"container with id, {cid(9)}, not found"


def test_applications_are_listed_with_their_containers_and_state(node: Node) -> None:
    """``/ws/v1/node/apps``: YARN's AppInfo, RUNNING until the RM has it cleaned up, then
    FINISHING_CONTAINERS_WAIT while a container still ends and FINISHED; ``state`` and ``user`` filter."""
    node.add(2)
    node.add(1, S.DONE)
    other = ApplicationId(APP.cluster_timestamp, 8)
    c = node.add(3, S.DONE, user="bob")
    del node.manager.containers[c.container_id]
    c.container_id = cid(1, other)
    node.manager.containers[c.container_id] = c
    node.manager.cleaned.add(other)
    seen = ticket(other)  # a view ticket shows its own application only
    apps = get(node.site, "/ws/v1/node/apps").json()["apps"]["app"] + get(node.site, "/ws/v1/node/apps", view=seen).json()["apps"]["app"]
    assert apps == [
        {"id": str(APP), "state": "RUNNING", "user": "alice", "containerids": [str(cid(1)), str(cid(2))]},
        {"id": str(other), "state": "FINISHED", "user": "bob", "containerids": [str(cid(1, other))]},
    ]
    assert get(node.site, "/ws/v1/node/apps?state=finished", view=seen).json()["apps"]["app"] == apps[1:]
    assert get(node.site, "/ws/v1/node/apps?state=finished").json()["apps"]["app"] == []
    assert get(node.site, "/ws/v1/node/apps?user=alice").json()["apps"]["app"] == apps[:1]
    assert get(node.site, f"/ws/v1/node/apps/{other}", view=seen).json() == {"app": apps[1]}
    node.manager.cleaned.add(APP)
    assert get(node.site, f"/ws/v1/node/apps/{APP}").json()["app"]["state"] == "FINISHING_CONTAINERS_WAIT"
    assert_error(get(node.site, "/ws/v1/node/apps?state=DANCING"), 400, "BadRequestException")
    assert_error(get(node.site, "/ws/v1/node/apps?user="), 400, "BadRequestException")
    assert_error(get(node.site, "/ws/v1/node/apps/application_x"), 400, "BadRequestException")
    unknown = ApplicationId(1, 1)
    message = assert_error(get(node.site, f"/ws/v1/node/apps/{unknown}", view=ticket(unknown)), 404, "NotFoundException")
    assert message == f"app with id {ApplicationId(1, 1)} not found"


def test_other_paths_and_methods_are_refused_in_yarns_error_form(node: Node) -> None:
    """Unknown paths under /ws/v1/node are a JSON 404; methods other than GET and HEAD a 405 with Allow."""
    c = node.add(1, stdout=b"x")
    assert_error(get(node.site, "/ws/v1/node/nothing"), 404, "NotFoundException")
    assert_error(get(node.site, "/ws/v1/node/info/containers"), 404, "NotFoundException")
    assert_error(get(node.site, f"/ws/v1/node/containers/{c.container_id}/logs/stdout/more"), 404, "NotFoundException")
    refused = get(node.site, f"/ws/v1/node/containers/{c.container_id}/logs/stdout", method="DELETE")
    assert_error(refused, 405, "WebApplicationException", "javax.ws.rs")
    assert refused.headers["allow"] == "GET, HEAD"
    assert get(node.site, "/ws/v1/node/").json()["nodeInfo"]["nodeHostName"] == "nm.test"


# ------------------------------------------------------------------ listing the logs


def test_logs_are_listed_as_container_logs_info_over_every_log_dir(node: Node) -> None:
    """``containers/{id}/logs``: one LOCAL ContainerLogsInfo with each file's name, size (a string)
    and modification time, from each of the container's log dirs; dirs and symlinks are not files."""
    c = node.add(1, stdout=b"hello\n", stderr=b"")
    (c.paths.log_dirs[1] / "gc.log").write_bytes(b"x" * 10)
    (c.paths.log_dir / "subdir").mkdir()
    (c.paths.log_dir / "link").symlink_to(c.paths.log_dir / "stdout")
    os.utime(c.paths.log_dir / "stdout", ns=(0, 1_585_100_823_000_000_000))
    body = get(node.site, f"/ws/v1/node/containers/{c.container_id}/logs").json()
    stderr_ms = (c.paths.log_dir / "stderr").stat().st_mtime_ns // 1_000_000
    gc_ms = (c.paths.log_dirs[1] / "gc.log").stat().st_mtime_ns // 1_000_000
    assert body == {
        "containerLogsInfo": [
            {
                "containerLogInfo": [
                    {"fileName": "stderr", "fileSize": "0", "lastModifiedTime": yarn_time(stderr_ms)},
                    {"fileName": "stdout", "fileSize": "6", "lastModifiedTime": yarn_time(1_585_100_823_000)},
                    {"fileName": "gc.log", "fileSize": "10", "lastModifiedTime": yarn_time(gc_ms)},
                ],
                "logAggregationType": "LOCAL",
                "containerId": str(c.container_id),
                "nodeId": "nm.test:45454",
            }
        ]
    }


def test_a_container_without_log_dirs_has_no_logs(node: Node) -> None:
    """A container whose log dirs are not made yet (or are gone after aggregation) lists nothing."""
    c = node.add(1, S.LOCALIZING)
    for d in c.paths.log_dirs:
        d.rmdir()
    info = get(node.site, f"/ws/v1/node/containers/{c.container_id}/logs").json()["containerLogsInfo"][0]
    assert info["containerLogInfo"] == []
    assert_error(get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/stdout"), 404, "NotFoundException")


# ------------------------------------------------------------------ reading a log


def framed(c: NMContainer, name: str, content: bytes, length: int, running: bool) -> bytes:
    """What Hadoop's NM answers for a log file: header, content, end line and stars."""
    mtime = (c.paths.log_dir / name).stat().st_mtime_ns // 1_000_000
    title = f"Container: {c.container_id} on nm.test:45454"
    header = (
        f"{title}\nLogAggregationType: LOCAL\n{'=' * len(title)}\nLogType:{name}\n"
        f"LogLastModifiedTime:{yarn_time(mtime)}\nLogLength:{length}\nLogContents:\n"
    ).encode()
    end = f"End of LogType:{name}"
    note = f"This log file belongs to a running container ({c.container_id}) and so may not be complete.\n"
    trailer = f"{end}.{note if running else chr(10)}{'*' * (len(end) + 50)}\n\n".encode()
    return (header if content else b"") + content + trailer


@pytest.mark.parametrize("route", ["containerlogs/{cid}/{name}", "containers/{cid}/logs/{name}"])
def test_a_log_file_is_served_as_text_framed_as_yarn_frames_it(node: Node, route: str) -> None:
    """Both paths answer text/plain: YARN's header, the whole file, and the end line (noting a running container)."""
    data = b"line one\nline two\n"
    running = node.add(1, stdout=data)
    done = node.add(2, S.EXITED_WITH_SUCCESS, stdout=data)
    for c, is_running in ((running, True), (done, False)):
        response = get(node.site, "/ws/v1/node/" + route.format(cid=c.container_id, name="stdout"))
        assert response.status == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.body == framed(c, "stdout", data, len(data), is_running)
    octets = get(node.site, f"/ws/v1/node/containerlogs/{done.container_id}/stdout?format=octet-stream")
    assert octets.headers["content-type"].startswith("application/octet-stream")
    assert_error(
        get(node.site, f"/ws/v1/node/containerlogs/{done.container_id}/stdout?format=xml"), 400, "BadRequestException"
    )


def test_a_log_file_in_a_second_log_dir_is_found(node: Node) -> None:
    """A file is read from whichever of the container's log dirs holds it."""
    c = node.add(1, S.DONE)
    (c.paths.log_dirs[1] / "gc.log").write_bytes(b"gc\n")
    body = get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/gc.log").body
    assert b"LogLength:3\nLogContents:\ngc\nEnd of LogType:gc.log.\n" in body


@pytest.mark.parametrize(
    ("size", "content"),
    [
        ("5", b"01234"),
        ("-5", b"56789"),
        ("%2B3", b"012"),
        ("100", b"0123456789"),
        ("-100", b"0123456789"),
        ("", b"0123456789"),
    ],
)
def test_size_sends_the_first_or_last_bytes(node: Node, size: str, content: bytes) -> None:
    """``size=N``: the first N bytes, ``size=-N`` the last N; ``LogLength`` stays the file's length."""
    c = node.add(1, S.DONE, stdout=b"0123456789")
    body = get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/stdout?size={size}").body
    assert body == framed(c, "stdout", content, 10, False)


def test_size_zero_and_an_empty_file_send_only_the_end_line(node: Node) -> None:
    """When no byte is sent Hadoop leaves the header out too, and still ends with the end line."""
    c = node.add(1, S.DONE, stdout=b"0123456789", stderr=b"")
    assert get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/stdout?size=0").body == framed(
        c, "stdout", b"", 10, False
    )
    assert get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/stderr").body == framed(
        c, "stderr", b"", 0, False
    )


@pytest.mark.parametrize("size", ["abc", "1.5", "5_0", " 5", "--5", "99999999999999999999"])
def test_a_size_that_is_not_an_integer_is_a_bad_request(node: Node, size: str) -> None:
    """``size`` is an integer (Hadoop's ``Long.parseLong``): anything else is a 400, not a guess."""
    c = node.add(1, stdout=b"x")
    target = f"/ws/v1/node/containerlogs/{c.container_id}/stdout?size={size.replace(' ', '%20')}"
    assert_error(get(node.site, target), 400, "BadRequestException")


@pytest.mark.parametrize("name", ["..", ".", "a..b", "..%2Fstdout", "a%2Fb", "%2Fetc%2Fpasswd", "std%00out"])
@pytest.mark.parametrize("route", ["containerlogs/{cid}/{name}", "containers/{cid}/logs/{name}"])
def test_a_file_name_that_could_leave_the_log_dir_is_a_bad_request(node: Node, name: str, route: str) -> None:
    """Names holding ``/`` (even percent-encoded), ``..`` or NUL are refused before anything is opened."""
    c = node.add(1, stdout=b"x")
    node.manager.run = HeldRunner()
    response = get(node.site, "/ws/v1/node/" + route.format(cid=c.container_id, name=name))
    assert "invalid log file name" in assert_error(response, 400, "BadRequestException")
    assert node.manager.run.calls == 0  # type: ignore[attr-defined]


def test_a_missing_file_is_not_found(node: Node) -> None:
    """A name the container's log dirs do not hold is a 404 naming it."""
    c = node.add(1, stdout=b"x")
    message = assert_error(
        get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/syslog"), 404, "NotFoundException"
    )
    assert "cannot find syslog" in message


def test_a_symlink_in_the_log_dir_does_not_lead_out_of_it(node: Node, tmp_path: Path) -> None:
    """A container may write symlinks into its log dir: they are neither listed nor followed,
    to a file outside or to another container's log; a log dir that is itself a symlink is ignored."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not yours\n")
    other = node.add(2, stdout=b"other container\n")
    c = node.add(1, stdout=b"mine\n")
    (c.paths.log_dir / "escape").symlink_to(secret)
    (c.paths.log_dir / "relative").symlink_to("../../../secret.txt")
    (c.paths.log_dir / "neighbour").symlink_to(other.paths.log_dir / "stdout")
    for name in ("escape", "relative", "neighbour"):
        response = get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/{name}")
        assert_error(response, 404, "NotFoundException")
        assert b"not yours" not in response.body and b"other container" not in response.body
    listed = get(node.site, f"/ws/v1/node/containers/{c.container_id}/logs").json()
    assert [f["fileName"] for f in listed["containerLogsInfo"][0]["containerLogInfo"]] == ["stdout"]
    # the container's log dir itself replaced by a symlink to a dir outside
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stdout").write_bytes(b"not yours\n")
    for d in c.paths.log_dirs:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
        d.symlink_to(outside)
    response = get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/stdout")
    assert_error(response, 404, "NotFoundException")
    listed = get(node.site, f"/ws/v1/node/containers/{c.container_id}/logs").json()
    assert listed["containerLogsInfo"][0]["containerLogInfo"] == []


def test_a_fifo_in_the_log_dir_is_refused_without_blocking(node: Node) -> None:
    """Opening a FIFO for reading would wait for a writer: it is opened non-blocking and refused."""
    c = node.add(1, stdout=b"x")
    os.mkfifo(c.paths.log_dir / "pipe")
    message = assert_error(get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/pipe"), 404, "NotFoundException")
    assert "not a regular file" in message


def test_head_answers_the_headers_and_reads_nothing(node: Node) -> None:
    """HEAD answers the status and headers of the file and sends no byte of it; the file is closed."""
    c = node.add(1, stdout=b"x" * 1000)
    before = open_fds()
    response = get(node.site, f"/ws/v1/node/containerlogs/{c.container_id}/stdout", method="HEAD")
    assert (response.status, response.body) == (200, b"")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert open_fds() == before


# ------------------------------------------------------------------ streaming


def test_a_large_log_is_streamed_a_chunk_per_read_under_back_pressure(node: Node) -> None:
    """Every read is one bounded chunk through the runner; while the connection is paused no
    read is issued; the whole file arrives in order, and the file is closed at the end."""
    data = bytes(range(256)) * (4 * CHUNK_BYTES // 256) + b"tail"
    c = node.add(1, S.DONE, stdout=data)
    runner = HeldRunner()
    node.manager.run = runner
    before = open_fds()
    conn = HttpConnection(node.site, "nm.test:8042")
    conn.send("GET", f"/ws/v1/node/containerlogs/{c.container_id}/stdout?ticket={ticket()}")
    assert conn.transport.value() == b""  # nothing is opened on the reactor thread
    fd, _ = runner.step()  # the open
    assert open_fds() == before + 1
    sizes = [len(runner.step()), len(runner.step())]
    conn.transport.producer.pauseProducing()  # the client reads slowly: the send buffer is full
    sizes.append(len(runner.step()))  # the read in flight completes ...
    assert runner.pending == []  # ... and no other is issued
    reads = runner.calls
    conn.transport.producer.resumeProducing()
    while runner.pending:
        sizes.append(len(runner.step()))
    assert runner.calls > reads
    assert max(sizes) == CHUNK_BYTES and sum(sizes) == len(data)
    response = conn.response()
    assert response is not None and response.body == framed(c, "stdout", data, len(data), False)
    assert open_fds() == before
    with pytest.raises(OSError):
        os.fstat(fd)


def test_the_tail_of_a_huge_log_reads_only_the_bytes_sent(node: Node) -> None:
    """``size=-N`` of a (sparse) 4 GiB log reads N bytes near its end, nothing before."""
    c = node.add(1, S.DONE)
    with (c.paths.log_dir / "stderr").open("wb") as f:
        f.truncate(4 << 30)
        f.seek((4 << 30) - 6)
        f.write(b"boom!\n")
    runner = HeldRunner()
    node.manager.run = runner
    conn = HttpConnection(node.site, "nm.test:8042")
    conn.send("GET", f"/ws/v1/node/containerlogs/{c.container_id}/stderr?size=-6&ticket={ticket()}")
    runner.drain()
    assert runner.calls == 2  # the open and one read
    response = conn.response()
    assert response is not None
    assert b"LogLength:4294967296\nLogContents:\nboom!\nEnd of LogType:stderr." in response.body


def test_a_client_that_goes_away_mid_stream_stops_the_reads_and_the_file_is_closed(node: Node) -> None:
    """Once the client is gone no further read is issued, and the file is closed when the read in flight ends."""
    c = node.add(1, S.DONE, stdout=b"z" * (8 * CHUNK_BYTES))
    runner = HeldRunner()
    node.manager.run = runner
    before = open_fds()
    conn = HttpConnection(node.site, "nm.test:8042")
    conn.send("GET", f"/ws/v1/node/containerlogs/{c.container_id}/stdout?ticket={ticket()}")
    runner.step()  # the open
    runner.step()  # one chunk sent; the next read is in flight
    assert len(runner.pending) == 1
    conn.channel.connectionLost(Failure(ConnectionDone()))
    assert open_fds() == before + 1  # not closed under the read in flight
    runner.drain()
    assert runner.pending == [] and open_fds() == before


@pytest.mark.expect_logged_errors("reading a container log failed.*OSError: disk gone")
def test_a_read_that_fails_cuts_the_response_short(node: Node) -> None:
    """A failing disk read is logged and the connection dropped, so the client sees an incomplete body."""
    c = node.add(1, S.DONE, stdout=b"z" * (2 * CHUNK_BYTES))
    runner = HeldRunner()
    node.manager.run = runner
    conn = HttpConnection(node.site, "nm.test:8042")
    conn.send("GET", f"/ws/v1/node/containerlogs/{c.container_id}/stdout?ticket={ticket()}")
    runner.step()  # the open
    runner.step()
    _, d = runner.pending.pop(0)
    d.errback(OSError("disk gone"))
    assert conn.transport.disconnecting
    assert conn.response() is None  # no final chunk


# -- who may see what -----------------------------------------------------------------------


def test_without_a_view_ticket_only_the_nodes_info_is_served(node: Node) -> None:
    """No ticket: 401 saying how to get one, for every container, log and application resource;
    a request that carries the RM credential header is told not to send it to nodes."""
    node.add(1, stdout=b"secret\n")
    for target in (
        "/ws/v1/node/containers", f"/ws/v1/node/containers/{cid(1)}", f"/ws/v1/node/containers/{cid(1)}/logs",
        f"/ws/v1/node/containerlogs/{cid(1)}/stdout", "/ws/v1/node/apps", f"/ws/v1/node/apps/{APP}",
    ):
        refused = get(node.site, target, view=None)
        assert_error(refused, 401, "AuthorizationException", "org.apache.hadoop.security.authorize")
        assert "view-ticket" in refused.json()["RemoteException"]["message"] and b"secret" not in refused.body
    leaked = get(node.site, "/ws/v1/node/containers", view=None, headers={REST_TOKEN_HEADER: "AAAA"})
    assert "do not send your credential" in leaked.json()["RemoteException"]["message"]
    assert get(node.site, "/ws/v1/node/info", view=None).status == 200


def test_a_ticket_shows_its_application_only_on_its_node_until_it_expires(tmp_path: Path) -> None:
    """A ticket for OTHER lists OTHER's containers only and is 403 for APP's; tickets for another
    node, signed with another key, or expired are 403."""
    clock, manager = Clock(), FakeNode(run_now)
    node = Node(tmp_path, manager, nm_site(lambda: manager, clock), (tmp_path / "logs1",))
    node.add(1, stdout=b"alice's secret\n")
    node.add(2, user="bob", app=OTHER, stdout=b"bob's\n")
    other = ticket(OTHER)
    listed = get(node.site, "/ws/v1/node/containers", view=other).json()["containers"]["container"]
    assert [c["id"] for c in listed] == [str(cid(2, OTHER))]
    assert [a["id"] for a in get(node.site, "/ws/v1/node/apps", view=other).json()["apps"]["app"]] == [str(OTHER)]
    assert get(node.site, f"/ws/v1/node/containerlogs/{cid(2, OTHER)}/stdout", view=other).body.count(b"bob's") == 1
    for target in (f"/ws/v1/node/containers/{cid(1)}/logs", f"/ws/v1/node/containerlogs/{cid(1)}/stdout", f"/ws/v1/node/apps/{APP}"):
        refused = get(node.site, target, view=other)
        assert_error(refused, 403, "ForbiddenException")
        assert b"alice's secret" not in refused.body
    for bad in (ticket(node="elsewhere:45454"), ticket(key=MasterKey(4, b"w" * 32)), ticket(now_ms=CLOCK_MS - VIEW_TICKET_MS)):
        assert_error(get(node.site, f"/ws/v1/node/containers/{cid(1)}", view=bad), 403, "ForbiddenException")
    assert get(node.site, f"/ws/v1/node/containers/{cid(1)}").status == 200
    clock.advance(VIEW_TICKET_MS / 1000)
    assert_error(get(node.site, f"/ws/v1/node/containers/{cid(1)}"), 403, "ForbiddenException")
