"""Moving one block between nodes over HTTP: ``/cortex/blocks/<id>`` on a node's web port.

Blocking code (``http.client``) for the DataNode's worker threads: a write
pipeline pushes each finished block to the other nodes of its pipeline
(``put_block``, with the write ticket), and a node reads a block it
does not hold — for a client's read or a re-replication order — from a holder
(``get_block``, with a block token).  Every failure is a ``BlockTransferFailed``
naming the node and the reason, so the caller can try the next holder.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import urlencode

from cortex_rm.yarn.addresses import HostPort

PIECE_BYTES = 1024 * 1024
TIMEOUT_S = 60.0


class BlockTransferFailed(Exception):
    """A block could not be sent to or read from a node."""


def _connection(address: str, timeout_s: float) -> http.client.HTTPConnection:
    where = HostPort.parse(address)
    return http.client.HTTPConnection(where.host, where.port, timeout=timeout_s)


def _refusal(response: http.client.HTTPResponse) -> str:
    body = response.read(4096).decode("utf-8", "replace")
    return f"HTTP {response.status}: {body[:500]}"


def put_block(
    address: str,
    block_id: str,
    ticket: str,
    checksum: str,
    length: int,
    data: BinaryIO,
    timeout_s: float = TIMEOUT_S,
) -> None:
    """Store the first ``length`` bytes of the file ``data`` as replica ``block_id`` on the node at
    ``address``; it checks ``checksum`` (the whole block's, so what this node's disk may have
    changed since the block was written is caught there).  Sent with a Content-Length, not
    chunked, and by ``sendfile``: the bytes go from the page cache to the socket without passing
    through this process."""
    query = urlencode({"ticket": ticket, "checksum": checksum})
    connection = _connection(address, timeout_s)
    try:
        connection.putrequest("PUT", f"/cortex/blocks/{block_id}?{query}", skip_accept_encoding=True)
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        assert connection.sock is not None  # (connected by endheaders)
        sent = connection.sock.sendfile(data, 0, length)
        if sent != length:
            raise BlockTransferFailed(f"block {block_id}: {sent} of its {length} bytes read from this node's replica")
        response = connection.getresponse()
        if response.status != 201:
            raise BlockTransferFailed(f"{address} refused block {block_id}: {_refusal(response)}")
        response.read()
    except (OSError, http.client.HTTPException) as e:
        raise BlockTransferFailed(f"cannot send block {block_id} to {address}: {e}") from None
    finally:
        connection.close()


def get_block(
    address: str, block_id: str, token: str, offset: int, length: int, timeout_s: float = TIMEOUT_S
) -> Iterator[bytes]:
    """``length`` bytes of block ``block_id`` from ``offset``, read from the node at ``address``."""
    query = urlencode({"ticket": token, "offset": offset, "length": length})
    connection = _connection(address, timeout_s)
    try:
        connection.request("GET", f"/cortex/blocks/{block_id}?{query}")
        response = connection.getresponse()
        if response.status != 200:
            raise BlockTransferFailed(f"{address} cannot serve block {block_id}: {_refusal(response)}")
        received = 0
        while received < length:
            piece = response.read(min(PIECE_BYTES, length - received))
            if not piece:
                raise BlockTransferFailed(f"{address} sent {received} of {length} bytes of block {block_id}")
            received += len(piece)
            yield piece
    except (OSError, http.client.HTTPException) as e:
        raise BlockTransferFailed(f"cannot read block {block_id} from {address}: {e}") from None
    finally:
        connection.close()
