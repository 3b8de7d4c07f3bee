"""A running container's logs, listed and read through its NodeManager's REST API on a real cluster.

One node (so the AM container runs on the node whose address the RM lists); the AM is a
shell command that writes to its ``stdout`` and ``stderr`` and then waits, so its
application stays up while the test reads the logs with ``requests``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.credentials import rest_headers

pytestmark = pytest.mark.integration

MARKER = "nm-rest-logs-marker"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("nm-rest-logs"), nodes=1) as c:
        yield c


def _submit_waiting_am(cluster: RunningCluster, user: str) -> str:
    """Submit, as ``user`` through the RM's REST API (her credential), an application whose AM prints and then sleeps."""
    rest = f"{cluster.rest}/ws/v1/cluster/apps"
    headers = rest_headers(cluster, user)
    app_id: str = requests.post(f"{rest}/new-application", headers=headers, timeout=30).json()["application-id"]
    # run as bash -c "<command>" by launch_container.sh: no double quotes
    command = f"echo {MARKER}-out > <LOG_DIR>/stdout; echo {MARKER}-err > <LOG_DIR>/stderr; exec sleep 600"
    submission = {
        "application-id": app_id,
        "application-name": "nm-rest-logs",
        "max-app-attempts": 1,
        "resource": {"memory": 256, "vCores": 1},
        "am-container-spec": {"commands": {"command": command}},
    }
    reply = requests.post(rest, json=submission, headers=headers, timeout=30)
    assert reply.status_code == 202, reply.text
    return app_id


def _wait_for(what: str, check: object, timeout_s: float = 120) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()  # type: ignore[operator]
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:g} s"
        time.sleep(0.5)


def test_a_running_containers_logs_are_listed_and_read_through_its_node_manager(cluster: RunningCluster) -> None:
    """The node that runs the AM lists it and its log files at /ws/v1/node/containers[/{id}/logs]
    in YARN's JSON, serves stdout framed as YARN does (noting the container still runs), honours
    size=-N, and refuses a file name that climbs out of the log dir.  The RM shows dora's
    application's attempts to her credential only (401 without one); the node shows them to a view
    ticket the RM signs for her (never to her credential, 401), and erin gets no ticket (403)."""
    app_id = _submit_waiting_am(cluster, "dora")
    rest = f"{cluster.rest}/ws/v1/cluster"
    dora = rest_headers(cluster, "dora")
    try:
        node = requests.get(f"{rest}/nodes", headers=dora, timeout=10).json()["nodes"]["node"][0]
        nm = f"http://{node['nodeHTTPAddress']}/ws/v1/node"
        anonymous = requests.get(f"{rest}/apps/{app_id}/appattempts?user.name=dora", timeout=10)
        assert anonymous.status_code == 401, anonymous.text

        def am_container() -> str:
            reply = requests.get(f"{rest}/apps/{app_id}/appattempts", headers=dora, timeout=10)
            attempts = reply.json()["appAttempts"]["appAttempt"]
            return str(attempts[0]["containerId"]) if attempts else ""

        cid = str(_wait_for("the AM container allocated", am_container))
        # nodes never see dora's credential: the RM signs her a ticket for this node
        asked = requests.post(f"{rest}/cortex/apps/{app_id}/view-ticket", params={"node": node["id"]}, headers=dora, timeout=10)
        assert asked.status_code == 200, asked.text
        view = {"ticket": asked.json()["ticket"]}

        def running_with_output() -> dict[str, object] | None:
            reply = requests.get(f"{nm}/containers/{cid}", params=view, timeout=10)
            if reply.status_code != 200:
                return None
            info: dict[str, object] = reply.json()["container"]
            logs = requests.get(f"{nm}/containerlogs/{cid}/stdout", params=view, timeout=10)
            return info if info["state"] == "RUNNING" and MARKER in logs.text else None

        info = _wait_for(f"{cid} running with its output on {node['id']}", running_with_output)
        assert isinstance(info, dict)
        assert info["user"] == "dora" and info["nodeId"] == node["id"]
        assert {"stdout", "stderr"} <= set(info["containerLogFiles"])  # type: ignore[arg-type]
        assert any(
            c["id"] == cid for c in requests.get(f"{nm}/containers", params=view, timeout=10).json()["containers"]["container"]
        )
        app = requests.get(f"{nm}/apps/{app_id}", params=view, timeout=10).json()["app"]
        assert app["state"] == "RUNNING" and cid in app["containerids"]

        listed = requests.get(f"{nm}/containers/{cid}/logs", params=view, timeout=10).json()["containerLogsInfo"]
        assert listed[0]["logAggregationType"] == "LOCAL" and listed[0]["containerId"] == cid
        files = {f["fileName"]: f for f in listed[0]["containerLogInfo"]}
        assert files["stdout"]["fileSize"] == str(len(f"{MARKER}-out\n"))

        stdout = requests.get(f"{nm}/containerlogs/{cid}/stdout", params=view, timeout=10)
        assert stdout.status_code == 200 and stdout.headers["Content-Type"].startswith("text/plain")
        assert f"Container: {cid} on {node['id']}\nLogAggregationType: LOCAL\n" in stdout.text
        assert (
            "LogType:stdout\n" in stdout.text and f"LogContents:\n{MARKER}-out\nEnd of LogType:stdout." in stdout.text
        )
        assert f"belongs to a running container ({cid})" in stdout.text
        tail = requests.get(f"{nm}/containers/{cid}/logs/stderr?size=-4", params=view, timeout=10)
        assert "LogContents:\nerr\nEnd of LogType:stderr." in tail.text, tail.text

        refused = requests.get(f"{nm}/containerlogs/{cid}/..%2F..%2F..%2Fetc%2Fpasswd", params=view, timeout=10)
        assert refused.status_code == 400
        assert refused.json()["RemoteException"]["exception"] == "BadRequestException"
        missing = requests.get(f"{nm}/containerlogs/{cid}/syslog", params=view, timeout=10)
        assert missing.status_code == 404
        assert missing.json()["RemoteException"]["exception"] == "NotFoundException"

        # without a ticket the node shows nothing (and tells a credential sent to it to stay away);
        # erin gets no ticket for dora's application
        nobody = requests.get(f"{nm}/containerlogs/{cid}/stdout", headers=dora, timeout=10)
        assert nobody.status_code == 401 and MARKER not in nobody.text, nobody.text
        assert "do not send your credential" in nobody.json()["RemoteException"]["message"]
        erin = rest_headers(cluster, "erin")
        refused = requests.post(f"{rest}/cortex/apps/{app_id}/view-ticket", params={"node": node["id"]}, headers=erin, timeout=10)
        assert refused.status_code == 403 and "cannot perform operation VIEW_APP" in refused.text, refused.text
    finally:
        killed = requests.put(f"{rest}/apps/{app_id}/state", json={"state": "KILLED"}, headers=dora, timeout=30)
        assert killed.status_code in (200, 202), killed.text
