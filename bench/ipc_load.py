"""Load generator for a Hadoop IPC (RPC v9) server on loopback: calls/s and latency.

It speaks the wire as Hadoop's Java client does (auth NONE, then the callId -3
connection context, then pipelined calls multiplexed on each connection) with no
Twisted and no protobuf, so it measures the server rather than itself:

* every call frame is prebuilt once; only the 5 bytes of the callId varint are patched
  per call (the varint is padded to a fixed 5 bytes -- protobuf parsers accept
  non-minimal varints -- so the frame length never changes);
* replies are split by their 4-byte length; of each header only ``callId`` and
  ``status`` are read, bodies are never decoded.

C connections are spread over P worker processes; each connection keeps D calls in
flight.  The run is bounded by a number of calls or of seconds (and by ``timeout``).

    python bench/ipc_load.py 127.0.0.1:8032 \\
        --protocol org.apache.hadoop.yarn.api.ApplicationClientProtocolPB \\
        --method getNewApplication --connections 8 --processes 2 --depth 16 --seconds 10

From Python: ``run_load(host, port, protocol, method, request_bytes, ...) -> dict``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing
import os
import selectors
import socket
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CURRENT_VERSION = 9
CONTEXT_CALL_ID = -3
_PADDED_VARINT = 5  # bytes of every call id varint in our frames


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(data: bytes) -> bytes:
    return _varint(len(data)) + data


def _string_field(number: int, value: bytes) -> bytes:
    return bytes(((number << 3) | 2,)) + _delimited(value)


def padded_call_id(call_id: int) -> bytes:
    """The zigzag varint of a non-negative ``call_id``, padded to exactly 5 bytes."""
    zz = call_id << 1
    return bytes(
        (
            (zz & 0x7F) | 0x80,
            ((zz >> 7) & 0x7F) | 0x80,
            ((zz >> 14) & 0x7F) | 0x80,
            ((zz >> 21) & 0x7F) | 0x80,
            (zz >> 28) & 0x0F,
        )
    )


def _request_header(call_id_varint: bytes, client_id: bytes, retry_varint: bytes) -> bytes:
    # RpcRequestHeaderProto{rpcKind=PROTOCOL_BUFFER(2), rpcOp=FINAL(0), callId, clientId, retryCount}
    return b"\x08\x02\x10\x00\x18" + call_id_varint + _string_field(4, client_id) + b"\x28" + retry_varint


def _token_handshake() -> Any:
    """``tests/support/ipc_frames.token_handshake`` (the SASL TOKEN exchange), from the checkout."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.support.ipc_frames import token_handshake

    return token_handshake


def handshake_bytes(protocol: str, user: str) -> bytes:
    """Preamble (auth NONE) and the callId -3 connection context for ``protocol``."""
    header = _request_header(_varint(5), b"", _varint(1))  # callId -3 -> zigzag 5; retry -1 -> 1
    context = _string_field(2, _string_field(1, user.encode())) + _string_field(3, protocol.encode())
    body = _delimited(header) + _delimited(context)
    return b"hrpc" + bytes((CURRENT_VERSION, 0, 0)) + len(body).to_bytes(4, "big") + body


@dataclass(frozen=True)
class CallTemplate:
    """One prebuilt call frame: ``prefix + padded callId + suffix``."""

    prefix: bytes
    suffix: bytes

    @classmethod
    def build(cls, protocol: str, method: str, request: bytes, client_id: bytes, version: int = 1) -> CallTemplate:
        """The frame of ``method`` with the serialized ``request`` (b"" = empty message)."""
        header = _request_header(b"\x00" * _PADDED_VARINT, client_id, b"\x00")
        rpc = _string_field(1, method.encode()) + _string_field(2, protocol.encode()) + b"\x18" + _varint(version)
        body = _delimited(header) + _delimited(rpc) + _delimited(request)
        whole = len(body).to_bytes(4, "big") + body
        at = 4 + len(_varint(len(header))) + 5  # after length, header length, and 08 02 10 00 18
        return cls(whole[:at], whole[at + _PADDED_VARINT :])

    def frame(self, call_id: int) -> bytes:
        """The frame for ``call_id``."""
        return self.prefix + padded_call_id(call_id) + self.suffix


def _read_varint(buf: bytearray, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _header_fields(buf: bytearray, pos: int, end: int) -> tuple[int, int, str]:
    """``(callId, status, exceptionClassName)`` of an RpcResponseHeaderProto in buf[pos:end]."""
    call_id = status = -1
    exception = ""
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
            if number == 1:
                call_id = value
            elif number == 2:
                status = value
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            if number == 4:
                exception = bytes(buf[pos : pos + length]).decode("utf-8", "replace")
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire_type} in a response header")
    return call_id, status, exception


def require_loopback(host: str) -> None:
    """Refuse any target that is not a loopback address (this tool floods its target)."""
    addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"{host!r} is not a loopback address; ipc_load only targets loopback servers")


class _Connection:
    __slots__ = ("sock", "inbox", "in_flight", "alive")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.in_flight = 0
        self.alive = True


def _worker(
    index: int,
    host: str,
    port: int,
    protocol: str,
    method: str,
    request: bytes,
    version: int,
    user: str,
    connections: int,
    depth: int,
    quota: int | None,
    seconds: float | None,
    timeout: float,
    barrier: Any,
    results: Any,
    token: tuple[bytes, bytes] | None = None,
) -> None:
    """One process: open ``connections``, wait at ``barrier``, load, report to ``results``."""
    client_id = os.urandom(16)
    template = CallTemplate.build(protocol, method, request, client_id, version)
    prefix, suffix = template.prefix, template.suffix
    sent_at: dict[int, float] = {}
    latencies = array("d")
    errors = 0
    first_error: str | None = None
    next_id = 0
    conns: list[_Connection] = []
    selector = selectors.DefaultSelector()
    try:
        for _ in range(connections):
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if token is None:
                sock.sendall(handshake_bytes(protocol, user))
            else:
                _token_handshake()(sock, protocol, *token)
            conns.append(_Connection(sock))
        # One checked call per connection before the clock starts: a wrong protocol,
        # method or request shows up here as an error, not as a fast meaningless run.
        for conn in conns:
            conn.sock.sendall(template.frame(next_id))
            first_error = _await_one(conn, next_id) or first_error
            next_id += 1
    except (OSError, AssertionError, ValueError) as exc:
        first_error = f"connect/handshake failed: {exc}"
    if first_error is not None:
        barrier.abort()
        results.put({"worker": index, "error": first_error})
        return
    for conn in conns:
        # Plain blocking sockets (no timeout: Python would poll() before every call):
        # recv() only runs once the selector saw data, and sendall() of at most D
        # frames fits the kernel's buffer.  The run is bounded by the select loop.
        conn.sock.settimeout(None)
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    try:
        barrier.wait(timeout=timeout)
    except Exception:  # BrokenBarrierError: another worker could not start
        for conn in conns:
            conn.sock.close()
        results.put({"worker": index, "error": "another worker failed to start"})
        return

    perf = time.perf_counter
    start = perf()
    deadline = start + seconds if seconds is not None else None
    hard_stop = start + timeout
    remaining = quota if quota is not None else -1  # calls still to send (-1: unbounded)

    def send(conn: _Connection, count: int) -> None:
        nonlocal next_id, remaining
        if remaining >= 0:
            count = min(count, remaining)
            remaining -= count
        if count <= 0:
            return
        now = perf()
        frames = []
        for _ in range(count):
            call_id = next_id
            next_id += 1
            sent_at[call_id] = now
            zz = call_id << 1
            frames.append(prefix)
            frames.append(
                bytes(
                    (
                        (zz & 0x7F) | 0x80,
                        ((zz >> 7) & 0x7F) | 0x80,
                        ((zz >> 14) & 0x7F) | 0x80,
                        ((zz >> 21) & 0x7F) | 0x80,
                        (zz >> 28) & 0x0F,
                    )
                )
            )
            frames.append(suffix)
        conn.in_flight += count
        conn.sock.sendall(b"".join(frames))

    for conn in conns:
        send(conn, depth)
    last = start
    while True:
        now = perf()
        sending = remaining != 0 and (deadline is None or now < deadline)
        in_flight = sum(c.in_flight for c in conns if c.alive)
        if (not sending and in_flight == 0) or now > hard_stop or not any(c.alive for c in conns):
            break
        for key, _ in selector.select(timeout=0.5):
            conn = key.data
            try:
                data = conn.sock.recv(1 << 20)
            except OSError as exc:
                data = b""
                first_error = first_error or f"recv failed: {exc}"
            if not data:
                errors += conn.in_flight
                first_error = first_error or "server closed a connection"
                conn.alive = False
                conn.in_flight = 0
                selector.unregister(conn.sock)
                continue
            inbox = conn.inbox
            inbox += data
            pos = 0
            size = len(inbox)
            done = 0
            arrived = perf()
            while size - pos >= 4:
                length = int.from_bytes(inbox[pos : pos + 4], "big")
                end = pos + 4 + length
                if end > size:
                    break
                header_len, hpos = _read_varint(inbox, pos + 4)
                # Fast path: servers write callId (field 1) then status (field 2) first.
                if inbox[hpos] == 0x08:
                    call_id, spos = _read_varint(inbox, hpos + 1)
                    status = inbox[spos + 1] if inbox[spos] == 0x10 else -1
                else:
                    call_id, status, _ = _header_fields(inbox, hpos, hpos + header_len)
                started = sent_at.pop(call_id, None)
                if started is not None:
                    done += 1
                    if status == 0:
                        latencies.append(arrived - started)
                    else:
                        errors += 1
                        if first_error is None:
                            _, _, exception = _header_fields(inbox, hpos, hpos + header_len)
                            first_error = f"call {call_id}: status {status} {exception}"
                pos = end
            if pos:
                del inbox[:pos]
            if done:
                last = arrived
                conn.in_flight -= done
                if remaining != 0 and (deadline is None or arrived < deadline):
                    send(conn, done)
    for conn in conns:
        conn.sock.close()
    unanswered = sum(c.in_flight for c in conns if c.alive)
    if unanswered:
        errors += unanswered
        first_error = first_error or f"{unanswered} calls unanswered after the {timeout} s timeout"
    results.put(
        {
            "worker": index,
            "calls": len(latencies),
            "errors": errors,
            "elapsed": last - start,
            "latencies": latencies.tobytes(),
            "error": first_error,
        }
    )


def _await_one(conn: _Connection, call_id: int) -> str | None:
    """Block for the reply to ``call_id``; an error description, or None on SUCCESS."""
    while True:
        if len(conn.inbox) >= 4:
            length = int.from_bytes(conn.inbox[:4], "big")
            if len(conn.inbox) >= 4 + length:
                header_len, hpos = _read_varint(conn.inbox, 4)
                got, status, exception = _header_fields(conn.inbox, hpos, hpos + header_len)
                del conn.inbox[: 4 + length]
                if got != call_id:
                    return f"warm-up call {call_id} answered as call {got} (status {status} {exception})"
                return None if status == 0 else f"warm-up call failed: status {status} {exception}"
        data = conn.sock.recv(1 << 16)
        if not data:
            return "server closed the connection during the warm-up call"
        conn.inbox += data


def _percentile_ms(sorted_values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile, in milliseconds (None without samples)."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return round(sorted_values[index] * 1e3, 4)


def run_load(
    host: str,
    port: int,
    protocol: str,
    method: str,
    request: bytes = b"",
    *,
    connections: int = 4,
    processes: int = 1,
    depth: int = 8,
    calls: int | None = None,
    seconds: float | None = None,
    timeout: float = 300.0,
    protocol_version: int = 1,
    user: str = os.environ.get("USER", "cortex-bench"),
    start_method: str = "spawn",
    token: tuple[bytes, bytes] | None = None,
) -> dict[str, Any]:
    """Load ``host:port`` and return calls/s and latency percentiles (ms).

    Exactly one of ``calls`` (total across all connections) or ``seconds`` bounds the
    run; ``timeout`` bounds it in any case.  The result has ``calls`` (successful),
    ``errors``, ``seconds``, ``calls_per_second``, ``p50_ms``, ``p90_ms``, ``p99_ms``,
    ``max_ms``, the parameters, and ``first_error`` (None when every call succeeded).
    ``token``: (identifier, password) of a user's RM delegation token: each connection then
    authenticates with SASL TOKEN (DIGEST-MD5) as Hadoop's client does; without, it is SIMPLE
    (anonymous to an RM with users).
    """
    if (calls is None) == (seconds is None):
        raise ValueError("give exactly one of calls= or seconds=")
    if not 1 <= processes <= connections:
        raise ValueError("need 1 <= processes <= connections")
    if depth < 1:
        raise ValueError("depth must be at least 1")
    require_loopback(host)
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    quotas: list[int | None] = [None] * processes
    if calls is not None:
        quotas = [calls * share // connections for share in shares]
        quotas[0] = calls - sum(q for q in quotas[1:] if q is not None)
    context: Any = multiprocessing.get_context(start_method)
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    workers = [
        context.Process(
            target=_worker,
            args=(i, host, port, protocol, method, request, protocol_version, user, shares[i], depth,
                  quotas[i], seconds, timeout, barrier, results, token),
            daemon=True,
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    reports = []
    try:
        barrier.wait(timeout=timeout)
    except Exception:  # threading.BrokenBarrierError: a worker failed to connect
        pass
    for _ in workers:
        reports.append(results.get(timeout=timeout + 30))
    for worker in workers:
        worker.join(timeout=30)
    latencies: list[float] = []
    total_errors = 0
    elapsed = 0.0
    first_error = None
    for report in sorted(reports, key=lambda r: r["worker"]):
        first_error = first_error or report.get("error")
        if "latencies" in report:
            chunk = array("d")
            chunk.frombytes(report["latencies"])
            latencies.extend(chunk)
            total_errors += report["errors"]
            elapsed = max(elapsed, report["elapsed"])
        else:
            total_errors += 1
    latencies.sort()
    done = len(latencies)
    return {
        "target": f"{host}:{port}",
        "protocol": protocol,
        "method": method,
        "connections": connections,
        "processes": processes,
        "depth": depth,
        "calls": done,
        "errors": total_errors,
        "seconds": round(elapsed, 4),
        "calls_per_second": round(done / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": _percentile_ms(latencies, 0.50),
        "p90_ms": _percentile_ms(latencies, 0.90),
        "p99_ms": _percentile_ms(latencies, 0.99),
        "max_ms": _percentile_ms(latencies, 1.0),
        "first_error": first_error,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: print a one-line summary and the JSON result; exit 1 on errors."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="HOST:PORT of a loopback IPC server")
    parser.add_argument("--protocol", required=True, help="declaringClassProtocolName, e.g. ...ApplicationClientProtocolPB")
    parser.add_argument("--method", required=True, help="methodName, e.g. getNewApplication")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--request-hex", default="", help="serialized request message, hex (default: empty message)")
    source.add_argument("--request-file", help="file holding the serialized request message")
    parser.add_argument("-c", "--connections", type=int, default=4)
    parser.add_argument("-p", "--processes", type=int, default=1)
    parser.add_argument("-d", "--depth", type=int, default=8, help="calls in flight per connection")
    bound = parser.add_mutually_exclusive_group(required=True)
    bound.add_argument("--calls", type=int, help="total calls to make")
    bound.add_argument("--seconds", type=float, help="how long to keep sending")
    parser.add_argument("--timeout", type=float, default=300.0, help="hard bound on the run, seconds")
    parser.add_argument("--protocol-version", type=int, default=1)
    parser.add_argument("--user", default=os.environ.get("USER", "cortex-bench"))
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    request = bytes.fromhex(args.request_hex)
    if args.request_file:
        with open(args.request_file, "rb") as handle:
            request = handle.read()
    result = run_load(
        host.strip("[]"),
        int(port),
        args.protocol,
        args.method,
        request,
        connections=args.connections,
        processes=args.processes,
        depth=args.depth,
        calls=args.calls,
        seconds=args.seconds,
        timeout=args.timeout,
        protocol_version=args.protocol_version,
        user=args.user,
    )
    print(
        f"{result['calls']} calls in {result['seconds']} s: {result['calls_per_second']} calls/s, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, errors {result['errors']}",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
