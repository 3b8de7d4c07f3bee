"""A NodeManager's LXC runtime with recovery, alone in a process of its own, for tests that SIGKILL it.

``python -m tests.support.lxc_recovery_child STATE_DIR IMAGE_ROOT ID_RANGE start N`` builds an
``LxcRuntime`` with ``recovery`` as the NodeManager role does (``<STATE_DIR>/lxc``; work and log dirs
under ``STATE_DIR/work`` and ``STATE_DIR/logs``), starts N containers, each of its own application,
that wait for a file ``stop`` in their work dir and exit with the code it holds, keeps a record of
each in ``STATE_DIR/nm-recovery`` as the ``ContainerManager`` does (before the start, then with its
init's pid and cgroup), and once all have started writes ``STATE_DIR/started.json``:
``{container id: {"init": pid, "monitor": pid, "cgroup": dir, "work": dir}}``.

``... recover`` is the next start: it decides every record (``nm_recovery.recover``), re-attaches the
running containers (``lxc_recovery.reattach``), reaps the rest, and writes ``STATE_DIR/recovered.json``
(``{container id: {"reattached": bool, "exit_code": int | null}}``); each re-attached container's end
is added to ``STATE_DIR/exited.json`` (``{container id: exit code}``).

Either runs until killed; a SIGTERM kills its containers first, as a daemon's clean stop does.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor as global_reactor

from cortex_rm.container.id_ranges import IdRange
from cortex_rm.container.lxc_recovery import reattach
from cortex_rm.container.lxc_runtime import LxcRuntime
from cortex_rm.container.nm_recovery import (
    RECOVERY_DIR,
    Completed,
    ContainerRecord,
    ContainerRecordStore,
    pid_start_ticks,
    recover,
    same_process_alive,
    written_exit_code,
)
from cortex_rm.container.runtime import ContainerExit, ContainerSpec, RunningContainer

MIB = 1024 * 1024
SCRIPT = "#!/bin/bash\nsleep 1000 &\ntouch ready\nwhile [ ! -e stop ]; do sleep 0.1; done\nexit $(cat stop)\n"


def _write_json(path: Path, value: Any) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(value))
    path.with_suffix(".tmp").rename(path)


def start(
    runtime: LxcRuntime, store: ContainerRecordStore, state_dir: Path, image: Path, count: int
) -> list[RunningContainer]:
    containers = []
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
        store.write(
            ContainerRecord(cid, spec.application, "alice", 128, 1, 0, 0, str(work), str(logs), lxc_name=cid)
        )
        containers.append(runtime.start(spec))

    def report(_: object) -> None:
        found = {}
        for c in containers:
            assert c.pid is not None
            cgroup = c.cgroup_dir  # type: ignore[attr-defined]
            store.launched(c.container_id, c.pid, pid_start_ticks(c.pid), cgroup_dir=cgroup)
            monitor = c.monitor_pid  # type: ignore[attr-defined]
            found[c.container_id] = {"init": c.pid, "monitor": monitor, "cgroup": cgroup}
        _write_json(state_dir / "started.json", found)

    defer.gatherResults([c.started for c in containers]).addCallback(report)
    return containers


def recover_all(runtime: LxcRuntime, store: ContainerRecordStore, state_dir: Path) -> list[RunningContainer]:
    found: dict[str, dict[str, Any]] = {}
    exited: dict[str, int] = {}
    running: list[RunningContainer] = []
    for decision in recover(store.load(), same_process_alive, written_exit_code):
        cid = decision.record.container_id
        if isinstance(decision, Completed):
            found[cid] = {"reattached": False, "exit_code": decision.exit_code}
            store.remove(cid)
            continue
        container = reattach(runtime, decision.record)
        found[cid] = {"reattached": True, "exit_code": None}
        running.append(container)

        def ended(exit: ContainerExit, cid: str = cid) -> ContainerExit:
            exited[cid] = exit.exit_code
            store.remove(cid)
            _write_json(state_dir / "exited.json", exited)
            return exit

        container.exited.addCallback(ended)
    kept = [cid for cid, f in found.items() if f["reattached"]]
    print("reaped", runtime.reap_left_behind([state_dir / "work", state_dir / "logs"], keep=kept), flush=True)
    _write_json(state_dir / "recovered.json", found)
    return running


def main(state_dir: Path, image: Path, ids: IdRange, mode: str, count: int) -> None:
    reactor = global_reactor
    runtime = LxcRuntime(reactor, state_dir.resolve() / "lxc", ids=ids, recovery=True)  # type: ignore[arg-type]
    store = ContainerRecordStore(state_dir / RECOVERY_DIR)
    if mode == "start":
        containers = start(runtime, store, state_dir, image, count)
    else:
        containers = recover_all(runtime, store, state_dir)

    def stop() -> defer.Deferred[object]:
        live = [c for c in containers if not c.exited.called]
        for c in live:
            c.kill(0)
        return defer.gatherResults([c.exited for c in live]).addCallback(lambda _: runtime.close())

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), IdRange.parse(sys.argv[3]), sys.argv[4], int((sys.argv[5:] or ["0"])[0]))
