"""RM-eligible daemons on loopback for tests and benchmarks: each ``cortex-rm node`` with its ring member and the
ResourceManager enabled (no NodeManager), at 127.0.0.<i> with ports of its own, ``[ring] resource_managers``
naming them all in order; and the REST calls a client makes of whichever is active."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.ring_status import RingStatusError, fetch_ring
from cortex_rm.local_cluster import free_ports
from cortex_rm.user_credential import UserCredential
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from tests.support.ring_daemons import REPO, TEST_KEY_BITS, TEST_WORK_BITS, stop_process

RM_PORTS = ("address", "scheduler_address", "webapp_address", "tracker_address")


@dataclass
class RmNode:
    name: str
    directory: Path
    ring_id: str
    ports: dict[str, str]  # [resourcemanager] addresses, and ring
    process: subprocess.Popen[bytes] | None = None

    @property
    def webapp(self) -> str:
        return self.ports["webapp_address"]

    def start(
        self, resource_managers: list[str], introducer: str | None, probe_interval_ms: int | None = 300,
        rm_settings: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        """Start the daemon; ``probe_interval_ms`` None keeps the ring's default timings (the tests' are faster);
        ``rm_settings``: more ``key = value`` lines of its ``[resourcemanager]`` table."""
        (self.directory / "ready.json").unlink(missing_ok=True)
        config = self.directory / "cortex.toml"
        config.write_text("\n".join([
            "[node]", f'name = "{self.name}"', f'state_dir = "{self.directory}"',
            "[resourcemanager]", "enabled = true", *(f'{k} = "{self.ports[k]}"' for k in RM_PORTS),
            *rm_settings, "[nodemanager]", "enabled = false",
            "[ring]", f'address = "{self.ports["ring"]}"', f'status_address = "{self.ports["status"]}"',
            f"introducers = {json.dumps([introducer] if introducer else [])}",
            *([f"probe_interval_ms = {probe_interval_ms}"] if probe_interval_ms else []),
            f"resource_managers = {json.dumps(resource_managers)}",
            f"work_bits = {TEST_WORK_BITS}", f"key_bits = {TEST_KEY_BITS}", "",
        ]))  # fmt: skip
        with open(self.directory / "daemon.out", "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cortex_rm", "node", "--config", str(config)], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=self.directory,
                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            )  # fmt: skip

    def ready(self) -> dict[str, str]:
        try:
            return json.loads((self.directory / "ready.json").read_text())
        except (OSError, ValueError):
            return {}

    def ha_state(self) -> str | None:
        """What this node's RM web port says it is (``ACTIVE`` or ``STANDBY``); None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.webapp}/ws/v1/cluster/info", timeout=2) as response:
                return str(json.loads(response.read())["clusterInfo"]["haState"])
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return None

    def serves(self) -> bool:
        """Whether this node answers as the active RM (its REST API's cluster info)."""
        return self.ha_state() == "ACTIVE"

    def rm_directory(self) -> dict[str, Any] | None:
        """This node's ``/ws/v1/cortex/resourcemanagers`` (on its ring status site), None while it has none."""
        try:
            with urllib.request.urlopen(f"http://{self.ports['status']}/ws/v1/cortex/resourcemanagers", timeout=2) as r:
                return json.loads(r.read())["resourceManagers"]
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def ring_alive(self) -> set[str]:
        """The ring ids this node's ring member holds alive (its view on its status site)."""
        try:
            view = fetch_ring(self.ports["status"], timeout=2.0)["ring"]
        except RingStatusError:
            return set()
        return {m["id"] for m in view["members"] if m["status"] == "alive"}

    def refuses_rm_ports(self) -> bool:
        """Whether the RM's IPC and tracker ports are closed here (a standby binds only its web port)."""
        for key in ("address", "scheduler_address", "tracker_address"):
            host, port = self.ports[key].rsplit(":", 1)
            with socket.socket() as s:
                s.settimeout(2)
                if s.connect_ex((host, int(port))) == 0:
                    return False
        return True

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.process, grace_s=30)

    def log(self) -> str:
        return (self.directory / "daemon.out").read_text(errors="replace")


def ring_formed(nodes: list[RmNode]) -> bool:
    """Whether every node holds every other alive (not only the introducer: it may be the one killed next)."""
    return all(node.ring_alive() >= {n.ring_id for n in nodes if n is not node} for node in nodes)


@contextmanager
def rm_nodes(root: Path, count: int) -> Iterator[list[RmNode]]:
    """``make_rm_nodes``, stopped at the end, their logs' tails printed (a failed test shows them)."""
    made = make_rm_nodes(root, count)
    try:
        yield made
    finally:
        for node in made:
            node.stop()
        for node in made:
            print(f"---- {node.name}\n{node.log()[-6000:]}")


def make_rm_nodes(root: Path, count: int) -> list[RmNode]:
    """``count`` RM-eligible nodes (not started), node i at 127.0.0.<i>, its identity made (so its ring id is known)."""
    ports = iter(free_ports(6 * count))
    made = []
    for i in range(1, count + 1):
        directory = root / f"rm{i}"
        directory.mkdir()
        identity = NodeIdentity.load_or_create(directory, key_bits=TEST_KEY_BITS)
        host = f"127.0.0.{i}"
        addresses = {key: f"{host}:{next(ports)}" for key in (*RM_PORTS, "ring", "status")}
        made.append(RmNode(f"rm{i}", directory, identity.ring_id_hex, addresses))
    return made


def rest(node: RmNode, path: str, credential: UserCredential, body: dict | None = None) -> dict:
    """One REST call to ``node`` as ``credential``'s user (GET, or POST of ``body`` as JSON)."""
    request = urllib.request.Request(
        f"http://{node.webapp}{path}", method="GET" if body is None else "POST",
        data=None if body is None else json.dumps(body).encode(),
        headers={REST_TOKEN_HEADER: credential.rest_header(), "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else {}


def submit(node: RmNode, credential: UserCredential, name: str) -> str:
    app_id = rest(node, "/ws/v1/cluster/apps/new-application", credential, {})["application-id"]
    rest(node, "/ws/v1/cluster/apps", credential, {
        "application-id": app_id, "application-name": name, "application-type": "YARN", "max-app-attempts": 2,
        "am-container-spec": {"commands": {"command": "sleep 600"}}, "resource": {"memory": 512, "vCores": 1},
    })  # fmt: skip
    return app_id


def apps(node: RmNode, credential: UserCredential) -> dict[str, str]:
    listed = (rest(node, "/ws/v1/cluster/apps", credential).get("apps") or {}).get("app") or []
    return {app["id"]: app["name"] for app in listed}



def journal_applied(node: RmNode) -> int:
    """The journal position this node has applied (read from its journal's SQLite file); -1 before there is one,
    and while a snapshot install is under way (the mark is saved, stale, before the stores are replaced)."""
    path = node.directory / "rm-journal.sqlite"
    if not path.exists():
        return -1
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            row = db.execute("select applied from journal_meta").fetchone()
            stale = db.execute("select stale from journal_base").fetchone() if _has_base(db) else None
        except sqlite3.Error:
            return -1
    return -1 if not row or (stale and stale[0]) else int(row[0])


def _has_base(db: sqlite3.Connection) -> bool:
    return db.execute("select 1 from sqlite_master where type = 'table' and name = 'journal_base'").fetchone() is not None
