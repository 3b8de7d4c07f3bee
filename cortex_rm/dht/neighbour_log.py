"""The neighbour log: the peers a node last knew, on disk, so it can rejoin without an introducer.

A ring member writes its successors, predecessor and fingers (with the time of
writing) every few seconds.  After a restart, if the record is younger than
``max_age`` it rejoins through those peers, nearest first: any one of them that is
still on the ring answers the join.  An older record is ignored (its peers are
likely gone, or the ring moved on) and the configured introducers are used.

The file is JSON, written to a temporary file and renamed over the old one, so a
crash mid-write leaves the previous record whole.  A record that cannot be read
(missing, truncated, hand-edited) counts as absent: the node falls back on its
introducers and says why in the log.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger

from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import RING_SIZE, format_id

log = Logger()

FILE_NAME = "ring-neighbours.json"
FORMAT_VERSION = 1
MAX_PEERS = 512  # more than successors + predecessor + 160 fingers can ever hold


@dataclass(frozen=True)
class NeighbourRecord:
    """What a node knew of the ring at ``written_at`` (seconds since the epoch)."""

    written_at: float
    node_id: int
    successors: tuple[Peer, ...]
    predecessor: Peer | None
    fingers: tuple[Peer, ...]

    @property
    def names_peers(self) -> bool:
        """Whether the record names anyone to rejoin through (a node alone names nobody)."""
        return any(p.node_id != self.node_id for p in (*self.successors, *self.fingers, *filter(None, [self.predecessor])))

    def rejoin_candidates(self, now: float, max_age: float) -> list[Peer]:
        """The peers to try rejoining through, nearest first; none when the record is too old.

        Successors come first (they are the likeliest still to hold our place), then
        the predecessor, then the fingers; each peer once, never ourselves.
        """
        if now - self.written_at > max_age or now < self.written_at - max_age:
            return []
        ordered: list[Peer] = []
        candidates = [*self.successors, *([self.predecessor] if self.predecessor else []), *self.fingers]
        for peer in candidates:
            if peer.node_id != self.node_id and peer not in ordered:
                ordered.append(peer)
        return ordered


def _peer_to_json(peer: Peer) -> dict[str, str]:
    return {"id": format_id(peer.node_id), "address": peer.address}


def _peer_from_json(data: object) -> Peer:
    if not isinstance(data, dict):
        raise ValueError(f"a peer must be an object, not {data!r}")
    node_id = int(str(data["id"]), 16)
    address = data["address"]
    if not 0 <= node_id < RING_SIZE or not isinstance(address, str) or not address:
        raise ValueError(f"bad peer {data!r}")
    return Peer(node_id, address)


def encode(record: NeighbourRecord) -> bytes:
    """The record as the JSON document the log holds."""
    document = {
        "format": FORMAT_VERSION,
        "written_at": record.written_at,
        "node_id": format_id(record.node_id),
        "successors": [_peer_to_json(p) for p in record.successors],
        "predecessor": _peer_to_json(record.predecessor) if record.predecessor else None,
        "fingers": [_peer_to_json(p) for p in record.fingers],
    }
    return json.dumps(document, indent=1).encode("utf-8")


def decode(data: bytes) -> NeighbourRecord:
    """Parse a log document; ``ValueError`` saying what is wrong with it."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    except RecursionError:
        raise ValueError("not a neighbour record: JSON nested too deeply") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
        raise ValueError(f"not a format-{FORMAT_VERSION} neighbour record")
    try:
        successors = tuple(_peer_from_json(p) for p in document["successors"])
        fingers = tuple(_peer_from_json(p) for p in document["fingers"])
        raw_predecessor = document["predecessor"]
        predecessor = None if raw_predecessor is None else _peer_from_json(raw_predecessor)
        written_at = float(document["written_at"])
        node_id = int(str(document["node_id"]), 16)
    except (KeyError, TypeError, ValueError, OverflowError) as e:  # OverflowError: a time too large for a float
        raise ValueError(f"malformed neighbour record: {e!r}") from None
    if len(successors) + len(fingers) > MAX_PEERS:
        raise ValueError(f"a neighbour record of more than {MAX_PEERS} peers")
    return NeighbourRecord(written_at, node_id, successors, predecessor, fingers)


class NeighbourLog:
    """The neighbour record of one node, kept in its state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def write(self, record: NeighbourRecord) -> None:
        """Replace the record atomically (write a temporary file, then rename it)."""
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(encode(record))
        os.replace(temporary, self.path)

    def read(self, node_id: int) -> NeighbourRecord | None:
        """The record, or None when there is none usable (missing, unreadable, another node's)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warn("cannot read the neighbour log {path}: {error}; using the introducers", path=str(self.path), error=str(e))
            return None
        try:
            record = decode(data)
        except ValueError as e:
            log.warn("ignoring the neighbour log {path}: {error}; using the introducers", path=str(self.path), error=str(e))
            return None
        if record.node_id != node_id:
            log.warn(
                "ignoring the neighbour log {path}: it belongs to ring id {other}, not ours; using the introducers",
                path=str(self.path),
                other=format_id(record.node_id),
            )
            return None
        return record
