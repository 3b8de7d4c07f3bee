"""The operations behind ``/ws/v1/cluster/...``: one ``RestCall`` in, one ``Reply`` out.

This is the REST API without HTTP: ``rest.py`` turns a twisted.web request into a
``RestCall`` (method, route parameters, query, bounded body, user) and writes the
``Reply`` back.  Each operation mirrors YARN's ``RMWebServices`` and acts through
the same ``RMContext`` as the IPC ``ApplicationClientService``, so both faces of
the RM agree.  Operations that reach the state store are coroutines.

A request acts for the owner of the RM delegation token in its
``Hadoop-YARN-RM-Delegation-Token`` header (``RestCall.principal``); ``user.name``
proves nothing and is ignored.  Without a valid token a request may read what
``anonymous_access`` allows (the cluster's info and metrics by default) and is
answered 401 otherwise; applications are seen and changed only by whom
``AppAccess`` allows (403 otherwise), and listings leave the others out.  The
cluster's admins issue and revoke users' credentials under ``/ws/v1/cluster/cortex/users/{name}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, Protocol

from cortex_rm.allocator.app_access import MODIFY_APP, VIEW_APP, AppAccess
from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.app_queries import ApplicationFilter
from cortex_rm.allocator.app_states import AppState, FinalStatus
from cortex_rm.allocator.errors import AccessDenied, UnknownApplication, UnknownNode, UnknownQueue
from cortex_rm.allocator.nodes import NodeState
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.delegation import ANONYMOUS, Principal
from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import ApplicationId, NodeId
from cortex_rm.yarn_api import records, rest_app_json, rest_cluster_json
from cortex_rm.yarn_api.rest_errors import bad_request, forbidden, not_found, unauthorized, unsupported_media_type
from cortex_rm.yarn_api.app_credentials import submit_as
from cortex_rm.yarn_api.rest_call import STATIC_WEB_USER, Reply, RestCall
from cortex_rm.yarn_api.rest_credentials import CredentialWebServices, UserAdmin
from cortex_rm.yarn_api.rest_labels import LABEL_ROUTES, NodeLabelWebServices
from cortex_rm.yarn_api.rest_submit import submission_context_from_json

LONG_MAX: Final = 2**63 - 1
_JSON_MEDIA_TYPES: Final = frozenset({"application/json", "text/json"})
_STATE_NAMES: Final = "[" + ", ".join(s.value for s in rest_app_json.YARN_APPLICATION_STATES) + "]"


#: An operation answers at once, or (when it waits on the state store) as a coroutine.
Operation = Callable[[RestCall], "Reply | Coroutine[Any, Any, Reply]"]

# path pattern ("*" = a parameter) -> {method: operation name}; the first match wins.
ROUTES: Final[tuple[tuple[tuple[str, ...], dict[str, str]], ...]] = (
    ((), {"GET": "cluster_info"}),
    (("info",), {"GET": "cluster_info"}),
    (("metrics",), {"GET": "cluster_metrics"}),
    (("scheduler",), {"GET": "scheduler"}),
    (("nodes",), {"GET": "nodes"}),
    (("nodes", "*"), {"GET": "node"}),
    *LABEL_ROUTES,
    (("apps",), {"GET": "apps", "POST": "submit_application"}),
    (("apps", "new-application"), {"POST": "new_application"}),
    (("apps", "*"), {"GET": "app"}),
    (("apps", "*", "appattempts"), {"GET": "app_attempts"}),
    (("apps", "*", "state"), {"GET": "app_state", "PUT": "update_app_state"}),
    (("apps", "*", "queue"), {"GET": "app_queue", "PUT": "update_app_queue"}),
    (("apps", "*", "priority"), {"GET": "app_priority", "PUT": "update_app_priority"}),
    (("appstatistics",), {"GET": "app_statistics"}),
    (("cortex", "users"), {"GET": "users"}),
    (("cortex", "apps", "*", "view-ticket"), {"POST": "view_ticket"}),
    (("cortex", "users", "*"), {"PUT": "issue_credential", "DELETE": "revoke_user"}),
    (("delegation-token",), {"DELETE": "cancel_delegation_token"}),
    (("delegation-token", "expiration"), {"POST": "renew_delegation_token"}),
)
#: What a caller without a credential may ask when ``anonymous_access`` is "cluster-info".
ANONYMOUS_OPERATIONS: Final = frozenset({"cluster_info", "cluster_metrics"})
ADMIN_OPERATIONS: Final = frozenset({"users", "issue_credential", "revoke_user"})
NEEDS_CREDENTIAL: Final = (
    "{path} needs a user's credential in the Hadoop-YARN-RM-Delegation-Token header. Ask the cluster's admin"
    " for one (`cortex-rm user add NAME --out FILE`)"
)


def match_route(segments: tuple[str, ...]) -> tuple[dict[str, str], tuple[str, ...]] | None:
    """(method -> operation name, parameters) of the first route matching ``segments``."""
    for pattern, methods in ROUTES:
        if len(pattern) == len(segments) and all(p in ("*", s) for p, s in zip(pattern, segments)):
            return methods, tuple(s for p, s in zip(pattern, segments) if p == "*")
    return None


# ------------------------------------------------------------ query and body


def _first(call: RestCall, name: str) -> str | None:
    """A single-valued parameter (its first value); empty means absent, as in RMWebServices."""
    values = call.query.get(name) or [""]
    return values[0].strip() or None


def _csv(call: RestCall, name: str) -> list[str]:
    """A set-valued parameter: every value, each a comma-separated list."""
    return [item.strip() for value in call.query.get(name, []) for item in value.split(",") if item.strip()]


def _time(call: RestCall, name: str, default: int) -> int:
    text = _first(call, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"{name} must be a time in ms since the epoch, not {text!r}") from None
    if not 0 <= value <= LONG_MAX:
        raise bad_request(f"{name} must be greater than 0")
    return value


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def json_body(call: RestCall) -> Any:
    """The decoded JSON body (RestError when it is not JSON)."""
    if call.content_type:
        media = call.content_type.split(";", 1)[0].strip().lower()
        if media not in _JSON_MEDIA_TYPES and not media.endswith("+json"):
            raise unsupported_media_type(call.content_type)
    if not call.body.strip():
        raise bad_request(f"{call.method} {call.path} needs a JSON body")
    try:
        return json.loads(call.body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than Python's stack
        raise bad_request(f"malformed JSON body: {e}") from None


def _field(call: RestCall, name: str) -> Any:
    body = json_body(call)
    if not isinstance(body, dict) or body.get(name) is None:
        raise bad_request(f"the body must be a JSON object with a {name!r} field")
    return body[name]


# ------------------------------------------------------------------- service


#: Signs a ticket letting a user see an application's containers and logs on one node: (ticket, expiry ms).
ViewTicketSigner = Callable[[ApplicationId, str, str], tuple[str, int]]


class ClusterWebServices(CredentialWebServices, NodeLabelWebServices):
    """YARN's ``RMWebServices`` over one ``RMContext``: the operations named in ``ROUTES``."""

    def __init__(
        self, rm: RMContext, version: str, access: AppAccess, anonymous_access: str = "cluster-info",
        admin: UserAdmin | None = None,
        credentials: UserCredentials | None = None,
        view_tickets: ViewTicketSigner | None = None,
    ) -> None:
        self.rm = rm
        self.view_tickets = view_tickets
        self.credentials = credentials
        self.version = version
        self.access = access
        self.anonymous_access = anonymous_access
        self.admin = admin

    def operation(self, name: str) -> Operation:
        op: Operation = getattr(self, name)
        open_to_anonymous = name in ANONYMOUS_OPERATIONS and self.anonymous_access == "cluster-info"
        admin_only = name in ADMIN_OPERATIONS

        def checked(call: RestCall) -> Reply | Coroutine[Any, Any, Reply]:
            if not open_to_anonymous and not call.principal.authenticated:
                raise unauthorized(NEEDS_CREDENTIAL.format(path=call.path))
            if admin_only and (call.principal.user not in self.access.admins or call.principal.application):
                raise forbidden(f"User {call.principal.user} is not a cluster admin; only admins manage users")
            return op(call)

        return checked

    def _app(self, call: RestCall, access: str = VIEW_APP) -> Application:
        text = call.params[0]
        try:
            app = self.rm.apps.get(ApplicationId.parse(text))
        except MalformedId as e:
            raise bad_request(str(e)) from None
        except UnknownApplication:
            raise not_found(f"app with id: {text} not found") from None
        try:
            self.access.check(call.principal, app, access)
        except AccessDenied as e:
            raise forbidden(str(e)) from None
        return app

    def view_ticket(self, call: RestCall) -> Reply:
        """A ticket for ``node``'s REST API to show the caller this application's containers and
        logs (``nm_viewers``): nodes never see her credential.  VIEW_APP decides, as for the report."""
        app = self._app(call, VIEW_APP)
        text = _first(call, "node")
        try:
            node = NodeId.parse(text or "")
            self.rm.nodes.get(node)
        except (MalformedId, UnknownNode):
            raise bad_request(f"node={text!r} is not a node of this cluster (give its NodeId, host:port)") from None
        if self.view_tickets is None:
            raise not_found("this ResourceManager issues no view tickets")
        ticket, expires = self.view_tickets(app.app_id, call.principal.user or "", str(node))
        return Reply(body={"ticket": ticket, "node": str(node), "expires-ms": expires})

    # -- cluster ---------------------------------------------------------------------

    def cluster_info(self, call: RestCall) -> Reply:
        return Reply(body=rest_cluster_json.cluster_info(self.rm, self.version))

    def cluster_metrics(self, call: RestCall) -> Reply:
        return Reply(body=rest_cluster_json.cluster_metrics(self.rm.metrics()))

    def scheduler(self, call: RestCall) -> Reply:
        return Reply(body=rest_cluster_json.scheduler_info(self.rm))

    def nodes(self, call: RestCall) -> Reply:
        """All nodes (whatever their state, as RMWebServices), or those in ``states``."""
        wanted = set()
        for text in _csv(call, "states"):
            try:
                wanted.add(NodeState(text.upper()))
            except ValueError:
                names = ", ".join(s.value for s in NodeState)
                raise bad_request(f"Invalid node state {text}; it should be one of [{names}]") from None
        nodes = [n for n in self.rm.nodes if not wanted or n.state in wanted]
        return Reply(body=rest_cluster_json.nodes_info(nodes, self.version))

    def node(self, call: RestCall) -> Reply:
        text = call.params[0]
        try:
            node = self.rm.nodes.get(NodeId.parse(text))
        except MalformedId as e:
            raise bad_request(str(e)) from None
        except UnknownNode:
            raise not_found(f"nodeId, {text}, is not found") from None
        return Reply(body={"node": rest_cluster_json.node_info(node, self.version)})

    # -- applications ----------------------------------------------------------------

    def _app_filter(self, call: RestCall) -> ApplicationFilter:
        """RMWebServices.getApps' parameters, validated as it does."""
        limit = _first(call, "limit")
        count = 0
        if limit is not None:
            try:
                count = int(limit)
            except ValueError:
                raise bad_request(f"limit must be an integer, not {limit!r}") from None
            if count <= 0:
                raise bad_request("limit value must be greater then 0")
        started_begin, started_end = _time(call, "startedTimeBegin", 0), _time(call, "startedTimeEnd", LONG_MAX)
        if started_begin > started_end:
            raise bad_request("startedTimeEnd must be greater than startTimeBegin")
        finished_begin, finished_end = _time(call, "finishedTimeBegin", 0), _time(call, "finishedTimeEnd", LONG_MAX)
        if finished_begin > finished_end:
            raise bad_request("finishedTimeEnd must be greater than finishedTimeBegin")
        states = set()
        for text in _csv(call, "states") + _csv(call, "state"):  # "state" is the deprecated form
            state = AppState.__members__.get(text.upper())
            if state not in rest_app_json.YARN_APPLICATION_STATES:
                raise bad_request(f"Invalid application-state {text} specified. It should be one of {_STATE_NAMES}")
            states.add(state)
        final_statuses = set()
        final = _first(call, "finalStatus")
        if final is not None:
            try:
                final_statuses.add(FinalStatus(final.upper()))
            except ValueError:
                names = ", ".join(s.value for s in FinalStatus)
                raise bad_request(f"Invalid finalStatus {final}; it should be one of [{names}]") from None
        queue = _first(call, "queue")
        queues = set()
        if queue is not None:
            try:
                found = self.rm.queues.find(queue)
            except UnknownQueue as e:
                raise bad_request(str(e)) from None
            queues = {queue, self.rm.queues.display_name(found)}  # "root.default" finds "default" too
        user = _first(call, "user")
        return ApplicationFilter(
            types=frozenset(_csv(call, "applicationTypes")),
            states=frozenset(states),
            users=frozenset([user] if user else []),
            queues=frozenset(queues),
            tags=frozenset(_csv(call, "applicationTags")),
            final_statuses=frozenset(final_statuses),
            name=_first(call, "name"),
            started_begin=started_begin,
            started_end=started_end,
            finished_begin=finished_begin,
            finished_end=finished_end,
            limit=count,
        )

    def _deselects(self, call: RestCall) -> frozenset[str]:
        fields = set()
        for text in _csv(call, "deSelects"):
            name = rest_app_json.DESELECTABLE.get(text.lower())
            if name is None:
                valid = ", ".join(rest_app_json.DESELECTABLE.values())
                raise bad_request(f"Invalid deSelects string {text}; valid deSelects strings are: {valid}")
            fields.add(name)
        return frozenset(fields)

    def apps(self, call: RestCall) -> Reply:
        apps = [a for a in self.rm.apps.matching(self._app_filter(call)) if self.access.allows(call.principal, a, VIEW_APP)]
        return Reply(body=rest_app_json.apps_info(apps, self.rm, self._deselects(call)))

    def app(self, call: RestCall) -> Reply:
        return Reply(body={"app": rest_app_json.app_info(self._app(call), self.rm, self._deselects(call))})

    def app_attempts(self, call: RestCall) -> Reply:
        return Reply(body=rest_app_json.attempts_info(self._app(call)))

    def app_statistics(self, call: RestCall) -> Reply:
        states = []
        for text in _csv(call, "states"):
            state = AppState.__members__.get(text.upper())
            if state not in rest_app_json.YARN_APPLICATION_STATES:
                raise bad_request(f"Invalid application-state {text} specified. It should be one of {_STATE_NAMES}")
            if state not in states:
                states.append(state)
        types = {t.lower() for t in _csv(call, "applicationTypes")}
        if len(types) > 1:
            raise bad_request(f"# of applicationTypes = {len(types)}, we temporarily support at most one applicationType")
        chosen = states or list(rest_app_json.YARN_APPLICATION_STATES)
        return Reply(body=rest_app_json.app_statistics(self.rm, chosen, types.pop() if types else None))

    # -- writes ----------------------------------------------------------------------

    def _submitter(self, call: RestCall, queue: str | None = None) -> str:
        try:
            return self.access.may_submit(call.principal, queue)
        except AccessDenied as e:
            raise forbidden(str(e)) from None

    async def new_application(self, call: RestCall) -> Reply:
        app_id = await self.rm.apps.new_application(self._submitter(call))
        return Reply(
            body={
                "application-id": str(app_id),
                "maximum-resource-capability": rest_cluster_json.resource_info(self.rm.limits.maximum_allocation),
            }
        )

    async def submit_application(self, call: RestCall) -> Reply:
        """202 with the application's URL once it is stored (ACCEPTED, or FAILED if its queue refused it)."""
        ctx = submission_context_from_json(json_body(call), self.rm.limits.maximum_allocation)
        user = self._submitter(call, ctx.queue)
        if self.credentials is None:
            app = await self.rm.apps.submit(records.submission_from_proto(ctx, user, call.client_host))
        else:
            try:
                app = await submit_as(self.rm, ctx, user, self.credentials, call.client_host)
            except AccessDenied as e:
                raise forbidden(str(e)) from None
        return Reply(202, location=f"{call.base_url}/ws/v1/cluster/apps/{app.app_id}")

    def app_state(self, call: RestCall) -> Reply:
        return Reply(body={"state": self._app(call).reported_state.value})

    async def update_app_state(self, call: RestCall) -> Reply:
        """Kill: 202 (and this URL) while the kill is under way, 200 once the application has ended."""
        target = _field(call, "state")
        app = self._app(call, MODIFY_APP)
        if target == app.reported_state.value:
            return Reply(body={"state": target})
        if target != AppState.KILLED.value:
            raise bad_request("Only 'KILLED' is allowed as a target state.")
        completed = await self.rm.apps.kill(app.app_id, f"Application {app.app_id} was killed by user {call.user}")
        body = {"state": app.reported_state.value}
        if completed:
            return Reply(body=body)
        return Reply(202, body, location=f"{call.base_url}{call.path}")

    def app_queue(self, call: RestCall) -> Reply:
        return Reply(body={"queue": self._app(call).queue})

    async def update_app_queue(self, call: RestCall) -> Reply:
        target = _field(call, "queue")
        if not isinstance(target, str) or not target:
            raise bad_request("queue must be a non-empty string")
        app = self._app(call, MODIFY_APP)
        if target != app.queue:
            self._submitter(call, target)  # YARN checks the target queue too
            await self.rm.apps.move(app.app_id, target)
        return Reply(body={"queue": app.queue})

    def app_priority(self, call: RestCall) -> Reply:
        return Reply(body={"priority": self._app(call).priority})

    async def update_app_priority(self, call: RestCall) -> Reply:
        target = _field(call, "priority")
        if isinstance(target, bool) or not isinstance(target, int) or not -(2**31) <= target < 2**31:
            raise bad_request("priority must be a 32-bit integer")
        app = self._app(call, MODIFY_APP)
        priority = app.priority
        if target != priority:
            priority = await self.rm.apps.update_priority(app.app_id, target)
        return Reply(body={"priority": priority})
