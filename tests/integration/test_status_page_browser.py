"""The RM's status page in a real browser: Debian's Chromium, headless, against a local cluster running a job.

A two-node local cluster (real daemons on loopback) runs one application over the REST API
whose AM container sleeps, so it stays in progress.  Chromium opens the pages as a person
would -- signing in with HTTP Basic (the credential's REST value as the password, here in
the URL, which Chromium answers the page's challenge with) -- and the test reads the DOM it
built: the nodes with their class, the application in progress.  A screenshot of the signed-in
overview is written under the test's tmp dir and copied to pytest's basetemp; its path is
printed, so it is in the test's output (``pytest -s`` or the captured stdout of a failure).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.chromium import dump_dom, screenshot
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.credentials import credential, rest_headers

pytestmark = pytest.mark.integration

USER = "erin"
APP_NAME = "status-page-sleeper"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("status-page"), nodes=2) as c:
        yield c


def _submit_sleeper(cluster: RunningCluster) -> str:
    """Submit, as ``USER`` over REST, an application whose AM container only sleeps (it stays in progress)."""
    rest = f"{cluster.rest}/ws/v1/cluster/apps"
    headers = rest_headers(cluster, USER)
    app_id: str = requests.post(f"{rest}/new-application", headers=headers, timeout=30).json()["application-id"]
    submission = {
        "application-id": app_id,
        "application-name": APP_NAME,
        "max-app-attempts": 1,
        "resource": {"memory": 256, "vCores": 1},
        "am-container-spec": {"commands": {"command": "exec sleep 600"}},
    }
    reply = requests.post(rest, json=submission, headers=headers, timeout=30)
    assert reply.status_code == 202, reply.text
    return app_id


def _wait_for_am_container(cluster: RunningCluster, app_id: str, timeout_s: float = 120) -> dict:
    """The application's report once its AM container is on a node (its attempt names the node)."""
    headers = rest_headers(cluster, USER)
    deadline = time.monotonic() + timeout_s
    while True:
        attempts = requests.get(f"{cluster.rest}/ws/v1/cluster/apps/{app_id}/appattempts", headers=headers, timeout=30)
        found = attempts.json()["appAttempts"]["appAttempt"] if attempts.ok else []
        if found and found[0].get("nodeId"):
            app: dict = requests.get(f"{cluster.rest}/ws/v1/cluster/apps/{app_id}", headers=headers, timeout=30).json()
            return app["app"]
        assert time.monotonic() < deadline, f"{app_id}'s AM container was not placed within {timeout_s:g} s"
        time.sleep(0.5)


def _signed_in(cluster: RunningCluster, path: str) -> str:
    """``path`` on the RM's web port with ``USER``'s credential in the URL (Chromium answers Basic with it)."""
    host = cluster.rm.webapp
    return f"http://{USER}:{credential(cluster, USER).rest_header()}@{host}{path}"


def test_the_status_page_in_chromium_shows_the_nodes_with_their_class_and_the_application_in_progress(
    cluster: RunningCluster, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Against a cluster running a job: signed in, the overview and the nodes page list both nodes with their
    class (as the REST API labels them), the applications page and the overview list the application in
    progress with its state, and the application's page its attempt; anonymous, the overview shows the
    cluster's figures but neither the application nor the nodes, and says how to sign in; the events page
    lists the user's (no) functions and activations (the RM's node takes them).  Each node's own /node page shows its ring view (the other node alive)
    and, on the AM's node only, one RUNNING container, naming neither application nor user.  Screenshots
    of the signed-in overview and of the AM node's page are PNGs whose paths are printed."""
    app_id = _submit_sleeper(cluster)
    report = _wait_for_am_container(cluster, app_id)
    nodes = requests.get(f"{cluster.rest}/ws/v1/cluster/nodes", headers=rest_headers(cluster, USER), timeout=30)
    classes = {n["id"]: n["nodeLabels"] for n in nodes.json()["nodes"]["node"]}
    assert len(classes) == 2 and all(len(labels) == 1 for labels in classes.values()), classes

    profile = tmp_path / "chromium-profile"
    overview = dump_dom(_signed_in(cluster, "/cluster/login"), profile)
    node_page = dump_dom(_signed_in(cluster, "/cluster/nodes"), profile)
    for page in (overview, node_page):
        assert f"Signed in as <b>{USER}</b>" in page
        for node_id, [label] in classes.items():
            assert f">{node_id}</a></td><td>{label}</td><td>RUNNING</td>" in page, (node_id, label)
    apps_page = dump_dom(_signed_in(cluster, "/cluster/apps?state=running"), profile)
    for page in (overview, apps_page):
        assert f'<a href="/cluster/app/{app_id}">{app_id}</a></td><td>{APP_NAME}</td><td>{USER}</td>' in page
        assert f"<td>{report['state']}</td>" in page
    app_page = dump_dom(_signed_in(cluster, f"/cluster/app/{app_id}"), profile)
    assert f"appattempt_{app_id.removeprefix('application_')}_000001" in app_page and APP_NAME in app_page

    anonymous = dump_dom(f"http://{cluster.rm.webapp}/cluster/", tmp_path / "anonymous-profile")
    assert "Cluster metrics" in anonymous and "sign in" in anonymous
    assert APP_NAME not in anonymous and not any(node_id in anonymous for node_id in classes)

    events = dump_dom(_signed_in(cluster, "/cluster/events"), profile)
    assert "Your functions" in events and "no functions" in events
    assert "takes no activations" not in events  # the RM's node's gateway, given when the RM became active

    # every node's own page: its containers by state (the AM's node holds one RUNNING) and its ring view
    [am_node] = [a["nodeId"] for a in requests.get(
        f"{cluster.rest}/ws/v1/cluster/apps/{app_id}/appattempts", headers=rest_headers(cluster, USER), timeout=30
    ).json()["appAttempts"]["appAttempt"]]  # fmt: skip
    web_of = {n["id"]: n["nodeHTTPAddress"] for n in nodes.json()["nodes"]["node"]}
    for node_id, web in web_of.items():
        node_page = dump_dom(f"http://{web}/node", tmp_path / "node-profile")
        assert "<title>Node node" in node_page and "<h2>Ring</h2>" in node_page and web.split(":")[0] in node_page
        assert "Members alive / suspect / dead / left</th><td>1 / 0 / 0 / 0" in node_page  # the other node
        assert ("<tr><td>RUNNING</td><td>1</td></tr>" in node_page) == (node_id == am_node), node_id
        assert APP_NAME not in node_page and USER not in node_page

    shots = {
        "status-page.png": _signed_in(cluster, "/cluster/login"),
        "node-page.png": f"http://{web_of[am_node]}/node",
    }
    for name, url in shots.items():
        kept = screenshot(url, tmp_path / name, profile, keep=tmp_path_factory.getbasetemp())
        assert len(kept.read_bytes()) > 10_000
