"""The RM's status pages as HTML, from rows (``cluster_views``): pure functions, no I/O.

YARN's RM web UI paths: ``/cluster`` (this overview), ``/cluster/nodes``, ``/cluster/apps``,
``/cluster/app/<id>``; and Cortex's ``/cluster/earnings`` (the ledger's payouts).  What a
page shows depends on its ``Viewer``: without a credential, only what the REST API shows
an anonymous caller (``anonymous_access``: the cluster's figures and the public ledger, or
nothing), and the page says how to see more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from cortex_rm.status_page.cluster_views import ActivationRow, AppRow, ClusterSummary, Earnings, FunctionRow, NodeRow
from cortex_rm.status_page.html_parts import (
    PageSlice,
    definitions,
    duration,
    esc,
    link,
    note,
    page,
    pager,
    percent,
    table,
    web_link,
    when,
)

NAV: Final = (
    ("/cluster/", "Cluster"),
    ("/cluster/nodes", "Nodes"),
    ("/cluster/apps", "Applications"),
    ("/cluster/earnings", "Earnings"),
    ("/cluster/events", "Events"),
    ("/ws/v1/cluster/info", "REST API"),
)
LOGIN_PATH: Final = "/cluster/login"
_NODE_HEADERS: Final = (
    "Node", "Class", "State", "Uptime this period", "Rack", "Containers", "Memory used / total (MB)",
    "vCores used / total", "Last health report", "Health",
)  # fmt: skip
_APP_HEADERS: Final = (
    "Application", "Name", "User", "Type", "Queue", "State", "Final status", "Progress", "Started", "Elapsed",
    "Containers", "Tracking",
)  # fmt: skip


@dataclass(frozen=True)
class Viewer:
    """Who reads a page: ``user`` when signed in; ``sees_cluster``: may read the cluster's figures and
    the ledger (signed in, or ``anonymous_access = "cluster-info"``)."""

    user: str | None
    sees_cluster: bool

    @property
    def signed_in(self) -> bool:
        return self.user is not None


def sign_in_advice(viewer: Viewer) -> str:
    """Who the viewer is, or how to see more than the anonymous view."""
    if viewer.user is not None:
        return f"<p>Signed in as <b>{esc(viewer.user)}</b>.</p>\n"
    return note(
        "You see what the ResourceManager shows to anyone. To see the nodes and your applications, "
        f'{link(LOGIN_PATH, "sign in").markup} with your user name and, '
        "as the password, your credential's REST value (the text after "
        "<code>Hadoop-YARN-RM-Delegation-Token:</code> that <code>cortex-rm user show FILE</code> prints; "
        "an admin issues credentials with <code>cortex-rm user add NAME --out FILE</code>)."
    )


def _cluster_rows(s: ClusterSummary) -> list[tuple[str, object]]:
    return [
        ("Cluster ID", s.cluster_id),
        ("ResourceManager state", "STARTED (ACTIVE)"),
        ("Started on", f"{when(s.started_ms)} ({s.started_ms} ms)"),
        ("Version", f"Cortex RM {s.version} (YARN 3.5 API)"),
    ]


def _metrics_rows(s: ClusterSummary) -> list[tuple[str, object]]:
    m = s.metrics
    return [
        ("Applications submitted / pending / running", f"{m.apps_submitted} / {m.apps_pending} / {m.apps_running}"),
        ("Applications completed / failed / killed", f"{m.apps_completed} / {m.apps_failed} / {m.apps_killed}"),
        ("Nodes active / decommissioning / lost / unhealthy",
         f"{m.active_nodes} / {m.decommissioning_nodes} / {m.lost_nodes} / {m.unhealthy_nodes}"),
        ("Memory total / allocated (MB)", f"{m.total.memory_mb} / {m.allocated.memory_mb}"),
        ("vCores total / allocated", f"{m.total.vcores} / {m.allocated.vcores}"),
        ("Containers allocated / pending", f"{m.containers_allocated} / {m.containers_pending}"),
    ]  # fmt: skip


def node_table(rows: Sequence[NodeRow]) -> str:
    return table(
        _NODE_HEADERS,
        (
            (
                web_link(f"http://{r.http_address}/node", r.node_id) if r.http_address else r.node_id,
                r.node_class, r.state, "-" if r.uptime_ms is None else duration(r.uptime_ms), r.rack, r.containers,
                f"{r.used_memory_mb} / {r.memory_mb}", f"{r.used_vcores} / {r.vcores}",
                when(r.last_health_ms), r.health or "-",
            )  # fmt: skip
            for r in rows
        ),
        empty="no nodes",
    )


def app_table(rows: Sequence[AppRow]) -> str:
    return table(
        _APP_HEADERS,
        (
            (
                link(f"/cluster/app/{quote(r.app_id, safe='')}", r.app_id),
                r.name, r.user, r.app_type, r.queue, r.state, r.final_status, percent(r.progress),
                when(r.started_ms), duration(r.elapsed_ms), r.containers,
                web_link(r.tracking_url, "ApplicationMaster" if r.finished_ms == 0 else "History")
                if r.tracking_url else "-",
            )  # fmt: skip
            for r in rows
        ),
        empty="no applications",
    )


def overview_page(
    s: ClusterSummary, viewer: Viewer, nodes: Sequence[NodeRow] | None, running: Sequence[AppRow] | None,
    more_running: int = 0, notice: str = "",
) -> str:
    """``/cluster``: who the cluster is, its figures (if the viewer may see them), then for a signed-in
    viewer the nodes and the applications in progress she may see (``more_running`` not shown); ``notice``:
    why a credential given was not taken."""
    body = (note(esc(notice)) if notice else "") + sign_in_advice(viewer)
    body += "<h2>ResourceManager</h2>\n" + definitions(_cluster_rows(s))
    if viewer.sees_cluster:
        body += "<h2>Cluster metrics</h2>\n" + definitions(_metrics_rows(s))
    if nodes is not None:
        body += "<h2>Nodes</h2>\n" + node_table(nodes)
    if running is not None:
        body += "<h2>Applications in progress</h2>\n" + app_table(running)
        if more_running:
            more = link("/cluster/apps?state=running", "all applications in progress").markup
            body += f"<p>{more_running} more: {more}</p>\n"
    return page("Cortex ResourceManager", NAV, body)


def nodes_page(viewer: Viewer, rows: Sequence[NodeRow], where: PageSlice) -> str:
    """``/cluster/nodes``: one page of the nodes table."""
    body = sign_in_advice(viewer) + node_table(rows) + pager(where, "/cluster/nodes")
    return page("Nodes of the cluster", NAV, body)


def apps_page(viewer: Viewer, rows: Sequence[AppRow], where: PageSlice, state: str | None) -> str:
    """``/cluster/apps``: one page of the applications the viewer may see, newest first."""
    query = [("state", state)] if state else []
    filters = " ".join(
        link("/cluster/apps" + (f"?state={s}" if s else ""), text).markup
        for s, text in (("", "all"), ("running", "in progress"), ("finished", "ended"))
    )
    body = (
        sign_in_advice(viewer)
        + f"<p>Show: {filters}</p>\n"
        + app_table(rows)
        + pager(where, "/cluster/apps", query)
    )
    return page("Applications" + (f" ({state})" if state else ""), NAV, body)


def app_page(viewer: Viewer, r: AppRow) -> str:
    """``/cluster/app/<id>``: one application and its attempts."""
    rows: list[tuple[str, object]] = [
        ("Application", r.app_id), ("Name", r.name), ("User", r.user), ("Type", r.app_type), ("Queue", r.queue),
        ("State", r.state), ("Final status", r.final_status), ("Progress", percent(r.progress)),
        ("Started", when(r.started_ms)), ("Finished", when(r.finished_ms)), ("Elapsed", duration(r.elapsed_ms)),
        ("Running containers", r.containers),
        ("Allocated memory (MB) / vCores", f"{r.allocated_mb} / {r.allocated_vcores}"),
        ("Tracking URL", web_link(r.tracking_url, r.tracking_url) if r.tracking_url else "-"),
        ("Diagnostics", r.diagnostics or "-"),
    ]  # fmt: skip
    attempts = table(("Attempt", "State", "AM node"), r.attempts, empty="no attempts yet")
    body = sign_in_advice(viewer) + definitions(rows) + "<h2>Attempts</h2>\n" + attempts
    return page(f"Application {r.app_id}", NAV, body)


def earnings_page(viewer: Viewer, e: Earnings | None, unavailable: str = "", previous: str = "") -> str:
    """``/cluster/earnings``: a period's uptime and shares by node (``previous``: a link to the period
    before, or ""); ``unavailable`` says why there are none (no ledger, not open yet)."""
    body = sign_in_advice(viewer)
    if e is None:
        return page("Earnings", NAV, body + note(esc(unavailable or "this ResourceManager keeps no ledger")))
    status = "closed: from the period's signed statement" if e.closed else "open: the figures so far"
    body += definitions([("Period", f"{when(e.start_ms)} to {when(e.end_ms)}"), ("Status", status)])
    body += table(
        ("Node", "Ring id", "Attested uptime", "Share"),
        ((r.node or "-", r.ring_id, duration(r.uptime_ms), percent(100 * r.share)) for r in e.rows),
        empty="no attested uptime in this period",
    )
    links = [link("/cluster/earnings", "current period").markup]
    if previous:
        links.append(link(previous, "previous period").markup)
    body += "<p>" + " ".join(links)
    body += " (JSON: <code>/ws/v1/cortex/payouts</code>, or <code>cortex-rm payouts</code>)</p>\n"
    return page("Earnings", NAV, body)


def events_page(
    viewer: Viewer, functions: Sequence[FunctionRow] | None, activations: Sequence[ActivationRow] | None
) -> str:
    """``/cluster/events``: the viewer's functions and the activations she may read that this RM's node took
    (None: this RM keeps no registry, or its node takes no activations)."""
    body = sign_in_advice(viewer) + "<h2>Your functions</h2>\n"
    if functions is None:
        body += note("this ResourceManager keeps no function registry")
    else:
        body += table(
            ("Function", "Version", "Kind", "Mode", "Replicas", "Schedule", "Registered"),
            (
                (f.name, f.version, f.kind, f.mode, f.replicas, f.schedule or "-", when(f.registered_ms))
                for f in functions
            ),
            empty="no functions: cortex-rm event register NAME FILE",
        )
    body += "<h2>Activations</h2>\n"
    if activations is None:
        body += note(
            "this node takes no activations: each node lists those it took at /ws/v1/cortex/events/activations"
        )
    else:
        body += table(
            ("Activation", "Function", "Version", "Caller", "Status", "Started", "Took", "Error"),
            (
                (a.activation_id, a.function, a.version, a.caller, a.status, when(a.start_ms),
                 "running" if a.duration_ms is None else duration(a.duration_ms), a.error or "-")
                for a in activations
            ),  # fmt: skip
            empty="no activations kept on this node",
        )
        body += (
            "<p>Activations are kept by the node that took each trigger: these are this node's "
            "(<code>cortex-rm event result ID</code> reads any).</p>\n"
        )
    return page("Events", NAV, body)


def refusal_page(title: str, message: str, viewer: Viewer | None = None) -> str:
    """An error (not found, forbidden, not signed in) as a page, ``message`` escaped."""
    advice = sign_in_advice(viewer) if viewer is not None else ""
    return page(title, NAV, advice + note(esc(message)), refresh_s=60)
