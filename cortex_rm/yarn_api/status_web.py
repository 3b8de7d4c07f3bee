"""The RM's status pages on its web port: ``/`` and ``/cluster/...`` (``status_page.cluster_pages``).

A thin twisted.web resource: it works out who reads (``Viewer``), takes the rows from the
same in-process objects the REST API answers from, and writes the page the pure functions
of ``status_page`` make.  Access is the REST API's, rule for rule (the same functions decide who
reads: ``http_access.caller_of`` and ``anonymous_access_of``; an RM that checks no credentials
takes every visitor as anonymous, whatever she sends, as its REST API does):

* without a credential, a visitor sees the cluster's info, and -- when ``anonymous_access``
  is "cluster-info" -- its metrics and the ledger's payouts (public by design); with
  "none", only who the RM is.  The page says how to sign in;
* a signed-in user sees every node (as ``GET /ws/v1/cluster/nodes`` shows any
  authenticated caller) and the applications VIEW_APP lets her see (``AppAccess``); another's
  application is 403, as over REST.

A browser sends no ``Hadoop-YARN-RM-Delegation-Token`` header, so the credential's same
REST value is also taken as the password of HTTP Basic authentication (the user name is
not trusted: the token names its owner).  A credential that is
not valid is 401, never the anonymous view (but on ``/cluster`` itself, which clients probe
for a 200 to find the active RM: there it gets the anonymous view, saying why).  Every page for signed-in users only
(``/cluster/login``: the overview, signed in; nodes, applications) answers a request without
a credential 401 with the challenge, so a browser asks for it or sends the one it has.  Pages
carry a Content-Security-Policy that allows no script, and every value in them is escaped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cortex_rm.accounting.ledger_errors import BadLedgerRequest
from cortex_rm.accounting.ledger_office import check_period
from cortex_rm.allocator.app_access import VIEW_APP, AppAccess
from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.app_states import TERMINAL_APP_STATES
from cortex_rm.allocator.errors import UnknownApplication
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.events.activations import Activation
from cortex_rm.events.functions import FunctionSpec
from cortex_rm.status_page import cluster_pages as pages
from cortex_rm.status_page import cluster_views as views
from cortex_rm.status_page.html_parts import PAGE_ROWS, page_of
from cortex_rm.yarn.delegation import ANONYMOUS, InvalidToken, Principal
from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn.resource_tracker import NodeRefused
from cortex_rm.yarn_api.http_access import anonymous_access_of, caller_of
from cortex_rm.yarn_api.ledger_rest import LedgerWebServices, ledger_number
from cortex_rm.yarn_api.user_auth import ANONYMOUS_CLUSTER_INFO, UserAuthenticator, own_user

log = Logger()

HTML: Final = b"text/html; charset=utf-8"
#: Nothing on the pages runs: no script, no frames, no forms; styles inline; links only.
SECURITY_HEADERS: Final = (
    (
        b"Content-Security-Policy",
        b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-store"),
)
BASIC_CHALLENGE: Final = b'Basic realm="Cortex RM", charset="UTF-8"'
#: Applications in progress the overview lists (the rest are on /cluster/apps?state=running).
OVERVIEW_APPS: Final = 20
_STATE_FILTERS: Final = {"running": frozenset(views.IN_PROGRESS), "finished": TERMINAL_APP_STATES}


class PageError(Exception):
    """A page refused: its status and the message the page shows."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


#: A user's functions (the RM's registry's), or at most so many of her activations this node can read, newest
#: first (its gateway's); None when this RM has none to show (no registry; no gateway until it is on the ring).
FunctionsOf = Callable[[str], list[FunctionSpec] | None]
ActivationsOf = Callable[[str, int], list[Activation] | None]


class ClusterPages(Resource):
    """``/`` and ``/cluster[/...]`` (module doc).  ``ledger``: the RM's ledger, for the earnings page;
    ``functions`` and ``activations``: what the events page lists (those the events' REST API serves)."""

    isLeaf = True

    def __init__(
        self, rm: RMContext, version: str, auth: UserAuthenticator | None, access: AppAccess,
        ledger: LedgerWebServices | None = None, functions: FunctionsOf | None = None,
        activations: ActivationsOf | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.rm, self.version, self.auth, self.access, self.ledger = rm, version, auth, access, ledger
        self.functions, self.activations = functions, activations

    # -- who reads -------------------------------------------------------------------

    def viewer(self, request: Request) -> tuple[Viewer, Principal]:
        """Who reads, by the REST API's rule (``http_access.caller_of``), her credential in its header
        or as a Basic password; 401 for one not valid."""
        try:
            principal, _ = caller_of(self.auth, request, basic=True)
        except InvalidToken as e:
            raise PageError(401, "Not signed in", f"your credential was not accepted: {e}") from None
        if principal.authenticated:
            return pages.Viewer(principal.user, True), principal
        return self.anonymous(), principal

    def anonymous(self) -> Viewer:
        """A visitor without a credential: sees the cluster's figures if ``anonymous_access`` allows, as over REST."""
        return pages.Viewer(None, anonymous_access_of(self.auth) == ANONYMOUS_CLUSTER_INFO)

    # -- rendering -------------------------------------------------------------------

    def render_GET(self, request: Request) -> int | bytes:
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        segments = [s.decode("utf-8", errors="replace") for s in request.postpath or []]
        if segments and segments[-1] == "":
            segments.pop()
        notice = ""
        try:
            viewer, principal = self.viewer(request)
        except PageError as e:
            if segments:  # asked again: a browser prompts anew instead of resending what it has cached
                request.setHeader(b"WWW-Authenticate", BASIC_CHALLENGE)
                return self._refused(request, e)
            # /cluster answers 200 whatever the credential (clients probe it for the active RM): anonymously
            viewer, principal, notice = self.anonymous(), ANONYMOUS, e.message
        gone: list[Failure] = []  # (the client went away: nothing is written)
        request.notifyFinish().addErrback(gone.append)
        d = defer.Deferred.fromCoroutine(self._page(request, segments, viewer, principal, notice))
        d.addCallbacks(lambda body: None if gone else self._finish(request, 200, body),
                       lambda f: None if gone else self._failed(request, f))  # fmt: skip
        return NOT_DONE_YET

    async def _page(
        self, request: Request, segments: list[str], viewer: Viewer, principal: Principal, notice: str = ""
    ) -> str:
        if segments == []:
            return await self._overview(viewer, principal, notice)
        if segments == ["login"]:  # the overview, once signed in
            self._require(request, viewer)
            return await self._overview(viewer, principal)
        if segments == ["earnings"]:
            return await self._earnings(request, viewer)
        if segments == ["events"]:
            self._require(request, viewer)
            return self._events(viewer, principal)
        if segments == ["nodes"]:
            self._require(request, viewer)
            nodes = views.node_rows(self.rm.nodes, await self._uptimes())
            rows, where = page_of(nodes, _page_number(request))
            return pages.nodes_page(viewer, rows, where)
        if segments == ["apps"]:
            self._require(request, viewer)
            state = _arg(request, "state")
            if state is not None and state not in _STATE_FILTERS:
                raise PageError(400, "Bad request", f"state must be one of {sorted(_STATE_FILTERS)}, not {state!r}")
            chosen = views.newest_first(self.rm.apps, self._visible(principal), _STATE_FILTERS.get(state or ""))
            apps, where = page_of(chosen, _page_number(request))
            return pages.apps_page(viewer, views.app_rows(apps, self.rm), where, state)
        if len(segments) == 2 and segments[0] == "app":
            self._require(request, viewer)
            return pages.app_page(viewer, views.app_row(self._app(segments[1], principal), self.rm))
        raise PageError(404, "Not found", f"no page at {request.path.decode('utf-8', errors='replace')}")

    def _events(self, viewer: Viewer, principal: Principal) -> str:
        """The caller's functions and readable activations, as the events' REST API gives them (``functions``,
        ``activations``); an application's credential sees none, as there."""
        try:
            user = own_user(principal)
        except InvalidToken:
            raise PageError(403, "Forbidden", "events are shown to users' credentials only, not applications'") from None
        specs = None if self.functions is None else self.functions(user)
        calls = None if self.activations is None else self.activations(user, PAGE_ROWS)
        functions = None if specs is None else views.function_rows(specs)
        activations = None if calls is None else views.activation_rows(calls)
        return pages.events_page(viewer, functions, activations)

    async def _uptimes(self) -> dict[int, int] | None:
        """The ledger's attested uptime this period by ring id (its answers are cached a while); None without a
        ledger, or while it cannot answer."""
        if self.ledger is None:
            return None
        try:
            return views.uptimes(await self.ledger.ledger.payouts(None))
        except NodeRefused:
            return None

    async def _overview(self, viewer: Viewer, principal: Principal, notice: str = "") -> str:
        summary = views.summary(self.rm, self.version)
        if not viewer.signed_in:
            return pages.overview_page(summary, viewer, None, None, notice=notice)
        running = views.newest_first(self.rm.apps, self._visible(principal), frozenset(views.IN_PROGRESS))
        shown = views.app_rows(running[:OVERVIEW_APPS], self.rm)
        nodes = views.node_rows(self.rm.nodes, await self._uptimes())
        return pages.overview_page(summary, viewer, nodes[:PAGE_ROWS], shown, len(running) - len(shown))

    def _visible(self, principal: Principal) -> Callable[[Application], bool]:
        return lambda app: self.access.allows(principal, app, VIEW_APP)

    def _require(self, request: Request, viewer: Viewer) -> None:
        """A page for signed-in users only: 401 with a Basic challenge (the browser asks for the credential,
        or answers with the one it has for this site)."""
        if not viewer.signed_in:
            request.setHeader(b"WWW-Authenticate", BASIC_CHALLENGE)
            raise PageError(401, "Sign in to see this page", "nodes and applications are shown to signed-in users only")

    def _app(self, text: str, principal: Principal) -> Application:
        try:
            app = self.rm.apps.get(ApplicationId.parse(text))
        except (MalformedId, UnknownApplication):
            raise PageError(404, "Not found", f"no application {text}") from None
        if not self.access.allows(principal, app, VIEW_APP):
            raise PageError(403, "Forbidden", f"User {principal.user} cannot perform operation {VIEW_APP} on {text}")
        return app

    async def _earnings(self, request: Request, viewer: Viewer) -> str:
        if not viewer.sees_cluster:
            raise PageError(401, "Sign in to see this page", "the ledger is shown to signed-in users only here")
        if self.ledger is None:
            return pages.earnings_page(viewer, None, "this ResourceManager keeps no ledger (it runs without a ring)")
        try:
            period = check_period(_int_arg(request, "start"), _int_arg(request, "end"))
            report = await self.ledger.ledger.payouts(period)
        except BadLedgerRequest as e:
            raise PageError(400, "Bad request", str(e)) from None
        except NodeRefused as e:
            return pages.earnings_page(viewer, None, f"the ledger is not open yet: {e}")
        names = {ring_id: str(node) for ring_id, node in self.ledger.names().items()}
        earned = views.earnings(report, names)
        before = views.previous_period(earned.start_ms, earned.end_ms)
        previous = "" if before is None else f"/cluster/earnings?start={before[0]}&end={before[1]}"
        return pages.earnings_page(viewer, earned, previous=previous)

    # -- answers ---------------------------------------------------------------------

    def _write(self, request: Request, status: int, body: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", HTML)
        return body.encode("utf-8")

    def _refused(self, request: Request, e: PageError) -> bytes:
        return self._write(request, e.status, _refusal(e))

    def _finish(self, request: Request, status: int, body: str) -> None:
        data = self._write(request, status, body)
        request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
        request.write(data)
        request.finish()

    def _failed(self, request: Request, failure: Failure) -> None:
        if isinstance(failure.value, PageError):
            self._finish(request, failure.value.status, _refusal(failure.value))
            return
        log.failure("the status page {path} failed", failure, path=request.path)
        self._finish(request, 500, pages.refusal_page("Internal error", "the page could not be made; see the RM's log"))


Viewer = pages.Viewer


def _refusal(e: PageError) -> str:
    return pages.refusal_page(e.title, e.message, pages.Viewer(None, False))


def _arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return None
    return values[0].decode("utf-8", errors="replace").strip() or None


def _page_number(request: Request) -> int:
    text = _arg(request, "page")
    if text is None:
        return 1
    if not text.isdecimal() or len(text) > 9:
        raise PageError(400, "Bad request", f"page must be a page number, not {text[:40]!r}")
    return int(text)


def _int_arg(request: Request, name: str) -> int | None:
    text = _arg(request, name)
    return None if text is None else ledger_number(name, text)
