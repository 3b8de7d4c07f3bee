"""A real Cortex daemon under a stream of broken input keeps serving and loses nothing.

Malformed IPC frames (truncated, oversized, garbage protobuf, calls before the
context, unknown protocols and methods, HTTP on the RPC port), malformed HTTP on
the web ports (over-long request lines and headers, unknown methods, garbage, a
Content-Length beyond the limit) and malformed REST bodies are thrown at a running
RM, interleaved with calls from Hadoop's own YarnClient; afterwards the daemon is
alive, every application is as it was, and new work is accepted.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator

import pytest
import requests

from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from tests.support import ipc_frames as f
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import YarnClientDriver

pytestmark = pytest.mark.integration

ACP = "org.apache.hadoop.yarn.api.ApplicationClientProtocolPB"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("bad-input"), nodes=1) as c:
        yield c


def _exchange(address: HostPort, payload: bytes, expect: str) -> bytes:
    """Send ``payload`` on a fresh connection.

    ``expect`` says what the server owes: ``"reply"`` one response frame (the
    connection stays open, as Hadoop's does after an ERROR), ``"close"`` whatever it
    writes before closing the connection, ``"nothing"`` nothing (an incomplete frame
    keeps the server waiting; the test hangs up).
    """
    with socket.create_connection((address.host, address.port), timeout=30) as s:
        s.sendall(payload)
        if expect == "nothing":
            return b""
        data = b""
        while True:
            if expect == "reply" and len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
                return data
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def _hostile_payloads() -> list[tuple[str, bytes, str]]:
    good_start = f.preamble() + f.context_frame(ACP)
    return [
        ("truncated preamble", b"hrp", "nothing"),
        ("wrong magic", b"xxxx\x09\x00\x00", "close"),
        ("wrong version", f.preamble(version=7), "close"),
        ("http on the rpc port", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "close"),
        ("oversized frame", f.preamble() + struct.pack(">I", 0x7FFFFFF0) + b"\x00" * 64, "close"),
        ("truncated frame", f.preamble() + struct.pack(">I", 1000) + b"\x01\x02\x03", "nothing"),
        ("garbage header", f.preamble() + f.frame(b"\xff" * 40), "close"),
        ("call before context", f.preamble() + f.call_frame(0, "getNewApplication", ACP), "close"),
        ("unknown protocol", f.preamble() + f.context_frame("org.example.NoSuchProtocolPB"), "close"),
        ("unknown method", good_start + f.call_frame(0, "launchMissiles", ACP), "reply"),
        ("unsupported method", good_start + f.call_frame(0, "getDelegationToken", ACP), "reply"),
        ("garbage request body", good_start + f.call_frame(0, "getApplicationReport", ACP, b"\xff\xff\xff\xff"), "close"),
        ("random bytes", bytes(range(256)) * 8, "close"),
    ]


# Marks the bytes of refused HTTP requests: none of them may reach the daemon's log.
MARK = b"\x1b[31mHOSTILE\x00"


def _hostile_http() -> list[tuple[str, bytes, int, int]]:
    """(name, bytes sent, status the RM's web port answers, the node's) for what no polite client
    sends; every answer is JSON and ends the connection."""
    return [
        ("request line too long", b"GET /ws/v1/cluster/info?" + MARK.hex().encode() * 1000 + b" HTTP/1.1\r\n\r\n", 414, 414),
        ("endless header", b"GET / HTTP/1.1\r\nX-Mark: " + MARK.hex().encode() * 2000, 431, 431),
        ("too many headers", b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n", 431, 431),
        ("put on the overview page", b"PUT / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 405, 404),
        ("unknown method", b"BREW / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 501, 404),
        ("garbage", MARK + b" / \xff\xfe\r\n\r\n", 400, 400),
        ("nul in a header", b"GET / HTTP/1.1\r\nX-Mark: " + MARK + b"\r\n\r\n", 400, 400),
        ("huge content-length", b"POST /ws/v1/cluster/apps HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413, 413),
    ]


def _assert_json_refusal(name: str, answer: bytes, status: int) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), (name, answer[:200])
    assert b"Connection: close" in head, name
    assert set(json.loads(body)["RemoteException"]) == {"exception", "javaClassName", "message"}, name


def test_hostile_ipc_and_rest_input_leaves_the_rm_serving_with_its_state(cluster: RunningCluster) -> None:
    """Every hostile payload is answered or dropped per connection; the RM and its apps carry on."""
    yarn = YarnClientDriver(cluster.conf_dir)
    # The AM container really runs on the node (and never registers): wait until it is
    # launched, so that what the report shows stays put during the storm.
    app_id = yarn.run("submit", "before-the-storm", "default", "--am-command", "sleep 600")["applicationId"]
    deadline = time.monotonic() + 60
    while (before := yarn.run("report", app_id))["launchTime"] == 0:
        assert time.monotonic() < deadline, before
        time.sleep(0.2)

    answers = {}
    node_web = HostPort.parse(cluster.nodes[0].nm_webapp)
    for _round in range(5):
        for name, payload, expect in _hostile_payloads():
            answers[name] = _exchange(cluster.rm.client, payload, expect)
        for name, payload, rm_status, node_status in _hostile_http():
            _assert_json_refusal(name, _exchange(cluster.rm.webapp, payload, "close"), rm_status)
            _assert_json_refusal(f"node: {name}", _exchange(node_web, payload, "close"), node_status)
    # A few of them have a well-defined answer in Hadoop's own form.
    assert answers["http on the rpc port"].startswith(b"HTTP/1.1 404")
    unknown_method = f.parse_responses(answers["unknown method"])
    assert unknown_method[0].exception_class == "org.apache.hadoop.ipc.RpcNoSuchMethodException"
    unsupported = f.parse_responses(answers["unsupported method"])
    assert unsupported[0].exception_class == "org.apache.hadoop.yarn.exceptions.YarnException"
    assert f.parse_responses(answers["wrong version"])[0].exception_class == "org.apache.hadoop.ipc.RPC$VersionMismatch"

    for body in (b"{", b"[]", b'{"application-id": 5}', b"\xff\xfe", b"{" * 10000):
        headers = {"Content-Type": "application/json", **cluster.rest_headers()}
        r = requests.post(f"{cluster.rest}/ws/v1/cluster/apps", data=body, headers=headers, timeout=10)
        assert r.status_code == 400, (body[:20], r.status_code, r.text[:200])
        assert "RemoteException" in r.json()
    r = requests.put(
        f"{cluster.rest}/ws/v1/cluster/apps/{app_id}/state", data=b"not json", headers=cluster.rest_headers(), timeout=10
    )
    assert r.status_code == 400

    # A well-formed raw call on a fresh connection still gets its answer (SIMPLE is anonymous:
    # the cluster's metrics, and an AccessControlException for anything that changes state)...
    hello = f.preamble() + f.context_frame(ACP)
    metrics = ys.GetClusterMetricsRequestProto()
    ok = f.parse_responses(_exchange(cluster.rm.client, hello + f.call_frame(7, "getClusterMetrics", ACP, metrics), "reply"))
    assert ok[0].call_id == 7 and ok[0].exception_class == ""
    new_app = ys.GetNewApplicationRequestProto()
    refused = f.parse_responses(_exchange(cluster.rm.client, hello + f.call_frame(8, "getNewApplication", ACP, new_app), "reply"))
    assert refused[0].exception_class == "org.apache.hadoop.security.AccessControlException"
    # ...and the real client finds everything as it was.
    assert yarn.run("report", app_id) == before
    assert yarn.run("submit", "after-the-storm", "default")["applicationId"] > app_id
    assert "Traceback" not in cluster.daemon_log()
    # The web refusals are logged as a summary per interval, with nothing the clients sent.
    deadline = time.monotonic() + 30
    while "RM web: refused" not in (log := cluster.daemon_log()):
        assert time.monotonic() < deadline, "no summary of the refused HTTP requests in the log"
        time.sleep(0.5)
    assert "HOSTILE" not in log and MARK.hex() not in log and "\x00" not in log
