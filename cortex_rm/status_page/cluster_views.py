"""The RM's in-process records as the rows the status pages show.

The same objects the REST API's JSON is made from (``RMContext``'s node table and
application table, the ledger's ``PayoutReport``) become small frozen rows here, so the
pages (``cluster_pages``) are pure functions of plain values.  A node's class is its
static/volatile label (``allocator/node_class_labels``); its uptime and share are the
ledger's for the period shown.  Applications are listed newest first; only the rows on the
page asked for are built, so a page costs the same with 1,000 applications in the history
as with ten (but for the sort and the access filter, which are cheap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cortex_rm.accounting.ledger_office import PayoutReport
from cortex_rm.accounting.periods import Period, calendar_month
from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.app_queries import elapsed_ms, tracking_link
from cortex_rm.allocator.app_states import PENDING_APP_STATES, TERMINAL_APP_STATES, AppState
from cortex_rm.allocator.nodes import NodeRecord
from cortex_rm.allocator.rm_context import ClusterMetrics, RMContext
from cortex_rm.events.activations import Activation
from cortex_rm.events.functions import FunctionSpec

#: States of an application in progress (not yet ended).
IN_PROGRESS: Final = frozenset(AppState) - TERMINAL_APP_STATES


@dataclass(frozen=True)
class ClusterSummary:
    """The cluster-level figures anyone who may read the cluster's info may see."""

    cluster_id: int
    started_ms: int
    version: str
    metrics: ClusterMetrics


@dataclass(frozen=True)
class NodeRow:
    """One node as the nodes table shows it."""

    node_id: str
    node_class: str  # "static", "volatile", or "-" before the ledger classes it
    state: str
    http_address: str
    rack: str
    memory_mb: int
    vcores: int
    used_memory_mb: int
    used_vcores: int
    containers: int
    health: str
    last_health_ms: int
    uptime_ms: int | None = None  # attested uptime in the current period (the ledger's); None unknown


@dataclass(frozen=True)
class AppRow:
    """One application as the applications table (and its own page) shows it."""

    app_id: str
    user: str
    name: str
    app_type: str
    queue: str
    state: str
    final_status: str
    progress: float  # percent
    started_ms: int
    finished_ms: int
    elapsed_ms: int
    tracking_url: str  # "" while there is none to follow
    containers: int
    allocated_mb: int
    allocated_vcores: int
    diagnostics: str
    attempts: tuple[tuple[str, str, str], ...]  # (attempt id, state, AM node)


@dataclass(frozen=True)
class EarningRow:
    """One node's line of a period's payouts."""

    node: str  # its NodeId, or "" for a member the RM has no node of
    ring_id: str  # hex
    uptime_ms: int
    share: float


@dataclass(frozen=True)
class Earnings:
    """A period's payouts: ``closed`` when they come from the period's signed statement."""

    start_ms: int
    end_ms: int
    closed: bool
    rows: tuple[EarningRow, ...]


def summary(rm: RMContext, version: str) -> ClusterSummary:
    return ClusterSummary(rm.cluster_id, rm.started_ms, version, rm.metrics())


def node_class(node: NodeRecord) -> str:
    return ",".join(sorted(node.labels)) or "-"


def node_rows(nodes: Iterable[NodeRecord], uptimes: Mapping[int, int] | None = None) -> list[NodeRow]:
    """Every node, by NodeId; ``uptimes``: the ledger's attested uptime this period by ring id (None: no
    ledger to ask; a ring member it has no uptime for has 0)."""
    return [
        NodeRow(
            node_id=str(n.node_id),
            node_class=node_class(n),
            state=n.state.value,
            http_address=n.http_address,
            rack=n.rack,
            memory_mb=n.capability.memory_mb,
            vcores=n.capability.vcores,
            used_memory_mb=n.used.memory_mb,
            used_vcores=n.used.vcores,
            containers=n.num_containers,
            health=n.health_report,
            last_health_ms=n.last_health_update_ms,
            uptime_ms=None if uptimes is None or n.ring_id is None else uptimes.get(n.ring_id, 0),
        )
        for n in sorted(nodes, key=lambda n: n.node_id)
    ]


def newest_first(apps: Iterable[Application], visible: Callable[[Application], bool],
                 states: frozenset[AppState] | None = None) -> list[Application]:
    """The applications ``visible`` lets the viewer see (in ``states``, when given), newest first."""
    chosen = [a for a in apps if (states is None or a.reported_state in states) and visible(a)]
    chosen.sort(key=lambda a: (a.app_id.cluster_timestamp, a.app_id.id), reverse=True)
    return chosen


def app_row(app: Application, rm: RMContext) -> AppRow:
    """``app`` as a row (the figures ``/ws/v1/cluster/apps/{id}`` shows, from the same records)."""
    state = app.reported_state
    attempt = app.current_attempt
    tracking = attempt.tracking_url if attempt is not None and state not in PENDING_APP_STATES else ""
    tracking = tracking_link(tracking) if tracking else ""
    usage = rm.app_usage(app)
    return AppRow(
        app_id=str(app.app_id),
        user=app.user,
        name=app.name,
        app_type=app.app_type,
        queue=app.queue,
        state=state.value,
        final_status=app.final_status.value,
        progress=100.0 * app.progress,
        started_ms=app.start_time_ms,
        finished_ms=app.finish_time_ms,
        elapsed_ms=elapsed_ms(app, rm.now_ms()),
        tracking_url=tracking,
        containers=usage.containers,
        allocated_mb=usage.used.memory_mb,
        allocated_vcores=usage.used.vcores,
        diagnostics=app.diagnostics,
        attempts=tuple((str(a.attempt_id), a.state.value, a.am_node or "-") for a in app.attempts),
    )


def app_rows(apps: Sequence[Application], rm: RMContext) -> list[AppRow]:
    return [app_row(a, rm) for a in apps]


def uptimes(report: PayoutReport) -> dict[int, int]:
    """Attested uptime by ring id, from a period's payouts."""
    return {row.ring_id: row.uptime_ms for row in report.rows}


def earnings(report: PayoutReport, names: Mapping[int, object]) -> Earnings:
    """``report`` as rows, largest share first; ``names``: NodeIds by ring id."""
    rows = sorted(report.rows, key=lambda r: (-r.share, r.ring_id))
    return Earnings(
        report.period.start_ms,
        report.period.end_ms,
        report.closed,
        tuple(
            EarningRow(str(names.get(r.ring_id, "")), f"{r.ring_id:040x}", r.uptime_ms, float(r.share)) for r in rows
        ),
    )


def previous_period(start_ms: int, end_ms: int) -> tuple[int, int] | None:
    """The period before ``[start_ms, end_ms)``: the calendar month before a calendar month, else one of
    the same length ending at its start; None before the epoch."""
    if start_ms <= 0:
        return None
    if calendar_month(start_ms) == Period(start_ms, end_ms):
        before = calendar_month(start_ms - 1)
        return before.start_ms, before.end_ms
    length = end_ms - start_ms
    return (start_ms - length, start_ms) if start_ms - length >= 0 else None


@dataclass(frozen=True)
class FunctionRow:
    """One of the viewer's registered functions (``cortex-rm event list``)."""

    name: str
    version: int
    kind: str
    mode: str
    replicas: int
    schedule: str  # "" when fired only by triggers
    registered_ms: int


@dataclass(frozen=True)
class ActivationRow:
    """One activation the viewer may read (hers, or of her function)."""

    activation_id: str
    function: str
    version: int
    caller: str
    status: str
    start_ms: int
    duration_ms: int | None  # None while it runs
    error: str


def function_rows(specs: Iterable[FunctionSpec]) -> list[FunctionRow]:
    return [
        FunctionRow(f.name, f.version, f.code_kind, f.mode, f.replicas, f.schedule or "", f.registered_ms)
        for f in sorted(specs, key=lambda f: f.name)
    ]


def activation_rows(activations: Iterable[Activation]) -> list[ActivationRow]:
    """Newest first."""
    return [
        ActivationRow(
            a.activation_id, a.function, a.version, a.caller or "(schedule)", a.status, a.start_ms,
            None if a.end_ms is None else max(a.end_ms - a.start_ms, 0), a.error,
        )
        for a in sorted(activations, key=lambda a: a.start_ms, reverse=True)
    ]
