"""``put_block``: a block goes from its replica's file to a node's ``/cortex/blocks/<id>`` by
``sendfile``, with a Content-Length and no chunking; a replica shorter than the block is
refused before the node answers.  A pipeline copy the other node refuses is blamed on that node
only when this node's replica checks out.  The receiving node is a real HTTP server on loopback."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from types import SimpleNamespace
from typing import Any, cast

import pytest

from cortex_rm.fs.block_store import BlockStore
from cortex_rm.fs.errors import CorruptReplica
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn_api.webhdfs.block_transfer import BlockTransferFailed, put_block
from cortex_rm.yarn_api.webhdfs.block_work import _Replica

BLOCK = "blk_" + "ab" * 16


class Receiver(ThreadingHTTPServer):
    received: list[tuple[str, dict[str, str], bytes]]
    refuse: bool


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.received.append((self.path, dict(self.headers), body))
        status = 201 if len(body) == length and not self.server.refuse else 400
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.received = []
    server.refuse = False
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


def _stored(tmp_path: Path, data: bytes) -> tuple[BlockStore, Any]:
    store = BlockStore(tmp_path / "blocks", lambda: 1_000)
    store.scan()
    writer = store.writer(BLOCK, len(data))
    writer.write(data)
    return store, writer.finish()


@pytest.mark.parametrize("ours", ["intact", "damaged"])
def test_a_refused_copy_drops_the_other_node_only_when_our_replica_checks_out(
    receiver: Receiver, tmp_path: Path, ours: str
) -> None:
    """The other node refuses the copy (as it does a block whose checksum is not the one announced).
    Our replica intact: the other node failed, and is dropped from the pipeline.  Our replica damaged
    on disk since it was written: ours is at fault (CorruptReplica: the write fails), not the other."""
    store, stored = _stored(tmp_path, os.urandom(200_000))
    if ours == "damaged":
        data_path, _ = store.paths(BLOCK)
        with data_path.open("r+b") as f:
            f.seek(100_000)
            f.write(b"\x00" * 8)
    receiver.refuse = True
    replica = _Replica(f"127.0.0.1:{receiver.server_address[1]}", str(NodeId("node-b", 45454)))
    ctx = cast(Any, SimpleNamespace(store=store))
    try:
        if ours == "intact":
            with pytest.raises(BlockTransferFailed, match="refused block"):
                replica.copy(ctx, stored, "T")
            assert replica.failure is not None
        else:
            with pytest.raises(CorruptReplica):
                replica.copy(ctx, stored, "T")
            assert replica.failure is None
    finally:
        replica.sender.shutdown()
