"""The container runtime contract, against the fake and the LXC runtime, and what only LXC can show.

The contract tests take a ``harness`` fixture parametrized over ``fake`` and
``lxc``: each test describes a ``Program`` (exit with a code, ignore SIGTERM,
leave a child behind, allocate memory), which the LXC harness writes as a
launch script and the fake harness maps to a ``FakeProgram``; both runtimes
run on the real reactor.  Every wait is a bounded wait on a Deferred or a
condition; no test sleeps for its result.

The LXC-only tests check what the fake does not pretend to do: environment and
working directory, log files, the file system's isolation, the cgroup limits,
that a kill leaves no process behind, and that the container runs in the real
runtime image (the ``runtime_image_root`` fixture: built once per machine,
unpacked once): its Debian 12 ``/usr`` and ``/etc``, its Java and Python, the
host's ``/etc/hosts``, and nothing of the host's ``/usr`` and ``/etc``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.defer import Deferred

from cortex_rm.container.fake_runtime import FakeProgram, FakeRuntime
from cortex_rm.container.id_ranges import IdBlock
from cortex_rm.container.lxc_config import (
    CGROUP_PARENT,
    Binds,
    ImageLayout,
    check_image_root,
    check_spec_paths,
    prepare_rootfs,
    render_config,
)
from cortex_rm.container.lxc_reports import MemorySnapshot, parent_pid, parse_lxc_log_line, parse_memory_snapshot
from cortex_rm.container.lxc_runtime import RUNTIME_LOG_NAME, LxcContainer, LxcRuntime
from cortex_rm.container.runtime import (
    LAUNCH_FAILED_EXIT_CODE,
    ContainerExit,
    ContainerSpec,
    ContainerStartError,
    RunningContainer,
)
from cortex_rm.container.runtime_image import ImageRecipe
from tests.support.reactor import reactor
from tests.support.reactor import wait_until as wait_for

pytestmark = pytest.mark.integration

WAIT_S = 60.0
MIB = 1024 * 1024
JAVA = f"{ImageRecipe().java_home}/bin/java"  # the image's JVM
LXC_READY = os.geteuid() == 0 and shutil.which("lxc-execute") is not None and Path("/sys/fs/cgroup/memory").is_dir()
needs_lxc = pytest.mark.skipif(not LXC_READY, reason="needs root, Debian's lxc and cgroup v1")


def outcome(d: Deferred[Any], timeout: float = WAIT_S) -> Deferred[Any]:
    """A new Deferred with ``d``'s result (``d`` keeps it too), failing after ``timeout`` s."""
    out: Deferred[Any] = Deferred()

    def relay(result: Any) -> Any:
        if not out.called:
            out.callback(result)
        return result

    d.addCallback(relay)
    return out.addTimeout(timeout, reactor())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> defer.Deferred:
    """Wait (bounded by ``timeout``) until ``condition`` holds."""
    return wait_for(condition, what, timeout)


@dataclass(frozen=True)
class Program:
    """A behaviour that every runtime can run: a shell script for LXC, a ``FakeProgram`` for the fake."""

    #: Exit with this code; None: run (``sleep 1000``) until ended.
    exit_code: int | None = None
    ignores_sigterm: bool = False
    #: Leave a ``sleep 1000`` running in the background too.
    background_child: bool = False
    #: First allocate (and touch) this much memory with python3.
    allocate_bytes: int = 0

    def script(self, log_dir: Path) -> str:
        """The launch script, redirecting its output into ``log_dir`` as YARN's do."""
        lines = ["#!/bin/bash", f'exec >"{log_dir}/stdout" 2>"{log_dir}/stderr"']
        if self.ignores_sigterm:
            lines.append("trap '' TERM")
        if self.background_child:
            lines.append("sleep 1000 &")
        if self.allocate_bytes:
            lines.append(f"python3 -c 'b = b\"x\" * {self.allocate_bytes}; print(len(b))' || exit $?")
        lines.append("touch ready")  # in the work dir: the traps are set, the child runs
        lines.append("sleep 1000" if self.exit_code is None else f"exit {self.exit_code}")
        return "\n".join(lines) + "\n"

    def fake(self) -> FakeProgram:
        """The same behaviour, as the fake runtime models it."""
        return FakeProgram(
            exit_code=self.exit_code,
            sigterm_exit_code=None if self.ignores_sigterm else 143,
            peak_memory_bytes=self.allocate_bytes,
        )


class Harness(Protocol):
    """Runs ``Program``s on one runtime."""

    name: str

    def start(self, program: Program, *, memory_limit_bytes: int = ..., container_id: str | None = ...) -> RunningContainer:
        """Start ``program`` in a new container."""

    def processes(self, container: RunningContainer) -> list[int]:
        """Host pids of the container's processes now (none for the fake)."""

    def ready(self, container: RunningContainer) -> Deferred[None]:
        """Fires once the program has set itself up (its traps, its child), after ``started``."""


def new_container_id() -> str:
    """A YARN-shaped container id no other test uses."""
    return f"container_{uuid.uuid4().int % 10**13:013d}_0001_01_{uuid.uuid4().int % 10**6:06d}"


@dataclass
class FakeHarness:
    """The contract on ``FakeRuntime`` with the reactor as its clock."""

    name: str = "fake"
    programs: dict[str, Program] = field(default_factory=dict)
    runtime: FakeRuntime = field(init=False)

    def __post_init__(self) -> None:
        self.runtime = FakeRuntime(reactor(), program=lambda spec: self.programs[spec.container_id].fake())

    def start(self, program: Program, *, memory_limit_bytes: int = 256 * MIB, container_id: str | None = None) -> RunningContainer:
        cid = container_id or new_container_id()
        self.programs[cid] = program
        work = Path("/nonexistent") / cid  # the fake touches no file
        return self.runtime.start(
            ContainerSpec(
                container_id=cid,
                work_dir=work,
                log_dir=work / "logs",
                command=["/bin/bash", str(work / "launch_container.sh")],
                env={"CONTAINER_ID": cid},
                memory_limit_bytes=memory_limit_bytes,
                pids_limit=64,
            )
        )

    def processes(self, container: RunningContainer) -> list[int]:
        return []

    def ready(self, container: RunningContainer) -> Deferred[None]:
        return outcome(container.started)


@dataclass
class LxcHarness:
    """The contract on ``LxcRuntime``, each container with its own dirs under ``root``, in the runtime ``image``."""

    root: Path
    #: The unpacked runtime image every spec names (``root_image``).
    image: Path
    name: str = "lxc"
    runtime: LxcRuntime = field(init=False)

    def __post_init__(self) -> None:
        self.runtime = LxcRuntime(reactor(), self.root / "runtime")

    def dirs(self, cid: str) -> tuple[Path, Path]:
        """The work and log dirs of container ``cid``, made."""
        work, logs = self.root / "work" / cid, self.root / "logs" / cid
        work.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        return work, logs

    def spec(self, script: str, *, memory_limit_bytes: int = 256 * MIB, pids_limit: int = 64, container_id: str | None = None, env: dict[str, str] | None = None, **more: Any) -> ContainerSpec:
        """A spec running ``script`` with bash from its work dir, in the harness's image."""
        cid = container_id or new_container_id()
        work, logs = self.dirs(cid)
        (work / "launch_container.sh").write_text(script)
        more.setdefault("root_image", self.image)
        return ContainerSpec(
            container_id=cid,
            work_dir=work,
            log_dir=logs,
            command=["/bin/bash", str(work / "launch_container.sh")],
            env=env if env is not None else {"PATH": "/usr/local/bin:/usr/bin:/bin", "CONTAINER_ID": cid},
            memory_limit_bytes=memory_limit_bytes,
            pids_limit=pids_limit,
            **more,
        )

    def start(self, program: Program, *, memory_limit_bytes: int = 256 * MIB, container_id: str | None = None) -> RunningContainer:
        cid = container_id or new_container_id()
        _, logs = self.dirs(cid)
        return self.runtime.start(self.spec(program.script(logs), memory_limit_bytes=memory_limit_bytes, container_id=cid))

    def close(self) -> None:
        """Free what the runtime holds on the host: each application's ``cortex/b<block>`` cgroups
        (as the NodeManager's cleanup does) and the containers' sysfs mount."""
        for application in self.runtime.sandbox.blocks.held():
            self.runtime.application_finished(application)
        self.runtime.close()

    def processes(self, container: RunningContainer) -> list[int]:
        procs = self.runtime.cgroup_dir("pids", container.container_id) / "cgroup.procs"
        try:
            return [int(p) for p in procs.read_text().split()]
        except FileNotFoundError:
            return []

    @defer.inlineCallbacks
    def ready(self, container: RunningContainer):  # type: ignore[no-untyped-def]
        yield outcome(container.started)
        marker = self.root / "work" / container.container_id / "ready"
        yield wait_until(marker.exists, f"{container.container_id} is set up")


@pytest.fixture(params=["fake", "lxc"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Each contract test runs once on the fake runtime and once on LXC."""
    if request.param == "fake":
        yield FakeHarness()
        return
    if not LXC_READY:
        pytest.skip("needs root, Debian's lxc and cgroup v1")
    lxc = LxcHarness(tmp_path, request.getfixturevalue("runtime_image_root"))
    yield lxc
    lxc.close()


@pytest.fixture
def lxc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LxcHarness]:
    """The LXC harness alone, for what only a real container shows."""
    if not LXC_READY:
        pytest.skip("needs root, Debian's lxc and cgroup v1")
    harness = LxcHarness(tmp_path, request.getfixturevalue("runtime_image_root"))
    yield harness
    harness.close()


def alive(pid: int) -> bool:
    """Whether a host process ``pid`` exists (zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- the contract (fake and LXC)


@pytest_twisted.inlineCallbacks
def test_exit_code_zero_is_reported_after_started(harness: Harness):  # type: ignore[no-untyped-def]
    """A container that exits 0 fires ``started`` (with its pid known), then ``exited`` with 0."""
    events: list[str] = []
    c = harness.start(Program(exit_code=0))
    c.started.addCallback(lambda _: events.append(f"started pid={c.pid is not None}"))
    result: ContainerExit = yield outcome(c.exited)
    events.append("exited")
    assert events == ["started pid=True", "exited"]
    assert (result.exit_code, result.killed_for_memory) == (0, False)


@pytest_twisted.inlineCallbacks
def test_exit_code_three_propagates(harness: Harness):  # type: ignore[no-untyped-def]
    """The main process's exit code (3) is the container's."""
    result = yield outcome(harness.start(Program(exit_code=3)).exited)
    assert (result.exit_code, result.killed_for_memory) == (3, False)


@pytest_twisted.inlineCallbacks
def test_kill_ends_a_container_on_sigterm_with_143_without_waiting_for_the_grace(harness: Harness):  # type: ignore[no-untyped-def]
    """kill() sends SIGTERM to every process: one that dies of it exits 143, long before a 30 s grace."""
    c = harness.start(Program(background_child=True))
    yield harness.ready(c)
    before = reactor().seconds()
    c.kill(30.0)
    result = yield outcome(c.exited)
    assert result.exit_code == 143
    assert not result.killed_for_memory
    assert reactor().seconds() - before < 15


@pytest_twisted.inlineCallbacks
def test_kill_escalates_to_sigkill_once_the_grace_has_passed(harness: Harness):  # type: ignore[no-untyped-def]
    """A container that ignores SIGTERM is SIGKILLed after the grace, and reports 137."""
    c = harness.start(Program(ignores_sigterm=True, background_child=True))
    yield harness.ready(c)
    before = reactor().seconds()
    c.kill(0.5)
    result = yield outcome(c.exited)
    assert result.exit_code == 137
    assert reactor().seconds() - before >= 0.5


@pytest_twisted.inlineCallbacks
def test_kill_without_grace_sigkills_at_once(harness: Harness):  # type: ignore[no-untyped-def]
    """kill(0) SIGKILLs even a container that would have handled SIGTERM: 137."""
    c = harness.start(Program())
    yield outcome(c.started)
    c.kill(0)
    result = yield outcome(c.exited)
    assert result.exit_code == 137


@pytest_twisted.inlineCallbacks
def test_kill_before_the_container_runs_kills_it_as_soon_as_it_does(harness: Harness):  # type: ignore[no-untyped-def]
    """A kill while launching is kept: the container is SIGKILLed once it runs, and reports 137."""
    c = harness.start(Program())
    c.kill(10.0)
    result = yield outcome(c.exited)
    assert c.started.called
    assert result.exit_code == 137


@pytest_twisted.inlineCallbacks
def test_signal_sigterm_ends_the_container_with_143(harness: Harness):  # type: ignore[no-untyped-def]
    """signal(SIGTERM) reaches the container's processes: the script dies of it, 143."""
    c = harness.start(Program())
    yield harness.ready(c)
    c.signal(signal.SIGTERM)
    result = yield outcome(c.exited)
    assert result.exit_code == 143


@pytest_twisted.inlineCallbacks
def test_kill_and_signal_after_the_end_change_nothing(harness: Harness):  # type: ignore[no-untyped-def]
    """Once a container has exited, kill() and signal() are ignored; a second kill() is too."""
    c = harness.start(Program())
    yield harness.ready(c)
    c.kill(30.0)
    c.kill(0)
    result = yield outcome(c.exited)
    c.kill(0)
    c.signal(signal.SIGKILL)
    assert result.exit_code == 143


@pytest_twisted.inlineCallbacks
def test_memory_beyond_the_limit_is_reported_killed_for_memory(harness: Harness):  # type: ignore[no-untyped-def]
    """A process allocating 300 MB under a 100 MB limit is OOM-killed: 137, killed_for_memory."""
    result = yield outcome(harness.start(Program(exit_code=0, allocate_bytes=300 * MIB), memory_limit_bytes=100 * MIB).exited)
    assert result.exit_code == 137
    assert result.killed_for_memory
    assert "memory" in result.diagnostics


@pytest_twisted.inlineCallbacks
def test_memory_within_the_limit_is_not_reported(harness: Harness):  # type: ignore[no-untyped-def]
    """20 MB under a 100 MB limit runs to its end: 0, not killed_for_memory."""
    result = yield outcome(harness.start(Program(exit_code=0, allocate_bytes=20 * MIB), memory_limit_bytes=100 * MIB).exited)
    assert (result.exit_code, result.killed_for_memory) == (0, False)


@pytest_twisted.inlineCallbacks
def test_a_running_container_id_cannot_start_twice_but_may_once_it_ended(harness: Harness):  # type: ignore[no-untyped-def]
    """start() of an id that runs raises ContainerStartError; after its end the id may run again."""
    c = harness.start(Program())
    with pytest.raises(ContainerStartError, match="running already"):
        harness.start(Program(exit_code=0), container_id=c.container_id)
    yield outcome(c.started)
    c.kill(0)
    yield outcome(c.exited)
    again = yield outcome(harness.start(Program(exit_code=5), container_id=c.container_id).exited)
    assert again.exit_code == 5


# ---------------------------------------------------------------- LXC only


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_env_and_cwd_are_exactly_the_specs(lxc: LxcHarness):  # type: ignore[no-untyped-def]
    """The command runs in work_dir with the spec's environment and nothing of the host's."""
    script = 'python3 -c "import json, os; print(json.dumps({\'cwd\': os.getcwd(), \'env\': dict(os.environ)}))" > result.json\n'
    spec = lxc.spec(script, env={"PATH": "/usr/bin:/bin", "SPARK_USER": "alice", "WITH_SPACE": "a b\nc"})
    result = yield outcome(lxc.runtime.start(spec).exited)
    assert result.exit_code == 0
    seen = json.loads((spec.work_dir / "result.json").read_text())
    assert seen["cwd"] == str(spec.work_dir)
    assert {k: seen["env"][k] for k in spec.env} == dict(spec.env)
    assert set(seen["env"]) - set(spec.env) <= {"PWD", "SHLVL", "_", "LC_CTYPE"}  # bash's own, and python's C.UTF-8 coercion


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_stdout_and_stderr_land_where_the_script_redirects_them(lxc: LxcHarness):  # type: ignore[no-untyped-def]
    """Redirected output is in log_dir's files; what is not redirected goes to lxc-execute.log there."""
    cid = new_container_id()
    _, logs = lxc.dirs(cid)
    script = f'echo unredirected\nexec >"{logs}/stdout" 2>"{logs}/stderr"\necho to-stdout\necho to-stderr >&2\n'
    result = yield outcome(lxc.runtime.start(lxc.spec(script, container_id=cid)).exited)
    assert result.exit_code == 0
    assert (logs / "stdout").read_text() == "to-stdout\n"
    assert (logs / "stderr").read_text() == "to-stderr\n"
    assert "unredirected" in (logs / RUNTIME_LOG_NAME).read_text()


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_the_container_writes_only_its_own_dirs(lxc: LxcHarness, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Writes to /usr, /etc, /root, / and /var fail inside; /tmp is private; the spec's dirs behave as declared.

    Writing /tmp/x succeeds inside, into the container's own tmpfs, and nothing
    appears in the host's /tmp; nothing appears on the host at any path tried.
    """
    tag = uuid.uuid4().hex
    writable, readonly = tmp_path / "app-dir", tmp_path / "cache"
    writable.mkdir()
    readonly.mkdir()
    (readonly / "resource.txt").write_text("cached")
    targets = [f"/usr/{tag}", f"/etc/{tag}", f"/root/{tag}", f"/{tag}", f"/var/{tag}", f"{readonly}/{tag}"]
    checks = "".join(f'if echo x > "{t}" 2>/dev/null; then echo "{t} written"; else echo "{t} refused"; fi\n' for t in targets)
    script = (
        checks
        + f'echo x > "/tmp/{tag}" && echo "/tmp written"\n'
        + f'echo x > "{writable}/{tag}" && echo "writable written"\n'
        + f'cat "{readonly}/resource.txt"; echo\n'
    )
    spec = lxc.spec("exec > report.txt 2>&1\n" + script, writable_dirs=(writable,), readonly_dirs=(readonly,), own_dirs=(writable,))
    result = yield outcome(lxc.runtime.start(spec).exited)
    assert result.exit_code == 0
    report = (spec.work_dir / "report.txt").read_text().splitlines()
    assert [line for line in report if line.endswith("refused")] == [f"{t} refused" for t in targets]
    assert "/tmp written" in report and "writable written" in report and "cached" in report
    for t in [*targets, f"/tmp/{tag}"]:
        assert not os.path.lexists(t), f"{t} appeared on the host"
    assert (writable / tag).read_text() == "x\n"


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_the_limits_are_the_specs_and_visible_inside(lxc: LxcHarness):  # type: ignore[no-untyped-def]
    """The container's memory cgroup limit and pids.max are the spec's, readable inside."""
    script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max > limits.txt\n"
    spec = lxc.spec(script, memory_limit_bytes=128 * MIB, pids_limit=77)
    result = yield outcome(lxc.runtime.start(spec).exited)
    assert result.exit_code == 0
    assert (spec.work_dir / "limits.txt").read_text().split() == [str(128 * MIB), "77"]


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_the_pids_limit_bounds_a_fork_loop(lxc: LxcHarness):  # type: ignore[no-untyped-def]
    """A process forking 200 sleepers under pids.max 32 gets EAGAIN before 32 tasks; its exit ends them all."""
    script = (
        "exec python3 - > forks.txt <<'EOF'\n"
        "import os, time\n"
        "made = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        print(made, e.errno, flush=True)\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(1000)\n"
        "        os._exit(0)\n"
        "    made += 1\n"
        "EOF\n"
    )
    spec = lxc.spec(script, pids_limit=32)
    result = yield outcome(lxc.runtime.start(spec).exited)
    made, err = map(int, (spec.work_dir / "forks.txt").read_text().split())
    assert result.exit_code == 0
    assert err == 11  # EAGAIN
    assert 0 < made < 32


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_a_fork_bomb_hits_the_pids_limit_and_kill_ends_it(lxc: LxcHarness):  # type: ignore[no-untyped-def]
    """The classic bash fork bomb stays within pids.max 64 and kill(0) removes every process of it."""
    spec = lxc.spec("bomb() { bomb | bomb & }; bomb\nsleep 1000\n", pids_limit=64)
    c = lxc.runtime.start(spec)
    yield outcome(c.started)
    events = lxc.runtime.cgroup_dir("pids", c.container_id) / "pids.events"
    yield wait_until(lambda: events.exists() and int(events.read_text().split()[1]) > 0, "a fork failed on pids.max")
    assert len(lxc.processes(c)) <= 64
    assert int((events.parent / "pids.current").read_text()) <= 64
    c.kill(0)
    result = yield outcome(c.exited)
    assert result.exit_code == 137
    assert not lxc.runtime.cgroup_dir("pids", c.container_id).exists()


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_kill_leaves_no_process_behind(lxc: LxcHarness):  # type: ignore[no-untyped-def]
    """kill() of `sleep 1000` with a background child: every host process of it is gone, and its cgroups."""
    c = lxc.start(Program(background_child=True))
    yield outcome(c.started)
    yield wait_until(lambda: len(lxc.processes(c)) >= 5, "init, wrapper, bash and two sleeps run")
    pids = lxc.processes(c)
    assert c.pid in pids
    c.kill(5.0)
    result = yield outcome(c.exited)
    assert result.exit_code == 143
    assert [p for p in pids if alive(p)] == []
    for controller in ("pids", "memory", "freezer"):
        assert not lxc.runtime.cgroup_dir(controller, c.container_id).exists()
    assert not (lxc.runtime.base_dir / "containers" / c.container_id).exists()


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_the_main_process_exit_ends_the_container_and_its_leftovers(lxc: LxcHarness):  # type: ignore[no-untyped-def]
    """When the script exits, a daemon it left behind is killed and the script's code is reported."""
    c = lxc.runtime.start(lxc.spec("setsid sleep 1000 &\nexit 4\n"))
    result = yield outcome(c.exited)
    assert result.exit_code == 4
    assert not lxc.runtime.cgroup_dir("pids", c.container_id).exists()


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_java_and_python_run_inside(lxc: LxcHarness):  # type: ignore[no-untyped-def]
    """The image's `java -version` (OpenJDK 17) and its /usr/bin/python3 (3.11) run in a container and exit 0;
    the JVM finds its own cgroup and limit (its container metrics, which ``ManagementFactory`` and so Spark's
    driver read, died on the host's cgroup mounts when the host's /sys was bound in)."""
    script = (
        f"{JAVA} -XshowSettings:system -version 2> java.txt && "
        '/usr/bin/python3 -c "import sys; print(6 * 7, sys.version_info[:2])" > python.txt\n'
    )
    spec = lxc.spec(script, memory_limit_bytes=512 * MIB)
    result = yield outcome(lxc.runtime.start(spec).exited)
    assert result.exit_code == 0, result.diagnostics
    java = (spec.work_dir / "java.txt").read_text().lower()
    assert "openjdk" in java and '"17.' in java
    assert "provider: cgroupv1" in java and "memory limit: 512.00m" in java and "exception" not in java, java
    assert (spec.work_dir / "python.txt").read_text() == "42 (3, 11)\n"


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_the_container_sees_the_images_usr_and_etc_not_the_hosts(lxc: LxcHarness):  # type: ignore[no-untyped-def]
    """/etc/os-release is the image's (Debian 12); marker files made in the host's /etc and /usr/local,
    and the host's lxc-execute, are not there; /etc/hosts and /etc/resolv.conf are the host's;
    the shared image root is left exactly as it was."""
    tag = uuid.uuid4().hex
    markers = [Path("/etc") / f"cortex-test-{tag}", Path("/usr/local") / f"cortex-test-{tag}"]
    host_only = shutil.which("lxc-execute") or "/usr/bin/lxc-execute"  # in the host's /usr, not in the image
    before = {d: sorted(os.listdir(lxc.image / d)) for d in (".", "etc", "usr", "usr/local")}
    checks = "".join(
        f'if [ -e "{p}" ]; then echo "{p} visible"; else echo "{p} absent"; fi\n' for p in [*markers, host_only]
    )
    script = f"cat /etc/os-release > os-release\ncat /etc/hosts > hosts\ncat /etc/resolv.conf > resolv.conf\n{checks}"
    try:
        for marker in markers:
            marker.write_text("the host's\n")
        spec = lxc.spec("exec > report.txt 2>&1\n" + script)
        result = yield outcome(lxc.runtime.start(spec).exited)
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)
    assert result.exit_code == 0, result.diagnostics
    work = spec.work_dir
    assert (work / "report.txt").read_text().splitlines() == [f"{p} absent" for p in [*markers, host_only]]
    os_release = (work / "os-release").read_text()
    assert os_release == (lxc.image / "etc" / "os-release").read_text()
    assert 'VERSION_ID="12"' in os_release.splitlines() and "ID=debian" in os_release.splitlines()
    assert (work / "hosts").read_text() == Path("/etc/hosts").read_text()
    assert (work / "resolv.conf").read_text() == Path("/etc/resolv.conf").read_text()
    assert {d: sorted(os.listdir(lxc.image / d)) for d in before} == before


@needs_lxc
def test_start_refuses_a_spec_without_a_runtime_image(lxc: LxcHarness, tmp_path: Path) -> None:
    """No root_image: ContainerStartError saying how to name one; a dir that is no unpacked image is refused too."""
    with pytest.raises(ContainerStartError, match=r"names no runtime image: build one with `cortex-rm image build`"):
        lxc.runtime.start(lxc.spec("exit 0\n", root_image=None))
    (tmp_path / "not-an-image" / "etc").mkdir(parents=True)
    for root in (tmp_path / "not-an-image", tmp_path / "missing"):
        with pytest.raises(ContainerStartError, match="is not an unpacked image"):
            lxc.runtime.start(lxc.spec("exit 0\n", root_image=root))
    assert lxc.runtime.running == {}


@needs_lxc
@pytest_twisted.inlineCallbacks
def test_a_launch_that_never_runs_fails_started_and_exits_minus_one(tmp_path: Path, runtime_image_root: Path):  # type: ignore[no-untyped-def]
    """When lxc-execute ends without starting the container, `started` fails and the exit code is -1."""
    runtime = LxcRuntime(reactor(), tmp_path / "runtime", lxc_execute="/bin/false")
    harness = LxcHarness(tmp_path, runtime_image_root)
    c = runtime.start(harness.spec("exit 0\n"))
    failures: list[Any] = []
    c.started.addErrback(failures.append)
    try:
        result = yield outcome(c.exited)
    finally:
        runtime.close()
    assert result.exit_code == LAUNCH_FAILED_EXIT_CODE
    assert "could not start" in result.diagnostics
    assert failures and failures[0].check(ContainerStartError)
    assert not (tmp_path / "runtime" / "containers" / c.container_id).exists()


@needs_lxc
def test_start_refuses_specs_it_cannot_mount(lxc: LxcHarness, tmp_path: Path) -> None:
    """Missing, symlinked, oddly named or reserved dirs raise ContainerStartError naming the dir."""
    good = lxc.spec("exit 0\n")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "with space").mkdir()
    cases = {
        "not an existing directory": (tmp_path / "missing",),
        "symlink": (tmp_path / "link",),
        "normalised absolute path": (tmp_path / "with space",),
        "under /proc": (Path("/proc/self"),),
        "under /usr, which inside the container is the runtime image's": (Path("/usr/local"),),
    }
    for message, dirs in cases.items():
        spec = ContainerSpec(**{**good.__dict__, "writable_dirs": dirs})
        with pytest.raises(ContainerStartError, match=message):
            lxc.runtime.start(spec)
    # read-only too: the image's /usr and /etc would hide the host's dir
    for readonly in (Path("/usr/lib"), Path("/etc")):
        spec = ContainerSpec(**{**good.__dict__, "readonly_dirs": (readonly,)})
        with pytest.raises(ContainerStartError, match=f"under /{readonly.parts[1]}, which"):
            lxc.runtime.start(spec)
    assert lxc.runtime.running == {}


# ---------------------------------------------------------------- LXC's pure parts (no LXC needed)


def test_lxc_log_lines_give_the_started_pid_and_the_errors_worth_reporting() -> None:
    """The execute module's "started with pid" line gives init's pid; benign warnings are not reported."""
    started = parse_lxc_log_line(
        "lxc-execute c1 20261124011720.702 NOTICE   execute - ../src/lxc/execute.c:execute_post_start:34 - "
        "'/usr/bin/env' started with pid '9508'"
    )
    assert started is not None and started.started_pid == 9508 and not started.worth_reporting
    inherited = parse_lxc_log_line(
        "lxc-execute c1 20261124011720.676 WARN     start - ../src/lxc/start.c:lxc_check_inherited:329 - Inherited fd 4"
    )
    assert inherited is not None and inherited.started_pid is None and not inherited.worth_reporting
    error = parse_lxc_log_line(
        "lxc-execute c1 20261124011720.700 ERROR    conf - ../src/lxc/conf.c:mount_entry:2400 - No such file - Failed to mount"
    )
    assert error is not None and error.worth_reporting
    assert parse_lxc_log_line("Terminated") is None


def test_memory_snapshots_read_the_oom_kill_count_and_fall_back_to_failcnt() -> None:
    """oom_kill > 0 is an OOM kill; without the counter, a hit limit and 137 are taken as one."""
    text = (
        "memory.oom_control oom_kill_disable 0\nmemory.oom_control under_oom 0\nmemory.oom_control oom_kill 2\n"
        "memory.failcnt 0\nmemory.max_usage_in_bytes 104857600\nmemory.limit_in_bytes 104857600\n"
    )
    snapshot = parse_memory_snapshot(text)
    assert snapshot == MemorySnapshot(oom_kills=2, failcnt=0, max_usage_bytes=104857600, limit_bytes=104857600)
    assert snapshot.killed_for_memory(0)
    old_kernel = parse_memory_snapshot("memory.failcnt 7\n")
    assert old_kernel.killed_for_memory(137) and not old_kernel.killed_for_memory(1)
    assert not parse_memory_snapshot("").killed_for_memory(137)


def fake_image(root: Path) -> Path:
    """A small image root shaped like Debian 12's: usr/, etc/ (hosts, resolv.conf as a symlink),
    bin/lib/lib64/sbin -> usr/..., and a real lib32 dir."""
    for d in ("usr/bin", "usr/lib", "usr/lib64", "usr/sbin", "etc", "lib32", "var"):
        (root / d).mkdir(parents=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        (root / name).symlink_to(f"usr/{name}")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc" / "resolv.conf").symlink_to("../run/resolv.conf")
    return root


def test_an_image_layout_copies_the_images_top_level_links_and_dirs(tmp_path: Path) -> None:
    """of_image: the image's links (bin -> usr/bin...) and real dirs among IMAGE_TOP_NAMES; a host file is
    bound only where the host has it and the image has a plain file to mount over."""
    image = fake_image(tmp_path / "image")
    layout = ImageLayout.of_image(image, tmp_path / "no-cgroups", "node1", host_files=("/etc/hosts", "/etc/resolv.conf"))
    assert layout.root_image == image
    assert layout.root_links == (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"))
    assert layout.root_dirs == ("lib32",)
    assert layout.host_files == (("/etc/hosts",) if Path("/etc/hosts").is_file() else ())  # resolv.conf is a link here
    assert (layout.swap_accounting, layout.hostname) == (False, "node1")


def test_check_image_root_refuses_no_image_and_what_is_not_an_unpacked_one(tmp_path: Path) -> None:
    """None says how to name an image; a missing dir, a dir without usr/ or with usr -> / is refused."""
    image = fake_image(tmp_path / "image")
    spec = ContainerSpec(
        container_id="container_1_0001_01_000003", work_dir=tmp_path, log_dir=tmp_path, command=["/bin/true"],
        env={}, memory_limit_bytes=MIB, pids_limit=8, root_image=image,
    )
    assert check_image_root(spec) == image
    with pytest.raises(ContainerStartError, match=r"cortex-rm image push.*\[resourcemanager\] runtime_image"):
        check_image_root(replace(spec, root_image=None))
    (tmp_path / "linked" / "etc").mkdir(parents=True)
    (tmp_path / "linked" / "usr").symlink_to("/usr")
    for root in (tmp_path / "missing", tmp_path / "linked", tmp_path / "image" / "etc"):
        with pytest.raises(ContainerStartError, match="is not an unpacked image"):
            check_image_root(replace(spec, root_image=root))


def test_the_config_binds_the_images_usr_and_etc_and_the_specs_dirs_at_their_paths_parents_first(tmp_path: Path) -> None:
    """The image's /usr, /etc and real top-level dirs read-only, the host's name files over them, private /tmp,
    the spec's dirs (rw/ro, nested after parents), limits; nothing of the host's /usr, /etc or /lib."""
    (tmp_path / "app" / "work").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    (tmp_path / "cache").mkdir()
    spec = ContainerSpec(
        container_id="container_1_0001_01_000002",
        work_dir=tmp_path / "app" / "work",
        log_dir=tmp_path / "logs",
        command=["/bin/true"],
        env={},
        memory_limit_bytes=100 * MIB,
        pids_limit=50,
        writable_dirs=(tmp_path / "app", tmp_path / "logs"),
        readonly_dirs=(tmp_path / "cache",),
        root_image=Path("/cache/roots/abc"),
    )
    binds = check_spec_paths(spec)
    assert binds == Binds(
        writable=tuple(PurePosixPath(p) for p in (tmp_path / "app" / "work", tmp_path / "logs", tmp_path / "app")),
        readonly=(PurePosixPath(tmp_path / "cache"),),
    )
    image = ImageLayout(
        root_image=Path("/cache/roots/abc"), root_links=(("bin", "usr/bin"),), root_dirs=("lib32",),
        host_files=("/etc/hosts", "/etc/resolv.conf"), swap_accounting=True, hostname="node1",
    )
    config = render_config(
        spec=spec, binds=binds, image=image, rootfs=tmp_path / "rootfs", snapshot_hook=tmp_path / "hook",
        snapshot_file=tmp_path / "snap", cgroup_root=Path("/sys/fs/cgroup"), ids=IdBlock(1_000_013_824),
        seccomp_profile=tmp_path / "seccomp", cgroup_dir=f"{CGROUP_PARENT}/b15259/container_1_0001_01_000002",
        sysfs=Path("/state/lxc/sysfs"),
    )
    lines = config.splitlines()
    rel = str(tmp_path).lstrip("/")
    order = [line for line in lines if line.startswith("lxc.mount.entry") and rel in line]
    assert order == [
        f"lxc.mount.entry = {tmp_path}/app {rel}/app none rw,bind,create=dir 0 0",
        f"lxc.mount.entry = {tmp_path}/cache {rel}/cache none ro,bind,create=dir 0 0",
        f"lxc.mount.entry = {tmp_path}/logs {rel}/logs none rw,bind,create=dir 0 0",
        f"lxc.mount.entry = {tmp_path}/app/work {rel}/app/work none rw,bind,create=dir 0 0",
    ]
    image_and_host = [line for line in lines if line.startswith("lxc.mount.entry") and " none ro,bind 0 0" in line]
    assert image_and_host == [  # in this order: the name files land on the image's /etc
        "lxc.mount.entry = /cache/roots/abc/usr usr none ro,bind 0 0",
        "lxc.mount.entry = /cache/roots/abc/etc etc none ro,bind 0 0",
        "lxc.mount.entry = /cache/roots/abc/lib32 lib32 none ro,bind 0 0",
        "lxc.mount.entry = /etc/hosts etc/hosts none ro,bind 0 0",
        "lxc.mount.entry = /etc/resolv.conf etc/resolv.conf none ro,bind 0 0",
    ]
    for expected in (
        "lxc.uts.name = node1",
        "lxc.rootfs.options = ro",
        "lxc.net.0.type = none",
        "lxc.console.path = none",
        f"lxc.cgroup.dir.container = {CGROUP_PARENT}/b15259/container_1_0001_01_000002",
        "lxc.idmap = u 0 1000013824 65536",
        "lxc.idmap = g 0 1000013824 65536",
        f"lxc.seccomp.profile = {tmp_path / 'seccomp'}",
        "lxc.mount.entry = /state/lxc/sysfs sys none bind,ro 0 0",
        f"lxc.cgroup.memory.limit_in_bytes = {100 * MIB}",
        f"lxc.cgroup.memory.memsw.limit_in_bytes = {100 * MIB}",
        "lxc.cgroup.pids.max = 50",
    ):
        assert expected in lines
    assert not any(line.startswith(("lxc.mount.entry = /usr ", "lxc.mount.entry = /etc ")) for line in lines)
    assert not any("shadow" in line or "ssh" in line for line in lines)


def test_the_containers_root_gets_the_mount_points_and_the_images_links_and_the_image_is_untouched(tmp_path: Path) -> None:
    """prepare_rootfs makes usr/, etc/, the image's real top dirs, its symlinks and the spec's mount points
    (but none below /tmp) in the container's own root, and writes nothing into the image."""
    image_root = fake_image(tmp_path / "image")
    before = sorted(str(p.relative_to(image_root)) for p in image_root.rglob("*"))
    image = ImageLayout.of_image(image_root, tmp_path / "no-cgroups", "node1")
    rootfs = tmp_path / "rootfs"
    binds = Binds(writable=(PurePosixPath("/var/lib/cortex/app"), PurePosixPath("/tmp/x/work")), readonly=())
    prepare_rootfs(rootfs, binds, image)
    assert {p.name for p in rootfs.iterdir()} == {
        "usr", "etc", "proc", "sys", "dev", "tmp", "root", "lib32", "bin", "lib", "lib64", "sbin", "var",
    }
    assert os.readlink(rootfs / "lib64") == "usr/lib64"
    assert (rootfs / "var" / "lib" / "cortex" / "app").is_dir() and not (rootfs / "tmp" / "x").exists()
    assert sorted(str(p.relative_to(image_root)) for p in image_root.rglob("*")) == before


def test_only_a_child_of_lxc_execute_is_taken_for_the_containers_init(tmp_path: Path) -> None:
    """A start line naming a process that lxc-execute did not spawn (a spoof through /proc/1/fd/3) is ignored."""
    import subprocess

    runtime = LxcRuntime(reactor(), tmp_path / "runtime")
    (tmp_path / "w").mkdir()
    spec = ContainerSpec(
        container_id="container_1_0001_01_000009", work_dir=tmp_path / "w", log_dir=tmp_path / "w",
        command=["/bin/true"], env={}, memory_limit_bytes=MIB, pids_limit=8,
    )
    container = LxcContainer(runtime, spec, tmp_path / "c", f"cortex/{spec.container_id}")
    container.monitor_pid = os.getpid()  # we play lxc-execute: our children are its
    line = "lxc-execute x 20261124011720.702 NOTICE   execute - ../src/lxc/execute.c:execute_post_start:34 - '/usr/bin/env' started with pid '{}'\n"
    container.lxc_log_received(line.format(1).encode())
    assert container.state.name == "LAUNCHING" and container.pid is None
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert parent_pid(child.pid) == os.getpid()
        container.lxc_log_received(line.format(child.pid).encode()[:40])  # lines may come in pieces
        container.lxc_log_received(line.format(child.pid).encode()[40:])
        assert container.state.name == "RUNNING" and container.pid == child.pid and container.started.called
    finally:
        child.kill()
        child.wait()
        if container._pidfd is not None:
            os.close(container._pidfd)


def test_a_container_whose_init_was_gone_when_its_start_line_was_read_reports_its_own_exit(tmp_path: Path) -> None:
    """Under load the start line may be read after the container already exited (``exit 4`` at
    once): lxc-execute's own exit then carries the container's code, not a failed start, and
    no pid is kept for it (the number may name another process by now)."""
    runtime = LxcRuntime(reactor(), tmp_path / "runtime")
    (tmp_path / "w").mkdir()
    spec = ContainerSpec(
        container_id="container_1_0001_01_000010", work_dir=tmp_path / "w", log_dir=tmp_path / "w",
        command=["/bin/true"], env={}, memory_limit_bytes=MIB, pids_limit=8,
    )
    container = LxcContainer(runtime, spec, tmp_path / "c", f"cortex/{spec.container_id}")
    container.monitor_pid = os.getpid()
    gone = subprocess.Popen(["true"])
    gone.wait()
    line = "lxc-execute x 20261124011720.702 NOTICE   execute - ../src/lxc/execute.c:execute_post_start:34 - '/usr/bin/env' started with pid '{}'\n"
    container.lxc_log_received(line.format(gone.pid).encode())
    assert container.state.name == "LAUNCHING" and container.pid is None
    ended: list[object] = []
    container.exited.addBoth(ended.append)
    container.process_ended(4, None)
    assert container.started.called and ended and getattr(ended[0], "exit_code", None) == 4, ended
