"""A NodeManager's LXC runtime alone, in a process of its own, for tests that SIGKILL it.

``python -m tests.support.lxc_runtime_child STATE_DIR IMAGE_ROOT N ID_RANGE [--as-before-setpriv]`` builds
an ``LxcRuntime`` as the NodeManager role does (``<STATE_DIR>/lxc``, the id range given; work and log dirs
under ``STATE_DIR/work`` and ``STATE_DIR/logs``), reaps what a previous run left, starts N containers that
sleep (each with a background child, each of its own application), and once all have started writes
``STATE_DIR/started.json``: ``{container id: {"init": pid, "monitor": pid, "cgroup": dir}}``.  Then it
runs until killed (a SIGTERM stops its containers first, as a daemon's clean stop does).

``--as-before-setpriv`` runs lxc-execute without its parent-death signal, as a daemon killed between
the fork and setpriv's ``prctl`` (or one older than it) leaves it: its containers outlive a SIGKILL.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from twisted.internet import defer, reactor as global_reactor

from cortex_rm.container import lxc_runtime
from cortex_rm.container.id_ranges import IdRange
from cortex_rm.container.lxc_runtime import LxcContainer, LxcRuntime
from cortex_rm.container.runtime import ContainerSpec

MIB = 1024 * 1024
SCRIPT = "#!/bin/bash\nsleep 1000 &\ntouch ready\nsleep 1000\n"


def main(state_dir: Path, image: Path, count: int, ids: IdRange, death_signal: bool) -> None:
    reactor = global_reactor
    if not death_signal:
        with_setpriv = lxc_runtime.launch_argv
        lxc_runtime.launch_argv = lambda *args: with_setpriv(*args)[4:]  # type: ignore[assignment]
    runtime = LxcRuntime(reactor, state_dir.resolve() / "lxc", ids=ids)  # type: ignore[arg-type]
    print("reaped", runtime.reap_left_behind([state_dir / "work", state_dir / "logs"]), flush=True)
    containers: list[LxcContainer] = []
    for i in range(count):
        cid = f"container_{uuid.uuid4().int % 10**13:013d}_0001_01_{i + 1:06d}"
        work, logs = state_dir / "work" / cid, state_dir / "logs" / cid
        work.mkdir(parents=True)
        logs.mkdir(parents=True)
        (work / "launch_container.sh").write_text(SCRIPT)
        spec = ContainerSpec(
            container_id=cid, work_dir=work, log_dir=logs, command=["/bin/bash", str(work / "launch_container.sh")],
            env={"PATH": "/usr/bin:/bin"}, memory_limit_bytes=128 * MIB, pids_limit=64, root_image=image,
            application=f"application_1700000000000_{i + 1:04d}",
        )  # fmt: skip
        containers.append(runtime.start(spec))

    def report(_: object) -> None:
        found = {c.container_id: {"init": c.pid, "monitor": c.monitor_pid, "cgroup": c.cgroup_dir} for c in containers}
        (state_dir / "started.json.tmp").write_text(json.dumps(found))
        (state_dir / "started.json.tmp").rename(state_dir / "started.json")

    defer.gatherResults([c.started for c in containers]).addCallback(report)

    def stop() -> defer.Deferred[object]:
        for c in containers:
            c.kill(0)
        return defer.gatherResults([c.exited for c in containers]).addCallback(lambda _: runtime.close())

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), IdRange.parse(sys.argv[4]), "--as-before-setpriv" not in sys.argv)
