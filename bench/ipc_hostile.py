"""IPC under hostile load: a real Cortex RM's memory and an honest client's latency (issue 10).

Starts one ``cortex-rm node`` (RM role only, as ``bench/ipc_bench.py`` does) pinned to
CPU 0 and submits one application.  Then, from this process on the other CPU:

1. an honest client (``bench/ipc_load.py``: one connection, one call in flight)
   measures ``getApplicationReport`` latency on the RM's client port, quiet;
2. a hostile load opens ``--connections`` (100) connections to the same port, each
   completing the handshake, declaring a frame of ``--frame-mib`` (64 MiB, the
   default ``ipc.maximum.data.length``) and sending its body as fast as the server
   takes it, never finishing it; a connection the server closes is replaced by a new
   one, so ``--connections`` attempts stay open for the whole run;
3. while that goes on, the honest client measures again.

Prints the RM process's RSS (``VmRSS``) before and after, its peak (``VmHWM``), the
hostile traffic and refusals, and the honest p50/p99 quiet and under load.

    .venv/bin/python bench/ipc_hostile.py [--connections 100] [--seconds 10]

Target: RSS growth < 100 MB; honest calls all answered.  ``--rm-source DIR`` runs the
RM from another checkout (e.g. one without the limits, to compare).
"""

from __future__ import annotations

import argparse
import errno
import os
import selectors
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipc_bench import ACP, admin_token, report_request, start_rm, submit_one  # noqa: E402
from ipc_load import handshake_bytes, require_loopback, run_load  # noqa: E402

CHUNK = b"\x5a" * (256 * 1024)


def memory_of(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


@dataclass
class HostileStats:
    """What the hostile load did."""

    opened: int = 0
    refused_fatal: int = 0  # closed by the server after a FATAL RetriableException
    closed_silently: int = 0  # closed by the server without a reply
    bytes_sent: int = 0
    open_now: int = 0
    exception_classes: set[str] = field(default_factory=set)


@dataclass
class _Hostile:
    sock: socket.socket
    left: int  # body bytes still to send (the frame is never finished)
    received: bytes = b""


class HostileLoad:
    """Keeps ``connections`` hostile connections open against ``host:port`` until stopped (a thread)."""

    def __init__(self, host: str, port: int, connections: int, frame_length: int, protocol: str) -> None:
        require_loopback(host)
        self.host, self.port = host, port
        self.connections = connections
        self.frame_length = frame_length
        self.opening = handshake_bytes(protocol, "mallory") + frame_length.to_bytes(4, "big")
        self.stats = HostileStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-load", daemon=True)
        self._selector = selectors.DefaultSelector()

    def start(self) -> None:
        """Open the connections and start pushing bytes."""
        self._thread.start()

    def stop(self) -> HostileStats:
        """Stop, close every hostile connection, and return the totals."""
        self._stop.set()
        self._thread.join()
        return self.stats

    def _open(self) -> None:
        sock = socket.create_connection((self.host, self.port))
        sock.sendall(self.opening)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, _Hostile(sock, self.frame_length - 1))
        self.stats.opened += 1
        self.stats.open_now += 1

    def _close(self, hostile: _Hostile) -> None:
        self._selector.unregister(hostile.sock)
        hostile.sock.close()
        self.stats.open_now -= 1
        if b"RetriableException" in hostile.received:
            self.stats.refused_fatal += 1
            self.stats.exception_classes.add("org.apache.hadoop.ipc.RetriableException")
        else:
            self.stats.closed_silently += 1

    @staticmethod
    def _drain(hostile: _Hostile) -> None:
        while True:
            try:
                data = hostile.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            hostile.received += data

    def _run(self) -> None:
        # Lowest priority: the honest client shares this CPU and must not wait behind the
        # flood for its own CPU time, or we would measure the scheduler, not the RM.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            while not self._stop.is_set():
                while self.stats.open_now < self.connections:
                    self._open()
                for key, events in self._selector.select(timeout=0.05):
                    hostile: _Hostile = key.data
                    if events & selectors.EVENT_READ:
                        try:
                            data = hostile.sock.recv(65536)
                        except OSError:
                            data = b""
                        hostile.received += data
                        if not data:
                            self._close(hostile)
                            continue
                    if events & selectors.EVENT_WRITE and hostile.left > 0:
                        try:
                            sent = hostile.sock.send(memoryview(CHUNK)[: min(len(CHUNK), hostile.left)])
                        except OSError as e:
                            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                                continue
                            self._drain(hostile)  # refused and reset: read the reply if it is still there
                            self._close(hostile)
                            continue
                        hostile.left -= sent
                        self.stats.bytes_sent += sent
                        if hostile.left == 0:  # all but the last byte: wait, holding what was sent
                            self._selector.modify(hostile.sock, selectors.EVENT_READ, hostile)
        finally:
            for key in list(self._selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            self._selector.close()


def honest(host: str, port: int, request: bytes, seconds: float, token: tuple[bytes, bytes]) -> dict[str, object]:
    """One connection (authenticated with ``token``), one call in flight, for ``seconds``."""
    return run_load(host, port, ACP, "getApplicationReport", request, connections=1, processes=1, depth=1,
                    seconds=seconds, token=token)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100, help="hostile connections kept open")
    parser.add_argument("--frame-mib", type=int, default=64, help="the frame each declares, MiB")
    parser.add_argument("--seconds", type=float, default=10.0, help="honest measurement, each phase")
    parser.add_argument("--settle", type=float, default=5.0, help="hostile load before measuring under it")
    parser.add_argument("--rm-source", type=Path, help="run the RM from this checkout instead")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpus = (cpus[0], set(cpus[1:])) if len(cpus) > 1 else (None, set(cpus))
    if args.rm_source is not None:  # `python -m cortex_rm` imports from its working directory
        os.chdir(args.rm_source)
    with tempfile.TemporaryDirectory(prefix="cortex-ipc-hostile-") as tmp:
        proc, addresses = start_rm(Path(tmp), server_cpu)
        try:
            request = report_request(submit_one(addresses["resourcemanager.webapp_address"], Path(tmp)))
            token = admin_token(Path(tmp))
            host, port_text = addresses["resourcemanager.address"].rsplit(":", 1)
            port = int(port_text)
            os.sched_setaffinity(0, client_cpus)
            honest(host, port, request, 2.0, token)  # warm-up
            quiet = honest(host, port, request, args.seconds, token)
            before = memory_of(proc.pid)
            load = HostileLoad(host, port, args.connections, args.frame_mib * 1024 * 1024, ACP)
            load.start()
            time.sleep(args.settle)
            loaded = honest(host, port, request, args.seconds, token)
            after = memory_of(proc.pid)
            stats = load.stop()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    mb = 1e6
    print(f"RM pinned to CPU {server_cpu}; hostile load and honest client on CPU(s) {sorted(client_cpus)}")
    print(f"hostile: {args.connections} connections kept open, each declaring {args.frame_mib} MiB; "
          f"{stats.opened} opened, {stats.bytes_sent / mb:,.0f} MB sent, {stats.refused_fatal} refused with a FATAL "
          f"({', '.join(sorted(stats.exception_classes)) or '-'}), {stats.closed_silently} closed without one")
    print(f"RM RSS before {before['VmRSS'] / mb:.0f} MB, after {after['VmRSS'] / mb:.0f} MB "
          f"(growth {(after['VmRSS'] - before['VmRSS']) / mb:.0f} MB); peak (VmHWM) {after['VmHWM'] / mb:.0f} MB")
    for name, r in (("quiet", quiet), ("under load", loaded)):
        print(f"honest getApplicationReport, {name}: {r['calls']} calls, p50 {r['p50_ms']:.3f} ms, "
              f"p99 {r['p99_ms']:.3f} ms, max {r['max_ms']:.3f} ms, errors {r['errors']}"
              + (f" (first: {r['first_error']})" if r["first_error"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
