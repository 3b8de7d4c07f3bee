"""Real ring daemons on loopback for tests and benchmarks: start, kill, read their ring views.

Each ``RingDaemon`` is ``cortex-rm node`` with only its ring member enabled, at its
own loopback address, serving its ring view on ``status_address`` (what
``cortex-rm ring`` reads).  ``ring_client`` runs a short-lived ring member
(``tests/support/ring_client.py``) to put and get records.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization

from cortex_rm.dht.neighbour_log import NeighbourLog
from cortex_rm.dht.ring_work import key_ok
from cortex_rm.internal.identity import CERT_FILE, IDENTITY_DIR, KEY_FILE, NodeIdentity
from cortex_rm.local_cluster import free_ports
from cortex_rm.ring_status import RingStatusError, fetch_ring

REPO = Path(__file__).resolve().parents[2]
TEST_WORK_BITS = 16
"""The daemons' ``[ring] work_bits`` (and their in-process peers'): ~25 ms a key instead of the default's
seconds, since every test starts fresh keys.  A daemon with ``work_bits=None`` runs the default."""
TEST_KEY_BITS = 8
"""The daemons' ``[ring] key_bits`` (and their in-process peers'): ~256 keys made (a few ms) instead of the
default's ~130,000 (seconds).  A daemon with ``key_bits=None`` runs the default."""


@dataclass
class RingDaemon:
    name: str
    directory: Path
    ring_address: str
    status_address: str
    probe_interval_ms: int = 1000
    process: subprocess.Popen[bytes] | None = None
    resource_managers: tuple[str, ...] = ()  # [ring] resource_managers (ring ids, hex)
    work_bits: int | None = TEST_WORK_BITS  # [ring] work_bits (None: the default)
    key_bits: int | None = TEST_KEY_BITS  # [ring] key_bits (None: the default)

    def write_config(self, introducers: list[str]) -> Path:
        config = self.directory / "cortex.toml"
        config.write_text(
            "\n".join(
                [
                    "[node]",
                    f'name = "{self.name}"',
                    f'state_dir = "{self.directory}"',
                    "[resourcemanager]",
                    "enabled = false",
                    "[nodemanager]",
                    "enabled = false",
                    "[ring]",
                    f'address = "{self.ring_address}"',
                    f'status_address = "{self.status_address}"',
                    f"introducers = {json.dumps(introducers)}",
                    f"probe_interval_ms = {self.probe_interval_ms}",
                    f"resource_managers = {json.dumps(list(self.resource_managers))}",
                    *([f"work_bits = {self.work_bits}"] if self.work_bits is not None else []),
                    *([f"key_bits = {self.key_bits}"] if self.key_bits is not None else []),
                    "",
                ]
            )
        )
        return config

    def start(self, introducers: list[str]) -> None:
        config = self.write_config(introducers)
        (self.directory / "ready.json").unlink(missing_ok=True)
        with open(self.directory / "daemon.out", "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cortex_rm", "node", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.process, grace_s=15)

    def view(self) -> dict | None:
        try:
            return fetch_ring(self.status_address, timeout=2.0)["ring"]
        except RingStatusError:
            return None

    def log(self) -> str:
        return (self.directory / "daemon.out").read_text(errors="replace")


def stop_process(process: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """SIGINT a test's daemon (a clean stop at once: SIGTERM would begin a node's graceful leave, which waits
    for its RM), SIGKILL it after ``grace_s``; nothing if it is not running."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], what: str, timeout: float, step: float = 0.1) -> float:
    """Poll ``condition`` until it holds; the seconds it took (AssertionError naming ``what`` past timeout)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - started


T = TypeVar("T")


def found_within(condition: Callable[[], T | None], what: str, timeout: float, step: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy, and return that (AssertionError naming ``what``
    past ``timeout``)."""
    box: list[T] = []

    def found() -> bool:
        value = condition()
        if value:
            box.append(value)
        return bool(value)

    wait_for(found, what, timeout, step)
    return box[-1]


def ring_is_correct(daemons: list[RingDaemon]) -> bool:
    """Every daemon's successor and predecessor are its true neighbours by ring id."""
    views = [d.view() for d in daemons]
    if any(v is None or v["state"] != "member" for v in views):
        return False
    ring = sorted(views, key=lambda v: v["node"]["id"])  # type: ignore[index]
    for i, view in enumerate(ring):
        successor, predecessor = ring[(i + 1) % len(ring)], ring[i - 1]
        if not view["successors"] or view["successors"][0]["id"] != successor["node"]["id"]:
            return False
        if (view["predecessor"] or {}).get("id") != predecessor["node"]["id"]:
            return False
    return True


def status_of(view: dict | None, node_id: str) -> str | None:
    if view is None:
        return None
    return next((m["status"] for m in view["members"] if m["id"] == node_id), None)


def names_peers(state_dir: Path, node_id: str) -> bool:
    """Whether the daemon's neighbour log (written every few seconds) names any successor yet."""
    record = NeighbourLog(state_dir).read(int(node_id, 16))
    return record is not None and record.names_peers


def ring_client(state_dir: Path, introducer: str, *args: str) -> list[str]:
    """Run a short-lived ring member (put/get); its output lines."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.ring_client", "--introducer", introducer, "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()




def key_failing_puzzle(key_bits: int) -> NodeIdentity:
    """A fresh identity whose key does *not* solve the ring's key puzzle at ``key_bits`` (as every key
    made before the puzzle, or a grinder's key that skipped it)."""
    while True:
        identity = NodeIdentity.generate()
        if not key_ok(identity.spki, key_bits):
            return identity


def store_identity(state_dir: Path, identity: NodeIdentity) -> None:
    """Write ``identity`` where a node keeps its key and certificate (as a start before this one did)."""
    directory = state_dir / IDENTITY_DIR
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    pem = identity.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / KEY_FILE).write_bytes(pem)
    (directory / KEY_FILE).chmod(0o600)
    (directory / CERT_FILE).write_bytes(identity.certificate.public_bytes(serialization.Encoding.PEM))


def make_daemons(root: Path, count: int, probe_interval_ms: int) -> list[RingDaemon]:
    """``count`` daemons (not started), daemon i at 127.0.0.<i> with free ports, state under ``root``."""
    ports = iter(free_ports(2 * count))
    daemons = []
    for i in range(1, count + 1):
        host = f"127.0.0.{i}"
        directory = root / f"ring{i}"
        directory.mkdir(parents=True)
        daemons.append(
            RingDaemon(f"ring{i}", directory, f"{host}:{next(ports)}", f"{host}:{next(ports)}", probe_interval_ms)
        )
    return daemons


@contextmanager
def made_daemons(root: Path, count: int, probe_interval_ms: int) -> Iterator[list[RingDaemon]]:
    """``make_daemons``, each stopped at the end (the tests' fixture)."""
    made = make_daemons(root, count, probe_interval_ms)
    try:
        yield made
    finally:
        for daemon in made:
            daemon.stop()


def start_ring(daemons: list[RingDaemon]) -> None:
    """Start the first daemon as a new ring and the others through it."""
    first, *rest = daemons
    first.start([])
    for daemon in rest:
        daemon.start([first.ring_address])
