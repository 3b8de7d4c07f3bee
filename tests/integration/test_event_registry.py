"""The function registry on a real local cluster: the RM's REST API with users' real credentials,
the code uploaded with WebHDFS as the user, the registration read back from the ring by a member
of its own, and a node's tracker calls over mutual TLS.

How the ring is read: the test joins the cluster's ring with an in-process ``RingService`` (a
fresh key; the cluster runs with the tests' small key and work puzzles) and ``get``s
``function_key(name)``: the record must be the RM's (its writer the ring id in ``[ring]
resource_managers``, its signature checked with ``ring_trust``) and hold the registration the
REST API answered.  That record is what a node presents to ``openFunctionCode``, through a real
``TrackerClient`` registered as a NodeManager with a key of its own.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import requests
from twisted.internet import task, threads

from cortex_rm import local_cluster
from cortex_rm.config import load_config
from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_trust import KeyTrust, key_id
from cortex_rm.events.functions import SCHEDULES_KEY, FunctionSpec, function_key
from cortex_rm.events.registry import UnknownRegistration
from cortex_rm.events.request_proofs import SignedRequest, entry_key, parse, sign, window
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.events.signatures import Verifier
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.internal.tracker_client import TrackerClient
from cortex_rm.roles.ring_service import RingService
from cortex_rm.user_credential import revoke_user
from cortex_rm.webhdfs_client import WebHdfs, upload_when_ready
from cortex_rm.yarn.delegation import InvalidToken
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import NodeRegistration
from cortex_rm.yarn.resources import Resource
from tests.support.cluster import RunningCluster, running_cluster, start_cluster
from tests.support.credentials import credential, rest_headers
from tests.support.reactor import reactor
from tests.support.ring_daemons import TEST_KEY_BITS, TEST_WORK_BITS

pytestmark = pytest.mark.integration

FUNCTIONS = "/ws/v1/cortex/events/functions"
RING = ("key_bits = 8", "work_bits = 16")
HANDLER = b"def handler(event, context):\n    return {'hello': event}\n"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("events-registry"), nodes=2, ring_settings=RING) as c:
        yield c


@pytest.fixture(scope="module")
def code(cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """alice's handler, uploaded as she would (WebHDFS, her credential) where the client puts it."""
    local = tmp_path_factory.mktemp("code") / "hello.py"
    local.write_bytes(HANDLER)
    fs = WebHdfs(cluster.rm.webapp, credential(cluster, "alice").webhdfs_delegation())
    path = f"{fs.home()}/.cortex/functions/hello/{hashlib.sha256(HANDLER).hexdigest()[:16]}-hello.py"
    fs.mkdirs(path.rsplit("/", 1)[0], "755")
    upload_when_ready(fs, path, local, "644", lambda _: None, wait_s=WAIT_S)
    return path


def call(cluster: RunningCluster, method: str, path: str, user: str, body: Any = None) -> requests.Response:
    headers = rest_headers(cluster, user)
    return requests.request(method, f"{cluster.rest}{path}", json=body, headers=headers, timeout=30, allow_redirects=False)


def test_register_again_refuse_get_list_and_delete(cluster: RunningCluster, code: str) -> None:
    created = call(cluster, "POST", f"{FUNCTIONS}/hello", "alice", {"code": {"path": code}})
    assert created.status_code == 200, created.text
    first = created.json()["function"]
    assert (first["owner"], first["version"], first["code"]["path"]) == ("alice", 1, code)
    assert (first["code"]["length"], first["code"]["kind"]) == (len(HANDLER), "python")
    second = call(cluster, "POST", f"{FUNCTIONS}/hello", "alice", {"code": {"path": code}, "replicas": 2})
    second = second.json()["function"]
    assert (second["version"], second["replicas"]) == (2, 2)
    refused = call(cluster, "POST", f"{FUNCTIONS}/hello", "bob", {"code": {"path": code}})
    assert refused.status_code == 403 and refused.json()["RemoteException"]["exception"] == "AccessControlException"
    assert call(cluster, "GET", f"{FUNCTIONS}/hello", "bob").status_code == 403
    assert call(cluster, "GET", f"{FUNCTIONS}/hello", "alice").json() == {"function": second}
    assert [f["name"] for f in call(cluster, "GET", FUNCTIONS, "alice").json()["functions"]] == ["hello"]
    assert call(cluster, "GET", FUNCTIONS, "bob").json() == {"functions": []}
    missing = call(cluster, "POST", f"{FUNCTIONS}/other", "alice", {"code": {"path": code + ".missing.py"}})
    assert missing.status_code == 400 and missing.json()["RemoteException"]["exception"] == "FileNotFoundException"
    assert call(cluster, "DELETE", f"{FUNCTIONS}/hello", "bob").status_code == 403
    deleted = call(cluster, "DELETE", f"{FUNCTIONS}/hello", "alice")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "hello", "version": 2}
    assert call(cluster, "GET", f"{FUNCTIONS}/hello", "alice").status_code == 404
    taken = call(cluster, "POST", f"{FUNCTIONS}/hello", "bob", {"code": {"path": code}})  # (the file is 644)
    assert taken.status_code == 200, taken.text
    bobs = taken.json()["function"]
    assert (bobs["owner"], bobs["version"]) == ("bob", 4)  # after the tombstone's 3


async def _joined_member(cluster: RunningCluster, state_dir: Path) -> RingService:
    node1 = load_config(cluster.workdir / "node1" / "cortex.toml")
    ring = RingService(
        NodeIdentity.generate(key_bits=TEST_KEY_BITS), RingConfig(work_bits=TEST_WORK_BITS, key_bits=TEST_KEY_BITS),
        reactor(), state_dir, listen_host="127.0.0.1", advertise_host="127.0.0.1", port=0,
        introducers=[str(node1.ring.address)],
    )  # fmt: skip
    await ring.start()
    await ring.joined()
    waited = 0.0
    while not (ring.view().state is RingState.MEMBER and ring.view().predecessor is not None):
        assert waited < WAIT_S, "the test's ring member did not settle"
        await task.deferLater(reactor(), 0.1, lambda: None)
        waited += 0.1
    return ring


async def _record(ring: RingService, key: str, wanted: Any) -> Record:
    """The record under ``key`` once ``wanted(record)`` holds (the put precedes the REST answer; a get
    racing a join may miss it once)."""
    for _ in range(int(WAIT_S * 2)):
        try:
            record = await ring.get(key)
        except Exception:
            record = None
        if record is not None and wanted(record):
            return record
        await task.deferLater(reactor(), 0.5, lambda: None)
    raise AssertionError(f"the ring never held the wanted record under {key}")


@pytest_twisted.ensureDeferred
async def test_the_ring_holds_the_rms_record_and_a_node_fetches_the_code_with_it(
    cluster: RunningCluster, code: str, tmp_path: Path
) -> None:
    body = {"code": {"path": code}, "schedule": "every 1m"}
    answer = await threads.deferToThread(call, cluster, "POST", f"{FUNCTIONS}/ringed", "alice", body)
    assert answer.status_code == 200, answer.text
    spec = FunctionSpec.from_json(answer.json()["function"])
    node1 = load_config(cluster.workdir / "node1" / "cortex.toml")
    [rm_ring_id] = [int(r, 16) for r in node1.ring.resource_managers]
    ring = await _joined_member(cluster, tmp_path / "member")
    identity = NodeIdentity.generate()
    tracker = await TrackerClient.connect(
        reactor(), node1.resourcemanager.tracker_address.host, node1.resourcemanager.tracker_address.port,
        MutualTLS(identity), 30.0,
    )  # fmt: skip
    try:
        record = await _record(ring, function_key("ringed"), lambda r: FunctionSpec.decode(r.value) == spec)
        assert record.writer == rm_ring_id
        assert KeyTrust(identity.key, 0, 0, 0).record_error(record) is None
        schedules = await _record(ring, SCHEDULES_KEY, lambda r: b'"ringed"' in r.value)
        assert schedules.writer == rm_ring_id

        node = NodeId("127.0.0.1", 1)  # a NodeManager that runs nothing: only its tracker calls
        await tracker.register(NodeRegistration(node, "127.0.0.1:2", "/default-rack", Resource(1024, 1), 1000))
        source = await tracker.open_function_code(node, record)
        assert (source.length, source.modification_time_ms) == (spec.code_length, spec.code_mtime_ms)
        length, located = await tracker.locate_blocks(node, source.ticket, 0, -1)
        assert length == len(HANDLER) and located  # the ticket opens the file as alice
        web = "127.0.0.1:2"  # the web address it registered: users' requests to it name it as their Host

        def shown(token: TokenProto, host: str = web) -> SignedRequest:
            now_ms = int(time.time() * 1000)
            header = sign(token.identifier, token.password, identity.ring_id, "POST", host, "/t", b"{}", now_ms)
            return SignedRequest.of("POST", host, "/t", b"{}", parse(header))

        alice = credential(cluster, "alice").rm
        request = shown(alice)
        asserted = await tracker.caller_key(node, request)  # the RM's word, for this connection's ring key
        assert asserted.entry_key == entry_key(alice.password, identity.ring_id, window(request.proof.time_ms))
        asserted_by = asserted.assertion
        assert (asserted_by.user, asserted_by.audience, key_id(asserted_by.signer_key)) == (
            "alice", identity.ring_id, rm_ring_id,
        )  # fmt: skip
        now_ms = int(time.time() * 1000)
        assert Verifier().caller_error(asserted_by, identity.ring_id, frozenset({rm_ring_id}), now_ms) is None
        with pytest.raises(InvalidToken, match="not to the node's 127.0.0.1:2"):
            await tracker.caller_key(node, shown(alice, str(cluster.rm.webapp)))  # a proof for the RM's address
        mallory = credential(cluster, "mallory").rm
        assert (await tracker.caller_key(node, shown(mallory))).assertion.user == "mallory"
        admin = local_cluster.admin_credential(cluster.workdir)
        await threads.deferToThread(revoke_user, cluster.rm.webapp, admin, "mallory")
        with pytest.raises(InvalidToken, match="revoked"):
            await tracker.caller_key(node, shown(mallory))

        gone = await threads.deferToThread(call, cluster, "DELETE", f"{FUNCTIONS}/ringed", "alice")
        assert gone.status_code == 200
        tombstone = await _record(ring, function_key("ringed"), lambda r: FunctionSpec.decode(r.value).deleted)
        assert FunctionSpec.decode(tombstone.value).version == spec.version + 1
        with pytest.raises(UnknownRegistration, match="was deleted"):
            await tracker.open_function_code(node, record)
    finally:
        tracker.abort()
        await ring.stop(graceful=True)


def test_the_registry_survives_a_restart_of_the_rm(cluster: RunningCluster, code: str) -> None:
    """Registered, then the cluster stopped and started on the same work dir: still there, and the
    next registration is the next version.  (The last test of the module: the cluster's ports change.)"""
    assert call(cluster, "POST", f"{FUNCTIONS}/durable", "alice", {"code": {"path": code}}).status_code == 200
    local_cluster.down(cluster.workdir, say=lambda _: None)
    restarted = start_cluster(cluster.workdir, 2, ring_settings=RING)
    kept = call(restarted, "GET", f"{FUNCTIONS}/durable", "alice")
    assert kept.status_code == 200 and kept.json()["function"]["version"] == 1
    again = call(restarted, "POST", f"{FUNCTIONS}/durable", "alice", {"code": {"path": code}})
    assert again.json()["function"]["version"] == 2
