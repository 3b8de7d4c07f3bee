"""Fuzzing the RM's status pages (``/cluster/...``): random paths, queries and credentials.

Every GET or HEAD of a page -- any segments under ``/cluster``, any ``page``/``state``/``start``/
``end`` values, any ``Authorization`` or REST credential header, as any caller -- is answered
completely with an HTML page and a status among 200, 400, 401, 403 and 404 (a request line past
the site's bound is its 414); nothing is logged as a failure; and no generated text ends up in
a page unescaped.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from hypothesis import example, given
from hypothesis import strategies as st

from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from tests.fuzz.fuzzing import failures_logged, fuzz_settings
from tests.fuzz.messages import texts
from tests.fuzz.test_rest_fuzz import Site
from tests.support.http_site import HttpConnection

SITE = Site()
PAGE_NAMES = st.sampled_from(["", "nodes", "apps", "app", "earnings", "login", "cluster", "..", "%2e%2e"])
MARKUP = "<i>x</i>"


def _segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def page_paths(draw: st.DrawFn) -> str:
    segments = [draw(PAGE_NAMES)]
    if segments[0] == "app":
        segments.append(draw(st.sampled_from([SITE.submitted, SITE.new]) | texts(40)))
    segments += draw(st.lists(texts(12), max_size=2))
    query = draw(st.lists(
        st.tuples(st.sampled_from(["page", "state", "start", "end", "then", "x"]),
                  st.sampled_from(["1", "2", "0", "-1", "99999999999", "running", "finished", MARKUP]) | texts(20)),
        max_size=3,
    ))  # fmt: skip
    path = "/cluster/" + "/".join(_segment(s) for s in segments)
    if query:
        path += "?" + "&".join(f"{_segment(k)}={_segment(v)}" for k, v in query)
    return path


def _credentials() -> st.SearchStrategy[dict[str, str]]:
    garbage = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60)
    basic = st.builds(
        lambda user, password: {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()},
        texts(12), st.sampled_from([SITE.callers["alice"][REST_TOKEN_HEADER], SITE.callers["bob"][REST_TOKEN_HEADER]])
        | garbage,
    )  # fmt: skip
    return st.one_of(
        st.just({}),
        basic,
        garbage.map(lambda g: {"Authorization": g}),
        garbage.map(lambda g: {REST_TOKEN_HEADER: g}),
    )


@fuzz_settings(400)
@given(method=st.sampled_from(["GET", "HEAD"]), caller=st.sampled_from(["alice", "bob", "anonymous"]),
       path=page_paths(), headers=_credentials())  # fmt: skip
@example(method="GET", caller="anonymous", path=f"/cluster/apps?state={quote(MARKUP)}", headers={})
@example(method="GET", caller="alice", path=f"/cluster/app/{quote(MARKUP)}", headers={})
def test_every_page_request_is_an_html_answer_and_never_a_server_error(
    method: str, caller: str, path: str, headers: dict[str, str]
) -> None:
    """A complete HTML answer with an expected status and the no-script policy; no logged failure; a
    generated ``<i>`` never appears as markup."""
    SITE.as_caller(caller)
    with failures_logged() as failures:
        connection = HttpConnection(SITE.site)
        connection.send(method, path, b"", headers)
        response = connection.response()
        connection.close()  # one site for every example: its connection limit must not fill
    assert not failures, failures
    assert response is not None, f"{method} {path} got no complete response"
    if len(path) > 8192:  # the site's request line bound refuses it first, in the REST API's JSON form
        assert response.status == 414
        return
    assert response.status in (200, 400, 401, 403, 404), (path, response.status, response.body[:300])
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    if method == "GET":
        assert response.body.startswith(b"<!DOCTYPE html>") and MARKUP.encode() not in response.body
