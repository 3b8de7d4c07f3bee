"""The NodeManager for real: ContainerManagementProtocol over Hadoop IPC, a ContainerManager with the
LXC runtime and a thread pool for its file work, on the real reactor.

An AM-like client (our IPC client, proving the application attempt with its NMToken) starts
containers with ContainerTokens; the containers' commands write what they see into
``<LOG_DIR>/stdout``, which the test reads: YARN's environment (CONTAINER_ID,
LOCAL_DIRS, PWD), a localized FILE, an unpacked ARCHIVE, ``tmp/`` and the tokens
file.  Then a stop (-105), a failing command (its exit code and stderr in the
diagnostics), and the application's cleanup (work dirs gone, logs kept).

The containers run in the real runtime image (the ``runtime_image_root`` fixture:
built once per machine, unpacked once), whose JVM is the one JAVA_HOME names.

Skipped only where LXC cannot run (not root, no lxc-execute, no cgroup v1):
``scripts/install`` installs it, so CI runs it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.python.threadpool import ThreadPool

from cortex_rm.container.container_manager import ContainerManager
from cortex_rm.container.container_tokens import ContainerTokenVerifier
from cortex_rm.container.launch import NodeFacts
from cortex_rm.container.localizer import Localizer
from cortex_rm.container.lxc_runtime import LxcRuntime
from cortex_rm.container.nm_container import NMContainerState
from cortex_rm.container.resource_files import default_fetchers
from cortex_rm.container.runtime_image import ImageRecipe
from cortex_rm.container.runtime_spec import ContainerSettings
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, NodeId
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.errors import FatalRpcError
from cortex_rm.yarn_api.ipc_client import IpcClient
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.nm_service import NM_PROTOCOL, ContainerManagementService, nm_protocol
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.sasl import SaslServer
from cortex_rm.yarn_api.tokens import read_container_identifier, read_nm_token_identifier, token_from_proto
from tests.support.java import compile_driver, quiet_jvm_options, run_driver
from tests.support.nm_requests import (
    APP,
    ATTEMPT,
    KEY,
    cid,
    container_ids_proto,
    container_token,
    launch_context,
    nm_token,
    start_containers,
    start_request,
)
from tests.support.reactor import reactor
from tests.support.reactor import wait_until as wait_for

pytestmark = pytest.mark.integration

WAIT_S = 60.0
JAVA_HOME = ImageRecipe().java_home  # inside the image
LXC_READY = os.geteuid() == 0 and shutil.which("lxc-execute") is not None and Path("/sys/fs/cgroup/memory").is_dir()
needs_lxc = pytest.mark.skipif(not LXC_READY, reason="needs root, Debian's lxc and cgroup v1")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> defer.Deferred:
    """Wait (bounded by ``timeout``) until ``condition`` holds."""
    return wait_for(condition, what, timeout)


class RealNode:
    """A ContainerManager with the LXC runtime behind a ContainerManagementProtocol port on loopback,
    running its containers in the runtime image ``image``."""

    def __init__(self, root: Path, image: Path) -> None:
        self.root = root
        self.pool = ThreadPool(minthreads=0, maxthreads=4, name="test-nm-files")
        self.pool.start()
        self.tokens = ContainerTokenVerifier(
            NodeId("127.0.0.1", 0), reactor(), read_container_identifier, read_nm_token_identifier
        )
        self.tokens.set_master_key(KEY)
        settings = ContainerSettings(
            local_dirs=(root / "local",), log_dirs=(root / "logs",), memory_overhead_mb=128, pids_limit=256
        )
        self.manager = ContainerManager(
            clock=reactor(),
            runtime=LxcRuntime(reactor(), root / "lxc"),
            run=self.run,
            tokens=self.tokens,
            node=NodeFacts("127.0.0.1", 0, 8042, JAVA_HOME, nm_environment={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}),
            settings=settings,
            localizer=Localizer(self.run, default_fetchers([root / "local", root / "logs"])),
            image_root=lambda: image,
        )
        factory = IpcServerFactory(  # as the NodeManager role serves it: an NMToken or nothing
            [nm_protocol(ContainerManagementService(self.manager))],
            SaslServer(self.tokens.nm_token_password, allow_simple=False),
        )
        self.port = reactor().listenTCP(0, factory, interface="127.0.0.1")
        # the NodeId is the bound address: what the tokens must name
        self.node_id = NodeId("127.0.0.1", self.port.getHost().port)
        self.tokens.node_id = self.node_id

    def run(self, fn: Callable[[], Any]) -> defer.Deferred[Any]:
        return deferToThreadPool(reactor(), self.pool, fn)

    def sleeper(self, seq: int) -> ys.StartContainerRequestProto:
        """A container that says it started, then sleeps until stopped."""
        return start_request(
            container_token(cid(seq), node=self.node_id, memory_mb=128, expiry_ms=int(reactor().seconds() * 1000) + 600_000),
            launch_context(["touch started; exec sleep 1000", "1><LOG_DIR>/stdout", "2><LOG_DIR>/stderr"]),
        )

    def app_dir(self) -> Path:
        return self.root / "local" / "usercache" / "alice" / "appcache" / str(APP)

    def log_dir(self, seq: int) -> Path:
        return self.root / "logs" / str(APP) / str(cid(seq))

    def done(self, seq: int) -> Any:
        return wait_until(lambda: self.manager.containers[cid(seq)].state is NMContainerState.DONE, f"{cid(seq)} is DONE")

    @defer.inlineCallbacks
    def call(self, method: str, request: Any, response_type: Any, token: Any = True):  # type: ignore[no-untyped-def]
        """``method`` as the AM calls it: proven with its NMToken for this node (``token=None``:
        none, a SIMPLE caller naming the attempt; or another token)."""
        if token is True:
            token = token_from_proto(nm_token(ATTEMPT, node=self.node_id))
        client = yield IpcClient.connect(
            reactor(), "127.0.0.1", self.node_id.port, NM_PROTOCOL, str(ATTEMPT), token=token
        )
        try:
            response = yield client.call(method, request, response_type)
        finally:
            client.close()
        return response

    @defer.inlineCallbacks
    def stop(self):  # type: ignore[no-untyped-def]
        yield self.manager.stop_all()
        runtime = self.manager.runtime
        assert isinstance(runtime, LxcRuntime)
        for application in runtime.sandbox.blocks.held():  # their cortex/b<block> cgroups
            runtime.application_finished(application)
        runtime.close()  # the containers' sysfs
        yield self.port.stopListening()
        self.pool.stop()


def staged(root: Path) -> dict[str, tuple[str, int, int]]:
    """A FILE and a zip ARCHIVE in a staging dir, as Spark stages them (0644), as CLC resources."""
    staging = root / "staging"
    staging.mkdir()
    data = staging / "data.txt"
    data.write_text("the localized file\n")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.properties", "from=the archive\n")
        z.writestr("__hadoop_conf__/core-site.xml", "<configuration/>\n")
    archive = staging / "__spark_conf__.zip"
    archive.write_bytes(buf.getvalue())
    out = {}
    for link, path, kind in (("data.txt", data, yp.FILE), ("__spark_conf__", archive, yp.ARCHIVE)):
        path.chmod(0o644)
        out[link] = (str(path), path.stat().st_mtime_ns // 1_000_000, kind)
    return out


# What the container reports; the outer script's shell expands $VARs (as under YARN).
REPORT = (
    "{ echo CONTAINER_ID=$CONTAINER_ID; echo LOCAL_DIRS=$LOCAL_DIRS; echo PWD=$PWD; echo CWD=$(pwd); "
    "echo CP=$CP; cat data.txt; cat __spark_conf__/app.properties; "
    "test -f __spark_conf__/__hadoop_conf__/core-site.xml && echo ARCHIVE_TREE_OK; "
    "test -d tmp && echo TMP_OK; test -s container_tokens && echo TOKENS_OK; "
    "$JAVA_HOME/bin/java -Xmx64m -version 2>/dev/null && echo JAVA_OK; }"
)


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_container_runs_in_lxc_with_yarns_environment_and_resources(tmp_path: Path, runtime_image_root: Path):  # type: ignore[no-untyped-def]
    """startContainers over IPC -> localized, launched in LXC, exit 0; its stdout shows YARN's environment,
    the FILE and the unpacked ARCHIVE, and the JVM runs; statuses over IPC; cleanup deletes the work dirs and keeps the logs."""
    node = RealNode(tmp_path, runtime_image_root)
    try:
        clc = launch_context(
            [REPORT, "1><LOG_DIR>/stdout", "2><LOG_DIR>/stderr"],
            env={"CP": "{{PWD}}<CPS>{{PWD}}/__spark_conf__"},
            resources=staged(tmp_path),
        )
        token = container_token(cid(1), node=node.node_id, memory_mb=256, expiry_ms=int(reactor().seconds() * 1000) + 600_000)
        response = yield node.call("startContainers", start_containers(start_request(token, clc)), ys.StartContainersResponseProto)
        assert len(response.failed_requests) == 0, response.failed_requests
        assert [records.container_id_from_proto(p) for p in response.succeeded_requests] == [cid(1)]
        yield node.done(1)
        report = node.manager.containers[cid(1)].report()
        assert report.exit_status == 0, report.diagnostics
        work = node.app_dir() / str(cid(1))
        stdout = (node.log_dir(1) / "stdout").read_text().splitlines()
        assert stdout == [
            f"CONTAINER_ID={cid(1)}",
            f"LOCAL_DIRS={node.app_dir()}",
            f"PWD={work}",
            f"CWD={work}",
            f"CP={work}:{work}/__spark_conf__",
            "the localized file",
            "from=the archive",
            "ARCHIVE_TREE_OK",
            "TMP_OK",
            "TOKENS_OK",
            "JAVA_OK",
        ]
        statuses = ys.GetContainerStatusesRequestProto()
        statuses.container_id.extend(container_ids_proto(cid(1)))
        answer = yield node.call("getContainerStatuses", statuses, ys.GetContainerStatusesResponseProto)
        (status,) = answer.status
        assert (status.state, status.exit_status) == (yp.C_COMPLETE, 0)

        deleted = yield node.manager.cleanup_application(APP)
        assert deleted == [node.app_dir()]
        assert not node.app_dir().exists()
        assert (node.log_dir(1) / "stdout").exists()
    finally:
        yield node.stop()


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_stop_and_failure_exit_statuses_in_lxc(tmp_path: Path, runtime_image_root: Path):  # type: ignore[no-untyped-def]
    """A running container stopped over IPC reports -105; a failing one its exit code and stderr."""
    node = RealNode(tmp_path, runtime_image_root)
    try:
        sleeper = node.sleeper(2)
        expiry = int(reactor().seconds() * 1000) + 600_000
        failing = start_request(
            container_token(cid(3), node=node.node_id, memory_mb=128, expiry_ms=expiry),
            launch_context(["{ echo no such thing >&2; exit 3; }", "1><LOG_DIR>/stdout", "2><LOG_DIR>/stderr"]),
        )
        response = yield node.call("startContainers", start_containers(sleeper, failing), ys.StartContainersResponseProto)
        assert len(response.succeeded_requests) == 2, response.failed_requests
        yield node.done(3)
        failed = node.manager.containers[cid(3)].report()
        assert failed.exit_status == 3
        assert "Last 4096 bytes of stderr :\nno such thing" in failed.diagnostics

        yield wait_until(lambda: (node.app_dir() / str(cid(2)) / "started").exists(), "the sleeper runs")
        stop = ys.StopContainersRequestProto()
        stop.container_id.extend(container_ids_proto(cid(2)))
        # no NMToken, or a forged one: refused before any call is read (YARN's rule); it runs on
        forged = token_from_proto(nm_token(ATTEMPT, node=node.node_id, sign_with=MasterKey(KEY.key_id, b"f" * 20)))
        for token, refusal in ((None, "SIMPLE authentication is not enabled"), (forged, "Mismatched response")):
            try:
                yield node.call("stopContainers", stop, ys.StopContainersResponseProto, token=token)
            except FatalRpcError as e:
                assert refusal in e.message, e.message
            else:
                raise AssertionError(f"stopContainers with {token} was not refused")
        assert node.manager.containers[cid(2)].state is NMContainerState.RUNNING
        answer = yield node.call("stopContainers", stop, ys.StopContainersResponseProto)
        assert len(answer.succeeded_requests) == 1
        yield node.done(2)
        stopped = node.manager.containers[cid(2)].report()
        assert stopped.exit_status == -105
        assert "Exit code is 143" in stopped.diagnostics
    finally:
        yield node.stop()


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_hadoops_nmclient_sees_and_stops_only_with_its_applications_nmtoken(  # type: ignore[no-untyped-def]
    tmp_path: Path, runtime_image_root: Path
):
    """Hadoop's own NMClient, as an AM uses it (the NMToken in its NMTokenCache): it reads and
    stops its application's container; another application's NMToken reads and stops nothing,
    and a forged one is refused before any call."""
    classes = compile_driver("NMClientDriver")
    node = RealNode(tmp_path, runtime_image_root)
    try:
        sleeper = node.sleeper(2)
        response = yield node.call("startContainers", start_containers(sleeper), ys.StartContainersResponseProto)
        assert len(response.succeeded_requests) == 1, response.failed_requests
        yield wait_until(lambda: (node.app_dir() / str(cid(2)) / "started").exists(), "the sleeper runs")

        def nmclient(op: str, token: Any) -> defer.Deferred[Any]:
            args = [op, str(node.node_id), str(cid(2)), token.identifier.hex(), token.password.hex()]
            return deferToThread(run_driver, "NMClientDriver", args, classes=classes, jvm_options=quiet_jvm_options())

        own = nm_token(ATTEMPT, node=node.node_id)
        other = nm_token(ApplicationAttemptId(ApplicationId(APP.cluster_timestamp, 42), 1), node=node.node_id)
        forged = nm_token(ATTEMPT, node=node.node_id, sign_with=MasterKey(KEY.key_id, b"f" * 20))

        seen = yield nmclient("status", own)
        assert seen.returncode == 0, seen.stdout + seen.stderr
        assert json.loads(seen.stdout)["state"] == "RUNNING"
        for op in ("status", "stop"):
            refused = yield nmclient(op, other)
            assert refused.returncode == 3, refused.stdout + refused.stderr
            verb = "get" if op == "status" else "stop"
            assert f"Unauthorized request to {verb} container" in refused.stdout, refused.stdout
        impostor = yield nmclient("stop", forged)
        assert impostor.returncode == 3, impostor.stdout + impostor.stderr
        assert "Mismatched response" in impostor.stdout, impostor.stdout  # refused by SASL, before any call
        assert node.manager.containers[cid(2)].state is NMContainerState.RUNNING

        stopped = yield nmclient("stop", own)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        yield node.done(2)
        assert node.manager.containers[cid(2)].report().exit_status == -105
    finally:
        yield node.stop()
