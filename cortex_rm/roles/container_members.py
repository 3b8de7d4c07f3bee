"""Who the cluster's members are, for the containers' network policy, kept up to date.

``members_of`` (pure) turns what a NodeManager knows into ``net_policy.Members``:

* this node: its NodeManager IPC and web (DataNode, WebHDFS) ports are services,
  its ring port is control;
* every *verified* ring member's address is a member, its ring port control: a
  live member whose ring address our own connection proved (``RingView.verified``,
  ``dht/address_proofs.py``: the listener there showed the member's key).  The
  address comes from the member's own signed ALIVE, which proves only that the
  member said it: a member naming a LAN host would otherwise open that host's
  ephemeral ports to containers.  An unverified member counts for nothing, not
  even for control (naming another member's service port would close it);
* every capacity report's NodeId and web address are services (other NodeManagers
  and DataNodes), but only a report ``vouched_reports`` believes: one about a
  verified member (or this node) whose addresses lie on the host of that member's
  ring address.  Any one may join the ring, and a report is only its member's
  word: one naming another host's port (the contributor's loopback database, a LAN
  host's SSH) would open it to every node's containers.  Ring addresses are only
  ever control;
* the RMs' records, the active's and every eligible node's (``rm_directory.find_all_rms``,
  so an AM can fail over to a standby that takes over): their scheduler and web (WebHDFS)
  addresses are services, their tracker and client addresses control (a container is an
  AM or a task, not a client or a node);
* the host's DNS servers (``/etc/resolv.conf``), port 53, are services.

Only IPv4 literals count (a host name in a record is skipped: the policy matches
addresses).  ``MembersWatcher`` recomputes them every ``REFRESH_S`` seconds and
hands them to the firewall, which applies only a change.

A member that leaves (its daemon died, the ring declared it dead) keeps its
address among the members for ``DEPARTED_GRACE_S`` (``keep_departed``): only its
address (its containers' ephemeral range), not its service or control endpoints.
Its containers may outlive its daemon, and the applications using them learn of
the loss later (the RM reports the node's containers lost at the AM's next
heartbeat, the AM tells its driver); meanwhile they still fetch from them (a
Spark executor's shuffle blocks), as the driver outside the cluster still does.
Refusing at once would make the network disagree with the application about
which executors exist; after the grace the address is refused like any other.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cortex_rm.container.id_ranges import IdRange
from cortex_rm.container.lxc_config import CGROUP_PARENT
from cortex_rm.container.lxc_sandbox import cgroup2_root
from cortex_rm.container.net_firewall import NftFirewall
from cortex_rm.container.net_policy import Endpoint, Members, PolicySettings, table_name
from cortex_rm.dht.errors import RingError
from cortex_rm.dht.peer import Peer, split_address
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.roles.ring_records import CapacityReport, ResourceManagerRecord
from cortex_rm.roles.ring_service import RingService
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.log_budget import LogBudget
from cortex_rm.yarn.refusal_log import sanitised

log = Logger()

REFRESH_S: Final = 10.0
DEPARTED_GRACE_S: Final = 60.0
DNS_PORT: Final = 53
MAX_REFUSALS_LOGGED: Final = 10  # refused reports logged one by one per REFRESH_S; the rest are counted


@dataclass(frozen=True)
class OwnEndpoints:
    """This node's own endpoints: the services containers use, the control ports they may not."""

    services: tuple[str, ...]  # host:port
    control: tuple[str, ...]


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _endpoint(text: str | HostPort) -> Endpoint | None:
    if isinstance(text, HostPort):
        host, port = text.host, text.port
    else:
        try:
            host, port = split_address(text)
        except ValueError:
            return None
    address = _ipv4(host)
    return (address, port) if address is not None and port > 0 else None


def nameservers(resolv_conf: str) -> list[str]:
    """The IPv4 ``nameserver`` lines of a resolv.conf text."""
    found = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and _ipv4(parts[1]):
            found.append(parts[1])
    return found


@dataclass(frozen=True)
class VouchedReports:
    """The capacity reports believed, and those refused with why."""

    accepted: tuple[CapacityReport, ...]
    refused: tuple[tuple[CapacityReport, str], ...]


def verified_members(view: RingView) -> list[Peer]:
    """The live (ALIVE, SUSPECT) members of ``view`` whose ring address is verified."""
    live = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
    return [peer for peer, status, _ in view.members if status in live and peer in view.verified]


def vouched_reports(view: RingView | None, reports: Iterable[CapacityReport]) -> VouchedReports:
    """The reports whose addresses are their member's (see the module docstring).

    A report about no verified live member of ``view`` (not yet heard ALIVE, its
    address not yet proven or disproven, or gone) is neither: it is left out
    until its member is verified.  Without a view no report is believed.
    """
    if view is None:
        return VouchedReports((), ())
    ring_addresses = {format_id(view.me.node_id): view.me.address}
    for peer in verified_members(view):
        ring_addresses[format_id(peer.node_id)] = peer.address
    accepted: list[CapacityReport] = []
    refused: list[tuple[CapacityReport, str]] = []
    for report in reports:
        ring_address = ring_addresses.get(report.ring_id)
        if ring_address is None:
            continue
        error = report.address_error(ring_address)
        if error is None:
            accepted.append(report)
        else:
            refused.append((report, error))
    return VouchedReports(tuple(accepted), tuple(refused))


def members_of(
    own: OwnEndpoints,
    view: RingView | None,
    reports: Iterable[CapacityReport],
    rms: Iterable[ResourceManagerRecord],
    dns: Iterable[str] = (),
) -> Members:
    """The member sets (see the module docstring)."""
    services: set[Endpoint] = set()
    control: set[Endpoint] = set()

    def add(to: set[Endpoint], where: str | HostPort) -> None:
        found = _endpoint(where)
        if found is not None:
            to.add(found)

    for s in own.services:
        add(services, s)
    for c in own.control:
        add(control, c)
    if view is not None:
        add(control, view.me.address)
        for peer in verified_members(view):
            add(control, peer.address)
    for report in vouched_reports(view, reports).accepted:
        add(services, report.node_id)
        add(services, report.http_address)
    for rm in rms:
        add(services, rm.scheduler_address)
        add(services, rm.webapp_address)
        add(control, rm.tracker_address)
        add(control, rm.client_address)
    addresses = {e[0] for e in services | control}
    services |= {(server, DNS_PORT) for server in dns}
    return Members(frozenset(addresses), frozenset(services - control), frozenset(control))


def keep_departed(
    previous: frozenset[str], fresh: Members, departed: dict[str, float], now: float, grace: float = DEPARTED_GRACE_S
) -> tuple[Members, dict[str, float]]:
    """``fresh`` with the addresses that left it (since ``previous``, the last fresh addresses)
    kept for ``grace`` seconds; ``departed``: address -> when it stops counting (returned updated)."""
    kept = {a: until for a, until in departed.items() if until > now and a not in fresh.addresses}
    for address in previous - fresh.addresses:
        kept.setdefault(address, now + grace)
    return Members(fresh.addresses | kept.keys(), fresh.services, fresh.control), kept


class MembersWatcher:
    """Recomputes the members now and then and hands them to ``apply`` (see the module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        own: OwnEndpoints,
        apply: Callable[[Members], None],
        *,
        view: Callable[[], RingView | None] = lambda: None,
        reports: Callable[[], Iterable[CapacityReport]] = lambda: (),
        find_rms: Callable[[], defer.Deferred[list[ResourceManagerRecord]]] | None = None,
        resolv_conf: Path = Path("/etc/resolv.conf"),
    ) -> None:
        self.clock = clock
        self.own = own
        self.apply = apply
        self._view = view
        self._reports = reports
        self._find_rms = find_rms
        self._rms: list[ResourceManagerRecord] = []
        try:
            self._dns = nameservers(resolv_conf.read_text())
        except OSError:
            self._dns = []
        self._call: IDelayedCall | None = None
        self._stopped = False
        self._fresh: frozenset[str] = frozenset()  # the addresses members_of gave last
        self._departed: dict[str, float] = {}
        self.refused_reports = 0  # distinct capacity reports refused (a member's new report counts again)
        self._refused: dict[str, CapacityReport] = {}  # ring id -> its refused report, counted and logged
        self._log_budget = LogBudget(MAX_REFUSALS_LOGGED, REFRESH_S)

    def current(self) -> Members:
        """The members now (refused capacity reports counted and logged, see ``_note_refused``)."""
        view, reports = self._view(), list(self._reports())
        self._note_refused(vouched_reports(view, reports).refused)
        fresh = members_of(self.own, view, reports, self._rms, self._dns)
        members, self._departed = keep_departed(self._fresh, fresh, self._departed, self.clock.seconds())
        self._fresh = fresh.addresses
        return members

    def _note_refused(self, refused: Iterable[tuple[CapacityReport, str]]) -> None:
        """Count each newly refused report once; log at most MAX_REFUSALS_LOGGED per REFRESH_S."""
        suppressed = self._log_budget.roll(self.clock.seconds())
        if suppressed:
            log.warn("{count} more capacity reports refused in the last {interval:.0f} s (addresses not on "
                     "their member's host)", count=suppressed, interval=REFRESH_S)
        current: dict[str, CapacityReport] = {}
        for report, error in refused:
            current[report.ring_id] = report
            if self._refused.get(report.ring_id) == report:
                continue
            self.refused_reports += 1
            if self._log_budget.spend():
                log.warn("containers' firewall: not believing the capacity report of ring member {ring_id}: {error}",
                         ring_id=report.ring_id[:10], error=sanitised(error))
        self._refused = current  # only the reports held now: bounded by CapacityReports' own bound

    def start(self) -> None:
        self.refresh()

    def refresh(self, *_: object) -> None:
        """Recompute now (and again in ``REFRESH_S``)."""
        if self._stopped:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self.clock.callLater(REFRESH_S, self.refresh)
        self.apply(self.current())
        if self._find_rms is not None:
            self._find_rms().addCallbacks(self._found_rms, lambda _: None)

    def _found_rms(self, records: list[ResourceManagerRecord]) -> None:
        if records and records != self._rms and not self._stopped:
            self._rms = records
            self.apply(self.current())

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()


def container_firewall(
    tag: str,
    ids: IdRange,
    internet: bool,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    stale: Callable[[str], bool] = lambda table: False,
) -> NftFirewall:
    """The node's ``NftFirewall``: table ``cortex_<tag>``, the cgroup2 hierarchy found under
    ``cgroup_root``; ``stale``: which other tables are left by nodes that are gone."""
    v2 = cgroup2_root(cgroup_root)
    settings = PolicySettings(
        table=table_name(tag),
        ids=ids,
        cgroup_parent=str((v2 / CGROUP_PARENT).relative_to(cgroup_root)),
        ephemeral=_ephemeral_ports(),
        internet=internet,
    )
    return NftFirewall(settings, cgroup_root, stale=stale)


def _ephemeral_ports(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    try:
        low, high = path.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def make_searchable(dirs: Iterable[Path]) -> None:
    """Add o+x to each of ``dirs`` (made if missing): the NodeManager's own dirs, which its
    unprivileged containers' root must pass through (``lxc_config.check_reachable``)."""
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(d, stat.S_IMODE(mode) | stat.S_IXOTH)


def existing_dirs(dirs: tuple[Path, ...], key: str) -> tuple[Path, ...]:
    """``dirs`` without symlinks (the runtime mounts real paths); missing ones dropped with a warning."""
    found = []
    for d in dirs:
        real = Path(os.path.realpath(d))
        if real.is_dir():
            found.append(real)
        else:
            log.warn("nodemanager.{key}: {dir} is not a directory; containers will not see it", key=key, dir=str(d))
    return tuple(found)


def ring_view_of(ring: RingService) -> Callable[[], RingView | None]:
    """The ring view (for the members and /ws/v1/ring); None while the ring is not running."""

    def view() -> RingView | None:
        try:
            return ring.view()
        except RingError:
            return None

    return view
