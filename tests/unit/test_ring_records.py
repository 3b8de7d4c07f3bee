"""The RM's record and the nodes' capacity reports as the ring carries them."""

from __future__ import annotations

import json

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.swim_messages import GossipItem
from cortex_rm.roles.ring_records import (
    CAPACITY_SECTION,
    RESOURCE_MANAGER_KEY,
    CapacityReport,
    CapacityReports,
    MalformedRingRecord,
    Republisher,
    ResourceManagerRecord,
    find_resource_manager,
    publish_resource_manager,
)
from cortex_rm.yarn.addresses import HostPort

RM = ResourceManagerRecord(
    *map(HostPort.parse, ("127.0.0.1:8032", "127.0.0.1:8030", "127.0.0.1:8088", "127.0.0.1:8031")), "ab" * 32, 1234
)
REPORT = CapacityReport("1" * 40, HostPort.parse("127.0.0.2:45454"), HostPort.parse("127.0.0.2:8042"), "/default-rack", 4096, 4)


class DictRing:
    """A ring client over a dict (put/get) and a list of published gossip items."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.published: list[tuple[str, str, bytes]] = []
        self.fail_puts = 0

    def put(self, key: str, value: bytes) -> defer.Deferred[Record]:
        if self.fail_puts:
            self.fail_puts -= 1
            return defer.fail(RuntimeError("the ring is changing"))
        old = self.records.get(key)
        self.records[key] = Record(key, value, (old.version + 1) if old else 1, 1)
        return defer.succeed(self.records[key])

    def get(self, key: str) -> defer.Deferred[Record | None]:
        return defer.succeed(self.records.get(key))

    def publish(self, section: str, key: str, payload: bytes) -> None:
        self.published.append((section, key, payload))


def test_the_rm_record_round_trips_through_the_ring() -> None:
    """What the RM publishes under the well-known key, a NodeManager finds as it was."""
    ring = DictRing()
    publish_resource_manager(ring, RM)
    assert RESOURCE_MANAGER_KEY in ring.records
    found: list[ResourceManagerRecord] = []
    find_resource_manager(ring).addCallback(found.append)
    assert found == [RM]


def test_finding_no_rm_says_what_to_check() -> None:
    """With nothing published the lookup fails naming the key and what to check."""
    failures: list[str] = []
    find_resource_manager(DictRing()).addErrback(lambda f: failures.append(f.getErrorMessage()))
    assert "cortex:resourcemanager" in failures[0] and "[resourcemanager] enabled" in failures[0]


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        json.dumps({"client_address": "x"}).encode(),
        RM.encode().replace(b'"started_ms": 1234', b'"started_ms": "1234"'),
        RM.encode().replace(b"127.0.0.1:8031", b"no-port"),
        b"{" + b" " * 5000 + b"}",
    ],
)
def test_a_malformed_rm_record_is_refused(data: bytes) -> None:
    """Not JSON, wrong keys, wrong types, a bad address, oversized: MalformedRingRecord."""
    with pytest.raises(MalformedRingRecord):
        ResourceManagerRecord.decode(data)


def test_the_directory_keeps_the_newest_report_and_says_when_it_changed() -> None:
    """A new or changed report is kept and gossiped on (True); a repeat is not (False)."""
    directory = CapacityReports()
    item = GossipItem(CAPACITY_SECTION, REPORT.ring_id, REPORT.encode())
    assert directory.receive(item) is True
    assert directory.receive(item) is False
    bigger = CapacityReport(REPORT.ring_id, REPORT.node_id, REPORT.http_address, REPORT.rack, 8192, 4)
    assert directory.receive(GossipItem(CAPACITY_SECTION, REPORT.ring_id, bigger.encode())) is True
    assert directory.report_of(REPORT.ring_id) == bigger
    assert directory.reports() == [bigger]


def test_the_directory_ignores_reports_filed_under_another_member_or_malformed() -> None:
    """A report about member A filed under key B, or one that does not parse, changes nothing."""
    directory = CapacityReports()
    assert directory.receive(GossipItem(CAPACITY_SECTION, "2" * 40, REPORT.encode())) is False
    assert directory.receive(GossipItem(CAPACITY_SECTION, REPORT.ring_id, b"{}")) is False
    bad = REPORT.encode().replace(b'"memory_mb": 4096', b'"memory_mb": 0')
    assert directory.receive(GossipItem(CAPACITY_SECTION, REPORT.ring_id, bad)) is False
    assert directory.reports() == []


def test_the_republisher_runs_now_and_every_interval_and_survives_failures() -> None:
    """A failed publication is logged and retried at the next interval."""
    clock, ring = Clock(), DictRing()
    ring.fail_puts = 1
    republisher = Republisher(lambda: publish_resource_manager(ring, RM), clock, interval_s=30)
    republisher.start()
    assert RESOURCE_MANAGER_KEY not in ring.records  # the first put failed
    clock.advance(30)
    assert ring.records[RESOURCE_MANAGER_KEY].version == 1
    clock.advance(30)
    assert ring.records[RESOURCE_MANAGER_KEY].version == 2
    republisher.stop()


def test_the_directory_forgets_departed_members_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead or departed member's report goes; ids must be 40 hex digits; past the bound
    new members' reports are refused (the table is fed by remote input)."""
    import cortex_rm.roles.ring_records as records

    directory = CapacityReports()
    directory.receive(GossipItem(CAPACITY_SECTION, REPORT.ring_id, REPORT.encode()))
    directory.forget(REPORT.ring_id)
    assert directory.reports() == []
    upper = CapacityReport("A" * 40, REPORT.node_id, REPORT.http_address, REPORT.rack, 1, 1)
    assert directory.receive(GossipItem(CAPACITY_SECTION, upper.ring_id, upper.encode())) is False
    monkeypatch.setattr(records, "MAX_REPORTS", 2)
    for digit in "123":
        report = CapacityReport(digit * 40, REPORT.node_id, REPORT.http_address, REPORT.rack, 1, 1)
        directory.receive(GossipItem(CAPACITY_SECTION, report.ring_id, report.encode()))
    assert [r.ring_id[0] for r in directory.reports()] == ["1", "2"]


@pytest.mark.parametrize("http_address", ["", "no-port", "127.0.0.2:", "127.0.0.2:0", "127.0.0.2:65536", "127.0.0.2:x"])
def test_a_report_whose_web_address_is_not_host_port_is_refused(http_address: str) -> None:
    """The web address is parsed like the NodeId: not host:port with a port, MalformedRingRecord;
    the directory drops it and counts it."""
    data = REPORT.encode().replace(b'"127.0.0.2:8042"', json.dumps(http_address).encode())
    with pytest.raises(MalformedRingRecord):
        CapacityReport.decode(data)
    directory = CapacityReports()
    assert directory.receive(GossipItem(CAPACITY_SECTION, REPORT.ring_id, data)) is False
    assert directory.reports() == [] and directory.refused == {"malformed": 1}


@pytest.mark.parametrize(
    ("node_id", "http_address", "ring_address", "believed"),
    [
        ("127.0.0.2:45454", "127.0.0.2:8042", "127.0.0.2:7946", True),  # a local cluster's node
        ("10.213.4.3:45454", "10.213.4.3:8042", "10.213.4.3:7946", True),  # an isolated one
        ("NM.example:45454", "nm.example:8042", "nm.EXAMPLE:7946", True),  # names, whatever their case
        ("127.0.0.1:5432", "127.0.0.2:8042", "127.0.0.2:7946", False),  # another loopback address
        ("127.0.0.2:45454", "192.168.1.1:22", "127.0.0.2:7946", False),  # a LAN host
        ("10.0.0.5:45454", "10.0.0.5:8042", "10.0.0.6:7946", False),
        ("nm.example:45454", "nm.example:8042", "10.0.0.6:7946", False),  # a name is not the ring's address
        ("127.0.0.2:45454", "127.0.0.2:8042", "no-port", False),
    ],
)
def test_a_reports_addresses_are_believed_only_on_its_members_ring_host(
    node_id: str, http_address: str, ring_address: str, believed: bool
) -> None:
    """``address_error`` is None exactly when both addresses lie on the ring address's host."""
    report = CapacityReport(REPORT.ring_id, HostPort.parse(node_id), HostPort.parse(http_address), "/r", 1, 1)
    assert (report.address_error(ring_address) is None) is believed


def test_refused_items_are_counted_by_kind_and_logged_at_powers_of_two() -> None:
    """A member repeating a bad item is counted each time and logged on the 1st, 2nd, 4th, 8th..."""
    from twisted.logger import globalLogPublisher

    directory = CapacityReports()
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        for _ in range(20):
            directory.receive(GossipItem(CAPACITY_SECTION, "2" * 40, REPORT.encode()))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert directory.refused == {"filed under another key": 20}
    assert [e["count"] for e in logged if "ignoring a capacity report" in str(e.get("log_format"))] == [1, 2, 4, 8, 16]
