"""The committed Thrift code: current with the IDL, and working with PyPI thrift's TTwisted on our Twisted.

The currency check needs Debian's ``thrift`` compiler, which ``scripts/install``
installs; without it the test fails (never skips) and says how to get it.  The
round trips connect the generated ``py:twisted`` client and processor through
``thrift.transport.TTwisted``'s protocols over ``twisted.test.iosim`` pumps, so
they prove the generated code, the thrift runtime and this Twisted agree.
"""

from __future__ import annotations

from typing import Any

import pytest
from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
from thrift.Thrift import TApplicationException
from thrift.transport.TTwisted import ThriftClientProtocol, ThriftServerFactory
from twisted.test import iosim
from zope.interface import implementer

from cortex_rm.internal import generate
from cortex_rm.internal.gen import NodeTracker, ttypes


def test_generated_code_is_current_with_the_idl() -> None:
    """``python -m cortex_rm.internal.generate --check`` finds nothing stale."""
    try:
        stale = generate.stale_modules()
    except generate.ThriftCompilerMissing as e:
        pytest.fail(f"cannot check cortex_rm/internal/gen against cortex.thrift: {e}")
    assert stale == [], f"stale generated modules {stale}: run python -m cortex_rm.internal.generate"


def test_check_command_exits_zero_when_current() -> None:
    """The --check entry point agrees (exit status 0)."""
    assert generate.main(["--check"]) == 0


@implementer(NodeTracker.Iface)
class EchoTracker:
    """A handler answering from what it receives, refusing host 'refuse', failing on host 'crash'."""

    def registerNode(self, registration: Any) -> ttypes.RegistrationResponse:  # noqa: N802
        if registration.node_id.host == "refuse":
            raise ttypes.NodeRefused(message="not you")
        if registration.node_id.host == "crash":
            raise RuntimeError("handler bug")
        return ttypes.RegistrationResponse(
            heartbeat_interval_ms=registration.heartbeat_interval_ms, rm_identifier=registration.capacity.memory_mb
        )

    def nodeHeartbeat(self, status: Any) -> ttypes.HeartbeatResponse:  # noqa: N802
        return ttypes.HeartbeatResponse(
            response_id=status.response_id + 1,
            action=ttypes.NodeAction.RESYNC,
            next_heartbeat_interval_ms=1000,
            containers_to_cleanup=[c.container_id for c in status.containers],
        )


def connected_client() -> tuple[NodeTracker.Client, iosim.IOPump]:
    factory = TBinaryProtocolFactory()
    server = ThriftServerFactory(NodeTracker.Processor(EchoTracker()), factory).buildProtocol(None)
    client = ThriftClientProtocol(NodeTracker.Client, factory)
    pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client))
    return client.client, pump


def registration(host: str) -> ttypes.NodeRegistration:
    return ttypes.NodeRegistration(
        node_id=ttypes.NodeAddress(host=host, port=45454),
        http_address=f"{host}:8042",
        rack="/default-rack",
        capacity=ttypes.Capacity(memory_mb=4096, vcores=4),
        heartbeat_interval_ms=700,
    )


def call(pump: iosim.IOPump, d: Any) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    pump.flush()
    assert results, "the call never completed"
    return results[0]


def test_register_round_trip_through_ttwisted() -> None:
    """registerNode goes out through ThriftClientProtocol and back from ThriftServerProtocol."""
    client, pump = connected_client()
    answer = call(pump, client.registerNode(registration("node-a")))
    assert answer == ttypes.RegistrationResponse(heartbeat_interval_ms=700, rm_identifier=4096)


def test_heartbeat_round_trip_with_lists_and_enums() -> None:
    """nodeHeartbeat carries a list of structs out and a list of strings and an enum back."""
    client, pump = connected_client()
    status = ttypes.NodeStatus(
        node_id=ttypes.NodeAddress(host="node-a", port=45454),
        response_id=5,
        healthy=True,
        health_report="",
        containers=[
            ttypes.ContainerStatus(
                container_id="container_1_0001_01_000001", state=ttypes.ContainerState.RUNNING, exit_status=-1000
            )
        ],
    )
    answer = call(pump, client.nodeHeartbeat(status))
    assert answer.response_id == 6
    assert answer.action == ttypes.NodeAction.RESYNC
    assert answer.containers_to_cleanup == ["container_1_0001_01_000001"]


def test_declared_exception_arrives_as_itself() -> None:
    """A NodeRefused raised by the handler is raised, with its message, on the client."""
    client, pump = connected_client()
    failure = call(pump, client.registerNode(registration("refuse")))
    assert isinstance(failure.value, ttypes.NodeRefused)
    assert failure.value.message == "not you"


def test_undeclared_handler_error_becomes_an_application_exception() -> None:
    """A bug in a handler reaches the client as TApplicationException INTERNAL_ERROR, not a hang."""
    client, pump = connected_client()
    failure = call(pump, client.registerNode(registration("crash")))
    assert isinstance(failure.value, TApplicationException)
    assert failure.value.type == TApplicationException.INTERNAL_ERROR
    # the connection still works
    assert call(pump, client.registerNode(registration("node-b"))).rm_identifier == 4096
