"""Run inside a network namespace by test_container_sandbox.py: containers of two applications
under the real LxcRuntime and NftFirewall, probing what they may reach; prints a JSON report.

argv: workdir image_root private_address
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from twisted.internet import defer, task

from cortex_rm.container.id_ranges import IdRange, node_id_range
from cortex_rm.container.lxc_runtime import LxcRuntime
from cortex_rm.container.net_policy import Members
from cortex_rm.container.runtime import ContainerSpec
from cortex_rm.roles.container_members import container_firewall
from cortex_rm.yarn.app_network import source_ports

MEMBER, OUTSIDER, DRIVER = "127.0.0.2", "127.0.0.5", "127.0.0.7"
SLOT_A = 5
DRIVER_PORT, DRIVER_BLOCKS = 47010, 47011  # a client-mode driver on this host: the port its command names, its block manager
SERVICE, CONTROL, LISTEN = 47001, 47002, 47003
PROBE = """
import socket, sys
for target in sys.argv[1:]:
    endpoint, _, source = target.partition("/")  # host:port[/source port to bind]
    host, port = endpoint.rsplit(":", 1)
    s = socket.socket(); s.settimeout(3)
    try:
        if source:
            s.bind(("0.0.0.0", int(source)))
        s.connect((host, int(port))); print(target, "reached")
    except OSError as e:
        print(target, "refused", type(e).__name__)
    s.close()
"""
LISTENER = f"""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", {LISTEN})); s.listen(8)
open("listening", "w").close()
s.settimeout(20)
try:
    while True:
        c, _ = s.accept(); c.close()
except OSError:
    pass
"""


def container_spec(
    workdir: Path, image: Path, cid: str, app: str, script: str, *args: str,
    then: str = "", readonly_dirs: tuple[Path, ...] = (), slot: int | None = None,
    peers: frozenset[tuple[str, int]] = frozenset(),
) -> ContainerSpec:  # fmt: skip
    """A container of ``app`` that runs ``script`` with ``args`` (its output in ``out.txt``), then
    the shell command ``then``."""
    work, logs = workdir / cid, workdir / f"{cid}-logs"
    work.mkdir()
    logs.mkdir()
    (work / "run.py").write_text(script)
    return ContainerSpec(
        container_id=cid, work_dir=work, log_dir=logs, env={"PATH": "/usr/bin:/bin"},
        command=["/bin/sh", "-c", f"python3 run.py {' '.join(args)} > out.txt 2>&1; {then or 'true'}"],
        memory_limit_bytes=256 << 20, pids_limit=64, root_image=image, application=app,
        readonly_dirs=readonly_dirs, port_slot=slot, peers=peers,
    )  # fmt: skip


def listen(host: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    return s


async def main(reactor, workdir: Path, image: Path, private: str) -> dict:  # type: ignore[no-untyped-def]
    ids = IdRange.parse(node_id_range(9))
    firewall = container_firewall("probe", ids, internet=False)
    firewall.install(Members(frozenset({MEMBER}), frozenset({(MEMBER, SERVICE)}), frozenset({(MEMBER, CONTROL)})))
    assert firewall.installed, firewall.error
    runtime = LxcRuntime(reactor, workdir / "lxc", ids=ids, firewall=firewall)
    secret = workdir / "shared" / "secret"
    secret.parent.mkdir()
    secret.write_text("host root only")
    secret.chmod(0o600)
    sockets = [listen(MEMBER, SERVICE), listen(MEMBER, CONTROL), listen(OUTSIDER, SERVICE), listen(DRIVER, DRIVER_PORT), listen(DRIVER, DRIVER_BLOCKS)]

    def spec(cid: str, app: str, script: str, *args: str, slot: int | None = None) -> ContainerSpec:
        return container_spec(
            workdir, image, cid, app, script, *args, slot=slot,
            then=f"touch mine; cat {secret} >> out.txt 2>&1; unshare -U true >> out.txt 2>&1; echo unshare=$? >> out.txt",
            readonly_dirs=(secret.parent,),
        )  # fmt: skip

    try:
        a = runtime.start(spec("container_1_0001_01_000001", "app_a", LISTENER, slot=SLOT_A))
        for _ in range(200):
            if (workdir / "container_1_0001_01_000001" / "listening").exists():
                break
            await task.deferLater(reactor, 0.1)
        in_slot_a = source_ports(SLOT_A)[0] + 3  # app B choosing a source port of A's slot
        targets = [f"{MEMBER}:{SERVICE}", f"{MEMBER}:{CONTROL}", f"{OUTSIDER}:{SERVICE}", f"{private}:{SERVICE}", f"{MEMBER}:{LISTEN}",
                   f"{DRIVER}:{DRIVER_BLOCKS}", f"{MEMBER}:{LISTEN}/{in_slot_a}", f"127.0.0.1:{LISTEN}/{in_slot_a + 1}",
                   f"{OUTSIDER}:{LISTEN}/{in_slot_a + 2}"]  # fmt: skip
        same = runtime.start(spec("container_1_0001_01_000002", "app_a", PROBE, f"{MEMBER}:{LISTEN}", slot=SLOT_A))
        other = runtime.start(spec("container_1_0002_01_000001", "app_b", PROBE, *targets, slot=SLOT_A + 1))
        driven = runtime.start(
            container_spec(workdir, image, "container_1_0003_01_000001", "app_c", PROBE, f"{DRIVER}:{DRIVER_PORT}", f"{DRIVER}:{DRIVER_BLOCKS}",
                           peers=frozenset({(DRIVER, DRIVER_PORT)}))
        )  # fmt: skip
        await defer.gatherResults([same.exited, other.exited, driven.exited])
        a.kill(0)
        await a.exited
        report = {
            "same_app": (workdir / "container_1_0001_01_000002" / "out.txt").read_text(),
            "other_app": (workdir / "container_1_0002_01_000001" / "out.txt").read_text(),
            "driven_app": (workdir / "container_1_0003_01_000001" / "out.txt").read_text(),
            "file_owner": (workdir / "container_1_0002_01_000001" / "mine").stat().st_uid,
            "app_b_root": runtime.sandbox.blocks.of("app_b").root,  # type: ignore[union-attr]
        }
    finally:
        for s in sockets:
            s.close()
        for app in ("app_a", "app_b", "app_c"):
            runtime.application_finished(app)
        runtime.close()
        firewall.remove()
    return report


def run(reactor, *argv: str) -> defer.Deferred[None]:  # type: ignore[no-untyped-def]
    async def go() -> None:
        print(json.dumps(await main(reactor, Path(argv[0]), Path(argv[1]), argv[2])))

    return defer.ensureDeferred(go())


if __name__ == "__main__":
    task.react(run, sys.argv[1:])
