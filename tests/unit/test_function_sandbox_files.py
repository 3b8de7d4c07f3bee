"""FunctionSandboxes' file work: on the runner it is given (the NodeManager's file threads), in the order issued.

The runner here holds each piece of work until the test runs it, as a busy thread pool
would; the runtime is the FakeRuntime on a MemoryReactorClock (the LXC sandboxes run in
``tests/integration/test_events.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from cortex_rm.container.fake_runtime import FakeRuntime
from cortex_rm.events.functions import FunctionSpec
from cortex_rm.events.outcomes import OutcomeStatus, SandboxResult
from cortex_rm.roles.function_sandboxes import FunctionSandboxes


class HeldRunner:
    """A ``Runner`` whose work waits until ``run_next``; counts how much was handed to it at once."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[[], Any], defer.Deferred[Any]]] = []
        self.most_held = 0

    def __call__(self, func: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.held.append((func, d))
        self.most_held = max(self.most_held, len(self.held))
        return d

    def run_next(self) -> None:
        func, d = self.held.pop(0)
        d.callback(func())

    def run_all(self) -> None:
        while self.held:
            self.run_next()


def sandboxes(tmp_path: Path) -> tuple[FunctionSandboxes, HeldRunner, FakeRuntime, MemoryReactorClock]:
    reactor, runner = MemoryReactorClock(), HeldRunner()
    runtime = FakeRuntime(reactor)
    pool = FunctionSandboxes(
        runtime, reactor, tmp_path / "node" / "sandboxes", tmp_path / "sockets" / "node",  # type: ignore[arg-type]
        lambda: tmp_path / "image", run=runner, max_sandboxes=4, idle_timeout_s=60,
    )  # fmt: skip
    return pool, runner, runtime, reactor


def test_start_clears_and_prepares_the_dirs_on_the_runner_not_the_reactor(tmp_path: Path) -> None:
    """start() touches no file until the runner runs its work; then a previous run's sandbox is gone, the runner is
    copied, and start() fires."""
    pool, runner, _, _ = sandboxes(tmp_path)
    left = tmp_path / "node" / "sandboxes" / "fn_1_1"
    left.mkdir(parents=True)
    started: list[None] = []
    pool.start().addCallback(started.append)
    assert left.exists() and not started and len(runner.held) == 1
    runner.run_all()
    assert started == [None] and not left.exists() and pool.runner.read_bytes().startswith(b'"""')


def test_a_sandbox_stopped_while_its_dirs_are_made_never_starts_and_its_dirs_go_after(tmp_path: Path) -> None:
    """The node stops while a cold start's dirs are being made (on the file threads): the sandbox never listens nor
    starts a container, its activation ends INTERNAL_ERROR, its dirs are removed only after they were made, and the
    runner is never given more than one piece of file work at once."""
    pool, runner, runtime, reactor = sandboxes(tmp_path)
    pool.start()
    runner.run_all()
    spec = FunctionSpec("f", "alice", 1, "/user/alice/f.py", 10, 1)
    invoked = pool.invoke(spec, tmp_path / "code.py", b"1", "a-1")
    assert len(runner.held) == 1  # its dirs, not made yet
    stopped: list[None] = []
    pool.stop().addCallback(stopped.append)
    reactor.advance(0)
    assert len(runner.held) == 1  # the removal waits for the dirs
    runner.run_next()
    made = list((tmp_path / "node" / "sandboxes").glob("fn_*"))
    assert len(made) == 1 and (made[0] / "work").is_dir()
    runner.run_all()
    reactor.advance(0)
    runner.run_all()
    result: SandboxResult = invoked.result
    assert result.status is OutcomeStatus.INTERNAL_ERROR and "stopped before it could start" in result.error
    assert runtime.specs == [] and reactor.unixServers == []
    assert not made[0].exists() and not (tmp_path / "sockets" / "node").exists()  # (this node's dir under /run too)
    assert stopped == [None] and runner.most_held == 1


@pytest.mark.expect_logged_errors("removing the dirs of sandbox fn_1_[0-9]+ failed")
def test_a_dropped_sandboxs_dirs_that_cannot_be_removed_are_logged_as_such(tmp_path: Path) -> None:
    """The node stops while a sandbox's dirs are made; the file threads then fail its removal (which nothing
    waits for): the failure is logged once, naming the sandbox (not left as an unhandled error in a Deferred),
    and the stop still completes."""
    pool, runner, _, reactor = sandboxes(tmp_path)
    pool.start()
    runner.run_all()
    invoked = pool.invoke(FunctionSpec("f", "alice", 1, "/user/alice/f.py", 10, 1), tmp_path / "code.py", b"1", "a-1")
    stopped: list[None] = []
    pool.stop().addCallback(stopped.append)
    reactor.advance(0)
    runner.run_next()  # its dirs are made
    _, removal = runner.held.pop(0)
    removal.errback(OSError("the node's disk is gone"))
    reactor.advance(0)
    runner.run_all()
    assert invoked.result.status is OutcomeStatus.INTERNAL_ERROR and stopped == [None]
