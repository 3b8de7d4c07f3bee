"""The RM's records of applications and their attempts.

``Submission`` is what a client asked for (decoded from the IPC or REST form; the
original ``ApplicationSubmissionContextProto`` bytes are kept so the AM can later
be launched exactly as submitted).  ``Application`` and ``Attempt`` are the RM's
mutable records (``Application.from_submission`` applies the ``SchedulerLimits``);
their lifecycles are driven only through ``ApplicationTable``.
``to_document``/``from_document`` give the JSON form the state store keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cortex_rm.allocator.app_states import HIDDEN_APP_STATES, AppState, AttemptState, FinalStatus
from cortex_rm.allocator.errors import InvalidSubmission
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId
from cortex_rm.yarn.resources import Resource


@dataclass(frozen=True)
class Submission:
    """An application as submitted, independent of the wire it came over."""

    app_id: ApplicationId
    user: str
    name: str = "N/A"
    queue: str = "default"
    app_type: str = "YARN"
    tags: frozenset[str] = frozenset()
    priority: int = 0
    am_resource: Resource = Resource(1024, 1)
    max_attempts: int = 0  # 0: the RM's default
    unmanaged_am: bool = False
    context: bytes = b""  # the serialized ApplicationSubmissionContextProto
    # the launch context's application ACLs: "VIEW_APP"/"MODIFY_APP" -> Hadoop ACL text
    acls: tuple[tuple[str, str], ...] = ()
    # the host the submission came from (the RM's view of the client's address; "" unknown):
    # a client-mode driver runs there, and only there may the application's containers call it
    client_host: str = ""
    # node labels (node_labels), checked: the application's label expression (its requests'
    # default) and its AM container's ("" none: am_placement decides)
    label_expression: str = ""
    am_label: str = ""


@dataclass
class Attempt:
    """One attempt to run the application's ApplicationMaster."""

    attempt_id: ApplicationAttemptId
    state: AttemptState = AttemptState.NEW
    start_time_ms: int = 0
    finish_time_ms: int = 0
    host: str = "N/A"
    rpc_port: int = -1
    tracking_url: str = ""
    diagnostics: str = ""
    am_container_id: ContainerId | None = None
    final_status: FinalStatus = FinalStatus.UNDEFINED
    am_node: str = ""  # NodeId of the AM container, host:port
    am_node_http: str = ""  # its node's web address
    exit_status: int | None = None  # the AM container's exit status, once it ended


@dataclass
class Application:
    """The RM's record of one application."""

    app_id: ApplicationId
    user: str
    name: str
    queue: str
    app_type: str
    tags: frozenset[str]
    priority: int
    am_resource: Resource
    max_attempts: int
    unmanaged_am: bool
    context: bytes
    submit_time_ms: int
    state: AppState = AppState.NEW
    # while FINAL_SAVING or KILLING: the state reports show, and where FINAL_SAVING goes
    state_before: AppState | None = None
    target_state: AppState | None = None
    final_status: FinalStatus = FinalStatus.UNDEFINED
    diagnostics: str = ""
    start_time_ms: int = 0
    launch_time_ms: int = 0
    finish_time_ms: int = 0
    progress: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    acls: tuple[tuple[str, str], ...] = ()  # as submitted (Submission.acls)
    client_host: str = ""  # as submitted (Submission.client_host)
    # its slot of source ports (yarn/app_network.py), from acceptance to its end; None: none yet
    port_slot: int | None = None
    label_expression: str = ""  # as submitted (Submission.label_expression)
    am_label: str = ""  # as submitted (Submission.am_label)

    @classmethod
    def from_submission(cls, submission: Submission, limits: SchedulerLimits, now_ms: int) -> Application:
        """A NEW application as submitted at ``now_ms``, within ``limits``.

        A negative priority is refused (``InvalidSubmission``); a priority above the
        cluster's maximum is capped, and max attempts outside 1..max-attempts (0 asks for
        the default) are the RM's max-attempts.
        """
        if submission.priority < 0:
            raise InvalidSubmission(f"priority {submission.priority} is negative")
        max_attempts = submission.max_attempts
        if max_attempts <= 0 or max_attempts > limits.max_app_attempts:
            max_attempts = limits.max_app_attempts
        return cls(
            app_id=submission.app_id,
            user=submission.user,
            name=submission.name,
            queue=submission.queue or "default",
            app_type=submission.app_type or "YARN",
            tags=frozenset(t.lower() for t in submission.tags),
            priority=min(submission.priority, limits.max_priority),
            am_resource=submission.am_resource,
            max_attempts=max_attempts,
            unmanaged_am=submission.unmanaged_am,
            context=submission.context,
            acls=submission.acls,
            client_host=submission.client_host,
            label_expression=submission.label_expression,
            am_label=submission.am_label,
            submit_time_ms=now_ms,
            start_time_ms=now_ms,
        )

    @property
    def reported_state(self) -> AppState:
        """The state clients see, as YARN's ``createApplicationState``: FINAL_SAVING and
        KILLING show the state before them; FINISHING (the AM unregistered, its container
        is ending) is already FINISHED."""
        if self.state in HIDDEN_APP_STATES and self.state_before is not None:
            if self.state_before is AppState.FINISHING:
                return AppState.FINISHED
            return self.state_before
        if self.state is AppState.FINISHING:
            return AppState.FINISHED
        return self.state

    @property
    def counted_failures(self) -> int:
        """The failed attempts that count against ``max_attempts``: not those the framework
        caused (node lost, preempted...), as YARN's ``shouldCountTowardsMaxAttemptRetry``."""
        return sum(
            1
            for a in self.attempts
            if a.state is AttemptState.FAILED and a.exit_status not in ContainerExitStatus.NOT_COUNTED_AGAINST_ATTEMPTS
        )

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def attempt(self, attempt_id: ApplicationAttemptId) -> Attempt | None:
        for attempt in self.attempts:
            if attempt.attempt_id == attempt_id:
                return attempt
        return None

    def to_document(self) -> dict[str, Any]:
        """The JSON-safe form kept by the state store (without the context bytes)."""
        return {
            "app_id": str(self.app_id),
            "user": self.user,
            "name": self.name,
            "queue": self.queue,
            "app_type": self.app_type,
            "tags": sorted(self.tags),
            "priority": self.priority,
            "am_resource": [self.am_resource.memory_mb, self.am_resource.vcores],
            "max_attempts": self.max_attempts,
            "unmanaged_am": self.unmanaged_am,
            "submit_time_ms": self.submit_time_ms,
            "state": self.state.value,
            "state_before": self.state_before.value if self.state_before else None,
            "target_state": self.target_state.value if self.target_state else None,
            "final_status": self.final_status.value,
            "diagnostics": self.diagnostics,
            "start_time_ms": self.start_time_ms,
            "launch_time_ms": self.launch_time_ms,
            "finish_time_ms": self.finish_time_ms,
            "progress": self.progress,
            "attempts": [_attempt_document(a) for a in self.attempts],
            "acls": [list(pair) for pair in self.acls],
            "client_host": self.client_host,
            "port_slot": self.port_slot,
            "label_expression": self.label_expression,
            "am_label": self.am_label,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any], context: bytes) -> Application:
        app_id = ApplicationId.parse(doc["app_id"])
        return cls(
            app_id=app_id,
            user=doc["user"],
            name=doc["name"],
            queue=doc["queue"],
            app_type=doc["app_type"],
            tags=frozenset(doc["tags"]),
            priority=doc["priority"],
            am_resource=Resource(*doc["am_resource"]),
            max_attempts=doc["max_attempts"],
            unmanaged_am=doc["unmanaged_am"],
            context=context,
            submit_time_ms=doc["submit_time_ms"],
            state=AppState(doc["state"]),
            state_before=AppState(doc["state_before"]) if doc["state_before"] else None,
            target_state=AppState(doc["target_state"]) if doc["target_state"] else None,
            final_status=FinalStatus(doc["final_status"]),
            diagnostics=doc["diagnostics"],
            start_time_ms=doc["start_time_ms"],
            launch_time_ms=doc["launch_time_ms"],
            finish_time_ms=doc["finish_time_ms"],
            progress=doc["progress"],
            attempts=[_attempt_from_document(a) for a in doc["attempts"]],
            acls=tuple((str(k), str(v)) for k, v in doc.get("acls", [])),
            client_host=str(doc.get("client_host", "")),
            port_slot=doc.get("port_slot"),
            label_expression=str(doc.get("label_expression", "")),
            am_label=str(doc.get("am_label", "")),
        )


def _attempt_document(a: Attempt) -> dict[str, Any]:
    return {
        "attempt_id": str(a.attempt_id),
        "state": a.state.value,
        "start_time_ms": a.start_time_ms,
        "finish_time_ms": a.finish_time_ms,
        "host": a.host,
        "rpc_port": a.rpc_port,
        "tracking_url": a.tracking_url,
        "diagnostics": a.diagnostics,
        "am_container_id": str(a.am_container_id) if a.am_container_id else None,
        "final_status": a.final_status.value,
        "am_node": a.am_node,
        "am_node_http": a.am_node_http,
        "exit_status": a.exit_status,
    }


def _attempt_from_document(d: dict[str, Any]) -> Attempt:
    return Attempt(
        attempt_id=ApplicationAttemptId.parse(d["attempt_id"]),
        state=AttemptState(d["state"]),
        start_time_ms=d["start_time_ms"],
        finish_time_ms=d["finish_time_ms"],
        host=d["host"],
        rpc_port=d["rpc_port"],
        tracking_url=d["tracking_url"],
        diagnostics=d["diagnostics"],
        am_container_id=ContainerId.parse(d["am_container_id"]) if d["am_container_id"] else None,
        final_status=FinalStatus(d["final_status"]),
        am_node=d.get("am_node", ""),
        am_node_http=d.get("am_node_http", ""),
        exit_status=d.get("exit_status"),
    )


@dataclass(frozen=True)
class SchedulerLimits:
    """Limits that decide whether a submission can ever run."""

    maximum_allocation: Resource = Resource(8192, 4)
    max_app_attempts: int = 2  # yarn.resourcemanager.am.max-attempts
    max_priority: int = 0  # yarn.cluster.max-application-priority (0: priorities are not used)
    # yarn.resourcemanager.max-completed-applications: ended applications kept (in memory
    # and in the store); the oldest-finished beyond it are forgotten
    max_completed_applications: int = 1000
