"""``put_block``: a block goes from its replica's file to a node's ``/cortex/blocks/<id>`` by
``sendfile``, with a Content-Length and no chunking; a replica shorter than the block is
refused before the node answers.  The receiving node is a real HTTP server on loopback."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cortex_rm.yarn_api.webhdfs.block_transfer import BlockTransferFailed, put_block

BLOCK = "blk_" + "ab" * 16


class Receiver(ThreadingHTTPServer):
    received: list[tuple[str, dict[str, str], bytes]]


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.received.append((self.path, dict(self.headers), body))
        status = 201 if len(body) == length else 400
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_block_is_sent_from_its_file_with_its_length_and_checksum(receiver: Receiver, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    replica = tmp_path / BLOCK
    replica.write_bytes(data + b"tail that is not the block's")
    address = f"127.0.0.1:{receiver.server_address[1]}"
    with replica.open("rb") as f:
        put_block(address, BLOCK, "T", "c0ffee", len(data), f)
    [(path, headers, body)] = receiver.received
    assert path == f"/cortex/blocks/{BLOCK}?ticket=T&checksum=c0ffee"
    assert headers["Content-Length"] == str(len(data)) and "Transfer-Encoding" not in headers
    assert body == data


def test_a_replica_shorter_than_its_block_is_not_sent_as_if_whole(receiver: Receiver, tmp_path: Path) -> None:
    replica = tmp_path / BLOCK
    replica.write_bytes(b"x" * 1000)
    address = f"127.0.0.1:{receiver.server_address[1]}"
    with replica.open("rb") as f, pytest.raises(BlockTransferFailed, match="1000 of its 4096 bytes"):
        put_block(address, BLOCK, "T", "c0ffee", 4096, f, timeout_s=5)
