"""Where the RM-eligible nodes are (``roles/rm_directory.py``): each eligible node's record under its own key,
the active named by its key's fingerprint, the JSON every node serves, and what the containers' firewall admits.
The ring's key space is a dict here (records as the ring hands them back after its signature and writer checks)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.ring_math import format_id
from cortex_rm.roles.container_members import OwnEndpoints, members_of
from cortex_rm.roles.ring_records import RESOURCE_MANAGER_KEY, ResourceManagerRecord
from cortex_rm.roles.rm_directory import RmDirectory, eligible_key, find_all_rms
from cortex_rm.yarn.addresses import HostPort
from tests.support.rm_core import result_of

IDS = [0x7 << 156, 0x2 << 156, 0xC << 156]  # in the configured order: not the ring's


def _record(host: str, fingerprint: str, started_ms: int = 0) -> ResourceManagerRecord:
    return ResourceManagerRecord(HostPort(host, 8032), HostPort(host, 8030), HostPort(host, 8088), HostPort(host, 8031),
                                 fingerprint, started_ms)  # fmt: skip


class KeySpace:
    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}

    def put(self, key: str, value: bytes) -> defer.Deferred[Record]:
        self.records[key] = value
        return defer.succeed(Record(key, value, 1, 0))

    def get(self, key: str) -> defer.Deferred[Record | None]:
        value = self.records.get(key)
        return defer.succeed(None if value is None else Record(key, value, 1, 0))

    def publish(self, section: str, key: str, payload: bytes) -> object:
        raise AssertionError("not used")


def test_every_eligible_node_is_listed_in_the_configured_order_with_the_active_named_by_its_key() -> None:
    ring = KeySpace()
    for i, ring_id in enumerate(IDS):
        ring.put(eligible_key(ring_id), _record(f"10.0.0.{i + 1}", f"fp{i}").encode())
    ring.put(RESOURCE_MANAGER_KEY, _record("10.0.0.2", "fp1", started_ms=5).encode())  # IDS[1] is the active
    directory = RmDirectory(ring, IDS, Clock())
    assert directory.document() is None  # nothing found yet
    result_of(directory.refresh())
    document = directory.document()
    assert document is not None
    listed = document["resourceManagers"]
    assert listed["active"] == format_id(IDS[1])
    assert [r["ringId"] for r in listed["rm"]] == [format_id(i) for i in IDS]
    assert [r["active"] for r in listed["rm"]] == [False, True, False]
    assert listed["rm"][2]["webappAddress"] == "10.0.0.3:8088"


def test_a_node_not_yet_published_is_left_out_and_a_malformed_record_is_skipped() -> None:
    ring = KeySpace()
    ring.put(eligible_key(IDS[0]), _record("10.0.0.1", "fp0").encode())
    ring.put(eligible_key(IDS[2]), b'{"not": "a record"}')
    directory = RmDirectory(ring, IDS, Clock())
    result_of(directory.refresh())
    document = directory.document()
    assert document is not None
    assert document["resourceManagers"]["active"] is None
    assert [r["ringId"] for r in document["resourceManagers"]["rm"]] == [format_id(IDS[0])]


def test_the_containers_may_reach_every_eligible_rm_so_an_am_can_fail_over() -> None:
    ring = KeySpace()
    ring.put(RESOURCE_MANAGER_KEY, _record("10.0.0.1", "fp0", started_ms=5).encode())
    for i, ring_id in enumerate(IDS):
        ring.put(eligible_key(ring_id), _record(f"10.0.0.{i + 1}", f"fp{i}").encode())
    records = result_of(find_all_rms(ring, IDS))
    assert len(records) == 4
    members = members_of(OwnEndpoints((), ()), None, [], records)
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert (host, 8030) in members.services and (host, 8088) in members.services  # scheduler and WebHDFS
        assert (host, 8031) in members.control and (host, 8030) not in members.control
