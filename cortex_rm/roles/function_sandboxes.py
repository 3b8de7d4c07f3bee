"""Functions' sandboxes on a node: LXC containers of the NodeManager's runtime, kept warm per function version.

A sandbox is a container of the node's runtime (``LxcRuntime``: the cluster's runtime image, a user namespace,
cgroup limits, capabilities cut, seccomp) with a network namespace of its own holding only loopback
(``ContainerSpec.own_network``: a function reaches nothing, not the node's ports nor anyone's), the memory of
the function's ``limits.memory_mb`` and ``PIDS_LIMIT`` tasks.  It sees the image, its own work and log dirs (on
the node's disk), a private ``/tmp``, the runner (``container/handler_runner.py``), the function's code and its
socket's dir, all read-only but its own dirs.

The runner connects to a Unix socket the node listens on (its only way out; a process that is not in the
sandbox's cgroup is turned away: ``SO_PEERCRED``), loads the code once and says whether it could; then the node
sends it activations one at a time (4-byte length, JSON).  ``WarmPool`` decides which sandbox runs an
activation; the node enforces the function's timeout (the sandbox is killed: TIMEOUT), and a sandbox that the
memory cgroup's OOM killer hit ends its activation as MEMORY_EXCEEDED.  A sandbox whose activation did not end
cleanly, or that has more tasks after it than when its runner was up (a handler that left a process or a thread
behind: a fork bomb's children), is never reused.

The sandboxes' dirs are made and removed on the NodeManager's file threads (``run``), one piece of work at a
time in the order issued (``DeferredLock``), so a previous run's are gone before a sandbox's are made, and those
are made before its socket listens and before they go.  A removal that nothing waits for logs its failure.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IDelayedCall, IListeningPort
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from cortex_rm.container import handler_runner
from cortex_rm.container.runtime import ContainerExit, ContainerRuntime, ContainerSpec, ContainerStartError, RunningContainer
from cortex_rm.events.functions import FunctionSpec
from cortex_rm.events.outcomes import MAX_LOG_BYTES, OutcomeStatus, SandboxResult
from cortex_rm.events.warm_pool import Slot, WarmPool
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.reactors import INodeReactor

log = Logger()

#: Where nodes keep their sandboxes' sockets (``<this>/<node tag>/<sandbox>/runner.sock``): a short
#: path, so that it fits the 108 bytes of a Unix socket address (the sandboxes' files are on the node's disk).
SOCKETS_ROOT = Path("/run/cortex-rm-functions")
PIDS_LIMIT = 64
NODE_SAYS = "__node__"  # marks an end the node decided (a timeout...), which no runner's message can claim
START_TIMEOUT_S = 60.0
APPLICATION = "cortex-functions"  # the block of host ids every sandbox runs as
MIB = 1024 * 1024
PYTHON = "/usr/bin/python3"


class _Runner(Int32StringReceiver):
    """The node's end of one runner's socket: each frame is one JSON message."""

    MAX_LENGTH = 2 * MIB

    def __init__(self, sandbox: _Sandbox) -> None:
        self.sandbox = sandbox

    def connectionMade(self) -> None:
        if not self.sandbox.is_its_runner(_peer_pid(self)):  # a local process that found the socket first
            log.warn("functions: a process outside sandbox {id} connected to its socket; closed", id=self.sandbox.id)
            if self.transport is not None:
                self.transport.loseConnection()
            return
        self.sandbox.connected(self)

    def stringReceived(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            message = {"status": "internal_error", "error": "the runner sent something that is not a JSON object"}
        message.pop(NODE_SAYS, None)  # only the node decides timeouts and the like
        self.sandbox.received(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.sandbox.lost()

    def lengthLimitExceeded(self, length: int) -> None:
        self.sandbox.received({"status": "internal_error", "error": f"the runner sent a frame of {length} bytes"})
        if self.transport is not None:
            self.transport.loseConnection()


def _peer_pid(protocol: _Runner) -> int | None:
    """The pid of the process at the other end of a Unix socket (SO_PEERCRED), None if unknown."""
    handle = getattr(protocol.transport, "socket", None)
    if handle is None:
        return None
    try:
        pid, _, _ = struct.unpack("3i", handle.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return None
    return int(pid)


class _RunnerFactory(ServerFactory):
    def __init__(self, sandbox: _Sandbox) -> None:
        self.sandbox = sandbox

    def buildProtocol(self, addr: IAddress | None) -> _Runner:
        return _Runner(self.sandbox)


class _Sandbox:
    """One sandbox: its container, its runner's connection, the activation it runs."""

    def __init__(self, pool: FunctionSandboxes, slot: Slot, spec: FunctionSpec) -> None:
        self.pool, self.slot, self.spec = pool, slot, spec
        self.id = f"fn_{slot.number}_{int(pool.reactor.seconds() * 1000) % 10**10}"
        self.dir = pool.base_dir / self.id
        self.container: RunningContainer | None = None
        self.listening: IListeningPort | None = None
        self.runner: _Runner | None = None
        self.ready: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.answer: defer.Deferred[dict[str, Any]] | None = None
        self.ended: ContainerExit | None = None
        self.tasks_when_ready: int | None = None  # tasks in its pids cgroup once the runner was up
        self.stopped = False  # dropped by the node: it must never start

    def make_dirs(self) -> None:
        for d in (self.dir, self.dir / "work", self.dir / "logs", self.pool.socket_root / self.id):
            d.mkdir(mode=0o755, exist_ok=True)
            d.chmod(0o755)

    def start(self, code: Path) -> None:
        """Listen on its socket and start its container (its dirs are made)."""
        if self.stopped:
            raise ContainerStartError("the sandbox was stopped before it could start")
        work, logs, sockets = self.dir / "work", self.dir / "logs", self.pool.socket_root / self.id
        socket_path = sockets / "runner.sock"
        self.listening = self.pool.reactor.listenUNIX(str(socket_path), _RunnerFactory(self), mode=0o666)
        spec = ContainerSpec(
            container_id=self.id,
            work_dir=work,
            log_dir=logs,
            command=[PYTHON, "-I", "-S", "-B", str(self.pool.runner), str(socket_path), str(code), self.spec.code_kind,
                     self.spec.handler],  # fmt: skip
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"},
            memory_limit_bytes=self.spec.limits.memory_mb * MIB,
            pids_limit=PIDS_LIMIT,
            readonly_dirs=(self.pool.runner.parent, code.parent, sockets),  # (connect() works on a read-only mount)
            root_image=self.pool.image_root(),
            application=APPLICATION,
            own_network=True,
        )
        self.container = self.pool.runtime.start(spec)
        self.container.exited.addCallback(self._exited)

    def is_its_runner(self, pid: int | None) -> bool:
        """Whether ``pid`` runs in this sandbox's container (its cgroup names the container)."""
        if pid is None:
            return False
        try:
            return self.id in Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return False

    def connected(self, runner: _Runner) -> None:
        if self.runner is not None:
            if runner.transport is not None:
                runner.transport.loseConnection()  # one runner per sandbox
            return
        self.runner = runner
        if self.listening is not None:
            self.listening.stopListening()
            self.listening = None

    def received(self, message: dict[str, Any]) -> None:
        if not self.ready.called:
            self.ready.callback(message)
        elif self.answer is not None and not self.answer.called:
            answer, self.answer = self.answer, None
            answer.callback(message)

    def lost(self) -> None:
        """The runner's end closed: its container is ending, and ``_exited`` says how (out of memory...)."""
        if self.container is None:
            self._fail({"status": "internal_error", "error": "the sandbox's runner went away"})

    def _exited(self, exit: ContainerExit) -> None:
        self.ended = exit
        if exit.killed_for_memory:
            why = {"status": OutcomeStatus.MEMORY_EXCEEDED.value,
                   "error": f"it used more than its {self.spec.limits.memory_mb} MiB and was killed"}  # fmt: skip
        else:
            why = {"status": "internal_error", "error": f"the sandbox ended (exit {exit.exit_code}) {exit.diagnostics}".strip()}
        self._fail(why)
        self.pool.gone(self)

    def _fail(self, message: dict[str, Any]) -> None:
        message = {**message, NODE_SAYS: True}
        if not self.ready.called:
            self.ready.callback({"ready": False, **message})
        elif self.answer is not None and not self.answer.called:
            answer, self.answer = self.answer, None
            answer.callback(message)

    def run(self, request: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        assert self.runner is not None
        self.answer = defer.Deferred()
        self.runner.sendString(json.dumps(request).encode())
        return self.answer

    def stop(self) -> None:
        self.stopped = True
        if self.listening is not None:
            self.listening.stopListening()
            self.listening = None
        if self.container is not None and self.ended is None:
            self.container.kill(0)

    def remove_dirs(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.pool.socket_root / self.id, ignore_errors=True)


class FunctionSandboxes:
    """The node's sandboxes (see the module docstring)."""

    def __init__(
        self,
        runtime: ContainerRuntime,
        reactor: INodeReactor,
        base_dir: Path,
        socket_root: Path,
        image_root: Any,
        *,
        run: Runner,
        max_sandboxes: int,
        idle_timeout_s: float,
        max_memory_mb: int = 1 << 24,
    ) -> None:
        self.runtime = runtime
        self._file_threads = run  # the NodeManager's file threads
        self._file_work = defer.DeferredLock()  # ... given one piece at a time, in the order issued
        self.reactor = reactor
        self.base_dir = base_dir  # the sandboxes' work and log dirs, on the node's disk
        self.socket_root = socket_root  # their runners' sockets, on a short path
        self.image_root = image_root  # () -> the runtime image's root (None: not here yet)
        self.pool = WarmPool(max_sandboxes, idle_timeout_s, max_memory_mb)
        self.sandboxes: dict[int, _Sandbox] = {}
        self.runner = base_dir / "runner" / "handler_runner.py"
        self._sweep: IDelayedCall | None = None
        self._freed: list[defer.Deferred[None]] = []  # activations waiting for a sandbox to free
        self.cold_starts = 0
        self.warm_starts = 0

    def start(self) -> defer.Deferred[None]:
        """The runner's copy (read-only to sandboxes), then the idle sweep; fires once the copy is made."""
        return self._files(self._prepare).addCallback(lambda _: self._schedule_sweep())

    def _files(self, work: Callable[[], None]) -> defer.Deferred[None]:
        """Run blocking file ``work`` on the file threads once the work issued before it is done."""
        return self._file_work.run(self._file_threads, work)

    def _prepare(self) -> None:
        for d in (self.base_dir, self.socket_root):  # sandboxes a previous run left are gone with it
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, mode=0o755)
        self.runner.parent.mkdir(mode=0o755)
        for d in (self.base_dir.parent, self.base_dir, self.socket_root.parent, self.socket_root):
            d.chmod(0o755)  # the sandboxes' root passes through them (lxc_config.check_reachable)
        shutil.copyfile(handler_runner.__file__, self.runner)
        self.runner.chmod(0o644)

    def busy(self, spec: FunctionSpec) -> bool:
        """Whether an activation of ``spec`` would wait for a sandbox now."""
        return self.pool.busy((spec.name, spec.version), spec.limits.max_concurrency, spec.limits.memory_mb)

    def refusal(self, spec: FunctionSpec) -> str | None:
        """Why ``spec`` can never run here (None: it can)."""
        if not self.pool.fits(spec.limits.memory_mb):
            return f"it asks {spec.limits.memory_mb} MiB; this node gives functions {self.pool.max_memory_mb} MiB in all"
        return None

    def invoke(self, spec: FunctionSpec, code: Path, payload: bytes, activation_id: str) -> defer.Deferred[SandboxResult]:
        """Run one activation (never fails: every trouble is a SandboxResult)."""
        return defer.ensureDeferred(self._invoke(spec, code, payload, activation_id))

    async def _invoke(self, spec: FunctionSpec, code: Path, payload: bytes, activation_id: str) -> SandboxResult:
        started = self.reactor.seconds()

        def result(status: OutcomeStatus, error: str = "", value: bytes = b"", logs: str = "", cold: bool = False) -> SandboxResult:
            took = int((self.reactor.seconds() - started) * 1000)
            return SandboxResult(status, value, error, logs.encode("utf-8", "replace")[:MAX_LOG_BYTES], took, cold)

        key = (spec.name, spec.version)
        placement = self.pool.place(key, spec.limits.max_concurrency, self.reactor.seconds(), spec.limits.memory_mb)
        while placement.busy:  # (the executor saw room, but a concurrent activation took it first)
            if self.reactor.seconds() - started >= spec.limits.timeout_s:
                return result(OutcomeStatus.TIMEOUT, "it waited its whole timeout for a sandbox on a busy node")
            await self._slot_freed()
            placement = self.pool.place(key, spec.limits.max_concurrency, self.reactor.seconds(), spec.limits.memory_mb)
        for evicted in placement.evict:
            self._stop(evicted)
        slot = placement.new or placement.warm
        assert slot is not None
        sandbox: _Sandbox | None = None
        try:
            if placement.new is not None:
                self.cold_starts += 1
                sandbox = self.sandboxes[slot.number] = _Sandbox(self, slot, spec)
                failed = await self._start(sandbox, code)
                if failed is not None:
                    return result(failed[0], failed[1], cold=True)
            else:
                self.warm_starts += 1
                sandbox = self.sandboxes[slot.number]
            status, error, value, logs = await self._run(sandbox, slot, spec, activation_id, payload)
            return result(status, error, value, logs, placement.new is not None)
        except Exception as e:  # noqa: BLE001 - our own failure: the activation says so, the sandbox goes
            log.failure("functions: sandbox of {name} failed", name=spec.name)
            if sandbox is not None:
                self._drop(sandbox)
            else:
                self.pool.discard(slot)
            return result(OutcomeStatus.INTERNAL_ERROR, f"the sandbox failed: {type(e).__name__}: {e}")

    async def _start(self, sandbox: _Sandbox, code: Path) -> tuple[OutcomeStatus, str] | None:
        """Start ``sandbox`` and wait for its runner; what went wrong (None: it is ready)."""
        try:
            if self.image_root() is None:
                raise ContainerStartError("the runtime image is not on this node yet; try again shortly")
            await self._files(sandbox.make_dirs)
            sandbox.start(code)
        except (ContainerStartError, OSError, CannotListenError) as e:
            self._drop(sandbox)
            return OutcomeStatus.INTERNAL_ERROR, f"the sandbox cannot start: {e}"
        timer = self.reactor.callLater(START_TIMEOUT_S, sandbox._fail, {"status": "internal_error",
                                                                         "error": "the sandbox did not start in time"})  # fmt: skip
        ready = await sandbox.ready
        if timer.active():
            timer.cancel()
        if not ready.get("ready"):
            self._drop(sandbox)
            status = OutcomeStatus.DEVELOPER_ERROR if ready.get("status") == "developer_error" else OutcomeStatus.INTERNAL_ERROR
            return status, str(ready.get("error", ""))
        sandbox.tasks_when_ready = self._tasks(sandbox)
        self.pool.ready(sandbox.slot)
        return None

    async def _run(
        self, sandbox: _Sandbox, slot: Slot, spec: FunctionSpec, activation_id: str, payload: bytes
    ) -> tuple[OutcomeStatus, str, bytes, str]:
        """One activation in a ready sandbox: status, error, result, logs; the sandbox is kept warm or dropped."""
        request = {"activation": activation_id, "function": spec.name, "version": spec.version,
                   "payload": payload.decode("utf-8", "replace"), "deadline_ms": spec.limits.timeout_ms}  # fmt: skip
        answer = sandbox.run(request)
        timer = self.reactor.callLater(spec.limits.timeout_s, sandbox._fail, {
            "status": OutcomeStatus.TIMEOUT.value,
            "error": f"the handler ran longer than its timeout of {spec.limits.timeout_s:g} s and was stopped",
        })  # fmt: skip
        message = await answer
        if timer.active():
            timer.cancel()
        allowed = _NODE_STATUSES if message.get(NODE_SAYS) else _RUNNER_STATUSES
        status = OutcomeStatus(message["status"]) if message.get("status") in allowed else OutcomeStatus.INTERNAL_ERROR
        clean = status in (OutcomeStatus.SUCCESS, OutcomeStatus.APPLICATION_ERROR) and "logs" in message
        if clean and sandbox.ended is None and self._tasks(sandbox) == sandbox.tasks_when_ready is not None:
            self.pool.release(slot, self.reactor.seconds())  # a clean end: warm for the next one
            self._wake()
        else:
            self._drop(sandbox)  # it ended badly, or left processes or threads behind: never reused
        value = str(message.get("result") or "").encode() if status is OutcomeStatus.SUCCESS else b""
        return status, str(message.get("error", ""))[:4096], value, str(message.get("logs") or "")

    def _slot_freed(self) -> defer.Deferred[None]:
        self._freed.append(defer.Deferred())
        return self._freed[-1]

    def _wake(self) -> None:
        waiting, self._freed = self._freed, []
        for d in waiting:
            d.callback(None)

    def _tasks(self, sandbox: _Sandbox) -> int | None:
        """The processes and threads in the sandbox now (its pids cgroup); None when the runtime cannot say."""
        if (cgroup_dir := getattr(self.runtime, "cgroup_dir", None)) is None:
            return None
        try:
            return int((cgroup_dir("pids", sandbox.id) / "pids.current").read_text())
        except (OSError, ValueError):
            return None

    def gone(self, sandbox: _Sandbox) -> None:
        """A sandbox's container ended: it is out of the pool."""
        self.pool.discard(sandbox.slot)
        if self.sandboxes.get(sandbox.slot.number) is sandbox:
            del self.sandboxes[sandbox.slot.number]
        sandbox.stop()
        self.reactor.callLater(0, self._remove_dirs, sandbox)

    def stop(self) -> defer.Deferred[None]:
        """Stop every sandbox; fires once their containers have ended and their dirs are removed."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        waits = []
        for sandbox in list(self.sandboxes.values()):
            if sandbox.container is not None and sandbox.ended is None:
                waits.append(sandbox.container.exited)
            self._drop(sandbox)
        return defer.ensureDeferred(self._stopped(waits))

    async def _stopped(self, waits: list[defer.Deferred[ContainerExit]]) -> None:
        await defer.DeferredList(waits)
        await task.deferLater(self.reactor, 0, lambda: None)  # (``gone`` removes an ended one's dirs a turn later)
        await self._files(lambda: shutil.rmtree(self.socket_root, ignore_errors=True))  # after all issued: /run's dir

    def _drop(self, sandbox: _Sandbox) -> None:
        self.pool.discard(sandbox.slot)
        self.sandboxes.pop(sandbox.slot.number, None)
        sandbox.stop()
        if sandbox.container is None:
            self._remove_dirs(sandbox)
        self._wake()

    def _remove_dirs(self, sandbox: _Sandbox) -> None:
        """Remove ``sandbox``'s dirs on the file threads; nothing waits for that, so a failure is logged here."""
        failed = "functions: removing the dirs of sandbox {id} failed; they stay until the node restarts"
        self._files(sandbox.remove_dirs).addErrback(lambda f: log.failure(failed, f, id=sandbox.id))

    def _stop(self, slot: Slot) -> None:
        if (sandbox := self.sandboxes.get(slot.number)) is not None:
            self._drop(sandbox)

    def _schedule_sweep(self) -> None:
        self._sweep = self.reactor.callLater(min(30.0, self.pool.idle_timeout_s), self._sweep_idle)

    def _sweep_idle(self) -> None:
        for slot in self.pool.expired(self.reactor.seconds()):
            self._stop(slot)
        self._schedule_sweep()


#: What a runner may report (anything else from inside a sandbox is internal_error), and what the node may.
_RUNNER_STATUSES = frozenset({OutcomeStatus.SUCCESS.value, OutcomeStatus.APPLICATION_ERROR.value})
_NODE_STATUSES = frozenset({OutcomeStatus.TIMEOUT.value, OutcomeStatus.MEMORY_EXCEEDED.value, OutcomeStatus.INTERNAL_ERROR.value})
