"""Eight real ring daemons on loopback: join, a SIGKILL, repair, records, and a rejoin from the neighbour log.

Each daemon is ``cortex-rm node`` with only its ring member enabled, at its own
loopback address 127.0.0.<i>, with a 200 ms probe interval.  The test reads each
node's ring view over HTTP (``/ws/v1/ring``, what ``cortex-rm ring`` prints) and
uses a short-lived ring member (``tests/support/ring_client.py``) to put and get
records.  Every wait is bounded; the assertions are about state, and the one
about time is the configured detection bound, with the formula below.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cortex_rm.config import RingSection
from cortex_rm.dht.neighbour_log import NeighbourLog
from cortex_rm.dht.suspicion import suspicion_timeout_bounds
from cortex_rm.local_cluster import free_ports
from cortex_rm.ring_status import RingStatusError, fetch_ring

pytestmark = pytest.mark.integration

NODES = 8
PROBE_INTERVAL_MS = 200
REPO = Path(__file__).resolve().parents[2]


def detection_bound_s(nodes: int) -> float:
    """How long the ring may take to declare a crashed member dead everywhere.

    The victim is probed within one probe interval by one of its several probers,
    suspected at the end of that probe's period (a second interval), and declared
    dead when the suspicion times out: at most the Lifeguard maximum for N members
    (suspicion_max_timeout_mult x suspicion_mult x log10(N) x interval).  The death
    then spreads by gossip within a few intervals; one second covers it and the
    HTTP polling.
    """
    swim = RingSection(probe_interval_ms=PROBE_INTERVAL_MS).ring_config().swim
    _, longest = suspicion_timeout_bounds(nodes, swim.probe_interval, swim.suspicion_mult, swim.suspicion_max_timeout_mult)
    return 2 * swim.probe_interval + longest + 1.0


@dataclass
class Daemon:
    name: str
    directory: Path
    ring_address: str
    status_address: str
    process: subprocess.Popen[bytes] | None = None

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
                    f"probe_interval_ms = {PROBE_INTERVAL_MS}",
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
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def view(self) -> dict | None:
        try:
            return fetch_ring(self.status_address, timeout=2.0)["ring"]
        except RingStatusError:
            return None

    def log(self) -> str:
        return (self.directory / "daemon.out").read_text(errors="replace")


def wait_for(condition: Callable[[], bool], what: str, timeout: float, step: float = 0.1) -> float:
    """Poll ``condition`` until it holds; the seconds it took (AssertionError naming ``what`` past timeout)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - started


def ring_is_correct(daemons: list[Daemon]) -> bool:
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
    return record is not None and bool(record.successors)


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


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    ports = iter(free_ports(2 * NODES))
    started = []
    for i in range(1, NODES + 1):
        host = f"127.0.0.{i}"
        directory = tmp_path / f"ring{i}"
        directory.mkdir()
        started.append(Daemon(f"ring{i}", directory, f"{host}:{next(ports)}", f"{host}:{next(ports)}"))
    try:
        yield started
    finally:
        for daemon in started:
            daemon.stop()


def test_eight_daemons_survive_a_sigkill_keep_their_records_and_the_victim_rejoins_from_its_log(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    """8 daemons join through the first; a SIGKILLed one is declared dead by all the others
    within the configured bound; the ring repairs; records put before the kill are all
    read back after it; restarted with no introducer, the victim rejoins through its
    neighbour log and the ring is whole again with it ALIVE everywhere."""
    first, *rest = daemons
    first.start([])
    for daemon in rest:
        daemon.start([first.ring_address])
    try:
        took = wait_for(lambda: ring_is_correct(daemons), "8 daemons to form a correct ring", timeout=90)
        print(f"ring of {NODES} correct after {took:.1f} s")

        keys = [f"record-{i}" for i in range(20)]
        pairs = [item for key in keys for item in (key, f"value of {key}")]
        ring_client(tmp_path / "client-put", first.ring_address, "put", *pairs)

        victim = daemons[4]
        victim_id = victim.view()["node"]["id"]  # type: ignore[index]
        wait_for(lambda: names_peers(victim.directory, victim_id), "the victim's neighbour log to name its peers", timeout=30)
        others = [d for d in daemons if d is not victim]
        victim.kill()
        bound = detection_bound_s(NODES)
        took = wait_for(
            lambda: all(status_of(d.view(), victim_id) in ("dead",) for d in others),
            "every other daemon to declare the SIGKILLed one dead",
            timeout=bound,
        )
        print(f"declared dead by all {len(others)} others after {took:.1f} s (bound {bound:.1f} s)")
        wait_for(lambda: ring_is_correct(others), "the ring of 7 to repair", timeout=60)

        lines = ring_client(tmp_path / "client-get", first.ring_address, "get", *keys)
        assert lines == [f"{key} value of {key}" for key in keys]

        victim.start([])  # no introducer: only its neighbour log knows where the ring is
        wait_for(lambda: ring_is_correct(daemons), "the restarted daemon to rejoin the ring", timeout=60)
        wait_for(
            lambda: all(status_of(d.view(), victim_id) == "alive" for d in others),
            "every daemon to see the restarted one alive",
            timeout=30,
        )
        assert "joining through" in victim.log().split("started, incarnation")[-1]
    except BaseException:
        for daemon in daemons:
            print(f"==== {daemon.name} ====\n{daemon.log()[-4000:]}")
        raise
