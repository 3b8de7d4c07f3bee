"""Run inside one of two network namespaces by test_container_sandbox.py: a node's containers
under the real LxcRuntime and NftFirewall, reaching containers on the other node.

argv: role workdir image_root own_address other_address, role "listener" or "prober".

The listener node runs one container of application A (slot ``SLOT_A``) listening on its own
address and waits until the prober is done.  The prober node runs containers of A, of B (another
slot), of an application without a slot, and a plain process of the node, that connect to A's
socket on the other node; B also tries with a source port it binds in A's slot.  Prints a JSON
report (the prober: each container's output).
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
from cortex_rm.roles.container_members import container_firewall
from cortex_rm.yarn.app_network import source_ports
from tests.integration.sandbox_probe import PROBE, container_spec

SLOT_A, SLOT_B = 5, 6
OUTSIDER = "10.78.0.9"  # an address of the prober's namespace that is no member
LISTEN = 47003
LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
open("listening", "w").close()
s.settimeout(180)
while True:
    c, _ = s.accept(); c.close()
"""


async def wait_for(reactor, path: Path, seconds: float) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds * 10)):
        if path.exists():
            return
        await task.deferLater(reactor, 0.1)
    raise TimeoutError(f"{path} did not appear within {seconds} s")


def plain_connect(host: str, port: int, source: tuple[str, int] | None = None) -> str:
    s = socket.socket()
    s.settimeout(3)
    try:
        if source is not None:
            s.bind(source)
        s.connect((host, port))
        return "reached"
    except OSError as e:
        return f"refused {type(e).__name__}"
    finally:
        s.close()


async def main(reactor, role: str, workdir: Path, image: Path, own: str, other: str) -> dict:  # type: ignore[no-untyped-def]
    ids = IdRange.parse(node_id_range(11 if role == "listener" else 12))
    firewall = container_firewall(f"cross_{role}", ids, internet=False)
    firewall.install(Members(frozenset({own, other})))
    assert firewall.installed, firewall.error
    here = workdir / role
    here.mkdir()
    runtime = LxcRuntime(reactor, here / "lxc", ids=ids, firewall=firewall)
    apps = ["app_a"]
    try:
        if role == "listener":
            c = runtime.start(container_spec(here, image, "container_1_0001_01_000001", "app_a", LISTENER, own, str(LISTEN), slot=SLOT_A))
            await wait_for(reactor, here / "container_1_0001_01_000001" / "listening", 60)
            (workdir / "listening").touch()
            await wait_for(reactor, workdir / "probed", 200)
            c.kill(0)
            await c.exited
            return {}
        await wait_for(reactor, workdir / "listening", 200)
        target = f"{other}:{LISTEN}"
        first_of_a = source_ports(SLOT_A)[0]
        probes = {
            "same_app": ("container_1_0001_01_000002", "app_a", SLOT_A, [target]),
            "other_app": ("container_1_0002_01_000001", "app_b", SLOT_B, [target, f"{target}/{first_of_a + 7}"]),
            "no_slot": ("container_1_0003_01_000001", "app_n", None, [target]),
        }
        started = {}
        for name, (cid, app, slot, targets) in probes.items():
            apps.append(app)
            started[name] = runtime.start(container_spec(here, image, cid, app, PROBE, *targets, slot=slot))
        await defer.gatherResults([c.exited for c in started.values()])
        report = {name: (here / cid / "out.txt").read_text() for name, (cid, *_) in probes.items()}
        report["node_process"] = plain_connect(other, LISTEN)
        report["outsider_in_slot"] = plain_connect(other, LISTEN, (OUTSIDER, first_of_a + 9))
        return report
    finally:
        if role == "prober":
            (workdir / "probed").touch()
        for app in apps:
            runtime.application_finished(app)
        runtime.close()
        firewall.remove()


def run(reactor, *argv: str) -> defer.Deferred[None]:  # type: ignore[no-untyped-def]
    async def go() -> None:
        print(json.dumps(await main(reactor, argv[0], Path(argv[1]), Path(argv[2]), argv[3], argv[4])))

    return defer.ensureDeferred(go())


if __name__ == "__main__":
    task.react(run, sys.argv[1:])
