"""The network policy of a node's containers as nftables scripts: pure functions, no IO.

Containers share the node's network namespace (Spark's executors listen on the
NodeManager's address, which YARN hands them as ``--hostname``), so the policy
cannot be a namespace boundary; it is one nftables table per NodeManager,
``inet cortex_<tag>``, that recognises container traffic by who sends and who
receives it:

* a container's packets leave from sockets owned by its application's block of
  host uids (``id_ranges.py``): the output hook matches ``meta skuid`` in the
  node's range and marks each packet with its block (``MARK_PREFIX | block``);
  the mark survives the loopback, so the input hook knows which application on
  this host sent a local packet;
* a container's sockets are in its application's cgroup ``cortex/n<node>/b<block>``
  of the cgroup2 hierarchy (``node_cgroup.py``); the input hook finds the receiving
  socket's cgroup with ``socket cgroupv2 level 3``;
* a packet from another machine says which application sent it by its source
  port: the postrouting hook rewrites the source port of every container
  connection to a member's ephemeral range (where containers listen) into its
  application's slot of ports (``yarn/app_network.py``, given by the RM), or
  into the unassigned range when it holds none; the container cannot choose
  another (``snat`` moves any port outside the range into it).

What a container may do (``container_out`` for packets leaving it,
``to_container`` / ``from_container`` for packets delivered on this host):

* answer anything that reached it, and use established connections;
* reach the cluster's members: their service endpoints (``Members.services``:
  NodeManager IPC and web/DataNode ports, the RM's scheduler and web/WebHDFS
  ports, and the DNS servers of the host) and, on a member's address, the
  ephemeral port range where other containers' sockets listen; never a member's
  control endpoint (``Members.control``: ring ports, the RM's tracker and client
  ports), even in that range;
* on this host, exactly: a local destination is judged by its receiving socket:
  a container socket of the same application, or a service endpoint; a
  container of another node sharing this host (``local-cluster`` without
  ``--isolated``) is judged by that node's table, by source port; a container of
  another application of this node and any other local service (the host's
  loopback services, the node's ring and tracker ports) refuse it;
* the application's own driver outside the cluster (client mode: Spark's AM and
  executors call the driver on the submitting machine): the ``host:port``
  endpoints its launch commands name (``driver_endpoints``, ports 1024 and up),
  and on those hosts the ephemeral port range, where the driver's other
  sockets (its block manager, which serves broadcasts) listen, also when that
  host is this one; for its own containers only, and only on the host the
  application was submitted from (as the RM saw its client's connection: the
  NodeManager drops the others);
* the internet (public addresses) only when the node allows it.

Everything else is refused with an ICMP "administratively prohibited" (a TCP
reset), so a refused connect fails at once instead of hanging.  Inbound, a
container's socket accepts this host's own processes (not its containers), the
known drivers' hosts (not their containers: those send from the slots' ranges),
its application's containers on this node (by mark; this node's other
containers are refused whatever their source port), and, from a member's
address to a member's address and an ephemeral port (exactly the packets a
node rewrites), the source ports of its application's slot: its containers on
other nodes, and on other nodes of this host.  Every other container, here or
on another machine, every non-member and every other member's process is
refused.

Not enforceable here: a process on a member's host that is no container may pick
its source port, so it can pass for any application's container (members' hosts
are trusted with their own nodes' containers anyway); and a member's services
that listen in the ephemeral range are reachable by containers on other nodes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cortex_rm.container.id_ranges import BLOCK, IdBlock, IdRange
from cortex_rm.yarn.app_network import SOURCE_PORT_BASE, UNASSIGNED_SOURCE_PORTS, source_ports

Endpoint = tuple[str, int]
"""An IPv4 address and a port."""

MARK_PREFIX: Final = 0xC0A70000
MARK_MASK: Final = 0xFFFF0000
#: Addresses that are not the internet: container_internet never opens these.
NON_PUBLIC: Final = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/3",
)  # fmt: skip
MIN_PEER_PORT: Final = 1024
_REFUSE: Final = "reject with icmpx admin-prohibited"
#: Every source port a container's connection to another container may carry (the slots and the unassigned range).
_CONTAINER_SOURCES: Final = f"{SOURCE_PORT_BASE}-{UNASSIGNED_SOURCE_PORTS[1]}"
_SPARK_URL: Final = re.compile(r"spark://[^@\s'\"]+@([0-9.]+):([0-9]{1,5})")
_ARG_ENDPOINT: Final = re.compile(r"--arg\s+'?([0-9.]+):([0-9]{1,5})'?")


@dataclass(frozen=True)
class PolicySettings:
    """What a node's table is made of (from ``[nodemanager]`` and the host)."""

    #: The table's name: ``cortex_<tag>``.
    table: str
    ids: IdRange
    #: ``cortex`` in the cgroup2 hierarchy as nft names it (relative to /sys/fs/cgroup).
    cgroup_parent: str
    #: Where containers' own sockets listen on other members (net.ipv4.ip_local_port_range).
    ephemeral: tuple[int, int] = (32768, 60999)
    internet: bool = False


@dataclass(frozen=True)
class Members:
    """The cluster as the policy knows it: addresses, the endpoints containers use, the ones they never may."""

    addresses: frozenset[str] = frozenset()
    services: frozenset[Endpoint] = frozenset()
    control: frozenset[Endpoint] = frozenset()


def mark_of(block: IdBlock) -> int:
    """The packet mark of ``block``'s containers."""
    return MARK_PREFIX | block.number


def table_name(tag: str) -> str:
    """``cortex_<tag>`` with every character nft would refuse made ``_``."""
    return "cortex_" + re.sub(r"[^A-Za-z0-9_]", "_", tag)[:40]


def driver_endpoints(argv: Sequence[str]) -> frozenset[Endpoint]:
    """IPv4 ``host:port`` endpoints a launch command names as its driver: Spark's
    ``spark://...@host:port`` and the client-mode AM's ``--arg host:port``."""
    text = " ".join(argv)
    found = set()
    for pattern in (_SPARK_URL, _ARG_ENDPOINT):
        for host, port in pattern.findall(text):
            try:
                address = ipaddress.IPv4Address(host)
            except ValueError:
                continue
            if MIN_PEER_PORT <= int(port) <= 65535:
                found.add((str(address), int(port)))
    return frozenset(found)


def _endpoint(e: Endpoint) -> str:
    return f"{e[0]} . {e[1]}"


def _elements(items: Iterable[str]) -> str:
    listed = sorted(items)
    return f"elements = {{ {', '.join(listed)} }}" if listed else ""


def _set(name: str, kind: str, items: Iterable[str], flags: str = "") -> str:
    body = "; ".join(p for p in (f"type {kind}", f"flags {flags}" if flags else "", _elements(items)) if p)
    return f"  set {name} {{ {body}; }}"


def _marks(ids: IdRange) -> str:
    low, high = ids.block(0), ids.block(ids.blocks - 1)
    return f"{mark_of(low):#x}-{mark_of(high):#x}"


def render_table(settings: PolicySettings, members: Members) -> str:
    """The whole table, replacing any table of that name in one transaction."""
    t, ids = settings.table, settings.ids
    low, high = settings.ephemeral
    internet = [f"    ip daddr != @non_public accept"] if settings.internet else []
    lines = [
        f"table inet {t} {{}}",
        f"delete table inet {t}",
        f"table inet {t} {{",
        _set("members", "ipv4_addr", members.addresses),
        _set("services", "ipv4_addr . inet_service", map(_endpoint, members.services)),
        _set("control", "ipv4_addr . inet_service", map(_endpoint, members.control)),
        _set("non_public", "ipv4_addr", NON_PUBLIC, "interval"),
        "  map uid_marks { type uid : mark; flags interval; }",
        "  set apps { type cgroupsv2; }",
        "  set same_app { type cgroupsv2 . mark; }",
        "  set peers { type mark . ipv4_addr . inet_service; }",
        "  set peer_srcs { type cgroupsv2 . ipv4_addr; }",
        "  set peer_hosts { type mark . ipv4_addr; }",
        "  set app_srcs { type cgroupsv2 . inet_service; flags interval; }",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        f"    meta skuid {ids.base}-{ids.last} jump container_out",
        "  }",
        "  chain container_out {",
        "    meta mark set meta skuid map @uid_marks",
        f"    meta mark and {MARK_MASK:#x} != {MARK_PREFIX:#x} {_REFUSE}",
        "    ct state established,related accept",
        "    fib daddr type local accept",
        f"    meta l4proto != {{ tcp, udp }} {_REFUSE}",
        f"    ip daddr . th dport @control {_REFUSE}",
        "    ip daddr . th dport @services accept",
        f"    ip daddr @members th dport {low}-{high} accept",
        "    meta mark . ip daddr . th dport @peers accept",
        f"    meta mark . ip daddr @peer_hosts th dport {low}-{high} accept",
        *internet,
        f"    {_REFUSE}",
        "  }",
        "  chain postrouting {",
        # before any masquerade at srcnat (Docker's, iptables-nft's): the first NAT binding wins
        "    type nat hook postrouting priority srcnat - 1; policy accept;",
        f"    meta skuid {ids.base}-{ids.last} ip daddr @members th dport {low}-{high} jump app_nat",
        "  }",
        "  chain app_nat {",
        *_nat_rules({}),
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        "    ct state established,related accept",
        "    socket cgroupv2 level 3 @apps jump to_container",
        f"    meta mark {_marks(ids)} jump from_container",
        "  }",
        "  chain to_container {",
        "    socket cgroupv2 level 3 . meta mark @same_app accept",
        f"    meta mark {_marks(ids)} {_REFUSE}",
        # its application's containers elsewhere: their node rewrote the source port into the slot,
        # which it does for exactly this kind of packet (a member's address, an ephemeral port)
        f"    ip saddr @members ip daddr @members th dport {low}-{high} socket cgroupv2 level 3 . th sport @app_srcs accept",
        f"    meta mark and {MARK_MASK:#x} == {MARK_PREFIX:#x} {_REFUSE}",
        "    iif lo accept",
        # the driver's host, but not a container there (its source ports are in the slots' ranges)
        f"    ip daddr @members th sport != {_CONTAINER_SOURCES} socket cgroupv2 level 3 . ip saddr @peer_srcs accept",
        f"    {_REFUSE}",
        "  }",
        "  chain from_container {",
        "    ip daddr . th dport @services accept",
        "    meta mark . ip daddr . th dport @peers accept",
        f"    meta mark . ip daddr @peer_hosts th dport {low}-{high} accept",
        f'    socket cgroupv2 level 1 "{settings.cgroup_parent}" accept',
        f"    {_REFUSE}",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _nat_rules(slots: Mapping[int, int]) -> list[str]:
    """``app_nat``'s rules: each application's containers (by mark) send from its slot's
    source ports, those of an application without one from the unassigned range."""
    lines = []
    for mark, slot in sorted(slots.items()):
        first, last = source_ports(slot)
        lines.append(f"    meta mark {mark:#x} meta l4proto {{ tcp, udp }} snat ip to ip saddr:{first}-{last}")
    first, last = UNASSIGNED_SOURCE_PORTS
    lines.append(f"    meta l4proto {{ tcp, udp }} snat ip to ip saddr:{first}-{last}")
    return lines


def render_nat(table: str, slots: Mapping[int, int]) -> str:
    """Replace ``app_nat``'s rules (``slots``: each admitted application's mark and slot)."""
    rules = [f"add rule inet {table} app_nat {rule.strip()}" for rule in _nat_rules(slots)]
    return "\n".join([f"flush chain inet {table} app_nat", *rules]) + "\n"


def _source_elements(cgroup: str, slot: int) -> str:
    first, last = source_ports(slot)
    return f'"{cgroup}" . {first}-{last}'


def render_members(table: str, members: Members) -> str:
    """Replace the member sets (one transaction: no moment with an empty set)."""
    lines = []
    for name, items in (
        ("members", members.addresses),
        ("services", map(_endpoint, members.services)),
        ("control", map(_endpoint, members.control)),
    ):
        listed = sorted(items)
        lines.append(f"flush set inet {table} {name}")
        if listed:
            lines.append(f"add element inet {table} {name} {{ {', '.join(listed)} }}")
    return "\n".join(lines) + "\n"


def _peer_elements(block: IdBlock, peers: Iterable[Endpoint]) -> list[str]:
    return [f"{mark_of(block):#x} . {_endpoint(p)}" for p in sorted(peers)]


def render_application_added(
    table: str, block: IdBlock, cgroup: str, peers: Iterable[Endpoint], slot: int | None = None
) -> str:
    """The elements that admit one application's containers (before its first one starts);
    ``slot``: its slot of source ports (None: its containers accept only this node's). The
    caller replaces ``app_nat``'s rules in the same transaction (``render_nat``)."""
    mark = f"{mark_of(block):#x}"
    peers = sorted(peers)
    lines = [
        f"add element inet {table} uid_marks {{ {block.root}-{block.root + BLOCK - 1} : {mark} }}",
        f'add element inet {table} apps {{ "{cgroup}" }}',
        f'add element inet {table} same_app {{ "{cgroup}" . {mark} }}',
    ]
    if slot is not None:
        lines.append(f"add element inet {table} app_srcs {{ {_source_elements(cgroup, slot)} }}")
    lines += _peer_lines(table, block, cgroup, peers)
    return "\n".join(lines) + "\n"


def _peer_host_elements(block: IdBlock, peers: Iterable[Endpoint]) -> list[str]:
    return [f"{mark_of(block):#x} . {host}" for host in sorted({p[0] for p in peers})]


def _peer_source_elements(cgroup: str, peers: Iterable[Endpoint]) -> list[str]:
    """Which driver hosts may connect to which application's containers (only to its own)."""
    return [f'"{cgroup}" . {host}' for host in sorted({p[0] for p in peers})]


def _peer_lines(table: str, block: IdBlock, cgroup: str, peers: Sequence[Endpoint]) -> list[str]:
    if not peers:
        return []
    return [
        f"add element inet {table} peers {{ {', '.join(_peer_elements(block, peers))} }}",
        f"add element inet {table} peer_hosts {{ {', '.join(_peer_host_elements(block, peers))} }}",
        f"add element inet {table} peer_srcs {{ {', '.join(_peer_source_elements(cgroup, peers))} }}",
    ]


def render_peers_added(table: str, block: IdBlock, cgroup: str, peers: Iterable[Endpoint]) -> str:
    """More driver endpoints for an application already admitted."""
    return "\n".join(_peer_lines(table, block, cgroup, sorted(peers))) + "\n"


def render_application_removed(
    table: str, block: IdBlock, cgroup: str, peers: Iterable[Endpoint], slot: int | None = None
) -> str:
    """Drop one application's elements (the caller replaces ``app_nat``'s rules too)."""
    mark = f"{mark_of(block):#x}"
    lines = [
        f"delete element inet {table} uid_marks {{ {block.root}-{block.root + BLOCK - 1} }}",
        f'delete element inet {table} apps {{ "{cgroup}" }}',
        f'delete element inet {table} same_app {{ "{cgroup}" . {mark} }}',
    ]
    if slot is not None:
        lines.append(f"delete element inet {table} app_srcs {{ {_source_elements(cgroup, slot)} }}")
    peers = sorted(peers)
    elements = _peer_elements(block, peers)
    if elements:
        lines.append(f"delete element inet {table} peers {{ {', '.join(elements)} }}")
        lines.append(f"delete element inet {table} peer_hosts {{ {', '.join(_peer_host_elements(block, peers))} }}")
        lines.append(f"delete element inet {table} peer_srcs {{ {', '.join(_peer_source_elements(cgroup, peers))} }}")
    return "\n".join(lines) + "\n"


def render_table_removed(table: str) -> str:
    """Remove the table if it exists."""
    return f"table inet {table} {{}}\ndelete table inet {table}\n"
