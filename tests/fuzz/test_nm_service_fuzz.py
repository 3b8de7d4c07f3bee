"""Fuzzing ContainerManagementProtocol: startContainers with random launch contexts, and the other calls.

A real ContainerManager (FakeRuntime, a Clock, file work inline on a temporary
directory) behind ContainerManagementService, called as the IPC layer calls it.  The
launch context is random (local resources with any URL, environment, commands,
tokens; text that is not UTF-8 included) but carries a genuine ContainerToken, so it
gets past the token check to where its contents are used:

* each call answers a complete response (succeeded or failed entries) or raises
  ``RemoteError``, never another exception;
* a container it accepts is launched or fails in YARN's terms (diagnostics), without
  a failure being logged; a bad context is refused up front or fails localization.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.container.container_manager import ContainerManager
from cortex_rm.container.container_tokens import ContainerTokenVerifier
from cortex_rm.container.fake_runtime import FakeRuntime
from cortex_rm.container.launch import NodeFacts
from cortex_rm.container.runtime_spec import ContainerSettings
from cortex_rm.yarn_api.errors import RemoteError
from cortex_rm.yarn_api.nm_service import ContainerManagementService
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext
from cortex_rm.yarn_api.tokens import read_container_identifier, read_nm_token_identifier
from tests.fuzz.fuzzing import failures_logged, fuzz_settings
from tests.fuzz.messages import protobuf_messages, texts, with_text_not_utf8
from tests.support.nm_requests import KEY, NODE, cid, container_token, nm_token

NOW_S = 1_700_000_000.0


def _run_now(fn: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn)


class NMNode:
    """A ContainerManager with a FakeRuntime on a Clock, over a temporary directory."""

    def __init__(self, tmp: Path) -> None:
        self.clock = Clock()
        self.clock.advance(NOW_S)
        tokens = ContainerTokenVerifier(NODE, self.clock, read_container_identifier, read_nm_token_identifier)
        tokens.set_master_key(KEY)
        settings = ContainerSettings(
            local_dirs=(tmp / "local",),
            log_dirs=(tmp / "logs",),
            readonly_dirs=(),
            memory_overhead_mb=256,
            pids_limit=512,
            kill_grace_s=0.25,
            completed_retention_ms=60_000,
        )
        self.cm = ContainerManager(
            clock=self.clock,
            runtime=FakeRuntime(self.clock),
            run=_run_now,
            tokens=tokens,
            node=NodeFacts("127.0.0.1", 45454, 8042, "/usr/lib/jvm/java", nm_environment={"PATH": "/usr/bin:/bin"}),
            settings=settings,
        )
        self.handlers = ContainerManagementService(self.cm).handlers()

    def call(self, method: str, request: Message, *, with_nm_token: bool) -> None:
        """One call as the IPC layer makes it (an NMToken caller or a SIMPLE one); checks the answer."""
        identifier = nm_token().identifier if with_nm_token else None
        context = CallContext(
            "127.0.0.1:50000", "ContainerManagementProtocolPB", method, 1, b"c" * 16, 0, "alice", None,
            AuthMethod.TOKEN if with_nm_token else AuthMethod.SIMPLE, identifier,
        )  # fmt: skip
        try:
            result = self.handlers[method](context, request)
        except RemoteError:
            return
        assert isinstance(result, Message)
        result.SerializeToString()


launch_contexts = protobuf_messages(yp.ContainerLaunchContextProto, depth=4, initialized=True)
URLS = st.builds(
    yp.URLProto,
    scheme=st.sampled_from(["file", "hdfs", "http", "", "FILE"]),
    host=st.sampled_from(["", "127.0.0.1", "nn"]),
    port=st.sampled_from([-1, 0, 9000, 70000]),
    file=st.sampled_from(["/etc/hostname", "/nonexistent/x.jar", "", "relative", "/tmp/../etc"]) | texts(10),
)


def _with_resource(
    clc: yp.ContainerLaunchContextProto, key: str, url: yp.URLProto, kind: int
) -> yp.ContainerLaunchContextProto:
    entry = clc.localResources.add(key=key)
    entry.value.resource.CopyFrom(url)
    entry.value.type = kind  # type: ignore[assignment]
    return clc


contexts = st.one_of(
    launch_contexts,
    with_text_not_utf8(launch_contexts),
    st.builds(
        _with_resource,
        launch_contexts,
        st.sampled_from(["app.jar", "..", "a/b", "", "."]) | texts(8),
        URLS,
        st.sampled_from([yp.FILE, yp.ARCHIVE, yp.PATTERN]),
    ),
)


def _start(clc: yp.ContainerLaunchContextProto, seq: int = 1) -> ys.StartContainersRequestProto:
    request = ys.StartContainersRequestProto()
    start = request.start_container_request.add()
    start.container_token.CopyFrom(container_token(cid(seq)))
    start.container_launch_context.CopyFrom(clc)
    return request


def _not_utf8(field: str) -> yp.ContainerLaunchContextProto:
    """A launch context whose environment ``field`` (key or value), or whose command, is not UTF-8."""
    clc = yp.ContainerLaunchContextProto(command=["echo ~~~~"] if field == "command" else ["true"])
    if field != "command":
        clc.environment.add(key="~~~~" if field == "key" else "K", value="~~~~" if field == "value" else "v")
    raw = clc.SerializeToString().replace(b"~~~~", b"\xff\xfe\x80\xc3")
    return yp.ContainerLaunchContextProto.FromString(raw)


other_calls = st.sampled_from(["stopContainers", "getContainerStatuses"]).flatmap(
    lambda method: st.tuples(
        st.just(method),
        protobuf_messages(
            ys.StopContainersRequestProto if method == "stopContainers" else ys.GetContainerStatusesRequestProto,
            initialized=True,
        ),
    )
)


@fuzz_settings(70)
@given(clc=contexts, then=st.lists(other_calls, max_size=2), nm_caller=st.booleans())
@example(clc=_not_utf8("value"), then=[], nm_caller=True).via("an environment value that is not UTF-8")
@example(clc=_not_utf8("key"), then=[], nm_caller=True).via("an environment name that is not UTF-8")
@example(clc=_not_utf8("command"), then=[], nm_caller=True).via("a command that is not UTF-8")
def test_start_containers_answers_and_launches_or_refuses(
    clc: yp.ContainerLaunchContextProto, then: list[tuple[str, Message]], nm_caller: bool
) -> None:
    """A genuine token with any launch context: a response (accepted or refused), never another exception;
    the container then runs or fails in YARN's terms, with no failure logged; the other calls answer too."""
    with tempfile.TemporaryDirectory() as tmp, failures_logged() as logged:
        node = NMNode(Path(tmp))
        node.call("startContainers", _start(clc), with_nm_token=nm_caller)
        node.clock.advance(0)
        node.clock.advance(1)
        for method, request in then:
            node.call(method, request, with_nm_token=nm_caller)
    assert not logged, logged[0]
