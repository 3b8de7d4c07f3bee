"""What the YARN roles keep in, and gossip over, the ring.

* **The ResourceManager record.**  The active RM puts its addresses and the
  fingerprint of its key under the well-known ring key ``RESOURCE_MANAGER_KEY``
  (and again every ``REPUBLISH_INTERVAL_S``, so a record lost with all its replicas
  comes back).  A NodeManager with no configured tracker reads it before each
  connection attempt (``locate_tracker``) and reports only to a tracker showing
  that key, and after its first registration only the key it pinned then.
* **Node capacity reports** ride piggybacked on the ring's probe traffic in the
  ``CAPACITY_SECTION`` gossip section: each NodeManager publishes its NodeId, web
  address, rack and capacity under its ring id every ``REPUBLISH_INTERVAL_S``.
  Every node keeps the newest report per ring member (``CapacityReports``), which is
  what lets it pass them on; the RM learns from them what each member offers.
  A report is signed by the member it is about, but the addresses in it are only
  that member's word: ``CapacityReport.address_error`` says whether they lie on the
  host the ring knows the member at (its ring address, from its own signed ALIVE),
  and only reports that do are believed where an address opens something (the
  containers' firewall, ``container_members.py``).
  Which NodeManager a ring member *is* the RM takes from the NodeTracker's TLS
  binding, never from gossip, so a forged report cannot make it mark a node LOST.

Both are JSON, bounded and validated on the way in: the ring carries them for any
member, so nothing decoded is trusted further than its shape.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.member_table import MemberDied, MemberLeft, MembershipEvent
from cortex_rm.dht.peer import split_address
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.swim_messages import GossipItem
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.refusal_log import sanitised

log = Logger()

RESOURCE_MANAGER_KEY = "cortex:resourcemanager"
CAPACITY_SECTION = "node-capacity"
REPUBLISH_INTERVAL_S = 30.0
MAX_RECORD_BYTES = 4096


class MalformedRingRecord(ValueError):
    """A record or report read from the ring does not have the expected shape."""


class RingClient(Protocol):
    """What these helpers need of the ring service."""

    def put(self, key: str, value: bytes) -> defer.Deferred[Record]: ...

    def get(self, key: str) -> defer.Deferred[Record | None]: ...

    def publish(self, section: str, key: str, payload: bytes) -> object: ...


class RingMembership(Protocol):
    """What keeping the capacity reports needs of the ring service."""

    def register_section(self, name: str, on_receive: Callable[[GossipItem], bool]) -> None: ...

    def add_membership_listener(self, listener: Callable[[MembershipEvent], None]) -> None: ...


def _decode(data: bytes, fields: dict[str, type], what: str) -> dict[str, Any]:
    if len(data) > MAX_RECORD_BYTES:
        raise MalformedRingRecord(f"a {what} of {len(data)} bytes (at most {MAX_RECORD_BYTES})")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedRingRecord(f"a {what} that is not JSON: {e}") from None
    except RecursionError:  # arrays nested past Python's stack (the size bound allows 4096 levels)
        raise MalformedRingRecord(f"a {what} nested too deeply to be one") from None
    if not isinstance(document, dict) or set(document) != set(fields):
        raise MalformedRingRecord(f"a {what} must have exactly the keys {sorted(fields)}")
    for name, kind in fields.items():
        if not isinstance(document[name], kind) or isinstance(document[name], bool) is not (kind is bool):
            raise MalformedRingRecord(f"a {what}'s {name} must be a {kind.__name__}")
    return document


def _json(record: Any) -> bytes:
    """A record's fields as JSON, addresses as ``host:port`` text."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    document = {k: str(v) if isinstance(v, HostPort) else v for k, v in fields.items()}
    return json.dumps(document, sort_keys=True).encode("utf-8")


def _address(text: str, what: str) -> HostPort:
    try:
        return HostPort.parse(text)
    except ValueError as e:
        raise MalformedRingRecord(f"{what}: {e}") from None


def same_host(a: str, b: str) -> bool:
    """Whether two host texts name the same host: equal IP addresses, or names equal but for case."""
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


def _is_ring_id_hex(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class ResourceManagerRecord:
    """The active RM's addresses (YARN's), its tracker's, and the fingerprint of its key."""

    client_address: HostPort  # yarn.resourcemanager.address
    scheduler_address: HostPort  # yarn.resourcemanager.scheduler.address
    webapp_address: HostPort  # yarn.resourcemanager.webapp.address
    tracker_address: HostPort  # where NodeManagers report
    tracker_fingerprint: str  # the key the tracker shows in TLS
    started_ms: int  # the RM's start time (its rm_identifier)

    ADDRESSES = ("client_address", "scheduler_address", "webapp_address", "tracker_address")

    def encode(self) -> bytes:
        """The record's JSON (addresses as ``host:port``)."""
        return _json(self)

    @classmethod
    def decode(cls, data: bytes) -> ResourceManagerRecord:
        """Parse and check a record read from the ring; MalformedRingRecord says what is wrong."""
        fields: dict[str, type] = {name: str for name in cls.__dataclass_fields__}
        fields["started_ms"] = int
        document = _decode(data, fields, "ResourceManager record")
        for name in cls.ADDRESSES:
            address = _address(document[name], f"the ResourceManager record's {name}")
            if address.port == 0:
                raise MalformedRingRecord(f"the ResourceManager record's {name} has no port")
            document[name] = address
        return cls(**document)


@dataclass(frozen=True)
class CapacityReport:
    """One NodeManager as it reports itself on the ring."""

    ring_id: str  # 40 hex digits: the member this report is about
    node_id: HostPort  # YARN's NodeId (its nodemanager.address)
    http_address: HostPort  # its web (and DataNode) address
    rack: str
    memory_mb: int
    vcores: int

    def encode(self) -> bytes:
        """The report's JSON (the gossip item's payload)."""
        return _json(self)

    @classmethod
    def decode(cls, data: bytes) -> CapacityReport:
        """Parse and check a report; MalformedRingRecord says what is wrong."""
        fields: dict[str, type] = {"ring_id": str, "node_id": str, "http_address": str, "rack": str}
        fields.update(memory_mb=int, vcores=int)
        document = _decode(data, fields, "capacity report")
        for name in ("node_id", "http_address"):
            address = _address(document[name], f"a capacity report's {name}")
            if address.port == 0:
                raise MalformedRingRecord(f"a capacity report's {name} has no port")
            document[name] = address
        report = cls(**document)
        if not _is_ring_id_hex(report.ring_id) or report.memory_mb < 1 or report.vcores < 1:
            raise MalformedRingRecord(f"a capacity report with a bad ring id or capacity: {report}")
        return report

    def address_error(self, ring_address: str) -> str | None:
        """Why this report's addresses are not its member's (None: they are).

        ``ring_address`` is where the ring knows the member (``host:port`` from its
        signed ALIVE).  A NodeManager's NodeId and web address lie on its ring
        address's host; an address on any other host is not the member's to offer
        (a member naming 127.0.0.1:5432 or a LAN host's port 22 would open them in
        every node's container firewall), so the report is not believed.
        """
        try:
            ring_host, _ = split_address(ring_address)
        except ValueError:
            return f"its member's ring address {ring_address[:60]!r} is not host:port"
        for name in ("node_id", "http_address"):
            address: HostPort = getattr(self, name)
            if not same_host(address.host, ring_host):
                return f"its {name} {str(address)[:60]!r} is not on its member's ring host {ring_host[:60]!r}"
        return None


MAX_REPORTS = 4096  # capacity reports kept (one per member): remote input, so bounded


class CapacityReports:
    """Capacity reports, newest per ring member (the gossip section's receiver; every node keeps one).

    Reports are gossip: any member can file one about any id, so they say what a
    member claims to offer, never who is alive or which NodeId a key registered
    (the NodeTracker binds that, over TLS).  A report is dropped when its member
    is declared dead or left (``forget``).  Refused items are counted by kind in
    ``refused``; the 1st, 2nd, 4th, 8th... of each kind is logged, so a member
    sending bad items cannot flood the log.
    """

    def __init__(self) -> None:
        self._reports: dict[str, CapacityReport] = {}
        self.refused: Counter[str] = Counter()

    def _refuse(self, kind: str, error: str) -> bool:
        self.refused[kind] += 1
        count = self.refused[kind]
        if count & (count - 1) == 0:
            log.warn("ignoring a capacity report ({count} so far: {kind}): {error}", count=count, kind=kind, error=sanitised(error))
        return False

    def receive(self, item: GossipItem) -> bool:
        """Keep the report if it is new or changed; whether it was (then it is gossiped on)."""
        try:
            report = CapacityReport.decode(item.payload)
        except MalformedRingRecord as e:
            return self._refuse("malformed", str(e))
        if report.ring_id != item.key:
            return self._refuse("filed under another key", f"filed under {item.key[:60]!r} about {report.ring_id}")
        if item.publisher and format_id(item.publisher) != report.ring_id:
            # Signed by another member (ring_trust checked the signature): only a node reports its own capacity.
            return self._refuse("published by another member",
                                f"about {report.ring_id[:10]} published by {format_id(item.publisher)[:10]}")
        if self._reports.get(report.ring_id) == report:
            return False
        if report.ring_id not in self._reports and len(self._reports) >= MAX_REPORTS:
            return self._refuse("too many members", f"about {report.ring_id[:10]}: {MAX_REPORTS} members are known")
        self._reports[report.ring_id] = report
        log.info("ring member {ring_id} is NodeManager {node_id} with {memory_mb} MB, {vcores} vcores",
                 ring_id=report.ring_id[:10], node_id=str(report.node_id), memory_mb=report.memory_mb, vcores=report.vcores)
        return True

    def forget(self, ring_id: str) -> None:
        """Drop the report of a member that died or left."""
        self._reports.pop(ring_id, None)

    def receive_own(self, report: CapacityReport) -> None:
        """The RM's own node's report (gossip never brings a member its own items)."""
        self._reports[report.ring_id] = report

    def report_of(self, ring_id: str) -> CapacityReport | None:
        """The newest report of ring member ``ring_id`` (40 hex digits)."""
        return self._reports.get(ring_id)

    def reports(self) -> list[CapacityReport]:
        """Every report, by NodeId."""
        return sorted(self._reports.values(), key=lambda r: str(r.node_id))


def keep_capacity_reports(ring: RingMembership) -> CapacityReports:
    """The capacity reports gossiped on ``ring``: kept (and so passed on) until their member is gone."""
    reports = CapacityReports()
    ring.register_section(CAPACITY_SECTION, reports.receive)

    def forget_report(event: MembershipEvent) -> None:
        if isinstance(event, (MemberDied, MemberLeft)):
            reports.forget(format_id(event.peer.node_id))

    ring.add_membership_listener(forget_report)
    return reports


class Republisher:
    """Runs ``publish`` now and every ``interval_s`` on ``clock`` (a failure is logged, the next run retries)."""

    def __init__(self, publish: Callable[[], object], clock: IReactorTime, interval_s: float = REPUBLISH_INTERVAL_S) -> None:
        self._publish = publish
        self._loop = task.LoopingCall(self._run)
        self._loop.clock = clock
        self.interval_s = interval_s

    def _run(self) -> defer.Deferred[object]:
        d = defer.maybeDeferred(self._publish)
        d.addErrback(lambda f: log.warn("publishing to the ring failed ({error}); retrying in {interval:.0f} s",
                                        error=f.getErrorMessage(), interval=self.interval_s))
        return d

    def start(self) -> None:
        self._loop.start(self.interval_s, now=True)

    def run_now(self) -> None:
        """Publish at once (what it publishes changed), besides the runs every ``interval_s``."""
        self._run()

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()


def publish_resource_manager(ring: RingClient, record: ResourceManagerRecord) -> defer.Deferred[Record]:
    """Put the RM's record under the well-known key."""
    d = ring.put(RESOURCE_MANAGER_KEY, record.encode())

    def stored(result: Record) -> Record:
        log.info("published the ResourceManager record in the ring (version {version})", version=result.version)
        return result

    return d.addCallback(stored)


def find_resource_manager(ring: RingClient) -> defer.Deferred[ResourceManagerRecord]:
    """The RM record in the ring; fails with a message saying what to check when there is none."""

    def found(record: Record | None) -> ResourceManagerRecord:
        if record is None:
            raise LookupError(
                f"no ResourceManager has published {RESOURCE_MANAGER_KEY!r} in the ring yet "
                "(is a node with [resourcemanager] enabled running and on this ring?)"
            )
        return ResourceManagerRecord.decode(record.value)

    return ring.get(RESOURCE_MANAGER_KEY).addCallback(found)
