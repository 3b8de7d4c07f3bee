"""Hostile HTTP load on a real RM's web port: slow-header connections against an honest client.

Starts one ``cortex-rm node`` (RM role only) pinned to CPU 0.  From CPU 1 it opens
``--slow`` connections to the RM's REST port that send a request line and then one
header line per ``--trickle`` seconds, never ending the head (a slowloris; they come from
``--sources`` loopback addresses, 127.0.1.x, so the per-address cap does not refuse them
first), while an honest client in another process asks ``GET /ws/v1/cluster/info`` on a
fresh connection every 10 ms.  Prints:

* how long after its opening each slow connection was ended by the server, against the
  header timeout (``HttpLimits.header_timeout_s``), and what it was answered;
* the honest client's latency (p50/p99/max) with no attack, then during it;
* what the daemon wrote to its log meanwhile (refusals are summarised per interval).

    .venv/bin/python bench/http_hostile.py [--slow 1000] [--sources 100] [--trickle 1]

Target (issue 10): every slow connection closed by the header timeout (plus the time to be
scheduled), the honest p99 under 100 ms throughout.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm.local_cluster import free_ports
from cortex_rm.yarn_api.http_limits import API_LIMITS

HONEST_PATH = "/ws/v1/cluster/info"


def start_rm(workdir: Path, server_cpu: int | None) -> tuple[subprocess.Popen[bytes], str]:
    client, sched, web, tracker, nm_web, ring = free_ports(6)
    config = workdir / "cortex.toml"
    config.write_text(
        f'[node]\nname = "bench"\nstate_dir = "{workdir}"\n'
        f'[ring]\naddress = "127.0.0.1:{ring}"\n'
        f'[resourcemanager]\naddress = "127.0.0.1:{client}"\nscheduler_address = "127.0.0.1:{sched}"\n'
        f'webapp_address = "127.0.0.1:{web}"\ntracker_address = "127.0.0.1:{tracker}"\n'
        f'[nodemanager]\nenabled = false\nwebapp_address = "127.0.0.1:{nm_web}"\n'
    )
    command = [sys.executable, "-m", "cortex_rm", "node", "--config", str(config)]
    if server_cpu is not None:
        command = ["taskset", "-c", str(server_cpu), *command]
    log = open(workdir / "daemon.out", "wb")  # noqa: SIM115 (the daemon writes to it until it stops)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    ready = workdir / "ready.json"
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the RM did not start; see {workdir / 'daemon.out'}")
        time.sleep(0.1)
    return proc, f"127.0.0.1:{web}"


def honest_client(host: str, port: int, seconds: float, out: Any) -> None:
    """GET HONEST_PATH on a fresh connection every 10 ms for ``seconds``; sends (latencies, errors)."""
    latencies: list[float] = []
    errors: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", HONEST_PATH)
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status != 200:
                errors.append(f"status {response.status}")
            else:
                latencies.append(time.perf_counter() - start)
        except OSError as e:
            errors.append(type(e).__name__)
        time.sleep(0.01)
    out.send((latencies, errors))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def honest_run(host: str, port: int, seconds: float) -> tuple[multiprocessing.Process, Any]:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(target=honest_client, args=(host, port, seconds, sender))
    process.start()
    return process, receiver


def summary(name: str, latencies: list[float], errors: list[str]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"{name:<16} {len(ms):>6} {percentile(ms, 0.5):>8.2f} {percentile(ms, 0.99):>8.2f} "
        f"{max(ms, default=float('nan')):>8.2f} {len(errors):>6}"
    )


@dataclass
class Slow:
    sock: socket.socket
    opened: float
    closed: float | None = None
    answer: bytes = b""
    reset: bool = False
    sent_lines: int = 0
    events: list[str] = field(default_factory=list)


def slow_storm(host: str, port: int, count: int, sources: int, trickle_s: float, limit_s: float) -> list[Slow]:
    """Open ``count`` slow-header connections and follow them until the server ends each (or ``limit_s``).

    The connections already open are watched while the next ones are opened, so the moment the
    server ends one is seen within a few milliseconds whatever the time it takes to open them all.
    """
    selector = selectors.DefaultSelector()
    conns: list[Slow] = []
    state = {"open": 0, "next_trickle": time.monotonic() + trickle_s}

    def poll(timeout: float) -> None:
        for key, _ in selector.select(timeout=timeout):
            conn = key.data
            try:
                data = conn.sock.recv(65536)
            except ConnectionResetError:
                data, conn.reset = b"", True
            if data:
                conn.answer += data
                continue
            conn.closed = time.monotonic()
            selector.unregister(conn.sock)
            conn.sock.close()
            state["open"] -= 1
        if time.monotonic() >= state["next_trickle"]:
            state["next_trickle"] += trickle_s
            for conn in conns:
                if conn.closed is None:
                    try:
                        conn.sock.send(b"X-Slow: %d\r\n" % conn.sent_lines)
                        conn.sent_lines += 1
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        pass

    end = time.monotonic() + limit_s
    for i in range(count):
        s = socket.socket()
        s.bind((f"127.0.1.{1 + i % sources}", 0))
        s.connect((host, port))
        s.sendall(b"GET " + HONEST_PATH.encode() + b" HTTP/1.1\r\nHost: slow\r\n")
        s.setblocking(False)
        conn = Slow(s, time.monotonic())
        conns.append(conn)
        selector.register(s, selectors.EVENT_READ, conn)
        state["open"] += 1
        poll(0)
    while state["open"] and time.monotonic() < end:
        poll(0.005)
    for conn in conns:
        if conn.closed is None:
            conn.sock.close()
    return conns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=1000, help="slow-header connections")
    parser.add_argument("--sources", type=int, default=100, help="loopback source addresses they come from")
    parser.add_argument("--trickle", type=float, default=1.0, help="seconds between the header lines each sends")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of honest load before the attack")
    args = parser.parse_args()
    timeout_s = API_LIMITS.header_timeout_s
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpus = (cpus[0], set(cpus[1:])) if len(cpus) > 1 else (None, set(cpus))
    with tempfile.TemporaryDirectory(prefix="cortex-http-hostile-") as tmp:
        proc, web = start_rm(Path(tmp), server_cpu)
        try:
            os.sched_setaffinity(0, client_cpus)  # the honest client's process inherits it
            host, port = web.rsplit(":", 1)
            print(f"RM pinned to CPU {server_cpu}, clients on CPU(s) {sorted(client_cpus)}; web port {web}; "
                  f"header timeout {timeout_s:g} s, {args.slow} slow connections from {args.sources} addresses, "
                  f"a header line each every {args.trickle:g} s")
            process, receiver = honest_run(host, int(port), args.baseline)
            baseline = receiver.recv()
            process.join()
            log_path = Path(tmp) / "daemon.out"
            log_before = log_path.stat().st_size
            attack_s = timeout_s * 2 + 10
            process, receiver = honest_run(host, int(port), attack_s)
            started = time.monotonic()
            conns = slow_storm(host, int(port), args.slow, args.sources, args.trickle, attack_s)
            opening_s = max(c.opened for c in conns) - started
            during = receiver.recv()
            process.join()
            time.sleep(API_LIMITS.refusal_log_interval_s + 1)  # the refusal summary's interval ends
            log_text = log_path.read_bytes()[log_before:].decode("utf-8", "replace")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    closed = [c for c in conns if c.closed is not None]
    delays = [c.closed - c.opened for c in closed if c.closed is not None]
    statuses: dict[str, int] = {}
    for c in conns:
        key = c.answer.split(b"\r\n", 1)[0].decode("latin-1") or ("reset" if c.reset else "no answer")
        statuses[key] = statuses.get(key, 0) + 1
    print(f"\nslow connections: {len(conns)} opened in {opening_s:.2f} s, {len(closed)} ended by the server")
    print(f"  ended after (s): min {min(delays, default=0):.2f}  p50 {percentile(delays, 0.5):.2f}  "
          f"p99 {percentile(delays, 0.99):.2f}  max {max(delays, default=0):.2f}  (header timeout {timeout_s:g})")
    print(f"  header lines each sent before the end: max {max(c.sent_lines for c in conns)}")
    for status, n in sorted(statuses.items()):
        print(f"  answered {status!r}: {n}")
    print(f"\n{'honest GET':<16} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>6}")
    print(summary("no attack", *baseline))
    print(summary("during attack", *during))
    lines = log_text.splitlines()
    refusal_lines = [line for line in lines if "refused" in line and "HTTP" in line]
    print(f"\ndaemon log during the attack: {len(log_text)} bytes, {len(lines)} lines "
          f"({len(refusal_lines)} refusal summaries; the rest are the honest requests' access lines)")
    for line in refusal_lines:
        print(f"  {line}")
    ok = len(closed) == len(conns) and max(delays, default=0) < timeout_s + 2 and percentile([x * 1000 for x in during[0]], 0.99) < 100
    print(f"\ntarget {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
