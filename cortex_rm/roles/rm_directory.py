"""Where the RM-eligible nodes are, so that any node names the cluster's ResourceManagers.

* **Each eligible node** (with standbys: ``rm_ha.py``) publishes its configured RM addresses under
  ``cortex:node:<its ring id>/resourcemanager`` — only that member may write there (``write_policy.py``)
  — every ``REPUBLISH_INTERVAL_S``, whether it is the active or a standby.
* **Every node** that knows the eligible ids (``[ring] resource_managers``) reads, every ``REFRESH_S``,
  the active's record (``cortex:resourcemanager``) and each eligible node's, and keeps what it found.
  ``document()`` is that as JSON, served at ``/ws/v1/cortex/resourcemanagers`` on the node's web site::

      {"resourceManagers": {
          "active": "<ring id of the active>" | null,
          "rm": [{"ringId": ..., "address": ..., "schedulerAddress": ..., "webappAddress": ...,
                  "trackerAddress": ..., "active": true | false}, ...]}}   # in the configured order

  ``client-config --rm <any node's web address>`` builds its ``rm-ids`` from it, and the containers'
  firewall lets an AM reach every eligible RM (so it can fail over).  An eligible node whose record has
  not been found yet is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cortex_rm.config import ResourceManagerSection
from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.ring_math import format_id
from cortex_rm.roles.ring_records import (
    RESOURCE_MANAGER_KEY, MalformedRingRecord, ResourceManagerRecord, RingClient,
)  # fmt: skip

log = Logger()

REFRESH_S = 5.0
DIRECTORY_PATH = "/ws/v1/cortex/resourcemanagers"


def eligible_key(ring_id: int) -> str:
    """Where an eligible node keeps its RM addresses (a key only it may write)."""
    return f"cortex:node:{format_id(ring_id)}/resourcemanager"


def configured_record(section: ResourceManagerSection, fingerprint: str, source: object) -> ResourceManagerRecord:
    """An eligible node's configured RM addresses, as the directory lists them.  They must be fixed ports (a
    standby binds none of them, and clients must know them before it becomes the active): ValueError if not."""
    addresses = (section.address, section.scheduler_address, section.webapp_address, section.tracker_address)
    if any(a.port == 0 for a in addresses):
        raise ValueError(
            f"an RM with standbys needs fixed ports: set every [resourcemanager] address in {source} "
            "to a port other than 0"
        )
    return ResourceManagerRecord(*addresses, tracker_fingerprint=fingerprint, started_ms=0)


def publish_eligible(ring: RingClient, ring_id: int, record: ResourceManagerRecord) -> defer.Deferred[Record]:
    return ring.put(eligible_key(ring_id), record.encode())


def find_all_rms(ring: RingClient, eligible: Iterable[int]) -> defer.Deferred[list[ResourceManagerRecord]]:
    """The active's record and every eligible node's found in the ring (none found: an empty list)."""

    async def find() -> list[ResourceManagerRecord]:
        keys = [RESOURCE_MANAGER_KEY, *(eligible_key(r) for r in sorted(eligible))]
        found = [await _read(ring, key) for key in keys]
        return [record for record in found if record is not None]

    return defer.ensureDeferred(find())


async def _read(ring: RingClient, key: str) -> ResourceManagerRecord | None:
    try:
        record = await ring.get(key)
        return None if record is None else ResourceManagerRecord.decode(record.value)
    except MalformedRingRecord as e:
        log.warn("the ring's record {key} is not an RM record: {error}", key=key, error=str(e))
    except Exception as e:  # noqa: BLE001 - the ring is not joined yet, or a lookup failed: the next refresh retries
        log.debug("reading {key} from the ring failed: {error}", key=key, error=str(e))
    return None


class RmDirectory:
    """The eligible nodes' RM records and the active's, as last found in the ring (module docstring)."""

    def __init__(self, ring: RingClient, eligible: Sequence[int], clock: IReactorTime) -> None:
        self.ring, self.eligible, self.clock = ring, tuple(eligible), clock
        self.records: dict[int, ResourceManagerRecord] = {}
        self.active: ResourceManagerRecord | None = None
        self._loop = task.LoopingCall(self.refresh)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(REFRESH_S, now=True).addErrback(lambda f: log.failure("the RM directory stopped", f))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def refresh(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._refresh())

    async def _refresh(self) -> None:
        self.active = await _read(self.ring, RESOURCE_MANAGER_KEY) or self.active
        for ring_id in self.eligible:
            found = await _read(self.ring, eligible_key(ring_id))
            if found is not None:
                self.records[ring_id] = found

    def webapp_of(self, ring_id: int) -> str | None:
        """An eligible node's RM web address, if its record was found."""
        record = self.records.get(ring_id)
        return None if record is None else str(record.webapp_address)

    def active_ring_id(self) -> int | None:
        """The eligible node whose key the active's record names."""
        if self.active is None:
            return None
        fingerprint = self.active.tracker_fingerprint
        return next((r for r, record in self.records.items() if record.tracker_fingerprint == fingerprint), None)

    def document(self) -> dict[str, Any] | None:
        """The JSON of ``/ws/v1/cortex/resourcemanagers``; None before anything was found."""
        if self.active is None and not self.records:
            return None
        active = self.active_ring_id()
        listed = []
        for ring_id in self.eligible:
            record = self.records.get(ring_id)
            if record is None:
                continue
            listed.append({
                "ringId": format_id(ring_id), "address": str(record.client_address),
                "schedulerAddress": str(record.scheduler_address), "webappAddress": str(record.webapp_address),
                "trackerAddress": str(record.tracker_address), "active": ring_id == active,
            })  # fmt: skip
        return {"resourceManagers": {"active": None if active is None else format_id(active), "rm": listed}}
