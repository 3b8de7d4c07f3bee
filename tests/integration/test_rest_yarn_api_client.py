"""The RM REST API against a real third-party client: PyPI's ``yarn-api-client``.

The site listens on 127.0.0.1 (port 0) in the test's reactor; the client, which is
synchronous (``requests``), runs in a thread (``deferToThread``) while the reactor
serves it.  Every call checks the values the client hands back, not only that it
returned.  The client authenticates as its user does: her RM delegation token in the
``Hadoop-YARN-RM-Delegation-Token`` header, given through its ``auth`` argument.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
import requests
from twisted.internet import defer, threads
from twisted.logger import globalLogPublisher
from yarn_api_client.errors import APIError
from yarn_api_client.resource_manager import ResourceManager

from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.app_model import SchedulerLimits
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn.ids import ApplicationId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.delegation_tokens import from_url_string, to_url_string
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.rest import build_rest_site
from cortex_rm.yarn_api.user_auth import UserAuthenticator

pytestmark = pytest.mark.integration

NODE = NodeId("127.0.0.1", 45454)
VERSION = "0.0.0-test"
ADMIN = "yarn-admin"


class RMDelegationTokenAuth(requests.auth.AuthBase):
    """What a user of the client writes to authenticate: her RM delegation token (as a URL
    string) in the ``Hadoop-YARN-RM-Delegation-Token`` header of every request."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers[REST_TOKEN_HEADER] = self.token
        return request


def the_reactor() -> Any:
    """The reactor pytest-twisted runs (imported late, as only entry points may)."""
    from twisted.internet import reactor

    return reactor


@pytest.fixture(autouse=True)
def no_logged_failures() -> Iterator[None]:
    """Fail the test if the server logs an unhandled error while serving the client."""
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield
    globalLogPublisher.removeObserver(observe)
    assert not failures, [e["log_failure"].getTraceback() for e in failures]


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL nobody listens on (bound, not listening: connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest_twisted.async_yield_fixture
async def rm_web() -> Any:
    """An RM (memory state store, one 8 GiB/8-core node) with its web site on 127.0.0.1:<free port>,
    checking callers' RM delegation tokens (``ADMIN`` is the cluster's admin); and a function that
    issues a user's token, as the header's value."""
    reactor = the_reactor()
    now_ms = int(reactor.seconds() * 1000)
    store = MemoryStateStore()
    apps = await ApplicationTable.recover(reactor, store, QueueTree(), SchedulerLimits())
    nodes = NodeTable()
    nodes.register(NODE, "127.0.0.1:8042", Resource(8192, 8), now_ms)
    rm = RMContext(reactor, apps, nodes, now_ms)
    credentials = UserCredentials(MasterKey.generate(1), store, StoredState(), lambda: int(reactor.seconds() * 1000))
    auth = UserAuthenticator(credentials)

    async def token_of(user: str) -> str:
        ident = await credentials.issue(user)
        [(_, rm_token), _] = auth.tokens_for(ident, "127.0.0.1:8032", "127.0.0.1:8088")
        return to_url_string(rm_token)

    site = build_rest_site(rm, version=VERSION, auth=auth, access=AppAccess([ADMIN]))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield rm, f"http://127.0.0.1:{port.getHost().port}", token_of
    await port.stopListening()


def in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
    return threads.deferToThread(call, *args, **kwargs)


def spark_like_body(app_id: str) -> dict[str, Any]:
    """A submission like a client would build: jar and archive resources, env, one command, ACLs, tags."""
    return {
        "application-id": app_id,
        "application-name": "pi-estimator",
        "queue": "default",
        "application-type": "SPARK",
        "application-tags": {"tag": ["nightly", "team-data"]},
        "max-app-attempts": 1,
        "resource": {"memory": 2048, "vCores": 2},
        "am-container-spec": {
            "local-resources": {
                "entry": [
                    {
                        "key": "__app__.jar",
                        "value": {
                            "resource": "hdfs://namenode:8020/user/alice/.sparkStaging/app/pi.jar",
                            "type": "FILE",
                            "visibility": "APPLICATION",
                            "size": 123456,
                            "timestamp": 1700000000123,
                        },
                    },
                    {
                        "key": "__spark_libs__",
                        "value": {
                            "resource": "hdfs://namenode:8020/user/alice/.sparkStaging/app/libs.zip",
                            "type": "ARCHIVE",
                            "visibility": "PRIVATE",
                            "size": 9876543,
                            "timestamp": 1700000000456,
                        },
                    },
                ]
            },
            "environment": {
                "entry": [
                    {"key": "CLASSPATH", "value": "{{PWD}}<CPS>{{PWD}}/__spark_libs__/*"},
                    {"key": "SPARK_USER", "value": "alice"},
                ]
            },
            "commands": {
                "command": "{{JAVA_HOME}}/bin/java -server -Xmx1024m org.apache.spark.deploy.yarn.ApplicationMaster "
                "--class org.apache.spark.examples.SparkPi 1><LOG_DIR>/stdout 2><LOG_DIR>/stderr"
            },
            "application-acls": {"entry": [{"key": "VIEW_APP", "value": "alice,bob"}]},
        },
    }


@pytest_twisted.ensureDeferred
async def test_yarn_api_client_reads_the_cluster_and_runs_an_application_through_its_life(
    rm_web: Any, refused_url: str
) -> None:
    """The real client, authenticated as alice, finds the active RM, reads cluster/metrics/scheduler/nodes,
    creates, submits, lists, inspects and kills an application (kill repeated until done), and gets YARN's
    errors for unknown ids."""
    rm, url, token_of = rm_web
    alice = RMDelegationTokenAuth(await token_of("alice"))
    client: ResourceManager = await in_thread(
        ResourceManager, service_endpoints=[refused_url, url], timeout=10, auth=alice
    )
    assert client.get_active_endpoint() == url  # the refused RM is skipped by the /cluster probe

    info = (await in_thread(client.cluster_information)).data["clusterInfo"]
    assert info["id"] == rm.cluster_id and info["state"] == "STARTED" and info["haState"] == "ACTIVE"
    assert info["resourceManagerVersion"] == VERSION

    metrics = (await in_thread(client.cluster_metrics)).data["clusterMetrics"]
    assert (metrics["totalMB"], metrics["totalVirtualCores"], metrics["activeNodes"], metrics["appsSubmitted"]) == (
        8192, 8, 1, 0,
    )  # fmt: skip

    scheduler = (await in_thread(client.cluster_scheduler)).data["scheduler"]["schedulerInfo"]
    assert scheduler["type"] == "capacityScheduler"
    assert [q["queueName"] for q in scheduler["queues"]["queue"]] == ["default"]

    nodes = (await in_thread(client.cluster_nodes, states=["RUNNING"])).data["nodes"]["node"]
    assert [(n["id"], n["state"], n["availMemoryMB"]) for n in nodes] == [("127.0.0.1:45454", "RUNNING", 8192)]
    node = (await in_thread(client.cluster_node, "127.0.0.1:45454")).data["node"]
    assert node["nodeHTTPAddress"] == "127.0.0.1:8042" and node["availableVirtualCores"] == 8

    assert (await in_thread(client.cluster_applications)).data == {"apps": {"app": []}}

    new = (await in_thread(client.cluster_new_application)).data
    app_id = new["application-id"]
    assert app_id == f"application_{rm.cluster_id}_0001"
    assert new["maximum-resource-capability"]["memory"] == 8192

    submitted = await in_thread(client.cluster_submit_application, spark_like_body(app_id))
    assert submitted.data == {}  # 202 with an empty body
    stored = rm.apps.get(ApplicationId.parse(app_id))
    assert (stored.user, stored.app_type, stored.am_resource) == ("alice", "SPARK", Resource(2048, 2))

    app = (await in_thread(client.cluster_application, app_id)).data["app"]
    assert (app["id"], app["name"], app["state"], app["finalStatus"], app["queue"]) == (
        app_id, "pi-estimator", "ACCEPTED", "UNDEFINED", "default",
    )  # fmt: skip
    assert app["applicationTags"] == "nightly,team-data" and app["clusterId"] == rm.cluster_id

    listed = (await in_thread(client.cluster_applications, states=["ACCEPTED"], application_types=["spark"]))
    assert [a["id"] for a in listed.data["apps"]["app"]] == [app_id]
    none = await in_thread(client.cluster_applications, states=["RUNNING"], user="alice")
    assert none.data["apps"]["app"] == []
    tagged = await in_thread(client.cluster_applications, application_tags=["nightly"], limit=5, name="pi-estimator")
    assert len(tagged.data["apps"]["app"]) == 1

    assert (await in_thread(client.cluster_application_state, app_id)).data == {"state": "ACCEPTED"}
    attempts = (await in_thread(client.cluster_application_attempts, app_id)).data["appAttempts"]["appAttempt"]
    assert [(a["id"], a["appAttemptId"]) for a in attempts] == [(1, f"appattempt_{rm.cluster_id}_0001_000001")]

    first_kill = await in_thread(client.cluster_application_kill, app_id)
    assert first_kill.data == {"state": "KILLED"}  # 202: the memory store finishes the kill at once
    repeated = await in_thread(client.cluster_application_kill, app_id)
    assert repeated.data == {"state": "KILLED"}  # 200
    killed = (await in_thread(client.cluster_application, app_id)).data["app"]
    assert (killed["state"], killed["finalStatus"]) == ("KILLED", "KILLED") and killed["finishedTime"] > 0
    assert (await in_thread(client.cluster_application_state, app_id)).data == {"state": "KILLED"}
    metrics = (await in_thread(client.cluster_metrics)).data["clusterMetrics"]
    assert (metrics["appsSubmitted"], metrics["appsKilled"], metrics["appsCompleted"]) == (1, 1, 0)

    unknown = f"application_{rm.cluster_id}_0999"
    with pytest.raises(APIError, match="status: 404.*NotFoundException"):
        await in_thread(client.cluster_application, unknown)
    with pytest.raises(APIError, match="status: 404.*NotFoundException"):
        await in_thread(client.cluster_node, "10.1.2.3:1")
    with pytest.raises(APIError, match="status: 400.*BadRequestException"):
        await in_thread(client.cluster_submit_application, {"application-id": "not-an-id"})


@pytest_twisted.ensureDeferred
async def test_yarn_api_client_without_a_credential_or_as_another_user_is_refused(rm_web: Any) -> None:
    """Without a token the client reads the cluster's info and metrics only (401 AuthorizationException
    elsewhere, a ``user.name`` changes nothing); with a forged one nothing (401); bob, whom the
    submission's VIEW_APP ACL names, sees alice's application but may not kill it, carol neither sees
    nor kills it (403 ForbiddenException); the admin sees and kills it."""
    rm, url, token_of = rm_web

    async def client_of(token: str | None) -> ResourceManager:
        auth = RMDelegationTokenAuth(token) if token is not None else None
        client: ResourceManager = await in_thread(ResourceManager, service_endpoints=[url], timeout=10, auth=auth)
        return client

    alice = await client_of(await token_of("alice"))
    app_id = (await in_thread(alice.cluster_new_application)).data["application-id"]
    await in_thread(alice.cluster_submit_application, spark_like_body(app_id))

    anonymous = await client_of(None)
    assert (await in_thread(anonymous.cluster_information)).data["clusterInfo"]["id"] == rm.cluster_id
    assert (await in_thread(anonymous.cluster_metrics)).data["clusterMetrics"]["appsSubmitted"] == 1
    with pytest.raises(APIError, match="status: 401.*AuthorizationException"):
        await in_thread(anonymous.cluster_applications)
    with pytest.raises(APIError, match="status: 401.*AuthorizationException"):
        await in_thread(anonymous.cluster_application_kill, app_id)
    with pytest.raises(APIError, match="status: 401.*AuthorizationException"):
        await in_thread(anonymous.cluster_new_application)
    claimed = await in_thread(requests.get, f"{url}/ws/v1/cluster/apps?user.name=alice", timeout=10)
    assert claimed.status_code == 401, claimed.text

    bob_token = await token_of("bob")
    real = from_url_string(bob_token)
    wrong_password = bytes(b ^ 0x5A for b in real.password)
    forger = await client_of(
        to_url_string(TokenProto(identifier=real.identifier, password=wrong_password, kind=real.kind, service=real.service))
    )
    with pytest.raises(APIError, match="status: 401.*AuthorizationException.*wrong password"):
        await in_thread(forger.cluster_applications)

    bob = await client_of(bob_token)  # named by the submission's VIEW_APP ACL: he sees it, may not kill it
    assert [a["id"] for a in (await in_thread(bob.cluster_applications)).data["apps"]["app"]] == [app_id]
    with pytest.raises(APIError, match="status: 403.*ForbiddenException"):
        await in_thread(bob.cluster_application_kill, app_id)
    carol = await client_of(await token_of("carol"))  # named nowhere: neither
    assert (await in_thread(carol.cluster_applications)).data == {"apps": {"app": []}}
    with pytest.raises(APIError, match="status: 403.*ForbiddenException"):
        await in_thread(carol.cluster_application, app_id)
    with pytest.raises(APIError, match="status: 403.*ForbiddenException"):
        await in_thread(carol.cluster_application_kill, app_id)
    assert (await in_thread(alice.cluster_application_state, app_id)).data == {"state": "ACCEPTED"}

    admin = await client_of(await token_of(ADMIN))
    assert [a["id"] for a in (await in_thread(admin.cluster_applications)).data["apps"]["app"]] == [app_id]
    assert (await in_thread(admin.cluster_application_kill, app_id)).data == {"state": "KILLED"}
