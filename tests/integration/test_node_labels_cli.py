"""Hadoop's own NodeCLI and ClusterCLI see the nodes' classes as YARN node labels.

An RM runs in this process on the test's reactor: the real scheduling service, node
tracker and ApplicationClientProtocol port (SASL with a user's RM delegation token) on
127.0.0.1.  Three nodes register through the NodeTracker as ring members; the test then
plays the ledger and calls ``ClusterScheduling.set_static_nodes`` with one member's ring
id.  ``yarn node -list -showDetails`` (``NodeCLI``) and ``yarn cluster
--list-node-labels`` (``ClusterCLI``), run from the jars pyspark ships with a client
configuration written by ``client_config``, must show the labels before and after, and
YarnClient's getNodeToLabels / getLabelsToNodes agree.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.app_model import SchedulerLimits
from cortex_rm.allocator.cluster_scheduling import ClusterScheduling
from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.scheduler import CapacityScheduler
from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.client_config import RMAddresses, write_client_config
from cortex_rm.user_credential import UserCredential
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import NodeRegistration
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.client_service import ApplicationClientService, client_protocol
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.sasl import SaslServer
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from tests.support.java import YarnClientDriver, labels_by_node, quiet_jvm_options, run_driver
from tests.support.reactor import reactor

pytestmark = pytest.mark.integration

NODES = {NodeId("127.0.0.1", 45401): 0xA1, NodeId("127.0.0.1", 45402): 0xB2, NodeId("127.0.0.1", 45403): 0xC3}
STATIC_NODE = NodeId("127.0.0.1", 45402)
NODE_CLI = "org.apache.hadoop.yarn.client.cli.NodeCLI"
CLUSTER_CLI = "org.apache.hadoop.yarn.client.cli.ClusterCLI"


@dataclass
class InProcessRM:
    scheduling: ClusterScheduling
    conf_dir: Path
    classes: Path  # an empty class directory: the CLIs' own main classes are run


async def _launch_nothing(app: Any, container: Any) -> None:
    """No AM is launched here: nothing is submitted."""


@pytest_twisted.async_yield_fixture
async def rm(tmp_path: Path) -> AsyncIterator[InProcessRM]:
    """The RM's core and client port on 127.0.0.1:<free port>, three registered nodes, and a
    client configuration whose credential is alice's."""
    clock = reactor()
    now_ms = int(clock.seconds() * 1000)
    store = MemoryStateStore()
    nodes = NodeTable()
    scheduler = CapacityScheduler(QueueTree(), nodes, clock)
    scheduling = await ClusterScheduling.recover(
        clock, store, SchedulerLimits(), scheduler, lambda app, c: defer.ensureDeferred(_launch_nothing(app, c))
    )
    tracker = NodeTracker(nodes, clock, nm_expiry_ms=600_000, rm_identifier=now_ms, listener=scheduling)
    for node_id, ring_id in NODES.items():
        registration = NodeRegistration(node_id, f"127.0.0.1:{node_id.port + 100}", "/default-rack", Resource(8192, 8), 1000)
        tracker.register(registration, fingerprint=f"{ring_id:064x}", ring_id=ring_id)
    context = RMContext(clock, scheduling.table, nodes, now_ms, usage_source=scheduling.usage_of,
                        container_source=scheduling.containers_of)
    credentials = UserCredentials(MasterKey.generate(1), store, StoredState(), lambda: int(clock.seconds() * 1000))
    auth = UserAuthenticator(credentials)
    factory = IpcServerFactory.daemon_port(
        [client_protocol(ApplicationClientService(context, auth, AppAccess(())))],
        SaslServer(auth.sasl_password),
        max_data_length=64 * 1024 * 1024,
        clock=clock,
    )
    port = clock.listenTCP(0, factory, interface="127.0.0.1")
    address = HostPort("127.0.0.1", port.getHost().port)
    ident = await credentials.issue("alice")
    [(_, rm_token), (_, fs_token)] = auth.tokens_for(ident, str(address), "127.0.0.1:1")
    conf_dir = tmp_path / "conf"
    write_client_config(
        conf_dir, RMAddresses(address, address.with_port(1), address.with_port(2)), UserCredential(rm_token, fs_token),
        upload_spark=False, say=lambda _: None,
    )
    classes = tmp_path / "classes"
    classes.mkdir()
    yield InProcessRM(scheduling, conf_dir, classes)
    await port.stopListening()


async def _cli(rm: InProcessRM, main_class: str, *args: str) -> str:
    """Run one of Hadoop's CLIs in a thread (the reactor serves it meanwhile); its stdout."""
    result: subprocess.CompletedProcess[str] = await threads.deferToThread(
        run_driver, main_class, list(args), classes=rm.classes, conf_dir=rm.conf_dir,
        jvm_options=quiet_jvm_options(), timeout=180,
    )
    assert result.returncode == 0, f"{main_class} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest_twisted.ensureDeferred
async def test_node_cli_and_cluster_cli_show_the_node_classes(rm: InProcessRM) -> None:
    """Before the ledger has spoken every node is volatile; after ``set_static_nodes`` the one
    static member's node shows ``static``; both labels are listed as non-exclusive."""
    before = await _cli(rm, NODE_CLI, "-list", "-showDetails")
    assert "Total Nodes:3" in before
    assert labels_by_node(before) == {str(n): "volatile" for n in NODES}
    changed = rm.scheduling.set_static_nodes(frozenset({NODES[STATIC_NODE], 0xFF}))
    assert [n.node_id for n in changed] == [STATIC_NODE]
    after = labels_by_node(await _cli(rm, NODE_CLI, "-list", "-showDetails"))
    assert after == {str(n): "static" if n == STATIC_NODE else "volatile" for n in NODES}
    status = await _cli(rm, NODE_CLI, "-status", str(STATIC_NODE))
    assert re.search(r"Node-Labels\s*:\s*static\s*$", status, re.MULTILINE), status
    labels = await _cli(rm, CLUSTER_CLI, "--list-node-labels")
    assert re.search(r"Node Labels:\s*<static:exclusivity=false>,<volatile:exclusivity=false>", labels), labels
    maps = await threads.deferToThread(YarnClientDriver(rm.conf_dir).run, "labels")  # YarnClient's label calls
    volatile = sorted(str(n) for n in NODES if n != STATIC_NODE)
    assert maps["nodeToLabels"] == {str(n): ["static" if n == STATIC_NODE else "volatile"] for n in NODES}
    assert maps["labelsToNodes"] == {"static": [str(STATIC_NODE)], "volatile": volatile}
