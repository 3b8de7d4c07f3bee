"""FakeRuntime on a deterministic Clock: the knobs that unit tests of the NodeManager rely on.

The behaviour it shares with LXC is checked by the contract suite in
``tests/integration/test_container_runtime.py``; this file checks the timing on
the clock and the test-only controls.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cortex_rm.container.fake_runtime import FIRST_FAKE_PID, FakeProgram, FakeRuntime
from cortex_rm.container.runtime import (
    LAUNCH_FAILED_EXIT_CODE,
    RUNTIME_CONTAINER_LIFECYCLE,
    ContainerExit,
    ContainerSpec,
    ContainerStartError,
    InvalidContainerSpec,
    RuntimeContainerEvent,
    RuntimeContainerState,
)
from cortex_rm.yarn.errors import IllegalTransition

MIB = 1024 * 1024


def spec(container_id: str = "container_1_0001_01_000001", memory_limit_bytes: int = 100 * MIB) -> ContainerSpec:
    return ContainerSpec(
        container_id=container_id,
        work_dir=Path("/work") / container_id,
        log_dir=Path("/logs") / container_id,
        command=["/bin/bash", f"/work/{container_id}/launch_container.sh"],
        env={"A": "1"},
        memory_limit_bytes=memory_limit_bytes,
        pids_limit=64,
    )


def results(runtime: FakeRuntime, cid: str) -> list[ContainerExit]:
    out: list[ContainerExit] = []
    runtime.containers[cid].exited.addCallback(out.append)
    return out


def test_a_container_runs_after_the_start_delay_and_until_the_test_finishes_it() -> None:
    """started fires start_delay later with a fake pid; exited fires when finish() says, with its code."""
    clock = Clock()
    runtime = FakeRuntime(clock, start_delay=0.5)
    c = runtime.start(spec())
    started: list[None] = []
    c.started.addCallback(started.append)
    ended = results(runtime, c.container_id)
    clock.advance(0.4)
    assert (started, c.pid) == ([], None)
    clock.advance(0.1)
    assert started == [None] and c.pid == FIRST_FAKE_PID
    clock.advance(1000)
    assert ended == []
    runtime.finish(c.container_id, 3)
    assert ended == [ContainerExit(3, False, "")]
    assert runtime.specs == [spec()] and runtime.running == {}


def test_kill_ends_a_program_that_dies_on_sigterm_at_once_with_143() -> None:
    """kill(10): SIGTERM is delivered on the next tick and the program exits 143; no SIGKILL follows."""
    clock = Clock()
    runtime = FakeRuntime(clock)
    c = runtime.start(spec())
    clock.advance(0)
    ended = results(runtime, c.container_id)
    c.kill(10)
    assert c.state is RuntimeContainerState.TERMINATING and ended == []
    clock.advance(0)
    assert ended == [ContainerExit(143, False, "")]
    assert c.signals_received == [signal.SIGTERM] and c.kill_grace == 10
    clock.advance(20)
    assert len(ended) == 1


def test_kill_sigkills_a_program_that_ignores_sigterm_when_the_grace_expires() -> None:
    """A program ignoring SIGTERM runs through the grace and exits 137 just after it."""
    clock = Clock()
    runtime = FakeRuntime(clock, program=lambda s: FakeProgram(sigterm_exit_code=None))
    c = runtime.start(spec())
    clock.advance(0)
    ended = results(runtime, c.container_id)
    c.kill(2.5)
    clock.advance(2.4)
    assert ended == [] and c.state is RuntimeContainerState.TERMINATING
    clock.advance(0.1)  # the SIGKILL's end is due at once, so this advance delivers it too
    assert ended == [ContainerExit(137, False, "")]
    assert c.signals_received == [signal.SIGTERM, signal.SIGKILL]


def test_a_kill_before_the_container_runs_sigkills_it_when_it_does() -> None:
    """kill() while launching waits for the start, then SIGKILLs: started fires, then exited with 137."""
    clock = Clock()
    runtime = FakeRuntime(clock, start_delay=1)
    c = runtime.start(spec())
    ended = results(runtime, c.container_id)
    c.kill(30)
    assert c.state is RuntimeContainerState.KILL_PENDING
    clock.advance(1)
    assert c.started.called and c.signals_received == [signal.SIGKILL]
    assert ended == [ContainerExit(137, False, "")]


def test_programs_that_exit_by_themselves_or_need_too_much_memory() -> None:
    """exit_code after runs_for; peak memory above the limit is an OOM kill (137, killed_for_memory)."""
    clock = Clock()
    programs = {"a": FakeProgram(exit_code=0, runs_for=5), "b": FakeProgram(exit_code=0, peak_memory_bytes=300 * MIB)}
    runtime = FakeRuntime(clock, program=lambda s: programs[s.container_id])
    runtime.start(spec("a"))
    runtime.start(spec("b"))
    a, b = results(runtime, "a"), results(runtime, "b")
    clock.advance(0)
    assert a == [] and len(b) == 1
    assert (b[0].exit_code, b[0].killed_for_memory) == (137, True) and "limit 104857600 bytes" in b[0].diagnostics
    clock.advance(5)
    assert a == [ContainerExit(0, False, "")]


def test_oom_kill_and_signals_that_only_get_recorded() -> None:
    """oom_kill() ends a running container as the OOM killer would; SIGQUIT is only recorded."""
    clock = Clock()
    runtime = FakeRuntime(clock)
    c = runtime.start(spec())
    clock.advance(0)
    c.signal(signal.SIGQUIT)
    clock.advance(0)
    assert c.state is RuntimeContainerState.RUNNING and c.signals_received == [signal.SIGQUIT]
    ended = results(runtime, c.container_id)
    runtime.oom_kill(c.container_id)
    assert ended[0].killed_for_memory and ended[0].exit_code == 137
    c.signal(signal.SIGTERM)
    c.kill(0)
    assert c.signals_received == [signal.SIGQUIT]


def test_launch_failures_and_refusals() -> None:
    """fail_launch: started fails with ContainerStartError and the exit is -1; refuse_start: start raises."""
    clock = Clock()
    runtime = FakeRuntime(clock)
    runtime.fail_launch("x", "no LXC today")
    c = runtime.start(spec("x"))
    failures: list[Failure] = []
    c.started.addErrback(failures.append)
    ended = results(runtime, "x")
    clock.advance(0)
    assert failures[0].check(ContainerStartError) and failures[0].getErrorMessage() == "no LXC today"
    assert ended == [ContainerExit(LAUNCH_FAILED_EXIT_CODE, False, "no LXC today")]
    runtime.refuse_start("y", "disk full")
    with pytest.raises(ContainerStartError, match="disk full"):
        runtime.start(spec("y"))
    runtime.start(spec("y"))
    with pytest.raises(ContainerStartError, match="running already"):
        runtime.start(spec("y"))


def test_finish_refuses_a_container_that_does_not_run() -> None:
    """The test cannot make a launching or unknown container exit: that would be a bug in the test."""
    clock = Clock()
    runtime = FakeRuntime(clock, start_delay=1)
    c = runtime.start(spec())
    with pytest.raises(AssertionError, match="LAUNCHING"):
        c.finish(0)
    with pytest.raises(AssertionError, match="no fake container"):
        runtime.finish("other", 0)


def test_the_lifecycle_table_rejects_what_no_runtime_may_do() -> None:
    """A second start, or a grace expiring outside TERMINATING, is an IllegalTransition; kills after the end are ignored."""
    table = RUNTIME_CONTAINER_LIFECYCLE
    with pytest.raises(IllegalTransition):
        table.next_state(RuntimeContainerState.RUNNING, RuntimeContainerEvent.STARTED)
    with pytest.raises(IllegalTransition):
        table.next_state(RuntimeContainerState.RUNNING, RuntimeContainerEvent.GRACE_EXPIRED)
    assert table.next_state(RuntimeContainerState.EXITED, RuntimeContainerEvent.KILL) is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"container_id": "../etc"}, "must match"),
        ({"work_dir": Path("relative")}, "not an absolute path"),
        ({"command": []}, "non-empty list"),
        ({"command": ["A=1"]}, "contains '='"),
        ({"env": {"A=B": "1"}}, "invalid environment variable"),
        ({"memory_limit_bytes": 0}, "memory_limit_bytes"),
        ({"pids_limit": -1}, "pids_limit"),
    ],
)
def test_specs_are_validated_when_made(change: dict[str, object], message: str) -> None:
    """A ContainerSpec that breaks the seam's rules raises InvalidContainerSpec naming the rule."""
    fields = {**spec().__dict__, **change}
    with pytest.raises(InvalidContainerSpec, match=message):
        ContainerSpec(**fields)  # type: ignore[arg-type]
