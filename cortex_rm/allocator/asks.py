"""What an application attempt still asks for: YARN's ``AppSchedulingInfo``.

An ApplicationMaster's ``allocate`` call carries ``ResourceRequest``s.  Each names a
key -- (priority, capability, allocation_request_id) -- and a place: ``"*"`` (anywhere),
a host, or a rack (a name that starts with ``/``, as YARN's topology names do).
Counts are **absolute**: a request replaces the outstanding count of its
(key, place); 0 removes it.  The ``"*"`` entry is the total still wanted for the key;
host and rack entries only say where the AM would like them (section 3.2 of the
wire facts: Spark sends the total on ``"*"`` and re-sends a key with 0 to cancel).

Allocating a container decrements ``"*"`` and, as YARN does, the entries of the
place it landed: a node-local container also takes one from its host and its
rack, a rack-local one from its rack, an off-switch one from ``"*"`` only.  If a
container disappears before its AM ever saw it, ``recover`` puts the ask back --
unless the AM has re-sent the key since, because its new absolute count already
says what it wants.

Locality relaxation (the ``relax_locality`` flags) is decided by the scheduler;
this table keeps the flags and the per-key waiting time the decision needs.

A node label (``node_labels``) travels on the ``"*"`` entry only, as YARN's
AMRMClient sends it; it applies to the whole key, and the last ``"*"`` entry sent
for the key decides it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cortex_rm.allocator.containers import Locality
from cortex_rm.allocator.errors import AllocatorError
from cortex_rm.yarn.resources import ZERO, Resource

ANY = "*"


def is_rack_name(resource_name: str) -> bool:
    """Racks are topology paths (``/default-rack``); anything else but ``"*"`` is a host."""
    return resource_name.startswith("/")


class InvalidResourceRequest(AllocatorError):
    """A request that is malformed in itself (negative count or resource, empty name)."""


@dataclass(frozen=True)
class RequestKey:
    """What identifies an outstanding request apart from its place (YARN's SchedulerRequestKey + capability)."""

    priority: int
    capability: Resource
    allocation_request_id: int = 0

    def sort_key(self) -> tuple[int, int, int, int]:
        """Serving order within an attempt: lower priority value first (YARN's Priority), then the rest."""
        return (self.priority, self.allocation_request_id, self.capability.memory_mb, self.capability.vcores)


@dataclass(frozen=True)
class ResourceAsk:
    """One ``ResourceRequestProto`` as the scheduler needs it."""

    priority: int
    resource_name: str
    capability: Resource
    num_containers: int
    relax_locality: bool = True
    allocation_request_id: int = 0
    node_label: str | None = None  # the label expression, checked (None: not sent; "": no label)

    @property
    def key(self) -> RequestKey:
        return RequestKey(self.priority, self.capability, self.allocation_request_id)


@dataclass(eq=False)
class PendingRequest:
    """Everything outstanding under one key: the total and the wished-for places."""

    key: RequestKey
    total: int = 0  # the "*" count: containers still wanted for this key
    relax_locality: bool = True  # of the "*" entry: may the container go anywhere at all?
    hosts: dict[str, int] = field(default_factory=dict)
    racks: dict[str, int] = field(default_factory=dict)
    strict_racks: set[str] = field(default_factory=set)  # rack entries sent with relax_locality=false
    generation: int = 0  # bumped on every AM update of this key
    first_missed_ms: int | None = None  # when a pass first failed to place it at its allowed localities
    normalized: Resource | None = None  # the container size the scheduler gives (it fills this in)
    label: str = ""  # the node label its containers need ("": any node)

    @property
    def has_places(self) -> bool:
        """Whether the AM named any host or rack for this key."""
        return bool(self.hosts) or bool(self.racks)

    @property
    def is_empty(self) -> bool:
        return self.total == 0 and not self.hosts and not self.racks


@dataclass(frozen=True)
class AllocationRecord:
    """What one allocation took from the table, so that ``recover`` can give it back."""

    request: PendingRequest
    generation: int
    host: str | None
    rack: str | None


def _dec(counts: dict[str, int], name: str) -> bool:
    n = counts.get(name, 0)
    if n <= 0:
        return False
    if n == 1:
        del counts[name]
    else:
        counts[name] = n - 1
    return True


class AppSchedulingInfo:
    """The outstanding requests and the blacklist of one application attempt."""

    def __init__(self) -> None:
        self._requests: dict[RequestKey, PendingRequest] = {}
        self._ordered: list[PendingRequest] | None = []
        self._outstanding = 0
        self._blacklist: set[str] = set()

    # ------------------------------------------------------------------ updates

    def update(self, asks: Iterable[ResourceAsk]) -> None:
        """Apply an allocate call's asks: each sets the absolute count of its (key, place)."""
        asks = list(asks)
        for ask in asks:  # validate all before changing anything
            if ask.num_containers < 0:
                raise InvalidResourceRequest(
                    f"Invalid resource request: negative number of containers ({ask.num_containers}) "
                    f"for {ask.resource_name} at priority {ask.priority}"
                )
            if ask.capability.memory_mb < 0 or ask.capability.vcores < 0:
                raise InvalidResourceRequest(f"Invalid resource request: negative capability {ask.capability}")
            if not ask.resource_name:
                raise InvalidResourceRequest("Invalid resource request: empty resource name")
        for ask in asks:
            self._apply(ask)

    def _apply(self, ask: ResourceAsk) -> None:
        key = ask.key
        request = self._requests.get(key)
        if request is None:
            if ask.num_containers == 0:
                return  # cancelling what is not there: nothing to do
            request = PendingRequest(key)
            self._requests[key] = request
            self._ordered = None
        request.generation += 1
        name, n = ask.resource_name, ask.num_containers
        if name == ANY:
            self._outstanding += n - request.total
            request.total = n
            request.relax_locality = ask.relax_locality
            request.label = ask.node_label or ""
            if n == 0:
                request.first_missed_ms = None
        else:
            counts = request.racks if is_rack_name(name) else request.hosts
            if n == 0:
                counts.pop(name, None)
            else:
                counts[name] = n
            if is_rack_name(name):
                if ask.relax_locality or n == 0:
                    request.strict_racks.discard(name)
                else:
                    request.strict_racks.add(name)
        if request.is_empty:
            del self._requests[key]
            self._ordered = None

    def update_blacklist(self, additions: Iterable[str] = (), removals: Iterable[str] = ()) -> None:
        """Hosts or racks this attempt must not get containers on (additions first, then removals)."""
        self._blacklist.update(additions)
        self._blacklist.difference_update(removals)

    # ------------------------------------------------------------------ queries

    @property
    def blacklist(self) -> frozenset[str]:
        return frozenset(self._blacklist)

    def is_blacklisted(self, host: str, rack: str) -> bool:
        """Whether a node on ``host`` in ``rack`` is excluded for this attempt."""
        bl = self._blacklist
        return bool(bl) and (host in bl or rack in bl)

    @property
    def has_blacklist(self) -> bool:
        return bool(self._blacklist)

    @property
    def has_outstanding(self) -> bool:
        """Whether any key still wants a container."""
        return self._outstanding > 0

    @property
    def outstanding_containers(self) -> int:
        return self._outstanding

    def outstanding_resource(self) -> Resource:
        """The resources of every container still wanted (by requested capability)."""
        total = ZERO
        for request in self._requests.values():
            if request.total:
                c = request.key.capability
                total = total + Resource(c.memory_mb * request.total, c.vcores * request.total)
        return total

    def pending(self) -> list[PendingRequest]:
        """Keys with containers outstanding, in serving order (see ``RequestKey.sort_key``)."""
        if self._ordered is None:
            self._ordered = sorted(self._requests.values(), key=lambda r: r.key.sort_key())
        return [r for r in self._ordered if r.total > 0]

    def get(self, key: RequestKey) -> PendingRequest | None:
        return self._requests.get(key)

    def count(self, key: RequestKey, resource_name: str = ANY) -> int:
        """The outstanding count of one (key, place); 0 when absent."""
        request = self._requests.get(key)
        if request is None:
            return 0
        if resource_name == ANY:
            return request.total
        counts = request.racks if is_rack_name(resource_name) else request.hosts
        return counts.get(resource_name, 0)

    # ------------------------------------------------------------------ allocation

    def allocate(self, request: PendingRequest, locality: Locality, host: str, rack: str) -> AllocationRecord:
        """Take one container of ``request`` placed on ``host`` in ``rack`` at ``locality``."""
        if request.total <= 0:
            raise AssertionError(f"allocating for {request.key} with nothing outstanding")
        took_host = took_rack = None
        if locality is Locality.NODE_LOCAL and _dec(request.hosts, host):
            took_host = host
        if locality is not Locality.OFF_SWITCH and _dec(request.racks, rack):
            took_rack = rack
        request.total -= 1
        self._outstanding -= 1
        if locality is Locality.NODE_LOCAL or request.total == 0:
            # a requested host had room again: the next miss starts a new wait.  (YARN also
            # resets after a rack-local container; with a wait measured in time that would
            # cost a full delay per rack-local container, so only node-local ones reset.)
            request.first_missed_ms = None
        return AllocationRecord(request, request.generation, took_host, took_rack)

    def recover(self, record: AllocationRecord) -> bool:
        """Give back what ``record`` took (its container vanished unseen); False if the AM re-sent the key since."""
        request = record.request
        if self._requests.get(request.key) is not request or request.generation != record.generation:
            return False
        request.total += 1
        self._outstanding += 1
        if record.host is not None:
            request.hosts[record.host] = request.hosts.get(record.host, 0) + 1
        if record.rack is not None:
            request.racks[record.rack] = request.racks.get(record.rack, 0) + 1
        return True
