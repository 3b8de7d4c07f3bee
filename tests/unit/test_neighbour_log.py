"""The neighbour log: atomic, tolerant of damage, and only trusted while fresh."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.dht.neighbour_log import FILE_NAME, NeighbourLog, NeighbourRecord, decode, encode
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import RING_SIZE

peers = st.builds(Peer, st.integers(0, RING_SIZE - 1), st.from_regex(r"127\.0\.0\.[0-9]{1,3}:[0-9]{2,5}", fullmatch=True))


def _record(written_at: float = 1000.0) -> NeighbourRecord:
    return NeighbourRecord(
        written_at=written_at,
        node_id=5,
        successors=(Peer(10, "127.0.0.2:1"), Peer(20, "127.0.0.3:1")),
        predecessor=Peer(1, "127.0.0.4:1"),
        fingers=(Peer(10, "127.0.0.2:1"), Peer(99, "127.0.0.5:1"), Peer(5, "127.0.0.1:1")),
    )


@given(
    written_at=st.floats(0, 4e9),
    node_id=st.integers(0, RING_SIZE - 1),
    successors=st.lists(peers, max_size=8),
    predecessor=st.none() | peers,
    fingers=st.lists(peers, max_size=20),
)
def test_a_record_round_trips_through_its_json(
    written_at: float, node_id: int, successors: list[Peer], predecessor: Peer | None, fingers: list[Peer]
) -> None:
    """Whatever a node writes, it reads back the same peers and time."""
    record = NeighbourRecord(written_at, node_id, tuple(successors), predecessor, tuple(fingers))
    assert decode(encode(record)) == record


def test_a_fresh_record_offers_successors_then_predecessor_then_fingers_once_each() -> None:
    """Rejoin tries the nearest peers first, each once, and never ourselves."""
    candidates = _record().rejoin_candidates(now=1010.0, max_age=60.0)
    assert [p.node_id for p in candidates] == [10, 20, 1, 99]


def test_a_stale_or_future_record_offers_nobody() -> None:
    """Past max_age (or written impossibly far in the future) the record is not trusted."""
    assert _record().rejoin_candidates(now=1061.0, max_age=60.0) == []
    assert _record(written_at=5000.0).rejoin_candidates(now=1000.0, max_age=60.0) == []


def test_the_log_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    """write replaces the file whole (no temporary left behind); read returns the record."""
    log = NeighbourLog(tmp_path)
    log.write(_record(1.0))
    log.write(_record(2.0))
    assert log.read(node_id=5) == _record(2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


def test_a_missing_damaged_or_foreign_log_counts_as_absent(tmp_path: Path) -> None:
    """No file, a truncated file, JSON of the wrong shape, or another node's record:
    read gives None, so the node falls back on its introducers."""
    log = NeighbourLog(tmp_path)
    assert log.read(node_id=5) is None
    log.write(_record())
    assert log.read(node_id=6) is None  # another node's record
    data = log.path.read_bytes()
    log.path.write_bytes(data[: len(data) // 2])
    assert log.read(node_id=5) is None
    log.path.write_text('{"format": 1, "successors": "nope"}')
    assert log.read(node_id=5) is None
    log.path.write_bytes(b"\xff\xfe")
    assert log.read(node_id=5) is None


def test_a_record_of_a_node_alone_names_nobody() -> None:
    """A node alone (no peers, or only itself as a finger) writes a record that names no peer."""
    assert _record().names_peers
    alone = NeighbourRecord(1.0, 5, (), None, (Peer(5, "127.0.0.1:1"),))
    assert not alone.names_peers
