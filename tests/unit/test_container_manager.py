"""The NodeManager core: accepting, launching, watching, killing and cleaning up containers.

Driven with ``FakeRuntime`` on a ``Clock``; file work (dirs, tokens, localization,
script, log tails, deletion) runs synchronously on real temporary files, so every
test is deterministic.  Exit statuses and diagnostics are YARN's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.container.container_manager import ContainerManager
from cortex_rm.container.container_tokens import ContainerTokenVerifier
from cortex_rm.container.fake_runtime import FakeProgram, FakeRuntime
from cortex_rm.container.launch import NodeFacts
from cortex_rm.container.nm_container import NM_CONTAINER_TRANSITIONS, NMContainerEvent, NMContainerState
from cortex_rm.container.runtime_spec import ContainerSettings
from cortex_rm.container.start_request import ContainerRefused, Refusal
from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from cortex_rm.yarn.errors import IllegalTransition
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api.nm_service import start_request_from_proto
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.tokens import read_container_identifier, read_nm_token_identifier
from tests.support.nm_requests import APP, ATTEMPT, KEY, NODE, cid, container_token, launch_context, start_request

NOW_S = 1_700_000_000.0
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
MIB = 1024 * 1024
S = NMContainerState


def run_now(fn: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn)


class Node:
    """A ContainerManager on a Clock with a FakeRuntime, over a temporary directory."""

    def __init__(self, tmp: Path, run: Callable[[Callable[[], Any]], defer.Deferred[Any]] = run_now, **runtime: Any) -> None:
        self.tmp = tmp
        self.clock = Clock()
        self.clock.advance(NOW_S)
        self.runtime = FakeRuntime(self.clock, **runtime)
        self.tokens = ContainerTokenVerifier(NODE, self.clock, read_container_identifier, read_nm_token_identifier)
        self.tokens.set_master_key(KEY)
        self.settings = ContainerSettings(
            local_dirs=(tmp / "local1", tmp / "local2"),
            log_dirs=(tmp / "logs",),
            readonly_dirs=(Path("/opt/spark"),),
            memory_overhead_mb=256,
            pids_limit=512,
            kill_grace_s=0.25,
            completed_retention_ms=60_000,
        )
        self.cm = ContainerManager(
            clock=self.clock,
            runtime=self.runtime,
            run=run,
            tokens=self.tokens,
            node=NodeFacts("127.0.0.1", 45454, 8042, JAVA_HOME, nm_environment={"PATH": "/usr/bin:/bin"}),
            settings=self.settings,
        )

    def start(self, seq: int, clc: yp.ContainerLaunchContextProto | None = None, caller: str | None = str(ATTEMPT), **token: Any) -> Any:
        return self.cm.start(start_request_from_proto(start_request(container_token(cid(seq), **token), clc)), caller)

    def state(self, seq: int) -> NMContainerState:
        return self.cm.containers[cid(seq)].state

    def report(self, seq: int) -> Any:
        return self.cm.containers[cid(seq)].report()

    def app_dir(self, local: str = "local1") -> Path:
        return self.tmp / local / "usercache" / "alice" / "appcache" / str(APP)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_started_container_runs_in_yarns_layout_with_its_limits(node: Node) -> None:
    """A valid start creates the work dir (tmp/, tokens, script), asks the runtime for the spec, and runs."""
    clc = launch_context(["echo hi 1><LOG_DIR>/stdout"], env={"SPARK_USER": "alice"}, tokens=b"HDTS\x00\x01tok")
    assert node.start(1, clc, memory_mb=2048) == cid(1)
    assert node.state(1) is S.LOCALIZED  # the runtime starts it on the next tick
    node.clock.advance(0)
    assert node.state(1) is S.RUNNING
    work = node.app_dir("local2") / str(cid(1))  # sequence 1 of two local dirs: the second
    assert (work / "tmp").is_dir()
    assert (work / "container_tokens").read_bytes() == b"HDTS\x00\x01tok"
    script = (work / "launch_container.sh").read_text()
    assert f'export CONTAINER_ID="{cid(1)}"' in script
    assert f'exec /bin/bash -c "echo hi 1>{node.tmp}/logs/{APP}/{cid(1)}/stdout"' in script
    (spec,) = node.runtime.specs
    assert spec.container_id == str(cid(1))
    assert spec.work_dir == work
    assert spec.log_dir == node.tmp / "logs" / str(APP) / str(cid(1))
    assert spec.log_dir.is_dir()
    assert spec.command == ["/bin/bash", str(work / "launch_container.sh")]
    assert spec.memory_limit_bytes == (2048 + 256) * MIB
    assert spec.pids_limit == 512
    assert spec.writable_dirs == (node.app_dir("local1"), node.app_dir("local2"))
    # the node's PUBLIC cache and alice's PRIVATE one, where the work dir's links may point
    caches = (node.tmp / "local1" / "filecache", node.tmp / "local1" / "usercache" / "alice" / "filecache")
    assert spec.readonly_dirs == (Path("/opt/spark"), *caches)  # the JVM is the image's
    assert spec.root_image is None  # this node's ContainerManager names no image
    assert all(c.is_dir() for c in caches)
    assert spec.env == {"PATH": "/usr/bin:/bin", "JAVA_HOME": JAVA_HOME}
    assert node.report(1).state is ContainerState.RUNNING


def test_successful_exit_completes_with_0_and_is_reported_until_acknowledged(node: Node) -> None:
    """Exit 0 -> DONE, C_COMPLETE, 0; reported in heartbeats until acknowledged; forgotten after the retention."""
    node.start(1)
    node.clock.advance(0)
    node.runtime.finish(str(cid(1)), 0)
    assert node.state(1) is S.DONE
    (report,) = node.cm.statuses_for_heartbeat()
    assert (report.state, report.exit_status) == (ContainerState.COMPLETE, 0)
    node.cm.acknowledge([cid(1)])
    assert node.cm.statuses_for_heartbeat() == ()
    assert node.cm.status(cid(1), None).exit_status == 0  # still answered for a while
    node.clock.advance(61)
    with pytest.raises(ContainerRefused, match="is not handled by this NodeManager"):
        node.cm.status(cid(1), None)


def test_a_containers_report_carries_what_its_token_granted(node: Node) -> None:
    """Reports carry the resource, priority and creation time of the container's token: what a node lists
    when it registers again, so a restarted RM can count the container back in (NMContainerStatus)."""
    node.start(1, memory_mb=2048, priority=3, creation_ms=1_700_000_000_123)
    (report,) = node.cm.statuses_for_heartbeat()
    assert (report.resource, report.priority, report.creation_time_ms) == (Resource(2048, 1), 3, 1_700_000_000_123)


def test_running_containers_are_not_acknowledged(node: Node) -> None:
    """Acknowledging a container that is still running changes nothing: it keeps being reported."""
    node.start(1)
    node.clock.advance(0)
    node.cm.acknowledge([cid(1)])
    assert [r.container_id for r in node.cm.statuses_for_heartbeat()] == [cid(1)]


def test_failed_exit_reports_the_code_and_the_tail_of_stderr(node: Node) -> None:
    """A non-zero exit is the process's code; the diagnostics carry the tail of stderr, as YARN's."""
    node.start(1)
    node.clock.advance(0)
    log_dir = node.runtime.specs[0].log_dir
    (log_dir / "stderr").write_text("Exception in thread main: boom\n")
    node.runtime.finish(str(cid(1)), 1)
    report = node.report(1)
    assert (report.state, report.exit_status) == (ContainerState.COMPLETE, 1)
    assert "Container exited with a non-zero exit code 1." in report.diagnostics
    assert "Last 4096 bytes of stderr :\nException in thread main: boom" in report.diagnostics


def test_memory_limit_kill_is_killed_exceeded_pmem(node: Node) -> None:
    """The runtime's OOM kill becomes -104 KILLED_EXCEEDED_PMEM with the limit in the diagnostics."""
    node.start(1, memory_mb=1024)
    node.clock.advance(0)
    node.runtime.oom_kill(str(cid(1)))
    report = node.report(1)
    assert report.exit_status == ContainerExitStatus.KILLED_EXCEEDED_PMEM == -104
    assert "beyond its physical memory limit of 1280 MB" in report.diagnostics


def test_stop_kills_as_the_appmaster(node: Node) -> None:
    """stop -> SIGTERM; the container ends (143) and reports -105 KILLED_BY_APPMASTER."""
    node.start(1)
    node.clock.advance(0)
    node.cm.stop(cid(1), str(ATTEMPT))
    assert node.state(1) is S.KILLING
    node.clock.advance(0)
    report = node.report(1)
    assert (report.state, report.exit_status) == (ContainerState.COMPLETE, -105)
    assert "Container killed by the ApplicationMaster." in report.diagnostics
    assert "Exit code is 143" in report.diagnostics
    node.cm.stop(cid(1), str(ATTEMPT))  # stopping a stopped container is fine
    with pytest.raises(ContainerRefused, match="is not handled by this NodeManager"):
        node.cm.stop(cid(9), None)


def test_container_ignoring_sigterm_is_sigkilled_after_the_grace(tmp_path: Path) -> None:
    """A process that ignores SIGTERM is SIGKILLed once the grace passed; the status is still -105."""
    node = Node(tmp_path, program=lambda spec: FakeProgram(sigterm_exit_code=None))
    node.start(1)
    node.clock.advance(0)
    node.cm.stop(cid(1), None)
    node.clock.advance(0.1)
    assert node.state(1) is S.KILLING
    node.clock.advance(0.2)
    assert node.report(1).exit_status == -105
    assert "Exit code is 137" in node.report(1).diagnostics
    assert node.runtime.containers[str(cid(1))].kill_grace == 0.25


def test_rm_cleanup_kills_with_killed_by_resourcemanager(node: Node) -> None:
    """Containers the RM wants gone report -106."""
    node.start(1)
    node.clock.advance(0)
    node.cm.cleanup_containers([cid(1), cid(7)])  # an unknown id is ignored
    node.clock.advance(0)
    assert node.report(1).exit_status == ContainerExitStatus.KILLED_BY_RESOURCEMANAGER


def test_application_cleanup_kills_then_deletes_local_dirs_and_keeps_logs(node: Node) -> None:
    """cleanup_application: -107 for what still runs, then the app's local dirs go; its logs stay."""
    node.start(1)
    node.start(2)
    node.clock.advance(0)
    node.runtime.finish(str(cid(2)), 0)
    done: list[Any] = []
    node.cm.cleanup_application(APP).addBoth(done.append)
    assert done == []  # waits for container 1 to end
    node.clock.advance(0)
    assert node.report(1).exit_status == ContainerExitStatus.KILLED_AFTER_APP_COMPLETION
    assert node.report(2).exit_status == 0
    assert sorted(done[0]) == [node.app_dir("local1"), node.app_dir("local2")]
    assert not node.app_dir("local1").exists() and not node.app_dir("local2").exists()
    assert (node.tmp / "logs" / str(APP) / str(cid(1))).is_dir()
    again: list[Any] = []
    node.cm.cleanup_application(APP).addBoth(again.append)  # the RM may name it again: nothing to do
    assert again == [[]]


def test_localization_failure_is_minus_1000_with_yarns_message(node: Node, tmp_path: Path) -> None:
    """A resource changed on its source: LOCALIZATION_FAILED -> DONE, -1000, nothing started."""
    src = tmp_path / "staging" / "pi.py"
    src.parent.mkdir()
    src.write_text("print(1)")
    src.chmod(0o644)
    ts = src.stat().st_mtime_ns // 1_000_000
    node.start(1, launch_context(resources={"pi.py": (str(src), ts + 1, yp.FILE)}))
    report = node.report(1)
    assert (report.state, report.exit_status) == (ContainerState.COMPLETE, -1000)
    assert report.diagnostics == f"Resource file:{src} changed on src filesystem (expected {ts + 1}, was {ts})"
    assert node.runtime.specs == []


def test_localized_resources_are_linked_into_the_work_dir(node: Node, tmp_path: Path) -> None:
    """A FILE resource appears in the work dir under its link name before the runtime starts."""
    src = tmp_path / "staging" / "pi.py"
    src.parent.mkdir()
    src.write_text("print(1)")
    src.chmod(0o644)
    ts = src.stat().st_mtime_ns // 1_000_000
    node.start(1, launch_context(resources={"job.py": (str(src), ts, yp.FILE)}))
    assert (node.runtime.specs[0].work_dir / "job.py").read_text() == "print(1)"


def test_launch_failures_report_minus_1(node: Node) -> None:
    """The runtime failing to launch (started fails) or refusing to start: exit -1, diagnostics say why."""
    node.runtime.fail_launch(str(cid(1)), "lxc-execute: no cgroup")
    node.start(1)
    node.clock.advance(0)
    assert (node.state(1), node.report(1).exit_status) == (S.DONE, -1)
    assert "lxc-execute: no cgroup" in node.report(1).diagnostics
    node.runtime.refuse_start(str(cid(2)), "lxc is not installed")
    node.start(2)
    assert (node.state(2), node.report(2).exit_status) == (S.DONE, -1)
    assert "lxc is not installed" in node.report(2).diagnostics


def test_duplicate_start_is_refused_and_a_used_token_stays_used(node: Node) -> None:
    """The same container twice: YarnException while known; InvalidToken once forgotten."""
    node.start(1)
    node.clock.advance(0)
    with pytest.raises(ContainerRefused) as info:
        node.start(1)
    assert info.value.kind is Refusal.REFUSED
    assert "already is running on this node" in info.value.message
    node.runtime.finish(str(cid(1)), 0)
    node.cm.acknowledge([cid(1)])
    node.clock.advance(61)
    node.cm.statuses_for_heartbeat()  # forgets it
    with pytest.raises(ContainerRefused) as info:
        node.start(1)
    assert info.value.kind is Refusal.INVALID_TOKEN and info.value.container_id == cid(1)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ({"sign_with": KEY.__class__(KEY.key_id, b"forged-secret-bytes!")}, "illegally generated"),
        ({"expiry_ms": 1000}, "This token is expired"),
        ({"node": "10.1.1.1:45454"}, "not valid for current Node manager"),
    ],
)
def test_bad_tokens_are_invalid_token(node: Node, token: dict[str, Any], message: str) -> None:
    """Forged, expired or other-node tokens: InvalidToken naming the container; nothing runs."""
    with pytest.raises(ContainerRefused) as info:
        node.start(1, **token)
    assert info.value.kind is Refusal.INVALID_TOKEN
    assert message in info.value.message
    assert info.value.container_id == cid(1)
    assert node.cm.containers == {} and node.runtime.specs == []


@pytest.mark.parametrize(
    ("clc", "message"),
    [
        (launch_context(resources={"../evil": ("/x", 1, yp.FILE)}), "must be a relative path"),
        (launch_context(env={"BAD NAME": "x"}), "not a valid shell identifier"),
        (launch_context([]), "has no command"),
    ],
)
def test_unusable_launch_contexts_are_refused_without_using_the_token(
    node: Node, clc: yp.ContainerLaunchContextProto, message: str
) -> None:
    """A bad link name, variable name or no command: YarnException; the token still starts a good CLC."""
    with pytest.raises(ContainerRefused) as info:
        node.start(1, clc)
    assert info.value.kind is Refusal.REFUSED and message in info.value.message
    assert node.start(1) == cid(1)


def test_another_applications_attempt_cannot_start_or_stop(node: Node) -> None:
    """A caller naming an attempt of another application is refused; a plain user name is not checked."""
    other = str(ApplicationAttemptId(ApplicationId(1700000000000, 99), 1))
    with pytest.raises(ContainerRefused, match="Unauthorized request to start container"):
        node.start(1, caller=other)
    node.start(1, caller="root")
    with pytest.raises(ContainerRefused, match="Unauthorized request to stop container"):
        node.cm.stop(cid(1), other)


def test_kill_while_localizing_ends_without_running(tmp_path: Path) -> None:
    """A stop during localization waits for it to end, then DONE with -105; the runtime never starts it."""
    held: list[tuple[defer.Deferred[Any], Callable[[], Any]]] = []

    def run_held(fn: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        held.append((d, fn))
        return d

    node = Node(tmp_path, run=run_held)
    node.start(1)
    assert node.state(1) is S.LOCALIZING
    node.cm.stop(cid(1), None)
    assert node.state(1) is S.KILLING
    while held:
        d, fn = held.pop(0)
        d.callback(fn())
    assert (node.state(1), node.report(1).exit_status) == (S.DONE, -105)
    assert node.runtime.specs == []


def test_kill_before_the_runtime_started_it(tmp_path: Path) -> None:
    """A stop while the runtime is still launching: killed as soon as it runs, -105."""
    node = Node(tmp_path, start_delay=1.0)
    node.start(1)
    node.cm.stop(cid(1), None)
    node.clock.advance(1.0)
    node.clock.advance(0)
    assert (node.state(1), node.report(1).exit_status) == (S.DONE, -105)


def test_stop_all_kills_everything_and_refuses_new_containers(node: Node) -> None:
    """On daemon stop every container is killed (its own exit code: 143) and new starts are refused."""
    node.start(1)
    node.start(2)
    node.clock.advance(0)
    done: list[Any] = []
    node.cm.stop_all().addBoth(done.append)
    node.clock.advance(0)
    assert done == [None]
    assert {node.report(i).exit_status for i in (1, 2)} == {143}
    with pytest.raises(ContainerRefused, match="shutting down"):
        node.start(3)
    assert node.clock.getDelayedCalls() == []


def test_stop_all_gives_up_after_its_timeout(tmp_path: Path) -> None:
    """A container that does not end does not hold the daemon's stop forever."""
    held: list[Any] = []
    node = Node(tmp_path, run=lambda fn: held.append(fn) or defer.Deferred())
    node.start(1)  # stuck in localization
    done: list[Any] = []
    node.cm.stop_all().addBoth(done.append)
    node.clock.advance(node.settings.shutdown_timeout_s)
    assert done == [None]


def test_lifecycle_table_refuses_what_yarn_refuses() -> None:
    """Events a state cannot take raise; kills of ending containers are declared ignorable."""
    with pytest.raises(IllegalTransition):
        NM_CONTAINER_TRANSITIONS.next_state(S.NEW, NMContainerEvent.EXITED)
    with pytest.raises(IllegalTransition):
        NM_CONTAINER_TRANSITIONS.next_state(S.DONE, NMContainerEvent.LAUNCHED)
    for state in (S.KILLING, S.EXITED_WITH_FAILURE, S.DONE):
        assert NM_CONTAINER_TRANSITIONS.next_state(state, NMContainerEvent.KILL) is None
    assert NM_CONTAINER_TRANSITIONS.next_state(S.RUNNING, NMContainerEvent.EXITED, S.EXITED_WITH_SUCCESS) is S.EXITED_WITH_SUCCESS


def test_the_applications_staging_dir_and_shared_dirs_are_writable(tmp_path: Path) -> None:
    """A file: resource's directory named after the application (Spark's .sparkStaging/<appId>) and the
    configured shared dirs are writable in the container; other source dirs are not exposed."""
    import dataclasses

    node = Node(tmp_path)
    node.cm.settings = dataclasses.replace(node.settings, shared_dirs=(tmp_path / "shared",))
    staging = tmp_path / "home" / ".sparkStaging" / str(APP)
    other = tmp_path / "elsewhere"
    resources = {}
    for link, directory in (("pi.py", staging), ("data.txt", other)):
        directory.mkdir(parents=True)
        src = directory / link
        src.write_text("x")
        src.chmod(0o644)
        resources[link] = (str(src), src.stat().st_mtime_ns // 1_000_000, yp.FILE)
    node.start(1, launch_context(resources=resources))
    (spec,) = node.runtime.specs
    assert spec.writable_dirs == (node.app_dir("local1"), node.app_dir("local2"), tmp_path / "shared", staging)


def test_reports_stay_within_what_a_heartbeat_may_carry(node: Node) -> None:
    """Diagnostics are cut to YARN's 10000 characters (the latest kept), so a heartbeat is never refused."""
    node.start(1)
    node.clock.advance(0)
    node.cm.containers[cid(1)].diagnostics.append("x" * 20_000 + "END")
    report = node.report(1)
    assert len(report.diagnostics) == 10_000 and report.diagnostics.endswith("END")
