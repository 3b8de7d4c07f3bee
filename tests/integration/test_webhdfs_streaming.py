"""Uploads and reads stream through a real node: a bad ticket is answered before the body is sent
(and the body the client sends anyway is neither kept in memory nor written to a file), a chunked
upload goes down a two-node pipeline intact, and pipelined reads on one connection (the node's
worker writes large bodies on the socket itself) come back whole and in order.  A real two-node
local cluster; raw HTTP clients."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.credentials import delegation, hdfs_client

GIB = 1 << 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("webhdfs-streaming"), nodes=2) as c:
        deadline = time.monotonic() + 60
        client = hdfs_client(c, "root")
        while True:  # until both DataNodes have reported (a probe with replication 2 gets 2 holders)
            client.write("/.probe", data=b"x", overwrite=True, replication=2)
            if len(_hosts(c, "/.probe")) == 2:
                break
            assert time.monotonic() < deadline, "the DataNodes did not report"
            time.sleep(0.5)
        yield c


def _hosts(cluster: RunningCluster, path: str) -> list[str]:
    reply = requests.get(f"http://{cluster.rm.webapp}/webhdfs/v1{path}",
                         params={"op": "GETFILEBLOCKLOCATIONS", "delegation": delegation(cluster, "root")}, timeout=30)
    reply.raise_for_status()
    return list(reply.json()["BlockLocations"]["BlockLocation"][0]["hosts"])


def _redirect(cluster: RunningCluster, path: str, **params: str) -> tuple[str, int, str]:
    """The node's host, port and target the NameNode redirects a CREATE of ``path`` to."""
    reply = requests.put(f"http://{cluster.rm.webapp}/webhdfs/v1{path}", allow_redirects=False, timeout=30,
                         params={"op": "CREATE", "delegation": delegation(cluster, "root"), "overwrite": "true", **params})
    assert reply.status_code == 307, reply.text
    hostport, _, target = reply.headers["Location"].removeprefix("http://").partition("/")
    host, port = hostport.rsplit(":", 1)
    return host, int(port), "/" + target


def _process(cluster: RunningCluster, port: int) -> tuple[int, int]:
    """The resident memory and the bytes written to files so far of the node serving ``port``."""
    (node,) = [n for n in cluster.nodes if n.nm_webapp.endswith(f":{port}")]
    rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{node.pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    written = next(int(line.split()[1]) for line in Path(f"/proc/{node.pid}/io").read_text().splitlines()
                   if line.startswith("write_bytes:"))
    return rss, written


def test_a_forged_ticket_with_1_gib_declared_is_refused_before_the_body_and_nothing_is_kept(
    cluster: RunningCluster,
) -> None:
    """The node answers 403 InvalidToken while the client has sent only its headers; the 64 MiB it
    then sends anyway are dropped: the node's memory and file writes do not grow with them."""
    host, port, target = _redirect(cluster, "/streaming/forged")
    forged = target.replace("ticket=", "ticket=A", 1)
    rss_before, written_before = _process(cluster, port)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"PUT {forged} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {GIB}\r\n\r\n".encode())
        answer = b""
        while b"InvalidToken" not in answer:  # answered with nothing of the body sent
            piece = sock.recv(65536)
            assert piece, f"the node closed without an answer: {answer!r}"
            answer += piece
        assert answer.startswith(b"HTTP/1.1 403 ") and b"Connection: close" in answer
        sent = 0
        try:
            while sent < 64 << 20:
                sock.sendall(os.urandom(1 << 20))
                sent += 1 << 20
        except OSError:
            pass  # the node cut the connection after its linger: the rest went nowhere
    rss_after, written_after = _process(cluster, port)
    assert written_after - written_before < 4 << 20, (written_before, written_after)
    assert rss_after - rss_before < 32 << 20, (rss_before, rss_after)
    assert requests.get(f"http://{cluster.rm.webapp}/webhdfs/v1/streaming/forged",
                        params={"op": "GETFILESTATUS", "delegation": delegation(cluster, "root")},
                        timeout=30).status_code == 404


def test_a_forged_ticket_with_expect_100_continue_gets_no_continue_only_the_refusal(cluster: RunningCluster) -> None:
    host, port, target = _redirect(cluster, "/streaming/expect")
    forged = target.replace("ticket=", "ticket=A", 1)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"PUT {forged} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {GIB}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    assert answer.startswith(b"HTTP/1.1 403 ") and b"100 Continue" not in answer


def test_a_chunked_upload_in_odd_pieces_goes_down_the_pipeline_intact(cluster: RunningCluster) -> None:
    """Chunks of 1 byte to 3 MiB, 20 MiB in all, replication 2: both holders have it, and it reads back."""
    sizes = [1, 7, 65536, 3 << 20, 100_003] * 6
    data = os.urandom(sum(sizes))
    host, port, target = _redirect(cluster, "/streaming/chunked", replication="2")

    def chunks() -> Iterator[bytes]:
        position = 0
        for size in sizes:
            yield data[position : position + size]
            position += size

    connection = http.client.HTTPConnection(host, port, timeout=120)
    try:
        connection.request("PUT", target, body=chunks(), encode_chunked=True,
                           headers={"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"})
        answer = connection.getresponse()
        assert answer.status == 201, answer.read()
    finally:
        connection.close()
    assert len(_hosts(cluster, "/streaming/chunked")) == 2
    read = requests.get(f"http://{cluster.rm.webapp}/webhdfs/v1/streaming/chunked",
                        params={"op": "OPEN", "delegation": delegation(cluster, "root")}, timeout=120)
    assert read.status_code == 200
    assert hashlib.sha256(read.content).hexdigest() == hashlib.sha256(data).hexdigest()


def _response(sock: socket.socket, pending: bytearray) -> tuple[bytes, bytes]:
    """The next response on ``sock`` (``pending``: bytes read past the one before): its status line and body."""
    while b"\r\n\r\n" not in pending:
        piece = sock.recv(65536)
        assert piece, f"the connection ended inside a response's head: {bytes(pending[:200])!r}"
        pending += piece
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
    body = bytearray(rest)
    while len(body) < length:
        piece = sock.recv(1 << 20)
        assert piece, f"the connection ended {len(body)} bytes into a body of {length}"
        body += piece
    pending[:] = body[length:]
    return lines[0], bytes(body[:length])


def test_pipelined_reads_on_one_connection_come_back_whole_and_in_order(cluster: RunningCluster) -> None:
    """Three OPENs of a 6 MiB file sent at once on one kept-alive connection (the whole file, 10 bytes
    across a piece boundary, 3 MiB from an odd offset): the answers come back one after the other,
    each exactly its range — the large bodies the node's worker writes on the socket itself do not
    mix with the answers Twisted writes after them."""
    data = os.urandom(6 * 1024 * 1024)
    hdfs_client(cluster, "root").write("/streaming/pipelined", data=data, overwrite=True, replication=1)
    reply = requests.get(f"http://{cluster.rm.webapp}/webhdfs/v1/streaming/pipelined", allow_redirects=False,
                         params={"op": "OPEN", "delegation": delegation(cluster, "root")}, timeout=30)
    assert reply.status_code == 307, reply.text
    location = urlsplit(reply.headers["Location"])
    assert location.hostname is not None and location.port is not None
    host, port, hostport = location.hostname, location.port, location.netloc
    ticket = {k: v for k, v in parse_qsl(location.query) if k not in ("offset", "length")}
    ranges = [(0, len(data)), ((1 << 20) - 3, 10), (12_345, 3 << 20)]
    requests_text = b"".join(
        f"GET {location.path}?{urlencode({**ticket, 'offset': offset, 'length': length})} HTTP/1.1\r\n"
        f"Host: {hostport}\r\n\r\n".encode()
        for offset, length in ranges
    )
    with socket.create_connection((host, int(port)), timeout=120) as sock:
        sock.sendall(requests_text)
        pending = bytearray()
        for offset, length in ranges:
            status, body = _response(sock, pending)
            assert status.startswith(b"HTTP/1.1 200 "), status
            assert len(body) == length and body == data[offset : offset + length], (offset, length)
        assert not pending
