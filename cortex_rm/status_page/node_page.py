"""A node's own status page (``/node`` on its NodeManager web port, as YARN's NM UI): pure functions.

For the person who runs the machine: who the node is and what it offers (its caps), how long
it has been up, what its containers hold now (counted by state: which applications they
belong to is shown only to view-ticket holders, through ``/ws/v1/node/containers``), and the
ring as this node sees it (members and their SWIM status, suspicion included: the same view
``/ws/v1/ring`` serves).  Its earnings are the ledger's, kept by the ResourceManager: the
page says where to read them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cortex_rm.container.nm_container import FINISHED_STATES, NMContainer
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.status_page.html_parts import definitions, duration, note, page, table, when

NODE_NAV: Final = (("/node", "This node"), ("/ws/v1/node/info", "REST: node"), ("/ws/v1/ring", "REST: ring"))


@dataclass
class NodeInfo:
    """The node itself, as ``/ws/v1/node/info`` and the ``/node`` page report it (read at each request: a
    reload of the caps sets ``memory_mb`` and ``vcores``)."""

    node_id: str
    host: str
    memory_mb: int
    vcores: int
    started_ms: int
    version: str


@dataclass(frozen=True)
class ContainerCounts:
    """The node's containers now: how many in each state, and what the live ones hold."""

    by_state: tuple[tuple[str, int], ...]
    memory_mb: int
    vcores: int


def count_containers(containers: Iterable[NMContainer]) -> ContainerCounts:
    """Counts by state; the resources of those not yet done."""
    states: Counter[str] = Counter()
    memory = vcores = 0
    for c in containers:
        states[c.state.value] += 1
        if c.state not in FINISHED_STATES:
            memory += c.resource.memory_mb
            vcores += c.resource.vcores
    return ContainerCounts(tuple(sorted(states.items())), memory, vcores)


def _ring_section(view: RingView | None) -> str:
    if view is None:
        return "<h2>Ring</h2>\n" + note("this node is not on a ring, or its ring service has not started")
    members = sorted(view.members, key=lambda m: (m[0].node_id, m[0].address))
    counts = Counter(status for _, status, _ in members)
    summary = definitions([
        ("This member", f"{format_id(view.me.node_id)} at {view.me.address}"),
        ("State", view.state.value),
        ("Incarnation", view.incarnation),
        ("Predecessor", "-" if view.predecessor is None else view.predecessor.address),
        ("Successors", ", ".join(p.address for p in view.successors) or "-"),
        ("Members alive / suspect / dead / left", " / ".join(str(counts[s]) for s in (
            MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT))),
        ("Records stored", view.records),
    ])  # fmt: skip
    rows = (
        (format_id(peer.node_id), peer.address, status.value, incarnation, "yes" if peer in view.verified else "no")
        for peer, status, incarnation in members
    )
    return "<h2>Ring</h2>\n" + summary + table(
        ("Member", "Address", "Status", "Incarnation", "Address verified"), rows, empty="no other members heard of"
    )


def node_page(info: NodeInfo, now_ms: int, containers: ContainerCounts | None, ring: RingView | None) -> str:
    """``/node`` at ``now_ms``: the node, its containers, its ring view, and where its earnings are."""
    body = "<h2>Node</h2>\n" + definitions([
        ("Node", info.node_id), ("Host", info.host),
        ("Offers (caps) memory / vCores", f"{info.memory_mb} MB / {info.vcores}"),
        ("Started", when(info.started_ms)), ("Up for", duration(now_ms - info.started_ms)),
        ("Version", f"Cortex RM {info.version}"),
    ])  # fmt: skip
    body += "<h2>Containers</h2>\n"
    if containers is None:
        body += note("the node's containers are not started yet")
    else:
        body += definitions([("Held now: memory / vCores", f"{containers.memory_mb} MB / {containers.vcores}")])
        body += table(("State", "Containers"), containers.by_state, empty="no containers")
        body += (
            "<p>Which applications they run is shown to their users only: with a view ticket from the "
            "ResourceManager, at <code>/ws/v1/node/containers?ticket=...</code>.</p>\n"
        )
    body += _ring_section(ring)
    body += "<h2>Earnings</h2>\n" + note(
        "The ledger of uptime and shares is kept by the ResourceManager: see its <code>/cluster/earnings</code> page "
        "(this node is there by its ring id, shown under Ring) or run <code>cortex-rm payouts</code>."
    )
    return page(f"Node {info.node_id}", NODE_NAV, body)
