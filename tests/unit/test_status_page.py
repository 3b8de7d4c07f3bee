"""The RM's status pages (``/cluster/...``): what each viewer sees, escaping, paging, signing in.

The pages are served by the RM's real web site (``build_rest_site``) driven without sockets
(``tests.support.http_site``), over an RM on a ``Clock`` with a memory state store, as the
REST API's own unit tests do; the pure page functions are checked directly for escaping.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.accounting.membership_log import membership_change
from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.events.activations import Activation
from cortex_rm.allocator.app_model import SchedulerLimits
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.status_page import cluster_pages as pages
from cortex_rm.status_page import cluster_views as views
from cortex_rm.status_page.html_parts import PAGE_ROWS, page_of, pager, web_link
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.ledger_rest import LedgerWebServices
from cortex_rm.yarn_api.rest import build_rest_site
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from tests.support.http_site import HttpConnection, HttpResponse
from tests.unit.test_event_registry_rest import BODY, FUNCTIONS_PATH
from tests.unit.test_event_registry_rest import Site as EventsSite
from tests.unit.test_ledger_office import DAY, HOUR
from tests.unit.test_ledger_office import Cluster as LedgerCluster
from tests.unit.test_rest_api import START_MS, START_S, Cluster, fired, make_cluster, submit

HOSTILE = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'


def get(cluster: Cluster, path: str, headers: dict[str, str] | None = None, anonymous: bool = False) -> HttpResponse:
    """GET ``path`` as alice (the site's default credential), or as nobody (``anonymous``)."""
    conn = HttpConnection(cluster.site)
    if anonymous:
        conn.default_headers = {}
    conn.send("GET", path, b"", headers)
    response = conn.response()
    assert response is not None
    return response


def basic(cluster: Cluster, user: str, as_name: str | None = None) -> dict[str, str]:
    """The Authorization header a browser sends: Basic, the credential's REST value as the password."""
    value = cluster.credential_header(user)[REST_TOKEN_HEADER]
    return {"Authorization": "Basic " + base64.b64encode(f"{as_name or user}:{value}".encode()).decode()}


def text(response: HttpResponse) -> str:
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return response.body.decode()


def test_hostile_names_are_shown_as_text_never_as_markup() -> None:
    """Application, user, queue, node and diagnostics text with markup in it is escaped on every page,
    and a tracking URL that is not http(s) is not made a link."""
    row = views.AppRow(
        app_id="application_1_0001", user=HOSTILE, name=HOSTILE, app_type=HOSTILE, queue=HOSTILE, state="RUNNING",
        final_status="UNDEFINED", progress=50.0, started_ms=START_MS, finished_ms=0, elapsed_ms=1000,
        tracking_url="javascript:alert(1)", containers=1, allocated_mb=1024, allocated_vcores=1,
        diagnostics=HOSTILE, attempts=(("appattempt_1_0001_000001", HOSTILE, HOSTILE),),
    )  # fmt: skip
    node = views.NodeRow(HOSTILE, HOSTILE, "RUNNING", HOSTILE, HOSTILE, 8192, 8, 0, 0, 0, HOSTILE, START_MS)
    viewer = pages.Viewer(HOSTILE, True)
    where = page_of([row], 1)[1]
    rendered = [
        pages.app_page(viewer, row),
        pages.apps_page(viewer, [row], where, None),
        pages.nodes_page(viewer, [node], page_of([node], 1)[1]),
        pages.refusal_page(HOSTILE, HOSTILE, viewer),
    ]
    for html in rendered:
        assert "<script" not in html and "<img" not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;img" in html
        assert 'href="javascript' not in html
    assert web_link("http://am.host:4040/", "AM").markup == '<a href="http://am.host:4040/">AM</a>'
    assert web_link("javascript:alert(1)", "AM").markup == "AM"
    assert web_link('http://x/"><b>', "AM").markup == '<a href="http://x/&quot;&gt;&lt;b&gt;">AM</a>'


@pytest.mark.parametrize(("count", "number", "shown", "links"), [
    (0, 1, [], []),
    (1, 1, [0], []),
    (120, 1, list(range(50)), ["next", "last"]),
    (120, 2, list(range(50, 100)), ["first", "previous", "next", "last"]),
    (120, 3, list(range(100, 120)), ["first", "previous"]),
    (120, 99, list(range(100, 120)), ["first", "previous"]),  # past the end: the last page
    (120, 0, list(range(50)), ["next", "last"]),
])  # fmt: skip
def test_a_long_list_pages(count: int, number: int, shown: list[int], links: list[str]) -> None:
    """page_of takes PAGE_ROWS rows of the page asked (clamped), and the pager links the pages around it."""
    assert PAGE_ROWS == 50
    rows, where = page_of(list(range(count)), number)
    assert rows == shown
    made = pager(where, "/cluster/apps", [("state", "running")])
    assert re.findall(r">(first|previous|next|last)</a>", made) == links
    if count:
        assert "state=running&amp;page=" in pager(where, "/cluster/apps", [("state", "running")]) or not links


def test_an_anonymous_visitor_sees_the_cluster_figures_and_how_to_sign_in(cluster: Cluster) -> None:
    """Without a credential (anonymous_access "cluster-info"): the RM and its metrics, no nodes or applications,
    and a sign-in link; the node and application pages are 401 pages saying so."""
    submit(cluster, name="secret-job")
    page = text(get(cluster, "/cluster", anonymous=True))
    assert "Cortex ResourceManager" in page and str(START_MS) in page and "Cluster metrics" in page
    assert "secret-job" not in page and "127.0.0.1:45454" not in page
    assert 'href="/cluster/login"' in page and "cortex-rm user show FILE" in page
    assert '<meta http-equiv="refresh" content="10">' in page
    for path in ("/cluster/nodes", "/cluster/apps", "/cluster/app/application_1700000000000_0001"):
        response = get(cluster, path, anonymous=True)
        assert response.status == 401 and "secret-job" not in text(response) and "sign in" in text(response)


def test_a_signed_in_user_sees_the_nodes_with_their_class_and_only_her_applications(cluster: Cluster) -> None:
    """Signed in with Basic (the REST value as the password), alice sees every node with its class and her
    own applications, not bob's; bob's application page is 403 to her; the user name given is not trusted."""
    node = next(iter(cluster.rm.nodes))
    node.labels = frozenset({"static"})
    mine = submit(cluster, name="alices-job")
    theirs = submit(cluster, name="bobs-job", user="bob")
    overview = text(get(cluster, "/cluster/", basic(cluster, "alice", as_name="bob"), anonymous=True))
    assert "Signed in as <b>alice</b>" in overview
    assert "<td>static</td>" in overview and "127.0.0.1:45454" in overview
    assert "alices-job" in overview and "bobs-job" not in overview
    apps = text(get(cluster, "/cluster/apps", basic(cluster, "alice"), anonymous=True))
    assert "alices-job" in apps and "bobs-job" not in apps
    assert f'href="/cluster/app/{mine.app_id}"' in apps
    nodes = text(get(cluster, "/cluster/nodes", basic(cluster, "alice"), anonymous=True))
    assert "<td>static</td>" in nodes and 'href="http://127.0.0.1:8042/node"' in nodes
    assert get(cluster, f"/cluster/app/{theirs.app_id}", basic(cluster, "alice"), anonymous=True).status == 403
    detail = text(get(cluster, f"/cluster/app/{mine.app_id}"))  # the REST header signs in too
    assert "alices-job" in detail and ("<td>ACCEPTED</td>" in detail or "<td>SUBMITTED</td>" in detail)
    admin = text(get(cluster, "/cluster/apps", basic(cluster, "admin"), anonymous=True))
    assert "alices-job" in admin and "bobs-job" in admin


def test_a_credential_that_is_not_valid_is_refused_but_the_probed_overview_answers(cluster: Cluster) -> None:
    """A bad Basic password or REST header is a 401 page naming why (a malformed Authorization header too), but
    /cluster itself, which clients probe for a 200 to find the active RM, is the anonymous view saying why."""
    bad = {"Authorization": "Basic " + base64.b64encode(b"alice:not-a-token").decode()}
    for headers in (bad, {"Authorization": "Basic %%%"}, {REST_TOKEN_HEADER: "garbage"}):
        response = get(cluster, "/cluster/nodes", headers, anonymous=True)
        assert response.status == 401 and "127.0.0.1:45454" not in text(response)
        assert "not" in text(response) and response.headers["www-authenticate"].startswith("Basic")  # ask again
        probe = get(cluster, "/cluster", headers, anonymous=True)
        assert probe.status == 200 and "Cluster metrics" in text(probe) and "Signed in" not in text(probe)
        assert "your credential was not accepted" in text(probe) or "not Basic" in text(probe)


def test_pages_for_signed_in_users_challenge_a_browser_for_the_credential(cluster: Cluster) -> None:
    """/cluster/login, nodes and applications answer a request without a credential 401 with a Basic challenge
    (so a browser asks for it, or sends the one it has); /cluster/login with one is the signed-in overview."""
    for path in ("/cluster/login", "/cluster/nodes", "/cluster/apps", "/cluster/app/application_1_0001"):
        response = get(cluster, path, anonymous=True)
        assert response.status == 401
        assert response.headers["www-authenticate"] == 'Basic realm="Cortex RM", charset="UTF-8"'
    assert "www-authenticate" not in get(cluster, "/cluster/", anonymous=True).headers  # the anonymous view is open
    ok = get(cluster, "/cluster/login", basic(cluster, "alice"), anonymous=True)
    assert ok.status == 200 and "Signed in as <b>alice</b>" in text(ok) and "<h2>Nodes</h2>" in text(ok)


def test_pages_forbid_scripts_and_page_through_many_applications(cluster: Cluster) -> None:
    """Every page carries a CSP without script; 120 applications are listed 50 a page, newest first."""
    for i in range(120):
        submit(cluster, name=f"job-{i:03d}")
    first = get(cluster, "/cluster/apps")
    assert "script-src" not in first.headers["content-security-policy"]
    assert first.headers["content-security-policy"].startswith("default-src 'none'")
    body = text(first)
    assert "job-119" in body and "job-070" in body and "job-069" not in body
    last = text(get(cluster, "/cluster/apps?page=3"))
    assert "job-019" in last and "job-000" in last and "job-020" not in last and "101-120 of 120" in last
    assert get(cluster, "/cluster/apps?page=x").status == 400
    assert get(cluster, "/cluster/apps?state=bogus").status == 400
    assert get(cluster, "/cluster/nowhere").status == 404


def test_with_anonymous_access_none_the_anonymous_page_names_the_rm_and_nothing_more() -> None:
    """anonymous_access "none": no metrics and no earnings to a visitor without a credential."""
    clock = Clock()
    clock.advance(START_S)
    store = MemoryStateStore()
    apps = fired(ApplicationTable.recover(clock, store, QueueTree(), SchedulerLimits()))
    nodes = NodeTable()
    nodes.register(NodeId("127.0.0.1", 1), "127.0.0.1:2", Resource(1024, 1), START_MS)
    rm = RMContext(clock, apps, nodes, START_MS)
    credentials = UserCredentials(MasterKey(3, b"d" * 20), store, StoredState(), lambda: int(clock.seconds() * 1000))
    site = build_rest_site(rm, version="1", auth=UserAuthenticator(credentials, "none"), access=AppAccess(()))
    conn = HttpConnection(site)
    conn.send("GET", "/cluster", b"")
    response = conn.response()
    assert response is not None and response.status == 200
    page = response.body.decode()
    assert "Cortex ResourceManager" in page and "Cluster metrics" not in page and "sign in" in page
    conn = HttpConnection(site)
    conn.send("GET", "/cluster/earnings", b"")
    earnings = conn.response()
    assert earnings is not None and earnings.status == 401


def test_without_credentials_checked_the_pages_take_a_credential_as_rest_does(cluster: Cluster) -> None:
    """An RM that checks no credentials (no ``auth``): REST takes a caller who sends one as anonymous, and so
    do the pages -- the anonymous view with its figures and the earnings, no 401 and no notice."""
    site = build_rest_site(cluster.rm, version="1", access=AppAccess(()))
    sent = cluster.credential_header("alice")
    for headers in (sent, basic(cluster, "alice"), {REST_TOKEN_HEADER: "garbage"}):
        rest = HttpConnection(site)
        rest.send("GET", "/ws/v1/cluster/metrics", b"", headers)
        answer = rest.response()
        assert answer is not None and answer.status == 200  # REST: anonymous, open to "cluster-info"
        for path in ("/cluster", "/cluster/earnings"):
            conn = HttpConnection(site)
            conn.send("GET", path, b"", headers)
            page = conn.response()
            assert page is not None and page.status == 200, (path, headers)
            assert "not accepted" not in text(page) and "checks no credentials" not in text(page)
            assert "Signed in" not in text(page)
        conn = HttpConnection(site)
        conn.send("GET", "/cluster/nodes", b"", headers)
        nodes = conn.response()
        assert nodes is not None and nodes.status == 401  # as /ws/v1/cluster/nodes: for signed-in users only
        assert "not accepted" not in text(nodes) and "checks no credentials" not in text(nodes)


def test_the_previous_period_of_a_calendar_month_is_the_month_before() -> None:
    """previous_period: a calendar month's is the month before (of its own length); a fixed length's is one more
    of that length; none before the epoch."""
    dec_1, nov_1, jan_1 = 1_764_547_200_000, 1_761_955_200_000, 1_767_225_600_000
    assert views.previous_period(dec_1, jan_1) == (nov_1, dec_1)
    assert views.previous_period(7_000, 14_000) == (0, 7_000)
    assert views.previous_period(0, 7_000) is None


@pytest.fixture
def cluster() -> Any:
    return make_cluster()


class OfficeLedger:
    """The REST API's ledger seam (``LedgerQueries.payouts``) over a real ``LedgerOffice`` answered at once
    (the RM's ``LedgerKeeper`` runs the same office calls in a thread)."""

    def __init__(self, office: Any, now_ms: int) -> None:
        self.office, self.now_ms = office, now_ms

    def payouts(self, period: Any) -> Any:
        return defer.succeed(self.office.payouts(period, self.now_ms))


def test_nodes_show_their_attested_uptime_and_the_earnings_page_their_shares() -> None:
    """With the RM's ledger (a real office: four members attesting each other, one down three hours), the nodes
    table shows each node's uptime this period by its ring id, and /cluster/earnings every member's uptime and
    share with a link to the period before; a bad period is a 400 page."""
    ledger = LedgerCluster()
    ledger.office.record_membership(membership_change(0, joined=ledger.ids, snapshot=True))
    ledger.office.record_membership(membership_change(6 * HOUR, left=[ledger.ids[3]]))
    ledger.office.record_membership(membership_change(9 * HOUR, joined=[ledger.ids[3]]))
    for w in range(4):
        for s in range(4):
            if w != s:
                spans = [(0, DAY)] if 3 not in (w, s) else [(0, 6 * HOUR), (9 * HOUR, DAY)]
                for start, end in spans:
                    ledger.attest(w, s, start, end)
    rm = make_cluster()
    nodes = list(rm.rm.nodes)
    nodes[0].ring_id = ledger.ids[3]
    second = rm.rm.nodes.register(NodeId("127.0.0.2", 45454), "127.0.0.2:8042", Resource(4096, 4), START_MS)
    second.ring_id = ledger.ids[0]
    names = {ledger.ids[3]: nodes[0].node_id, ledger.ids[0]: second.node_id}
    office = OfficeLedger(ledger.office, DAY - 1)  # now: the first day's last ms (its payouts are the current ones)
    services = LedgerWebServices(office, lambda: names)  # type: ignore[arg-type]
    site = build_rest_site(rm.rm, version="1", auth=rm.auth, access=AppAccess(["admin"]), ledger=services)
    site.test_headers = rm.site.test_headers
    rm.site = site
    page = text(get(rm, "/cluster/nodes"))  # up to now, 1 ms before the day's end
    assert "127.0.0.1:45454</a></td><td>-</td><td>RUNNING</td><td>20h 59m</td>" in page  # down 3 h
    assert "127.0.0.2:45454</a></td><td>-</td><td>RUNNING</td><td>23h 59m</td>" in page
    earnings = text(get(rm, "/cluster/earnings?start=0&end=" + str(DAY), anonymous=True))  # public, as the ledger is
    assert "<td>127.0.0.1:45454</td>" in earnings and "<td>-</td>" in earnings  # a member with no node here: -
    assert "previous period" not in earnings  # no period before the epoch's first
    later = text(get(rm, f"/cluster/earnings?start={DAY}&end={2 * DAY}", anonymous=True))
    assert f'href="/cluster/earnings?start=0&amp;end={DAY}">previous period</a>' in later  # the one before
    assert get(rm, "/cluster/earnings?start=5").status == 400
    for query in ("start=0&end=9999999999999999999", "start=x&end=1"):  # refused by the REST API's own check
        rest = get(rm, "/ws/v1/cortex/payouts?" + query)
        assert rest.status == 400 and "not a non-negative integer below 2**63" in rest.body.decode()
        page = get(rm, "/cluster/earnings?" + query)
        assert page.status == 400 and "not a non-negative integer below 2**63" in text(page)


def test_the_events_page_lists_the_viewers_own_functions_from_the_registry() -> None:
    """/cluster/events (signed in): the functions the caller registered (the registry the events' REST API
    uses), not another user's; without an activation gateway on this RM it says where activations are;
    anonymous: 401 with the challenge."""
    web = EventsSite()
    assert web.call("POST", f"{FUNCTIONS_PATH}/hello", {**BODY, "mode": "vote", "replicas": 3}).status == 200

    def events_page(user: str | None) -> HttpResponse:
        conn = HttpConnection(web.site)
        headers = {} if user is None else {"Authorization": "Basic " + base64.b64encode(
            f"{user}:{web.as_user(user)[REST_TOKEN_HEADER]}".encode()).decode()}  # fmt: skip
        conn.send("GET", "/cluster/events", b"", headers)
        response = conn.response()
        assert response is not None
        return response

    alices = text(events_page("alice"))
    assert "<tr><td>hello</td><td>1</td><td>python</td><td>vote</td><td>3</td><td>-</td>" in alices
    assert "this node takes no activations" in alices
    assert "<td>hello</td>" not in text(events_page("bob")) and "no functions" in text(events_page("bob"))
    anonymous = events_page(None)
    assert anonymous.status == 401 and "www-authenticate" in anonymous.headers


def test_the_events_page_lists_the_activations_this_rms_gateway_reads_for_the_viewer() -> None:
    """/cluster/events lists the activations the RM's gateway reads for the caller (asked for one page of them),
    and nobody else's."""
    mine = Activation("a-mine", "hello", 1, "alice", "alice", "first", 1, 7, START_MS, status="ok", end_ms=START_MS + 1)
    asked: list[tuple[str, int]] = []

    def readable(user: str, limit: int) -> list[Activation]:
        asked.append((user, limit))
        return [mine] if user == "alice" else []

    web = EventsSite(activations=readable)
    conn = HttpConnection(web.site)
    basic = base64.b64encode(f"alice:{web.as_user('alice')[REST_TOKEN_HEADER]}".encode()).decode()
    conn.send("GET", "/cluster/events", b"", {"Authorization": "Basic " + basic})
    response = conn.response()
    assert response is not None and response.status == 200
    page = text(response)
    assert "<td>a-mine</td>" in page and "takes no activations" not in page
    assert asked == [("alice", PAGE_ROWS)]


def test_activations_are_listed_newest_first_with_their_error_escaped() -> None:
    """activation_rows: newest first, running ones without a duration; the page escapes an error's text."""
    old = Activation("a-1", "hello", 1, "alice", "alice", "first", 1, 7, START_MS, status="ok", end_ms=START_MS + 1500)
    new = Activation("a-2", "hello", 2, "", "alice", "first", 1, 7, START_MS + 10)
    failed = Activation("a-3", "hello", 2, "bob", "alice", "first", 1, 7, START_MS + 5, status="error",
                        end_ms=START_MS + 6, error=HOSTILE)  # fmt: skip
    rows = views.activation_rows([old, new, failed])
    assert [(r.activation_id, r.caller, r.duration_ms) for r in rows] == [
        ("a-2", "(schedule)", None), ("a-3", "bob", 1), ("a-1", "alice", 1500),
    ]
    page = pages.events_page(pages.Viewer("alice", True), [], rows)
    assert "<td>running</td>" in page and "<td>1s</td>" in page
    assert "<script" not in page and "&lt;script&gt;" in page
