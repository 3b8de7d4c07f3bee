"""Fuzzing what the ring carries as JSON: the ResourceManager record, capacity reports, and the
neighbour log a node reads back at start.

* ``ResourceManagerRecord.decode`` / ``CapacityReport.decode`` over random bytes, random
  JSON and mutated valid records (any ring member can put or gossip them):
  ``MalformedRingRecord``, or a record that encodes back to an equal one.
* ``CapacityReports.receive`` (the gossip section's receiver) over random payloads:
  it keeps the report or ignores it, never raises.
* ``neighbour_log.decode`` over random bytes and mutated logs (a truncated or hand-edited
  file): ``ValueError``, as its callers expect, or a record.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from cortex_rm.dht import neighbour_log
from cortex_rm.dht.neighbour_log import NeighbourRecord
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.swim_messages import GossipItem
from cortex_rm.roles.ring_records import CapacityReport, CapacityReports, MalformedRingRecord, ResourceManagerRecord
from cortex_rm.yarn.addresses import HostPort
from tests.fuzz.fuzzing import fuzz_settings, mutated
from tests.fuzz.messages import texts

RING_ID = "ab" * 20
RM_RECORD = ResourceManagerRecord(
    HostPort("rm.example", 8032), HostPort("rm.example", 8030), HostPort("rm.example", 8088),
    HostPort("rm.example", 8031), "f" * 64, 1_700_000_000_000,
)  # fmt: skip
REPORT = CapacityReport(RING_ID, HostPort("nm.example", 45454), HostPort("nm.example", 8042), "/default-rack", 8192, 8)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(12), inner, max_size=3),
    max_leaves=10,
)


def _with_values(record: bytes, replacements: dict[str, Any]) -> bytes:
    document = json.loads(record)
    document.update(replacements)
    return json.dumps(document).encode()


def payloads(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, random JSON, the valid record with fields replaced, or its bytes mutated; and
    the JSON nested deeper than Python's stack."""
    keys = sorted(json.loads(valid))
    return st.one_of(
        st.binary(max_size=80),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.builds(_with_values, st.just(valid), st.dictionaries(st.sampled_from(keys), JSON, min_size=1, max_size=2)),
        mutated(st.just(valid)),
        st.integers(1, 2100).map(lambda depth: b"[" * depth + b"]" * depth),
    )


@fuzz_settings(210)
@given(data=payloads(RM_RECORD.encode()))
@example(data=b"[" * 2000).via("arrays nested past Python's stack")
@example(data=_with_values(RM_RECORD.encode(), {"client_address": "h:\u0661"})).via("a port in Arabic digits")
def test_resource_manager_records_decode_or_are_malformed(data: bytes) -> None:
    """Any record bytes: MalformedRingRecord, or a record that round-trips."""
    try:
        record = ResourceManagerRecord.decode(data)
    except MalformedRingRecord:
        return
    assert ResourceManagerRecord.decode(record.encode()) == record


@fuzz_settings(210)
@given(data=payloads(REPORT.encode()))
@example(data=b"{" * 1500).via("objects nested past Python's stack")
def test_capacity_reports_decode_or_are_malformed_and_gossip_never_raises(data: bytes) -> None:
    """Any report bytes: MalformedRingRecord or a report that round-trips; the gossip receiver
    keeps or ignores it without raising."""
    try:
        report = CapacityReport.decode(data)
    except MalformedRingRecord:
        report = None
    else:
        assert CapacityReport.decode(report.encode()) == report
    kept = CapacityReports().receive(GossipItem("node-capacity", RING_ID, data))
    assert kept == (report is not None and report.ring_id == RING_ID)


LOG = neighbour_log.encode(
    NeighbourRecord(
        1_700_000_000.5, 7, (Peer(8, "10.0.0.8:7000"), Peer(9, "10.0.0.9:7000")), Peer(6, "h:1"), (Peer(9, "x:2"),)
    )
)


@fuzz_settings(210)
@given(data=payloads(LOG))
@example(data=LOG.replace(b'"written_at": 1700000000.5', b'"written_at": 1' + b"0" * 400)).via(
    "a time too large for a float"
)
@example(data=b"[" * 3000).via("arrays nested past Python's stack")
def test_neighbour_logs_decode_or_are_value_errors(data: bytes) -> None:
    """Any log file content: ValueError (the node then uses its introducers) or a record."""
    try:
        neighbour_log.decode(data)
    except ValueError:
        pass
