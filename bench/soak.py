"""Soak: hostile inputs at every port of a live two-node Cortex, while honest clients work (issue 10).

Starts ``cortex-rm local-cluster up --nodes 2`` (node1 runs the RM, a NodeManager and
a ring member; node2 a NodeManager and a ring member that finds the RM through the
ring), then drives ``--inputs`` (100,000) hostile inputs at each of its seven kinds
of port, one port after the other:

    rm-ipc         the RM's client port (ApplicationClientProtocol)
    rm-scheduler   the RM's scheduler port (ApplicationMasterProtocol)
    nm-ipc         node2's NodeManager port (ContainerManagementProtocol)
    rm-web         the RM's REST API and WebHDFS NameNode
    nm-web         node2's REST, ring status and WebHDFS data port
    tracker        the RM's tracker (Thrift inside mutual TLS, a certificate of our own)
    ring           node2's ring port (Thrift inside mutual TLS, a certificate of our own)

Each input (``soak_inputs.py``: mutated seeds of the port's protocol) goes on a new
connection from one of 16 loopback addresses that are not the honest clients', and
then the connection is half-closed and read to its end, or held for 0.2 s, or reset.
Meanwhile, honest clients work the whole time, from 127.0.0.1: Hadoop's own
YarnClient (``tests/java/YarnClientDriver.java poll``: getApplications and cluster
metrics, with the user's credential), and every second a REST call of the RM and of
node2, a WebHDFS listing (PyPI ``hdfs``), and a check that node2 is still a RUNNING
node of the RM (its heartbeats go through the tracker) and an alive ring member.

Prints per port: inputs, inputs per second, how the daemon ended them, the honest
calls made and failed while that port was under attack, and the daemons' RSS; at
the end, whether a daemon died and how many tracebacks their logs hold.

    .venv/bin/python bench/soak.py [--inputs 100000] [--concurrency 32] [--ports rm-ipc,ring]

Target: 0 crashes, 0 honest calls failed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak_inputs import ACP, AMRM, CMP, Mutator, http_seeds, ipc_seeds, thrift_seeds  # noqa: E402

from cortex_rm.internal.identity import CERT_FILE, IDENTITY_DIR, KEY_FILE, NodeIdentity  # noqa: E402
from cortex_rm.user_credential import load_credential  # noqa: E402
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER  # noqa: E402

CORTEX = [sys.executable, "-m", "cortex_rm"]
HOSTILE_SOURCES = [f"127.0.1.{n}" for n in range(1, 17)]


@dataclass
class Cluster:
    workdir: Path
    nodes: list[dict[str, object]]
    ready: list[dict[str, str]]
    token: str  # the user's REST header value
    webhdfs_token: str  # her WebHDFS ``delegation`` parameter

    @property
    def rm(self) -> dict[str, str]:
        return self.ready[0]

    def pid(self, index: int) -> int:
        return int(str(self.nodes[index]["pid"]))


def start_cluster(workdir: Path) -> Cluster:
    print(f"starting a two-node local cluster in {workdir} ...", flush=True)
    up = subprocess.run([*CORTEX, "local-cluster", "up", "--nodes", "2", "--workdir", str(workdir), "--no-spark-upload"],
                        capture_output=True, text=True)
    if up.returncode != 0:
        raise SystemExit(f"local-cluster up failed:\n{up.stdout}\n{up.stderr}")
    nodes = json.loads((workdir / "cluster.json").read_text())
    ready = [json.loads((Path(str(n["directory"])) / "ready.json").read_text()) for n in nodes]
    credential = load_credential(workdir / "user.token")
    return Cluster(workdir, nodes, ready, credential.rest_header(), credential.webhdfs_delegation())


def targets(cluster: Cluster) -> dict[str, tuple[str, str, list[bytes]]]:
    """Port name -> (address, transport "tcp"/"tls", seeds)."""
    rm, node2 = cluster.ready[0], cluster.ready[1]
    return {
        "rm-ipc": (rm["resourcemanager.address"], "tcp", ipc_seeds(ACP)),
        "rm-scheduler": (rm["resourcemanager.scheduler_address"], "tcp", ipc_seeds(AMRM)),
        "nm-ipc": (node2["nodemanager.address"], "tcp", ipc_seeds(CMP)),
        "rm-web": (rm["resourcemanager.webapp_address"], "tcp", http_seeds("rm")),
        "nm-web": (node2["nodemanager.webapp_address"], "tcp", http_seeds("nm")),
        "tracker": (rm["resourcemanager.tracker_address"], "tls", thrift_seeds("tracker")),
        "ring": (node2["ring.address"], "tls", thrift_seeds("ring")),
    }


def tls_context(directory: Path) -> ssl.SSLContext:
    """A client context with a certificate of our own (any self-signed identity, as an outsider's)."""
    NodeIdentity.load_or_create(directory, key_bits=0)  # an outsider: no ring key puzzle
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(directory / IDENTITY_DIR / CERT_FILE), str(directory / IDENTITY_DIR / KEY_FILE))
    return context


@dataclass
class HostileStats:
    sent: int = 0
    replied: int = 0  # the daemon answered something
    closed: int = 0  # the daemon closed without a word
    held: int = 0  # still open after 0.2 s: we reset it
    refused: int = 0  # connect refused, reset or TLS refused (a limit, or the input killed the handshake)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _one(address: tuple[str, int], source: str, data: bytes, ending: int, tls: ssl.SSLContext | None) -> str:
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(5)
    try:
        raw.bind((source, 0))
        raw.connect(address)
        sock: socket.socket = tls.wrap_socket(raw) if tls is not None else raw
        sock.sendall(data)
        if ending == 2:  # reset at once
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return "held"
        if ending == 0 and tls is None:
            sock.shutdown(socket.SHUT_WR)  # EOF: the daemon answers what it has, then closes
            sock.settimeout(3)
        else:
            sock.settimeout(0.2)
        got = 0
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    return "replied" if got else "closed"
                got += len(piece)
                if got > 1 << 20:
                    return "replied"
        except (TimeoutError, socket.timeout):
            return "replied" if got else "held"
    except (ConnectionError, ssl.SSLError, OSError):
        return "refused"
    finally:
        raw.close()


def hostile(address: str, transport: str, seeds: list[bytes], inputs: int, concurrency: int, seed: int,
            tls: ssl.SSLContext) -> tuple[HostileStats, float]:
    host, port = address.rsplit(":", 1)
    stats = HostileStats()
    counter = iter(range(inputs))
    take = threading.Lock()

    def worker(index: int) -> None:
        mutate = Mutator(seeds, seed * 1000 + index)
        source = HOSTILE_SOURCES[index % len(HOSTILE_SOURCES)]
        while True:
            with take:
                if next(counter, None) is None:
                    return
            data = mutate()
            outcome = _one((host, int(port)), source, data, mutate.rng.randrange(3), tls if transport == "tls" else None)
            with stats.lock:
                stats.sent += 1
                setattr(stats, outcome, getattr(stats, outcome) + 1)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        print(f"  {stats.sent:,} of {inputs:,} inputs sent ...", flush=True)
    return stats, time.monotonic() - started


@dataclass
class HonestLog:
    calls: int = 0
    failures: list[str] = field(default_factory=list)


class HonestChecks:
    """Every second: REST of the RM and of node2, a WebHDFS listing, node2 RUNNING and alive in the ring."""

    def __init__(self, cluster: Cluster) -> None:
        import hdfs
        import requests

        self.cluster = cluster
        self.session = requests.Session()
        self.session.headers[REST_TOKEN_HEADER] = cluster.token
        self.hdfs = hdfs.TokenClient(f"http://{cluster.rm['resourcemanager.webapp_address']}", cluster.webhdfs_token)
        self.log = HonestLog()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def take(self) -> HonestLog:
        log, self.log = self.log, HonestLog()
        return log

    def _run(self) -> None:
        rm_web = self.cluster.rm["resourcemanager.webapp_address"]
        node2 = self.cluster.ready[1]["nodemanager.webapp_address"]
        node2_id = self.cluster.ready[1]["nodemanager.address"]
        checks = {
            "RM REST apps": lambda: self.session.get(f"http://{rm_web}/ws/v1/cluster/apps", timeout=10).raise_for_status(),
            "node2 REST": lambda: self.session.get(f"http://{node2}/ws/v1/node/info", timeout=10).raise_for_status(),
            "WebHDFS list /": lambda: self.hdfs.list("/"),
            "node2 RUNNING at the RM": lambda: self._node_running(rm_web, node2_id),
            "node2 alive in node1's ring": self._ring_alive,
        }
        while not self._stop.wait(1.0):
            for name, check in checks.items():
                try:
                    check()
                except Exception as e:  # every failure is a finding: keep its text
                    self.log.failures.append(f"{name}: {type(e).__name__}: {str(e)[:200]}")
                self.log.calls += 1

    def _node_running(self, rm_web: str, node_id: str) -> None:
        nodes = self.session.get(f"http://{rm_web}/ws/v1/cluster/nodes", timeout=10).json()["nodes"]["node"]
        state = {n["id"]: n["state"] for n in nodes}.get(node_id)
        if state != "RUNNING":
            raise AssertionError(f"node2 is {state}")

    def _ring_alive(self) -> None:
        node1_status = self.cluster.ready[0]["ring.status_address"]
        ring = self.session.get(f"http://{node1_status}/ws/v1/ring", timeout=10).json()
        text = json.dumps(ring)
        node2_ring = self.cluster.ready[1]["ring.address"]
        if node2_ring not in text:
            raise AssertionError(f"node1's ring view does not list node2 ({node2_ring})")


def java_poller(cluster: Cluster, until: Path) -> subprocess.Popen[str]:
    """Hadoop's YarnClient polling the RM (with the user's credential) until ``until`` exists."""
    from tests.support.java import classpath, compile_driver, java_home, quiet_jvm_options

    classes = compile_driver("YarnClientDriver")
    conf = cluster.workdir / "hadoop-conf"
    argv = [str(java_home() / "bin" / "java"), *quiet_jvm_options(), "-cp", classpath(conf, classes),
            "YarnClientDriver", "poll", "--until", str(until), "--interval-ms", "200"]
    env = dict(os.environ, HADOOP_CONF_DIR=str(conf), JAVA_HOME=str(java_home()))
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tracebacks(cluster: Cluster) -> int:
    count = 0
    for node in cluster.nodes:
        for log in (Path(str(node["directory"])) / "logs").glob("*"):
            text = log.read_text(errors="replace")
            count += text.count("Traceback (most recent call last)")
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="hostile inputs per port")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ports", default="", help="comma-separated port names (default: all)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="cortex-soak-"))).resolve()
    cluster = start_cluster(workdir)
    honest = HonestChecks(cluster)
    until = workdir / "stop-polling"
    poller = java_poller(cluster, until)
    rows, crashed = [], []
    try:
        all_targets = targets(cluster)
        names = [n for n in args.ports.split(",") if n] or list(all_targets)
        tls = tls_context(workdir / "outsider")
        honest.start()
        time.sleep(3)
        start_rss = [rss_mb(cluster.pid(i)) for i in range(2)]
        for name in names:
            address, transport, seeds = all_targets[name]
            print(f"{name} ({address}): {args.inputs:,} hostile inputs ...", flush=True)
            honest.take()
            stats, seconds = hostile(address, transport, seeds, args.inputs, args.concurrency, args.seed, tls)
            time.sleep(2)  # honest checks also right after the storm
            log = honest.take()
            alive = [Path(f"/proc/{cluster.pid(i)}").exists() for i in range(2)]
            rows.append((name, stats, seconds, log, [rss_mb(cluster.pid(i)) if alive[i] else float("nan") for i in range(2)]))
            print(f"  done in {seconds:.0f} s: replied {stats.replied:,}, closed {stats.closed:,}, held {stats.held:,}, "
                  f"refused {stats.refused:,}; honest checks {log.calls}, failed {len(log.failures)}", flush=True)
            crashed += [f"node{i + 1}" for i in range(2) if not alive[i]]
            if crashed:
                break
    finally:
        honest.stop()
        until.touch()
        out, _ = poller.communicate(timeout=60)
        traces = tracebacks(cluster)
        subprocess.run([*CORTEX, "local-cluster", "down", "--workdir", str(workdir)], capture_output=True)
    java = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"calls": 0, "failed": -1}
    print()
    print("| port | inputs | inputs/s | replied | closed | held/reset | refused | honest checks (failed) | RSS node1 / node2 MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| (before) | | | | | | | | {start_rss[0]:.0f} / {start_rss[1]:.0f} |")
    for name, stats, seconds, log, rss in rows:
        print(f"| {name} | {stats.sent:,} | {stats.sent / seconds:,.0f} | {stats.replied:,} | {stats.closed:,} | "
              f"{stats.held:,} | {stats.refused:,} | {log.calls} ({len(log.failures)}) | {rss[0]:.0f} / {rss[1]:.0f} |")
    print()
    print(f"Hadoop YarnClient, the whole soak: {java.get('calls')} calls, {java.get('failed')} failed, "
          f"p50 {java.get('p50_us', -1) / 1000:.1f} ms, p99 {java.get('p99_us', -1) / 1000:.1f} ms, "
          f"max {java.get('max_us', -1) / 1000:.1f} ms {java.get('errors', '')}")
    failures = [f for _, _, _, log, _ in rows for f in log.failures]
    print(f"crashed daemons: {crashed or 'none'}; tracebacks in the daemons' logs: {traces}")
    for failure in failures[:10]:
        print(f"  honest failure: {failure}")
    ok = not crashed and not failures and java.get("failed") == 0
    print("RESULT:", "0 crashes, 0 honest calls failed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
